package s3store

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// A request that times out closes the idle connections of the store's own transport, so
// that the next request dials anew instead of spending its timeout on another pooled
// connection to an endpoint that is gone.
func TestATimedOutRequestClosesTheIdleConnections(t *testing.T) {
	var mu sync.Mutex
	closed := map[net.Conn]bool{}
	release := make(chan struct{})
	var pair sync.WaitGroup // two requests at once: two connections in the pool
	pair.Add(2)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			<-release
		case "/pair":
			pair.Done()
			pair.Wait()
		}
	}))
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			mu.Lock()
			closed[c] = true
			mu.Unlock()
		}
	}
	srv.Start()
	defer srv.Close()
	defer close(release)

	rt := poolResetOnTimeout{newTransport(MinioConfig{MaxIdleConns: 4})}
	get := func(ctx context.Context, path string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
		if err != nil {
			return err
		}
		resp, err := rt.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- get(context.Background(), "/pair") }() // owned: received below
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Two idle connections: the slow request takes one, the other stays idle.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := get(ctx, "/slow"); err == nil || !isTimeout(err) {
		t.Fatalf("slow request: %v, want a timeout", err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(closed)
		mu.Unlock()
		if n > 0 {
			return // the connection left idle was closed by the client
		}
		if time.Now().After(deadline) {
			t.Fatal("no connection was closed within 10 s of the timeout")
		}
	}
}
