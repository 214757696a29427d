package miniotest

import "syscall"

// sysProcAttr makes the kernel kill the server if the test process dies without Stop
// (for example on a panic or a test timeout).
//
// Strictly, Pdeathsig fires when the OS thread that started the child exits. The Go
// runtime ends a thread only when a goroutine locked to it (runtime.LockOSThread) returns
// without unlocking; tests that run next to the server must not do that.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
