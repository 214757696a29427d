package s3store

import (
	"context"
	"sync"
	"time"
)

// Fault is what an Injector does to one request.
type Fault int

const (
	// Pass sends the request to the wrapped store and returns its answer.
	Pass Fault = iota
	// FailBefore fails the request with ErrInjected without sending it: the wrapped
	// store does not change, as when a request never reaches the server.
	FailBefore
	// FailAfter sends the request and then fails it with ErrInjected whatever the wrapped
	// store answered: the write happened but its acknowledgement was lost. The error is
	// never ErrPreconditionFailed (nor any other sentinel but ErrInjected), so a caller
	// sees an unknown outcome, as after a connection cut during the response.
	FailAfter
	// Hang holds the request until its ctx ends, then fails it with ctx's error without
	// sending it: a request that times out.
	Hang
	// CrashBefore is FailBefore, and the store dies: every later request fails with
	// ErrInjected without being sent (see Injector).
	CrashBefore
	// CrashAfter is FailAfter, and the store dies: the request is applied, its answer
	// is lost, and every later request fails with ErrInjected without being sent.
	CrashAfter
)

func (f Fault) String() string {
	switch f {
	case Pass:
		return "pass"
	case FailBefore:
		return "fail before"
	case FailAfter:
		return "fail after"
	case Hang:
		return "hang"
	case CrashBefore:
		return "crash before"
	case CrashAfter:
		return "crash after"
	}
	return "fault?"
}

// Request is one request as an Injector's Plan sees it.
type Request struct {
	// N numbers the requests from 1 in the order they entered the Injector: under
	// concurrency, request N is the N-th call to pass the checks that need no request
	// (store open, ctx not ended, valid arguments), whichever goroutine made it.
	N int64
	// Op is "put", "get", "list", "delete" or "delete many". A GetRange is a "get", as
	// it is one GET request to S3: a Plan that fails reads fails ranged reads too, and
	// tells them apart by Length.
	Op string
	// Key is the key; for List the prefix, for DeleteMany the first key.
	Key string
	// Offset and Length are the range of a GetRange; both are zero for every other
	// request.
	Offset, Length int64
}

// what names the request in errors: its Op, but "get range" for a GetRange, as the
// checks before any request name it.
func (r Request) what() string {
	if r.Length > 0 {
		return opGetRange
	}
	return r.Op
}

// Action is a Plan's decision for one request: a fault, and a latency added before
// the request is sent (or failed).
type Action struct {
	Fault Fault
	Delay time.Duration
}

// Plan decides the fate of every request of an Injector. It is called once per request,
// with the Injector's lock held (so in request order, never concurrently): it must not
// call the Injector.
type Plan func(Request) Action

// FailNth is a Plan that does f to request n and passes every other request.
func FailNth(n int64, f Fault) Plan {
	return func(r Request) Action {
		if r.N == n {
			return Action{Fault: f}
		}
		return Action{}
	}
}

// Latency is a Plan that passes every request after a delay of d.
func Latency(d time.Duration) Plan {
	return func(Request) Action { return Action{Delay: d} }
}

// InjectorStats counts what an Injector did.
type InjectorStats struct {
	// Requests counts every request that entered (see Request.N).
	Requests int64
	// Passed counts requests sent to the wrapped store with their answer returned.
	Passed int64
	// FailedBefore counts requests failed without being sent: FailBefore, CrashBefore,
	// and every request after the store died.
	FailedBefore int64
	// FailedAfter counts requests sent whose answer was replaced by ErrInjected
	// (FailAfter, CrashAfter).
	FailedAfter int64
	// Hung counts requests held until their ctx ended (Hang).
	Hung int64
	// Delayed counts requests a Plan delayed.
	Delayed int64
}

// Injector is a Store that injects faults into the requests to the Store it wraps, as
// its Plan decides request by request: failures before or after the request reaches the
// store (a lost acknowledgement), timeouts, latency, and the death of a process.
//
// Death ("crash at request k"): a CrashBefore or CrashAfter fault, or a call of Kill,
// kills the store. The requests numbered before the crashing one pass as the Plan says,
// the crashing one is not applied (CrashBefore) or applied with its answer lost
// (CrashAfter), and every later request fails with ErrInjected without being sent. Dead
// is closed at that moment; Kill returns once no request sent before it is still running
// in the wrapped store, so that a test that abandons an instance at its crash knows that
// nothing of it lands afterwards.
//
// With a nil Plan, and until it dies, an Injector is a transparent wrapper that passes
// the conformance suite. Closing it does not close the wrapped store.
type Injector struct {
	closer
	s    Store
	plan Plan

	// gate is held shared by every request for as long as it runs in the wrapped store,
	// and exclusively by Kill, so that Kill waits for them.
	gate sync.RWMutex

	mu sync.Mutex
	// n is the number of the last request that entered, dead whether the store died,
	// stats the counters. Guarded by mu.
	n     int64
	dead  bool
	stats InjectorStats
	// deadCh is closed when the store dies.
	deadCh chan struct{}
}

var _ Store = (*Injector)(nil)

// NewInjector returns s behind plan (nil: every request passes).
func NewInjector(s Store, plan Plan) *Injector {
	return &Injector{s: s, plan: plan, deadCh: make(chan struct{})}
}

// Dead is closed when the store dies (a Crash fault or Kill). Requests that entered
// before may still be running in the wrapped store: call Kill to wait for them.
func (in *Injector) Dead() <-chan struct{} { return in.deadCh }

// Kill makes the store dead if it is not already, and returns once every request sent to
// the wrapped store before it has returned: nothing of the dead store lands afterwards.
func (in *Injector) Kill() {
	in.mu.Lock()
	in.dieLocked() // from here on, every request fails
	in.mu.Unlock()
	// Taking the gate waits for the requests that passed before the death.
	in.gate.Lock()
	in.gate.Unlock() //nolint:staticcheck // an empty critical section: the wait is the point
}

func (in *Injector) dieLocked() {
	if !in.dead {
		in.dead = true
		close(in.deadCh)
	}
}

// Stats returns the counters.
func (in *Injector) Stats() InjectorStats {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.stats
}

// Requests returns the number of requests that entered so far.
func (in *Injector) Requests() int64 {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.n
}

// begin numbers request r (it sets r.N), applies its delay and decides its fault. When
// it returns Pass or FailAfter, the gate is held shared and the caller must release it
// (done) once the wrapped store returned. For any other fault it returns the error to
// report.
func (in *Injector) begin(ctx context.Context, r Request) (f Fault, done func(), err error) {
	op, key := r.what(), r.Key
	in.gate.RLock()
	in.mu.Lock()
	in.n++
	in.stats.Requests++
	act := Action{}
	if !in.dead && in.plan != nil {
		r.N = in.n
		act = in.plan(r)
	}
	if act.Delay > 0 {
		// The gate is not held while waiting, so Kill does not wait for the delay; the
		// request is sent only if the store is still alive after it. A request without a
		// delay is numbered and decided in one critical section, so that a request
		// numbered before a crash is never refused by it and one numbered after it
		// always is.
		in.stats.Delayed++
		in.mu.Unlock()
		in.gate.RUnlock()
		t := time.NewTimer(act.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return Hang, nil, opError(op, key, ctx.Err())
		}
		in.gate.RLock()
		in.mu.Lock()
	}
	f = act.Fault
	switch {
	case in.dead:
		f = FailBefore
	case f == CrashBefore:
		in.dieLocked()
		f = FailBefore
	case f == CrashAfter:
		in.dieLocked()
		f = FailAfter
	}
	switch f {
	case FailBefore:
		in.stats.FailedBefore++
	case FailAfter:
		in.stats.FailedAfter++
	case Hang:
		in.stats.Hung++
	default:
		f = Pass
		in.stats.Passed++
	}
	in.mu.Unlock()
	switch f {
	case FailBefore:
		in.gate.RUnlock()
		return f, nil, opError(op, key, ErrInjected)
	case Hang:
		in.gate.RUnlock()
		<-ctx.Done()
		return f, nil, opError(op, key, ctx.Err())
	}
	return f, in.gate.RUnlock, nil
}

// Put implements Store.
func (in *Injector) Put(ctx context.Context, key string, data []byte, opts PutOptions) (ObjectInfo, error) {
	if _, err := in.admitPut(ctx, key, opts); err != nil {
		return ObjectInfo{}, err
	}
	f, done, err := in.begin(ctx, Request{Op: "put", Key: key})
	if err != nil {
		return ObjectInfo{}, err
	}
	defer done()
	info, err := in.s.Put(ctx, key, data, opts)
	if f == FailAfter {
		return ObjectInfo{}, opError("put", key, ErrInjected)
	}
	return info, err
}

// Get implements Store.
func (in *Injector) Get(ctx context.Context, key string) ([]byte, ObjectInfo, error) {
	if err := in.admit(ctx, "get", key); err != nil {
		return nil, ObjectInfo{}, err
	}
	f, done, err := in.begin(ctx, Request{Op: "get", Key: key})
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	defer done()
	data, info, err := in.s.Get(ctx, key)
	if f == FailAfter {
		return nil, ObjectInfo{}, opError("get", key, ErrInjected)
	}
	return data, info, err
}

// GetRange implements Store. Its Request is a "get" with Offset and Length set.
func (in *Injector) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, ObjectInfo, error) {
	if err := in.admitRange(ctx, key, offset, length); err != nil {
		return nil, ObjectInfo{}, err
	}
	f, done, err := in.begin(ctx, Request{Op: "get", Key: key, Offset: offset, Length: length})
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	defer done()
	data, info, err := in.s.GetRange(ctx, key, offset, length)
	if f == FailAfter {
		return nil, ObjectInfo{}, opError(opGetRange, key, ErrInjected)
	}
	return data, info, err
}

// List implements Store.
func (in *Injector) List(ctx context.Context, prefix, startAfter string, limit int) (ListPage, error) {
	if err := in.admitList(ctx, prefix); err != nil {
		return ListPage{}, err
	}
	f, done, err := in.begin(ctx, Request{Op: "list", Key: prefix})
	if err != nil {
		return ListPage{}, err
	}
	defer done()
	page, err := in.s.List(ctx, prefix, startAfter, limit)
	if f == FailAfter {
		return ListPage{}, opError("list", prefix, ErrInjected)
	}
	return page, err
}

// Delete implements Store.
func (in *Injector) Delete(ctx context.Context, key string) error {
	if err := in.admit(ctx, "delete", key); err != nil {
		return err
	}
	f, done, err := in.begin(ctx, Request{Op: "delete", Key: key})
	if err != nil {
		return err
	}
	defer done()
	err = in.s.Delete(ctx, key)
	if f == FailAfter {
		return opError("delete", key, ErrInjected)
	}
	return err
}

// DeleteMany implements Store. A call with no key makes no request and is not
// numbered; a call with many keys is one request, however many S3 would need. A
// failure names every key as possibly remaining.
func (in *Injector) DeleteMany(ctx context.Context, keys []string) error {
	unique, err := in.admitMany(ctx, keys)
	if err != nil || len(unique) == 0 {
		return err
	}
	f, done, err := in.begin(ctx, Request{Op: "delete many", Key: unique[0]})
	if err != nil {
		return &DeleteManyError{Remaining: unique, Total: len(unique), Err: err}
	}
	defer done()
	err = in.s.DeleteMany(ctx, unique)
	if f == FailAfter {
		return &DeleteManyError{Remaining: unique, Total: len(unique), Err: ErrInjected}
	}
	return err
}

// Close implements Store. Calls made after it fail with ErrClosed and are not numbered.
func (in *Injector) Close() error {
	in.close()
	return nil
}

// Unwrap returns the wrapped store.
func (in *Injector) Unwrap() Store { return in.s }
