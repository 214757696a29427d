package s3store_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/s3persist/s3persist/s3store"
)

// server is a RoundTripper that stands for an S3 server: it "applies" every request it
// receives (counts it) and answers 200 with a body, or no body for a PUT.
type server struct {
	applied atomic.Int64
	block   chan struct{} // when set, each request waits for it to close
}

func (s *server) RoundTrip(r *http.Request) (*http.Response, error) {
	if s.block != nil {
		<-s.block
	}
	s.applied.Add(1)
	body := "0123456789"
	if r.Method == http.MethodPut {
		body = ""
	}
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Header: http.Header{}, Request: r}, nil
}

func request(t *testing.T, ctx context.Context, method, key string) *http.Request {
	t.Helper()
	r, err := http.NewRequestWithContext(ctx, method, "http://127.0.0.1:1/bucket/"+key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestFaultTransportFiresOnTheNthMatchingRequestOnly(t *testing.T) {
	srv := &server{}
	ft := s3store.NewFaultTransport(srv, 1)
	if err := ft.Add(s3store.FaultRule{Kind: s3store.FaultRefuse, Method: "PUT",
		Match: func(r *http.Request) bool { return strings.HasPrefix(s3store.RequestKey(r), "j/") }, Nth: 2}); err != nil {
		t.Fatal(err)
	}
	var failed []string
	for _, c := range []struct{ method, key string }{
		{"PUT", "j/1"}, {"GET", "j/1"}, {"PUT", "c/1"}, {"PUT", "j/2"}, {"PUT", "j/3"},
	} {
		resp, err := ft.RoundTrip(request(t, context.Background(), c.method, c.key))
		if err != nil {
			failed = append(failed, c.method+" "+c.key)
			if !errors.Is(err, s3store.ErrInjected) || !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("refused request: %v, want ErrInjected and ECONNREFUSED", err)
			}
			continue
		}
		_ = resp.Body.Close()
	}
	if strings.Join(failed, ",") != "PUT j/2" {
		t.Fatalf("failed %v, want only the second PUT under j/", failed)
	}
	st := ft.Stats()
	if st.Requests != 5 || st.Injected[s3store.FaultRefuse] != 1 || st.Faults() != 1 || srv.applied.Load() != 4 {
		t.Fatalf("stats %v, %d applied; want 5 requests, 1 refused, 4 applied", st, srv.applied.Load())
	}
}

func TestFaultTransportRateAndLimit(t *testing.T) {
	srv := &server{}
	ft := s3store.NewFaultTransport(srv, 7)
	if err := ft.Add(s3store.FaultRule{Kind: s3store.FaultServerError, Rate: 0.5, Limit: 30}); err != nil {
		t.Fatal(err)
	}
	var errs int
	for range 1000 {
		resp, err := ft.RoundTrip(request(t, context.Background(), "GET", "k"))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusServiceUnavailable {
			errs++
			body, _ := io.ReadAll(resp.Body)
			if !strings.Contains(string(body), "<Code>SlowDown</Code>") {
				t.Fatalf("503 body %q", body)
			}
		}
		_ = resp.Body.Close()
	}
	if errs != 30 || ft.Stats().Injected[s3store.FaultServerError] != 30 || srv.applied.Load() != 970 {
		t.Fatalf("%d 503s, %d applied; want the limit of 30 and 970", errs, srv.applied.Load())
	}
	ft.Clear()
	resp, err := ft.RoundTrip(request(t, context.Background(), "GET", "k"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after Clear: %v, %v", resp, err)
	}
}

func TestFaultTransportLostAckAndResetApplyTheRequest(t *testing.T) {
	srv := &server{}
	ft := s3store.NewFaultTransport(srv, 1)
	for _, r := range []s3store.FaultRule{
		{Kind: s3store.FaultLostAck, Method: "PUT", Nth: 1},
		{Kind: s3store.FaultResetBody, Method: "GET", Nth: 1},
		{Kind: s3store.FaultResetBody, Method: "PUT", Nth: 2},
	} {
		if err := ft.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	_, err := ft.RoundTrip(request(t, context.Background(), "PUT", "a"))
	if !errors.Is(err, s3store.ErrInjected) || !errors.Is(err, syscall.ECONNRESET) || srv.applied.Load() != 1 {
		t.Fatalf("lost ack: %v with %d applied, want a reset after the server applied it", err, srv.applied.Load())
	}
	resp, err := ft.RoundTrip(request(t, context.Background(), "GET", "a"))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if string(body) != "01234" || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reset body: read %q, %v; want half the body, then a reset", body, err)
	}
	// A response with no body cannot be cut: the reset comes instead of it.
	if _, err := ft.RoundTrip(request(t, context.Background(), "PUT", "b")); !errors.Is(err, syscall.ECONNRESET) || srv.applied.Load() != 3 {
		t.Fatalf("reset of a bodiless response: %v with %d applied", err, srv.applied.Load())
	}
	st := ft.Stats()
	if st.Injected[s3store.FaultLostAck] != 1 || st.Injected[s3store.FaultResetBody] != 2 {
		t.Fatalf("stats %v", st)
	}
}

func TestFaultTransportTimeoutAndLatencyHonourTheContext(t *testing.T) {
	srv := &server{}
	ft := s3store.NewFaultTransport(srv, 1)
	if err := ft.Add(s3store.FaultRule{Kind: s3store.FaultTimeout, Nth: 1}); err != nil {
		t.Fatal(err)
	}
	if err := ft.Add(s3store.FaultRule{Kind: s3store.FaultTimeout, Nth: 2, Delay: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if err := ft.Add(s3store.FaultRule{Kind: s3store.FaultLatency, Nth: 3, Delay: time.Hour}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := ft.RoundTrip(request(t, ctx, "GET", "a")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout until the context ends: %v", err)
	}
	_, err := ft.RoundTrip(request(t, context.Background(), "GET", "a"))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, s3store.ErrInjected) {
		t.Fatalf("timeout after Delay: %v, want an injected net.Error with Timeout", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if _, err := ft.RoundTrip(request(t, ctx2, "GET", "a")); !errors.Is(err, context.DeadlineExceeded) || srv.applied.Load() != 0 {
		t.Fatalf("latency cut by the context: %v, %d applied", err, srv.applied.Load())
	}
}

func TestFaultTransportSetDownWaitsForRequestsInFlight(t *testing.T) {
	srv := &server{block: make(chan struct{})}
	ft := s3store.NewFaultTransport(srv, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		if resp, err := ft.RoundTrip(request(t, context.Background(), "PUT", "a")); err == nil {
			_ = resp.Body.Close()
		}
	})
	for ft.Stats().Requests == 0 {
		time.Sleep(time.Millisecond)
	}
	downed := make(chan struct{})
	go func() { ft.SetDown(true); close(downed) }()
	select {
	case <-downed:
		t.Fatal("SetDown returned while a request was still on its way")
	case <-time.After(20 * time.Millisecond):
	}
	close(srv.block)
	<-downed
	wg.Wait()
	if _, err := ft.RoundTrip(request(t, context.Background(), "GET", "a")); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("while down: %v", err)
	}
	ft.SetDown(false)
	if _, err := ft.RoundTrip(request(t, context.Background(), "GET", "a")); err != nil {
		t.Fatalf("after SetDown(false): %v", err)
	}
	if st := ft.Stats(); st.Requests != 3 || st.Injected[s3store.FaultRefuse] != 1 || srv.applied.Load() != 2 {
		t.Fatalf("stats %v, %d applied", st, srv.applied.Load())
	}
}

func TestFaultRuleValidation(t *testing.T) {
	ft := s3store.NewFaultTransport(nil, 1)
	for _, r := range []s3store.FaultRule{
		{Kind: 99}, {Nth: -1}, {Rate: 2}, {Nth: 1, Rate: 0.5}, {Limit: -1},
		{Kind: s3store.FaultLatency}, {Kind: s3store.FaultTimeout, Delay: -1},
	} {
		if err := ft.Add(r); err == nil {
			t.Errorf("Add(%+v) accepted a bad rule", r)
		}
	}
}
