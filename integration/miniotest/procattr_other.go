//go:build !linux

package miniotest

import "syscall"

// sysProcAttr: only Linux can tie the server's life to the test process's; elsewhere the
// server outlives a test process that dies without Stop.
func sysProcAttr() *syscall.SysProcAttr { return nil }
