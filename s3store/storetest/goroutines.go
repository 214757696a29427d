package storetest

import (
	"runtime"
	"testing"
	"time"
)

// CheckGoroutines fails t if, once every cleanup registered after it has run, more
// goroutines are left than when it was called: a store must not leak the goroutines its
// client starts (minio-go's GetObject and ListObjects start some that leak unless every
// object and listing is read or cancelled). Goroutines of closed connections exit
// asynchronously, so it polls for a while before it reports.
func CheckGoroutines(t testing.TB) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines before the test, %d after:\n%s", before, n, buf)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
