package s3store

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FaultKind is a kind of fault a FaultTransport injects.
type FaultKind int

const (
	// FaultRefuse: the request is not sent; the round trip fails at once, as when the
	// connection is refused. The server applied nothing.
	FaultRefuse FaultKind = iota
	// FaultTimeout: the request is not sent; the round trip waits for the request's
	// context to end (or for the rule's Delay, if set) and fails with a timeout, as when
	// the server never answers. The server applied nothing.
	FaultTimeout
	// FaultServerError: the request is not sent; the answer is a 503 SlowDown error
	// response, as from an overloaded S3. The server applied nothing.
	FaultServerError
	// FaultLostAck: the request is sent and the server applies it; its response is read
	// and thrown away and the round trip fails with a connection reset: a lost
	// acknowledgement, whose caller cannot tell that the write landed.
	FaultLostAck
	// FaultResetBody: the request is sent and the server applies it; the status and
	// headers come back, and the body fails with a connection reset halfway through.
	// A response without a body fails as FaultLostAck does.
	FaultResetBody
	// FaultLatency: the request is held for the rule's Delay (less if its context ends
	// first), then sent as usual.
	FaultLatency

	numFaultKinds
)

// FaultKinds lists every FaultKind, for loops over counters.
var FaultKinds = [...]FaultKind{FaultRefuse, FaultTimeout, FaultServerError, FaultLostAck, FaultResetBody, FaultLatency}

func (k FaultKind) String() string {
	switch k {
	case FaultRefuse:
		return "refuse"
	case FaultTimeout:
		return "timeout"
	case FaultServerError:
		return "server-error"
	case FaultLostAck:
		return "lost-ack"
	case FaultResetBody:
		return "reset-body"
	case FaultLatency:
		return "latency"
	}
	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// FaultRule says which requests get a fault. A request matches when its method is
// Method (any, when empty) and Match accepts it (any, when nil). Of the matching
// requests, the rule fires on the Nth only (when Nth > 0), or on each with probability
// Rate (when Rate > 0), or on every one; and on at most Limit requests (no limit when
// 0).
type FaultRule struct {
	Kind   FaultKind
	Method string
	// Match selects requests by anything else, typically their object key (see
	// RequestKey).
	Match func(*http.Request) bool
	Nth   int
	Rate  float64
	Limit int
	// Delay is the hold of FaultLatency (required), and for FaultTimeout the longest
	// wait before the timeout (0: until the request's context ends).
	Delay time.Duration
}

func (r FaultRule) validate() error {
	switch {
	case r.Kind < 0 || r.Kind >= numFaultKinds:
		return fmt.Errorf("s3store: FaultRule.Kind %v is unknown", r.Kind)
	case r.Nth < 0:
		return fmt.Errorf("s3store: FaultRule.Nth %d is negative", r.Nth)
	case r.Rate < 0 || r.Rate > 1:
		return fmt.Errorf("s3store: FaultRule.Rate %v is outside 0..1", r.Rate)
	case r.Nth > 0 && r.Rate > 0:
		return fmt.Errorf("s3store: FaultRule sets both Nth and Rate; set one")
	case r.Limit < 0:
		return fmt.Errorf("s3store: FaultRule.Limit %d is negative", r.Limit)
	case r.Delay < 0:
		return fmt.Errorf("s3store: FaultRule.Delay %v is negative", r.Delay)
	case r.Kind == FaultLatency && r.Delay == 0:
		return fmt.Errorf("s3store: a FaultLatency rule needs a Delay")
	}
	return nil
}

// FaultStats are the counters of a FaultTransport.
type FaultStats struct {
	// Requests counts the round trips asked of the transport, faulty or not.
	Requests int64
	// Injected counts the faults injected, by kind (index a FaultKind).
	Injected [numFaultKinds]int64
}

// Faults is the number of faults injected, of every kind but FaultLatency.
func (s FaultStats) Faults() int64 {
	var n int64
	for _, k := range FaultKinds {
		if k != FaultLatency {
			n += s.Injected[k]
		}
	}
	return n
}

// String lists the counters, for test logs.
func (s FaultStats) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests", s.Requests)
	for _, k := range FaultKinds {
		fmt.Fprintf(&b, ", %s %d", k, s.Injected[k])
	}
	return b.String()
}

// FaultTransport is an http.RoundTripper that injects faults into the requests it
// passes to Base, by programmable rules: set it as MinioConfig.Transport so that the
// real client path (minio-go's signing and retries, s3store's error mapping) meets
// them. It also has a switch (SetDown) that refuses every request, as a network that
// is gone. It counts requests and injected faults by kind. Safe for concurrent use.
//
// Every injected error wraps ErrInjected, and those that stand for a broken connection
// wrap syscall.ECONNRESET or syscall.ECONNREFUSED too; timeouts are net.Errors whose
// Timeout is true. minio-go retries a failed round trip (any transport error but a
// context's) and a 5xx or throttling answer, up to MinioConfig.MaxRetries times, except
// for conditional puts, which s3store sends once; a body that fails after the response
// came back (FaultResetBody on a Get, a List or a DeleteMany) is not retried.
type FaultTransport struct {
	base http.RoundTripper

	// gate is held shared by every round trip while it is in Base, and exclusively by
	// SetDown, so that SetDown returns once no request that passed the switch is still
	// on its way: a test that cuts an instance off knows that nothing of it lands
	// afterwards. down is guarded by gate.
	gate sync.RWMutex
	down bool

	mu    sync.Mutex // guards everything below
	rules []*ruleState
	rnd   *rand.Rand
	stats FaultStats
}

type ruleState struct {
	FaultRule
	seen, fired int
}

// NewFaultTransport returns a FaultTransport with no rules over base
// (http.DefaultTransport when nil); seed makes the choices of Rate rules repeatable.
func NewFaultTransport(base http.RoundTripper, seed uint64) *FaultTransport {
	if base == nil {
		base = http.DefaultTransport
	}
	return &FaultTransport{base: base, rnd: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Add appends a rule. Rules are tried in the order added; the first that fires on a
// request decides its fault, and every rule counts the requests it matches (for Nth).
func (t *FaultTransport) Add(r FaultRule) error {
	if err := r.validate(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rules = append(t.rules, &ruleState{FaultRule: r})
	return nil
}

// Clear removes every rule. Requests in flight keep the fault they were given.
func (t *FaultTransport) Clear() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rules = nil
}

// SetDown refuses every later request (true), as FaultRefuse does, or lets requests
// through to the rules again (false). It returns once every request that was sent to
// Base before it has its response headers.
func (t *FaultTransport) SetDown(down bool) {
	t.gate.Lock()
	defer t.gate.Unlock()
	t.down = down
}

// Stats returns the counters.
func (t *FaultTransport) Stats() FaultStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.stats
}

// CloseIdleConnections closes the idle connections of Base, if it can.
func (t *FaultTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// RequestKey returns the object key of a path-style S3 request ("/bucket/key"), or ""
// for a request on the bucket itself (List, DeleteMany). minio-go uses path-style
// requests for IP endpoints and for MinIO.
func RequestKey(r *http.Request) string {
	p := strings.TrimPrefix(r.URL.Path, "/")
	if i := strings.IndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return ""
}

// choose counts the request and returns the rule that fires on it, or nil.
func (t *FaultTransport) choose(r *http.Request) *FaultRule {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stats.Requests++
	var chosen *FaultRule
	for _, rs := range t.rules {
		if rs.Method != "" && rs.Method != r.Method || rs.Match != nil && !rs.Match(r) {
			continue
		}
		rs.seen++
		if chosen != nil || rs.Limit > 0 && rs.fired >= rs.Limit {
			continue
		}
		fire := true
		switch {
		case rs.Nth > 0:
			fire = rs.seen == rs.Nth
		case rs.Rate > 0:
			fire = t.rnd.Float64() < rs.Rate
		}
		if fire {
			rs.fired++
			t.stats.Injected[rs.Kind]++
			chosen = &rs.FaultRule
		}
	}
	return chosen
}

// RoundTrip implements http.RoundTripper.
func (t *FaultTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.gate.RLock()
	defer t.gate.RUnlock()
	if t.down {
		t.mu.Lock()
		t.stats.Requests++
		t.stats.Injected[FaultRefuse]++
		t.mu.Unlock()
		return nil, refuse(r)
	}
	rule := t.choose(r)
	if rule == nil {
		return t.base.RoundTrip(r)
	}
	switch rule.Kind {
	case FaultRefuse:
		return nil, refuse(r)
	case FaultTimeout:
		closeBody(r)
		if err := hold(r.Context(), rule.Delay); err != nil {
			return nil, err
		}
		return nil, &injectedError{msg: "no answer within " + rule.Delay.String(), timeout: true}
	case FaultServerError:
		closeBody(r)
		return slowDown(r), nil
	case FaultLatency:
		if err := hold(r.Context(), rule.Delay); err != nil {
			closeBody(r)
			return nil, err
		}
		return t.base.RoundTrip(r)
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err // the fault came by itself
	}
	body, rerr := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if rule.Kind == FaultLostAck || len(body) == 0 || rerr != nil {
		return nil, &injectedError{msg: "connection reset by peer after the request was sent (response lost)", cause: syscall.ECONNRESET}
	}
	resp.Body = &cutBody{r: bytes.NewReader(body[:len(body)/2])}
	return resp, nil
}

// hold waits for d, or until ctx ends (d == 0: only that), and returns ctx's error if
// it ended first.
func hold(ctx context.Context, d time.Duration) error {
	if d == 0 {
		<-ctx.Done()
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func closeBody(r *http.Request) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
}

func refuse(r *http.Request) error {
	closeBody(r)
	return &injectedError{msg: "connection refused", cause: syscall.ECONNREFUSED}
}

// slowDown is the answer of an S3 that sheds load.
func slowDown(r *http.Request) *http.Response {
	const body = `<?xml version="1.0" encoding="UTF-8"?>` +
		`<Error><Code>SlowDown</Code><Message>Please reduce your request rate. (injected)</Message></Error>`
	return &http.Response{
		Status:        "503 Service Unavailable",
		StatusCode:    http.StatusServiceUnavailable,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"application/xml"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       r,
	}
}

// cutBody yields the first part of a body, then a connection reset.
type cutBody struct{ r *bytes.Reader }

func (c *cutBody) Read(p []byte) (int, error) {
	if c.r.Len() == 0 {
		return 0, &injectedError{msg: "connection reset by peer while reading the response body", cause: syscall.ECONNRESET}
	}
	return c.r.Read(p)
}

func (c *cutBody) Close() error { return nil }

// injectedError is a transport failure made by FaultTransport. Its text never says
// "EOF": minio-go replaces such errors with one that wraps nothing.
type injectedError struct {
	msg     string
	cause   error // a syscall.Errno, or nil
	timeout bool
}

func (e *injectedError) Error() string { return "s3store: injected fault: " + e.msg }

func (e *injectedError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrInjected}
	}
	return []error{ErrInjected, e.cause}
}

// Timeout and Temporary make it a net.Error.
func (e *injectedError) Timeout() bool   { return e.timeout }
func (e *injectedError) Temporary() bool { return e.timeout }
