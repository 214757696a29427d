// Package simstore is an s3store.Store for deterministic simulation tests: it holds the
// requests that its hold policy selects until the test driver releases them, one at a
// time and in an order the driver or the seed chooses, and it can crash.
//
// # Why
//
// A store that answers at once hides every bug that needs one upload to be slow: a
// journal segment of one stream landing after a later one of another stream, a
// checkpoint deleting a segment while an earlier change is still in the air. Sleeping
// latencies find such orders by luck and cannot replay them. A Store here makes the
// order a decision: a held request lands when, and only when, the driver says so, and
// every decision the Store itself makes (which request is due first, which one a
// random release picks, which held ones land at a crash) is a function of the seed and
// of the sequence of driver calls only, never of goroutine timing.
//
// # Model
//
// A Store is one process's view of a shared bucket (the wrapped Store): the bucket
// outlives the view. A request that Options.Hold selects waits in the Store until it
// is released (it then lands on the wrapped store, in the driver's goroutine, and its
// caller gets the answer) or until its context ends (it never reached the server).
// Every other request passes through at once.
//
// Latency is logical: the Store has a clock that each release advances by one tick. A
// held request is due at its arrival tick plus the latency of its stream (journal
// segments, keys "j/<ss>/...", have one latency per stream <ss>; every other request
// shares one) plus a per-key jitter. ReleaseNext releases the request due first, so a
// slow stream is overtaken by faster ones; ReleaseAny releases one chosen by the seed.
//
// Crash kills the view, as a process that dies: each held request lands or not, as the
// seed decides (an in-flight PUT may have reached the server), its caller gets an error
// either way, and no request of the view reaches the wrapped store afterwards. A new
// process opens the wrapped store (or a new Store over it).
//
// Held requests are ordered by key, then operation (and range), then arrival, never by
// arrival alone: requests that arrive side by side from concurrent goroutines (a
// checkpoint's puts, the streams of a flush) get the same positions in every run.
package simstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/s3persist/s3persist/s3store"
)

// The operations a Request names, as s3store.Injector names them: a GetRange is an
// OpGet with a Length.
const (
	OpPut        = "put"
	OpGet        = "get"
	OpList       = "list"
	OpDelete     = "delete"
	OpDeleteMany = "delete many"
)

// DefaultMaxLatency is the largest stream latency, in ticks, when Options.MaxLatency is
// zero.
const DefaultMaxLatency = 8

// Request is one request as the Store sees it.
type Request struct {
	// ID numbers the requests of the Store from 1 in arrival order. Concurrent requests
	// may arrive in any order, so an ID may differ between runs of a seed: it names a
	// held request for Release, and is no basis for a decision.
	ID uint64
	// Op is one of the Op constants.
	Op string
	// Key is the key with Options.Prefix removed; for List the prefix, for DeleteMany
	// the first key.
	Key string
	// Keys are every key of a DeleteMany (Prefix removed); nil otherwise.
	Keys []string
	// Offset and Length are the range of a GetRange; both are zero for every other
	// request.
	Offset, Length int64
	// Stream is "<ss>" when Key is "j/<ss>/..." (a journal segment of stream <ss>, put
	// or deleted), else empty.
	Stream string
	// Due is the tick at which the request is due under the latency model (held
	// requests only).
	Due uint64
}

// String describes the request by operation and key (and range), without its ID, so
// that the description is the same in every run of a seed.
func (r Request) String() string {
	switch {
	case r.Op == OpDeleteMany && len(r.Keys) > 1:
		return fmt.Sprintf("%s %q (+%d keys)", r.Op, r.Key, len(r.Keys)-1)
	case r.Length > 0:
		return fmt.Sprintf("%s %q bytes %d-%d", r.Op, r.Key, r.Offset, r.Offset+r.Length-1)
	}
	return fmt.Sprintf("%s %q", r.Op, r.Key)
}

// isWrite reports whether the request changes the bucket.
func (r Request) isWrite() bool {
	return r.Op == OpPut || r.Op == OpDelete || r.Op == OpDeleteMany
}

// DefaultHold holds the writes of the s3persist layout that carry session state:
// puts and deletes of journal segments (j/), per-client objects (c/) and index shards
// (i/); a DeleteMany is held when any of its keys is one. Reads, listings and the
// control objects (system, owner, probe/, retained) pass: their order is not what a
// simulation of sessions explores, New must not wait for the driver, and holding the
// ownership renewals would only stall the instance.
func DefaultHold(r Request) bool {
	if !r.isWrite() {
		return false
	}
	if slices.ContainsFunc(r.Keys, isSessionKey) {
		return true
	}
	return isSessionKey(r.Key)
}

func isSessionKey(k string) bool {
	return strings.HasPrefix(k, "j/") || strings.HasPrefix(k, "c/") || strings.HasPrefix(k, "i/")
}

// Options configure New. The zero value holds DefaultHold's requests with seed 0.
type Options struct {
	// Seed drives every decision of the Store: latencies, jitter, ReleaseAny and the
	// fate of held requests at a crash.
	Seed uint64
	// Prefix is removed from the keys the Store sees before Hold and the latency
	// model look at them: set it to the Config.Prefix of the s3persist instance above.
	// Keys without it are seen whole. Default: "".
	Prefix string
	// Hold selects the requests to hold. Default: DefaultHold.
	Hold func(Request) bool
	// MaxLatency is the largest latency of a stream, in ticks; each stream (and the
	// class of requests outside the journal) gets a latency from 1 to MaxLatency drawn
	// from the seed. Negative is invalid. Default: DefaultMaxLatency.
	MaxLatency int
}

// Stats count what a Store did.
type Stats struct {
	Requests  int64 // every request admitted (store open, ctx live, valid arguments)
	Passed    int64 // passed through at once
	Held      int64 // held for the driver
	Released  int64 // held, then released: landed, with their answer returned
	Withdrawn int64 // held, then given up by their caller (ctx ended): never landed
	Landed    int64 // held at a crash and landed
	Lost      int64 // held at a crash and never landed
	Refused   int64 // arrived after the crash: failed without reaching the store
}

// Landing is the fate of one request held at a crash.
type Landing struct {
	Request Request
	Landed  bool
}

// ErrCrashed is wrapped in the error of every request refused or cut by Crash. It wraps
// s3store.ErrInjected, so that callers see what a Faulty store's outage looks like:
// an unknown outcome, no sentinel of the Store contract.
var ErrCrashed = fmt.Errorf("simstore: the process crashed: %w", s3store.ErrInjected)

// Store is the process's view of a shared bucket; see the package documentation.
//
// It implements s3store.Store and passes the conformance suite (storetest) with any
// hold policy, as long as something releases the held requests. The checks that need
// no request (closed, ctx, arguments) come first, as the contract says, so an invalid
// request is refused at once and never held. All methods are safe for concurrent use;
// the driver methods (Held, Release*, Crash) are meant to be called from one goroutine,
// whose sequence of calls, with the seed, determines every decision.
type Store struct {
	under      s3store.Store
	prefix     string
	hold       func(Request) bool
	seed       uint64
	maxLatency uint64
	closed     atomic.Bool

	// gate is held shared by every pass-through request while it runs in the wrapped
	// store, and exclusively by Crash, which so waits for them: nothing of a crashed
	// view lands after Crash returns.
	gate sync.RWMutex

	mu sync.Mutex
	// Guarded by mu: the driver's random source, the arrival counter, the logical
	// clock, the held requests (in no particular order), whether the view crashed, the
	// counters, and changed, closed and replaced whenever held changes or the view
	// crashes.
	rng     *rand.Rand
	arrived uint64
	now     uint64
	held    []*pending
	dead    bool
	stats   Stats
	changed chan struct{}
}

var _ s3store.Store = (*Store)(nil)

// pending is one held request: run lands it on the wrapped store, fail builds the error
// of a request that got no answer, done receives the error its caller returns.
type pending struct {
	req  Request
	run  func(context.Context) error
	fail func(error) error
	done chan error // buffered: whoever resolves the request never waits for the caller
}

// New returns a view of under with opts. It fails on a nil store or a negative
// MaxLatency.
func New(under s3store.Store, opts Options) (*Store, error) {
	switch {
	case under == nil:
		return nil, errors.New("simstore: New: the wrapped store is nil")
	case opts.MaxLatency < 0:
		return nil, fmt.Errorf("simstore: New: Options.MaxLatency %d is negative", opts.MaxLatency)
	}
	hold := opts.Hold
	if hold == nil {
		hold = DefaultHold
	}
	s := &Store{
		under:      under,
		prefix:     opts.Prefix,
		hold:       hold,
		seed:       opts.Seed,
		maxLatency: uint64(cmp.Or(opts.MaxLatency, DefaultMaxLatency)),
		rng:        rand.New(rand.NewPCG(opts.Seed, 0x73696d73746f7265)), // "simstore"
		changed:    make(chan struct{}),
	}
	return s, nil
}

// hash64 mixes the seed with strings into 64 bits: the decisions that concern one
// request (its jitter) or one stream (its latency) come from it rather than from the
// shared random source, so that they do not depend on the order in which concurrent
// requests arrive.
func hash64(seed uint64, parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		_, _ = h.Write([]byte(p))
		_, _ = h.Write([]byte{0})
	}
	x := h.Sum64() ^ seed
	// splitmix64's finaliser.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// StreamLatency returns the latency, in ticks, of journal stream ss ("" for the class
// of requests outside the journal).
func (s *Store) StreamLatency(ss string) uint64 {
	return 1 + hash64(s.seed, "latency", ss)%s.maxLatency
}

func (s *Store) latency(r Request) uint64 {
	l := s.StreamLatency(r.Stream)
	return l + hash64(s.seed, "jitter", r.Op, r.Key)%(l/2+1)
}

// describe fills the fields of a request that derive from its key.
func (s *Store) describe(op, key string, keys []string) Request {
	r := Request{Op: op, Key: strings.TrimPrefix(key, s.prefix)}
	if keys != nil {
		r.Keys = make([]string, len(keys))
		for i, k := range keys {
			r.Keys[i] = strings.TrimPrefix(k, s.prefix)
		}
	}
	if rest, ok := strings.CutPrefix(r.Key, "j/"); ok {
		if ss, _, ok := strings.Cut(rest, "/"); ok {
			r.Stream = ss
		}
	}
	return r
}

// do admits one request that passed the checks needing no request: it fails it if the
// view crashed, passes it, or holds it until it is released, cut by a crash or given up
// by ctx. run performs it on the wrapped store; fail builds the error of a request that
// never got an answer.
func (s *Store) do(ctx context.Context, req Request, run func(context.Context) error, fail func(error) error) error {
	s.mu.Lock()
	s.arrived++
	req.ID = s.arrived
	if s.dead {
		s.stats.Refused++
		s.mu.Unlock()
		return fail(ErrCrashed)
	}
	s.stats.Requests++
	if !s.hold(req) {
		s.stats.Passed++
		// Taken under mu: a Crash that set dead before cannot be waiting for the gate
		// yet, so this cannot deadlock, and one after it waits for this request.
		s.gate.RLock()
		s.mu.Unlock()
		defer s.gate.RUnlock()
		return run(ctx)
	}
	s.stats.Held++
	req.Due = s.now + s.latency(req)
	p := &pending{req: req, run: run, fail: fail, done: make(chan error, 1)}
	s.held = append(s.held, p)
	s.notifyLocked()
	s.mu.Unlock()
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		if s.withdraw(p) {
			return fail(ctx.Err())
		}
		return <-p.done // released or cut meanwhile: its answer is on the way
	}
}

// withdraw removes p from the held requests, unless it is gone already.
func (s *Store) withdraw(p *pending) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.Index(s.held, p)
	if i < 0 {
		return false
	}
	s.held = slices.Delete(s.held, i, i+1)
	s.stats.Withdrawn++
	s.notifyLocked()
	return true
}

func (s *Store) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// canonical orders held requests so that the same set gets the same order in every
// run: by key, then operation (and range), then arrival.
func canonical(a, b *pending) int {
	return cmp.Or(strings.Compare(a.req.Key, b.req.Key), strings.Compare(a.req.Op, b.req.Op),
		cmp.Compare(a.req.Offset, b.req.Offset), cmp.Compare(a.req.Length, b.req.Length), cmp.Compare(a.req.ID, b.req.ID))
}

// Held returns the requests held now, in canonical order (key, operation, arrival).
func (s *Store) Held() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	slices.SortFunc(s.held, canonical)
	out := make([]Request, len(s.held))
	for i, p := range s.held {
		out[i] = p.req
	}
	return out
}

// WaitHeld waits until at least n requests are held, the view crashes or ctx ends, and
// returns how many are held. It is for drivers that cannot otherwise tell that the
// requests they expect have arrived.
func (s *Store) WaitHeld(ctx context.Context, n int) (int, error) {
	for {
		s.mu.Lock()
		held, dead, changed := len(s.held), s.dead, s.changed
		s.mu.Unlock()
		if held >= n || dead {
			return held, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return held, ctx.Err()
		}
	}
}

// Release lands the held request with id on the wrapped store and returns its caller's
// answer to it. It reports false, doing nothing, when no such request is held.
func (s *Store) Release(id uint64) bool {
	s.mu.Lock()
	i := slices.IndexFunc(s.held, func(p *pending) bool { return p.req.ID == id })
	if i < 0 || s.dead {
		s.mu.Unlock()
		return false
	}
	s.releaseLocked(i)
	return true
}

// ReleaseNext releases the held request due first (ties in canonical order) and
// returns it; false when none is held.
func (s *Store) ReleaseNext() (Request, bool) {
	s.mu.Lock()
	if len(s.held) == 0 || s.dead {
		s.mu.Unlock()
		return Request{}, false
	}
	slices.SortFunc(s.held, canonical)
	first := 0
	for i, p := range s.held {
		if p.req.Due < s.held[first].req.Due {
			first = i
		}
	}
	return s.releaseLocked(first), true
}

// ReleaseAny releases a held request chosen by the seed and returns it; false when
// none is held.
func (s *Store) ReleaseAny() (Request, bool) {
	s.mu.Lock()
	if len(s.held) == 0 || s.dead {
		s.mu.Unlock()
		return Request{}, false
	}
	slices.SortFunc(s.held, canonical)
	return s.releaseLocked(s.rng.IntN(len(s.held))), true
}

// releaseLocked removes held request i, advances the clock, unlocks mu, and lands the
// request in the calling goroutine: when it returns, the request is on the wrapped
// store and its answer is with its caller.
func (s *Store) releaseLocked(i int) Request {
	p := s.held[i]
	s.held = slices.Delete(s.held, i, i+1)
	s.now++
	s.stats.Released++
	s.notifyLocked()
	s.mu.Unlock()
	// The request reached the server: its caller's ctx no longer decides anything.
	p.done <- p.run(context.Background())
	return p.req
}

// Crash kills the view (see the package documentation) and returns the fate of each
// request it held, in canonical order. When it returns, nothing of the view reaches the
// wrapped store any more: the pass-through requests in flight have finished, the held
// ones that land have landed, and every later request fails with ErrCrashed. A second
// Crash does nothing and returns nil.
func (s *Store) Crash() []Landing {
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		return nil
	}
	s.dead = true
	slices.SortFunc(s.held, canonical)
	held := s.held
	s.held = nil
	out := make([]Landing, len(held))
	for i, p := range held {
		out[i] = Landing{Request: p.req, Landed: s.rng.IntN(2) == 0}
		if out[i].Landed {
			s.stats.Landed++
		} else {
			s.stats.Lost++
		}
	}
	s.notifyLocked()
	s.mu.Unlock()
	// Pass-through requests admitted before the crash finish first.
	s.gate.Lock()
	s.gate.Unlock() //nolint:staticcheck // an empty critical section: the wait is the point
	for i, p := range held {
		if out[i].Landed {
			_ = p.run(context.Background()) // its answer is lost with the process
		}
		p.done <- p.fail(ErrCrashed)
	}
	return out
}

// Dead reports whether the view crashed.
func (s *Store) Dead() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dead
}

// Now returns the logical clock: the number of releases so far.
func (s *Store) Now() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

// Stats returns the counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Unwrap returns the wrapped store.
func (s *Store) Unwrap() s3store.Store { return s.under }

// admit runs the checks that need no request, in the contract's order: closed, ctx,
// key.
func (s *Store) admit(ctx context.Context, op, key string) error {
	if s.closed.Load() {
		return fmt.Errorf("s3store: %s %q: %w", op, key, s3store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3store: %s %q: %w", op, key, err)
	}
	if err := s3store.ValidateKey(key); err != nil {
		return fmt.Errorf("s3store: %s %q: %w", op, key, err)
	}
	return nil
}

// Put implements s3store.Store. A held put lands when it is released; its
// precondition is evaluated then, as a server evaluates it when the request arrives.
func (s *Store) Put(ctx context.Context, key string, data []byte, opts s3store.PutOptions) (s3store.ObjectInfo, error) {
	if err := s.admit(ctx, OpPut, key); err != nil {
		return s3store.ObjectInfo{}, err
	}
	switch {
	case opts.IfNoneMatch && opts.IfMatch != "":
		return s3store.ObjectInfo{}, fmt.Errorf("s3store: put %q: both IfNoneMatch and IfMatch are set", key)
	case opts.IfMatch == "*":
		return s3store.ObjectInfo{}, fmt.Errorf(`s3store: put %q: IfMatch "*" is not an ETag`, key)
	}
	data = append([]byte(nil), data...) // the caller may reuse its buffer while the put is held
	var info s3store.ObjectInfo
	err := s.do(ctx, s.describe(OpPut, key, nil), func(ctx context.Context) error {
		var err error
		info, err = s.under.Put(ctx, key, data, opts)
		return err
	}, func(err error) error { return fmt.Errorf("s3store: put %q: %w", key, err) })
	if err != nil {
		return s3store.ObjectInfo{}, err
	}
	return info, nil
}

// Get implements s3store.Store.
func (s *Store) Get(ctx context.Context, key string) ([]byte, s3store.ObjectInfo, error) {
	if err := s.admit(ctx, OpGet, key); err != nil {
		return nil, s3store.ObjectInfo{}, err
	}
	var (
		data []byte
		info s3store.ObjectInfo
	)
	err := s.do(ctx, s.describe(OpGet, key, nil), func(ctx context.Context) error {
		var err error
		data, info, err = s.under.Get(ctx, key)
		return err
	}, func(err error) error { return fmt.Errorf("s3store: get %q: %w", key, err) })
	if err != nil {
		return nil, s3store.ObjectInfo{}, err
	}
	return data, info, nil
}

// GetRange implements s3store.Store: a request like Get's (an OpGet, with the range in
// Offset and Length), held or passed by the same policy.
func (s *Store) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, s3store.ObjectInfo, error) {
	const op = "get range" // in errors, as s3store names it
	if err := s.admit(ctx, op, key); err != nil {
		return nil, s3store.ObjectInfo{}, err
	}
	if err := s3store.ValidateRange(offset, length); err != nil {
		return nil, s3store.ObjectInfo{}, fmt.Errorf("s3store: %s %q: %w", op, key, err)
	}
	req := s.describe(OpGet, key, nil)
	req.Offset, req.Length = offset, length
	var (
		data []byte
		info s3store.ObjectInfo
	)
	err := s.do(ctx, req, func(ctx context.Context) error {
		var err error
		data, info, err = s.under.GetRange(ctx, key, offset, length)
		return err
	}, func(err error) error { return fmt.Errorf("s3store: %s %q: %w", op, key, err) })
	if err != nil {
		return nil, s3store.ObjectInfo{}, err
	}
	return data, info, nil
}

// List implements s3store.Store.
func (s *Store) List(ctx context.Context, prefix, startAfter string, limit int) (s3store.ListPage, error) {
	if s.closed.Load() {
		return s3store.ListPage{}, fmt.Errorf("s3store: list %q: %w", prefix, s3store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return s3store.ListPage{}, fmt.Errorf("s3store: list %q: %w", prefix, err)
	}
	if err := s3store.ValidatePrefix(prefix); err != nil {
		return s3store.ListPage{}, fmt.Errorf("s3store: list %q: %w", prefix, err)
	}
	var page s3store.ListPage
	err := s.do(ctx, s.describe(OpList, prefix, nil), func(ctx context.Context) error {
		var err error
		page, err = s.under.List(ctx, prefix, startAfter, limit)
		return err
	}, func(err error) error { return fmt.Errorf("s3store: list %q: %w", prefix, err) })
	if err != nil {
		return s3store.ListPage{}, err
	}
	return page, nil
}

// Delete implements s3store.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.admit(ctx, OpDelete, key); err != nil {
		return err
	}
	return s.do(ctx, s.describe(OpDelete, key, nil), func(ctx context.Context) error {
		return s.under.Delete(ctx, key)
	}, func(err error) error { return fmt.Errorf("s3store: delete %q: %w", key, err) })
}

// DeleteMany implements s3store.Store: one request, held or passed as a whole. A call
// with no key makes no request.
func (s *Store) DeleteMany(ctx context.Context, keys []string) error {
	if s.closed.Load() {
		return fmt.Errorf("s3store: delete many (%d keys): %w", len(keys), s3store.ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3store: delete many (%d keys): %w", len(keys), err)
	}
	unique := make([]string, 0, len(keys))
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if err := s3store.ValidateKey(k); err != nil {
			return fmt.Errorf("s3store: delete many %q: %w", k, err)
		}
		if !seen[k] {
			seen[k] = true
			unique = append(unique, k)
		}
	}
	if len(unique) == 0 {
		return nil
	}
	req := s.describe(OpDeleteMany, unique[0], unique)
	return s.do(ctx, req, func(ctx context.Context) error {
		return s.under.DeleteMany(ctx, unique)
	}, func(err error) error {
		return &s3store.DeleteManyError{Remaining: unique, Total: len(unique), Err: err}
	})
}

// Close implements s3store.Store: later calls fail with ErrClosed. Requests held now
// stay held until they are released or the view crashes. The wrapped store stays open.
func (s *Store) Close() error {
	s.closed.Store(true)
	return nil
}
