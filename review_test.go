package s3persist

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist/internal/logtest"
	"github.com/s3persist/s3persist/s3store"
)

// Regression tests of four review findings: a leaked journal goroutine when New fails
// late, a packet removed meanwhile reported broken, the garbage collection holding the
// table lock while it waits for a session, and journal upload failures that nobody saw.

// liveness bounds every wait of these tests. It only catches a hang: nothing here
// asserts on how long anything takes.
const liveness = 10 * time.Second

// hookStore passes every request to the store it wraps, after asking its hooks: a
// non-nil error from onPut or onList fails the request without sending it, and onList
// may block (until ctx ends) to hold a listing.
type hookStore struct {
	s3store.Store
	onPut  func(key string) error
	onList func(ctx context.Context, prefix string) error
}

func (h *hookStore) Put(ctx context.Context, key string, data []byte, opts s3store.PutOptions) (s3store.ObjectInfo, error) {
	if h.onPut != nil {
		if err := h.onPut(key); err != nil {
			return s3store.ObjectInfo{}, err
		}
	}
	return h.Store.Put(ctx, key, data, opts)
}

func (h *hookStore) List(ctx context.Context, prefix, startAfter string, limit int) (s3store.ListPage, error) {
	if h.onList != nil {
		if err := h.onList(ctx, prefix); err != nil {
			return s3store.ListPage{}, err
		}
	}
	return h.Store.List(ctx, prefix, startAfter, limit)
}

// eventually polls cond until it holds or liveness passes, and reports whether it held.
func eventually(cond func() bool) bool {
	deadline := time.Now().Add(liveness)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// goroutine is one goroutine of a runtime.Stack dump.
type goroutine struct {
	id, state, parent string // parent: the id of the goroutine that created it, if known
	stack             string
}

// ownFirst reports whether the innermost frame of this module in g's stack is fn (a
// qualified function name such as "github.com/s3persist/s3persist.(*Persistence).lookup").
func (g goroutine) ownFirst(fn string) bool {
	for line := range strings.SplitSeq(g.stack, "\n") {
		if strings.HasPrefix(line, "github.com/s3persist/s3persist") {
			return strings.HasPrefix(line, fn+"(")
		}
	}
	return false
}

// goroutines returns every goroutine of the process (all, true) or the calling one.
func goroutines(all bool) []goroutine {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, all)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []goroutine
	for s := range strings.SplitSeq(strings.TrimSpace(string(buf)), "\n\n") {
		header, _, _ := strings.Cut(s, "\n")
		rest, ok := strings.CutPrefix(header, "goroutine ")
		if !ok {
			continue
		}
		id, rest, _ := strings.Cut(rest, " ")
		_, state, _ := strings.Cut(rest, "[")
		state, _, _ = strings.Cut(state, "]")
		state, _, _ = strings.Cut(state, ",")
		g := goroutine{id: id, state: state, stack: s}
		if i := strings.LastIndex(s, " in goroutine "); i >= 0 {
			g.parent, _, _ = strings.Cut(s[i+len(" in goroutine "):], "\n")
		}
		out = append(out, g)
	}
	return out
}

// newGoroutinesOfThisModule returns the stacks of the goroutines running code of this
// module (the root package, batching, ...) that did not exist in before, leaving out
// those that goroutines of earlier tests started (their creator is in before and is not
// the calling goroutine).
func newGoroutinesOfThisModule(before []goroutine) string {
	self := goroutines(false)[0].id
	old := map[string]bool{}
	for _, g := range before {
		old[g.id] = true
	}
	var out []string
	for _, g := range goroutines(true) {
		if old[g.id] || !strings.Contains(g.stack, "github.com/s3persist/s3persist") ||
			old[g.parent] && g.parent != self {
			continue
		}
		out = append(out, g.stack)
	}
	return strings.Join(out, "\n\n")
}

// findGoroutine reports whether some goroutine is blocked in state (as the runtime names
// it: "sync.Mutex.Lock") with fn as its innermost frame of this module.
func findGoroutine(state, fn string) bool {
	return slices.ContainsFunc(goroutines(true), func(g goroutine) bool { return g.state == state && g.ownFirst(fn) })
}

func allStacks() string {
	var out []string
	for _, g := range goroutines(true) {
		out = append(out, g.stack)
	}
	return strings.Join(out, "\n\n")
}

// Bug: New failing after the journal started (the seal of the ownership record, after
// loading) returned without closing the journal's batcher, whose scheduler goroutine
// then ran for ever: one leaked goroutine per failed start.
func TestANewThatFailsAfterTheJournalStartedLeavesNoGoroutineBehind(t *testing.T) {
	errSeal := errors.New("injected: the seal of the ownership record is refused")
	var listedJournal, sealRefused atomic.Bool
	store := &hookStore{
		Store: s3store.NewMemory(),
		onList: func(_ context.Context, prefix string) error {
			if prefix == journalRoot {
				listedJournal.Store(true)
			}
			return nil
		},
		// The ownership record is written when New acquires the prefix, when it seals
		// the journal after loading it, and when it releases the prefix: refuse the
		// first write after the journal was listed, the seal.
		onPut: func(key string) error {
			if key == keyOwner && listedJournal.Load() && sealRefused.CompareAndSwap(false, true) {
				return errSeal
			}
			return nil
		},
	}
	before := goroutines(true)
	p, err := New(context.Background(), Config{Store: store, LeaseTTL: time.Hour, CheckpointInterval: time.Hour})
	if err == nil {
		_ = p.Shutdown()
		t.Fatal("New succeeded although the seal of the journal was refused")
	}
	if !sealRefused.Load() || !errors.Is(err, errSeal) {
		t.Fatalf("New: %v; want it to fail with the refused seal (the seal was refused: %v)", err, sealRefused.Load())
	}
	// A goroutine that has returned may take a moment to leave the dump: poll, with a
	// bound that only catches leaks.
	var left string
	if !eventually(func() bool { left = newGoroutinesOfThisModule(before); return left == "" }) {
		t.Fatalf("New failed with %v and left goroutines running:\n%s", err, left)
	}
}

// Bug: a visit read a packet's payload from its batch object and reported the batch
// missing (ErrBrokenEntry) when the packet had been removed meanwhile by a concurrent
// visit and its emptied batch deleted by a checkpoint: a queue with nothing wrong in it
// failed to load. A packet no longer queued has nothing to visit (P4) and is skipped.
func TestAPacketRemovedAndItsBatchDeletedDuringAVisitIsSkippedNotReportedBroken(t *testing.T) {
	f := newFixture(t, Config{CacheBytes: 1}) // every payload is read from its batch object
	f.mustCreate("a")
	f.mustStore("a", "p1")
	f.mustStore("a", "p2")
	f.flush()
	f.checkpoint()
	batches := func() []string { return f.keys(packRoot) }
	if b := batches(); len(b) != 1 {
		t.Fatalf("after the checkpoint: packs %v, want p1 and p2 in one", b)
	}

	var seen []string
	err := f.s.PacketsForEachQoS12([]byte("a"), nil, func(_ interface{}, p *vlpersistence.PersistedPacket) (bool, error) {
		seen = append(seen, string(p.Data))
		if len(seen) == 1 {
			// Re-entrant (G5): another visit takes the whole queue, and a checkpoint
			// deletes the batch object it emptied.
			if got := f.drain("a", f.s.PacketsForEachQoS12, keepNone); !slices.Equal(got, []string{"p1", "p2"}) {
				t.Fatalf("the inner visit saw %v, want [p1 p2]", got)
			}
			f.checkpoint()
			if b := batches(); len(b) != 0 {
				t.Fatalf("the checkpoint after the inner visit left packs %v; the test needs them deleted", b)
			}
		}
		return false, nil // keep p1: the inner visit removed it already
	})
	if err != nil {
		t.Fatalf("the outer visit: %v, want nil: p2 was removed, not lost", err)
	}
	if !slices.Equal(seen, []string{"p1"}) {
		t.Fatalf("the outer visit saw %v, want [p1]", seen)
	}
	if n, err := f.s.PacketCountQoS12([]byte("a")); n != 0 || err != nil {
		t.Fatalf("after both visits: %d packets queued (%v), want 0", n, err)
	}
}

// Bug: the garbage collection after start held tableMu.RLock while it waited for each
// session's lock. A call blocked on journal backpressure (WaitForRoom) holds its
// session's lock; a Create then queued for the write lock, and every later call, whose
// read lock now waits behind that writer, stalled until the store caught up.
func TestGarbageCollectionWaitingForABlockedSessionDoesNotStallOtherCalls(t *testing.T) {
	mem := s3store.NewMemory()
	// A first instance leaves sessions and their objects under c/, so that the garbage
	// collection of the next start has something to examine.
	p1, s1 := openOn(t, mem, Config{})
	for _, id := range []string{"a", "c"} {
		if err := s1.Create([]byte(id), nil); err != nil {
			t.Fatal(err)
		}
		if err := s1.PacketStoreQoS12([]byte(id), pkt("before the restart")); err != nil {
			t.Fatal(err)
		}
	}
	if err := p1.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p1.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := p1.Shutdown(); err != nil {
		t.Fatal(err)
	}

	errJournalDown := errors.New("injected: journal puts fail")
	var (
		gcListed    atomic.Bool
		held        = make(chan struct{}) // closed when the collection's listing of c/ arrived
		release     = make(chan struct{}) // closed to let it go on
		releaseOnce sync.Once
		journalDown atomic.Bool
	)
	store := &hookStore{
		Store: mem,
		onList: func(ctx context.Context, prefix string) error {
			if prefix != clientsRoot || !gcListed.CompareAndSwap(false, true) {
				return nil
			}
			close(held)
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
		onPut: func(key string) error {
			if journalDown.Load() && strings.HasPrefix(key, journalRoot) {
				return errJournalDown
			}
			return nil
		},
	}
	p, s := openOn(t, store, Config{WhenStoreIsBehind: WaitForRoom, BatchBytes: 64 << 10, MaxPendingBytes: 64 << 10,
		CallTimeout: 30 * time.Second})
	storeBack := func() {
		journalDown.Store(false)
		releaseOnce.Do(func() { close(release) })
	}
	t.Cleanup(func() {
		storeBack()
		_ = p.Shutdown()
	})
	select {
	case <-held:
	case <-time.After(liveness):
		t.Fatal("the garbage collection did not list c/")
	}

	// The journal is full and the store refuses it: a second store for a waits for room
	// while it holds a's lock.
	journalDown.Store(true)
	big := &vlpersistence.PersistedPacket{Data: make([]byte, 40<<10)}
	if err := s.PacketStoreQoS12([]byte("a"), big); err != nil {
		t.Fatal(err)
	}
	stored := make(chan error, 1)
	go func() { stored <- s.PacketStoreQoS12([]byte("a"), big) }() // owned: awaited below
	if !eventually(func() bool { return p.Stats().Journal.BlockedAdds == 1 }) {
		t.Fatalf("the second store of 40 KiB into a full 64 KiB journal did not wait for room:\n%s", allStacks())
	}

	// The collection goes on and waits for a's lock.
	releaseOnce.Do(func() { close(release) })
	if !eventually(func() bool {
		return findGoroutine("sync.Mutex.Lock", "github.com/s3persist/s3persist.(*Persistence).collectGarbage")
	}) {
		t.Fatalf("the garbage collection did not reach a's lock:\n%s", allStacks())
	}

	// A creation takes the table's write lock: it either gets it (then journals, and
	// returns or waits for room in turn) or queues for it behind a reader.
	created := make(chan error, 1)
	go func() { created <- s.Create([]byte("b"), nil) }() // owned: awaited below
	var createErr error
	createDone := false
	if !eventually(func() bool {
		select {
		case createErr = <-created:
			createDone = true
		default:
		}
		return createDone || p.Stats().Journal.BlockedAdds >= 2 ||
			findGoroutine("sync.RWMutex.Lock", "github.com/s3persist/s3persist.(*Persistence).lookup")
	}) {
		t.Fatalf("Create(b) neither returned nor blocked:\n%s", allStacks())
	}

	exists := make(chan bool, 1)
	go func() { exists <- s.Exists([]byte("c")) }() // owned: awaited here, or below once the store is back
	existsDone := false
	select {
	case ok := <-exists:
		existsDone = true
		if !ok {
			t.Errorf("Exists(c) = false; c was created before the restart")
		}
	case <-time.After(liveness):
		t.Errorf("Exists(c) did not return within %v while the garbage collection waited for a's lock:\n%s", liveness, allStacks())
	}

	// The store answers again: everything blocked finishes.
	storeBack()
	await := func(name string, ch <-chan error) error {
		select {
		case err := <-ch:
			return err
		case <-time.After(liveness):
			t.Fatalf("%s did not return once the journal uploads succeeded:\n%s", name, allStacks())
			return nil
		}
	}
	if err := await("the blocked store for a", stored); err != nil {
		t.Errorf("the blocked store for a: %v", err)
	}
	if !createDone {
		createErr = await("Create(b)", created)
	}
	if createErr != nil {
		t.Errorf("Create(b): %v", createErr)
	}
	if !existsDone {
		select {
		case <-exists:
		case <-time.After(liveness):
			t.Fatalf("Exists(c) did not return once the journal uploads succeeded:\n%s", allStacks())
		}
	}
	select {
	case <-p.gcDone:
	case <-time.After(liveness):
		t.Fatalf("the garbage collection did not end:\n%s", allStacks())
	}
	if err := p.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// Bug: a journal upload that failed was retried in silence: an outage that kept every
// change from being durable (wrong credentials, a policy that denies the journal's
// prefix) showed up nowhere but in Flush's error. Failed uploads are now logged, at most
// one line per uploadErrorLogInterval, and counted in Stats.
func TestFailingJournalUploadsAreLoggedOncePerIntervalAndCounted(t *testing.T) {
	var denied atomic.Bool
	denied.Store(true)
	store := &hookStore{Store: s3store.NewMemory(), onPut: func(key string) error {
		if denied.Load() && strings.HasPrefix(key, journalRoot) {
			return fmt.Errorf("put %q: %w", key, s3store.ErrAccessDenied)
		}
		return nil
	}}
	logs := &logtest.Recorder{Min: slog.LevelError}
	p, s := openOn(t, store, Config{Logger: slog.New(logs)})
	t.Cleanup(func() {
		denied.Store(false)
		_ = p.Shutdown()
	})
	if err := s.Create([]byte("a"), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.PacketStoreQoS12([]byte("a"), pkt("p1")); err != nil {
		t.Fatalf("an Async store while the journal is denied: %v, want it accepted", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := p.Flush(ctx)
	cancel()
	if err == nil {
		t.Fatal("Flush returned nil while every journal upload was denied")
	}
	if !eventually(func() bool { return p.Stats().Journal.Retries >= 3 }) {
		t.Fatalf("journal retries: %d, want several failed attempts", p.Stats().Journal.Retries)
	}

	lines := logs.Records(slog.LevelError)
	if len(lines) != 1 {
		t.Fatalf("%d failed attempts logged %d Error lines within %v, want 1: %v",
			p.Stats().Journal.Retries, len(lines), uploadErrorLogInterval, lines)
	}
	a := logtest.Attrs(lines[0])
	if k := a["key"]; k.Kind() != slog.KindString || !strings.HasPrefix(k.String(), journalRoot) {
		t.Errorf("the line's key = %v, want a journal segment's key", k)
	}
	if n := a["records"]; n.Kind() != slog.KindInt64 || n.Int64() < 1 {
		t.Errorf("the line's records = %v, want the number of records in the segment", n)
	}
	if e, ok := a["err"].Any().(error); !ok || !errors.Is(e, s3store.ErrAccessDenied) {
		t.Errorf("the line's err = %v, want the cause, access denied", a["err"])
	}
	if n := a["not_logged_since_last"]; n.Kind() != slog.KindInt64 || n.Int64() != 0 {
		t.Errorf("the first line's not_logged_since_last = %v, want 0", n)
	}

	denied.Store(false)
	ctx, cancel = context.WithTimeout(context.Background(), liveness)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("Flush once the journal is allowed again: %v", err)
	}
}

// The lines a rateLimitedLog leaves out are counted in its next line.
func TestTheRateLimitedLogCountsTheFailuresItLeftOut(t *testing.T) {
	logs := &logtest.Recorder{Min: slog.LevelError}
	r := &rateLimitedLog{log: slog.New(logs), every: time.Hour}
	for range 4 {
		r.error("failed", slog.String("key", "k"))
	}
	if n := len(logs.Records(slog.LevelError)); n != 1 {
		t.Fatalf("4 failures within the interval: %d lines, want 1", n)
	}
	r.mu.Lock()
	r.last = r.last.Add(-r.every) // the interval has passed
	r.mu.Unlock()
	r.error("failed", slog.String("key", "k"))
	lines := logs.Records(slog.LevelError)
	if len(lines) != 2 {
		t.Fatalf("a failure after the interval: %d lines in all, want 2", len(lines))
	}
	if n := logtest.Attrs(lines[1])["not_logged_since_last"]; n.Kind() != slog.KindInt64 || n.Int64() != 3 {
		t.Fatalf("the second line's not_logged_since_last = %v, want 3", n)
	}
}
