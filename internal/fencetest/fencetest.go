// Package fencetest checks that one bucket prefix has one writer: a new instance waits
// for the owner to release the prefix or for its lease to expire, ForceTakeover takes it
// at once, and a fenced instance writes nothing that changes the new owner's state. The
// same cases run on the in-memory store (root package tests) and on a real MinIO
// (integration module), since only a real server proves that conditional writes hold.
package fencetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist"
	"github.com/s3persist/s3persist/s3store"
)

// NewBucket returns an empty store (a bucket, or a prefix of one) for one test case.
// The case closes nothing: the caller's cleanup does.
type NewBucket func(t *testing.T) s3store.Store

// Run runs every case against stores from newBucket.
func Run(t *testing.T, newBucket NewBucket) {
	cases := []struct {
		name string
		fn   func(t *testing.T, nb NewBucket)
	}{
		{"a second instance waits for the owner to release the prefix", waitsForRelease},
		{"a crashed owner is taken over once its lease expires, and is fenced if it comes back", takeoverAfterLease},
		{"ForceTakeover fences a live owner, whose late writes never reach the new owner's state", forceTakeoverFencesLiveOwner},
		{"a renewal that landed although its response was lost is not a lost race", lostRenewalAck},
		{"New refuses a store that ignores conditional writes", refusesStoreWithoutConditions},
		{"repeated takeovers lose nothing that was flushed", repeatedTakeovers},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.fn(t, newBucket) })
	}
}

func open(t *testing.T, store s3store.Store, cfg s3persist.Config) *s3persist.Persistence {
	t.Helper()
	p, err := openErr(context.Background(), store, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func openErr(ctx context.Context, store s3store.Store, cfg s3persist.Config) (*s3persist.Persistence, error) {
	cfg.Store = store
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = time.Hour
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	return s3persist.New(ctx, cfg)
}

func sessions(t *testing.T, p *s3persist.Persistence) vlpersistence.Sessions {
	t.Helper()
	s, err := p.Sessions()
	if err != nil {
		t.Fatalf("Sessions: %v", err)
	}
	return s
}

func store(s vlpersistence.Sessions, id, data string) error {
	return s.PacketStoreQoS12([]byte(id), &vlpersistence.PersistedPacket{Data: []byte(data)})
}

func mustFlush(t *testing.T, p *s3persist.Persistence) {
	t.Helper()
	if err := p.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

// state is every session's QoS 1/2 queue, read without removing anything.
type state map[string][]string

func dump(t *testing.T, p *s3persist.Persistence) state {
	t.Helper()
	s := sessions(t, p)
	var ids []string
	if err := s.LoadForEach(loaderFunc(func(id []byte) { ids = append(ids, string(id)) }), nil); err != nil {
		t.Fatalf("LoadForEach: %v", err)
	}
	out := state{}
	for _, id := range ids {
		var pkts []string
		err := s.PacketsForEachQoS12([]byte(id), nil, func(_ interface{}, pk *vlpersistence.PersistedPacket) (bool, error) {
			pkts = append(pkts, string(pk.Data))
			return false, nil
		})
		if err != nil {
			t.Fatalf("PacketsForEachQoS12(%q): %v", id, err)
		}
		out[id] = pkts
	}
	return out
}

type loaderFunc func(id []byte)

func (f loaderFunc) LoadSession(_ interface{}, id []byte, _ *vlpersistence.SessionState) error {
	f(id)
	return nil
}

func equal(a, b state) bool {
	if len(a) != len(b) {
		return false
	}
	for id, pa := range a {
		pb, ok := b[id]
		if !ok || !slices.Equal(pa, pb) {
			return false
		}
	}
	return true
}

// waitFenced waits, bounded, for p to notice that it lost the prefix.
func waitFenced(t *testing.T, p *s3persist.Persistence, within time.Duration) {
	t.Helper()
	select {
	case <-p.Fenced():
	case <-time.After(within):
		t.Fatalf("the old owner did not notice the takeover within %v", within)
	}
}

func waitsForRelease(t *testing.T, nb NewBucket) {
	bucket := nb(t)
	const ttl = 2 * time.Second
	a := open(t, bucket, s3persist.Config{LeaseTTL: ttl})
	sa := sessions(t, a)
	if err := sa.Create([]byte("c"), &vlpersistence.SessionBase{Timestamp: "t", Version: 4}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := store(sa, "c", "m1"); err != nil {
		t.Fatalf("store: %v", err)
	}
	type result struct {
		p   *s3persist.Persistence
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		p, err := openErr(ctx, bucket, s3persist.Config{LeaseTTL: ttl})
		done <- result{p, err}
	}()
	// The owner renews every ttl/3: a waiter may take over only after ttl+ttl/10 with no
	// renewal, which cannot happen while it runs.
	select {
	case r := <-done:
		if r.p != nil {
			_ = r.p.Shutdown()
		}
		t.Fatalf("a second instance opened the prefix while its owner was alive (err %v)", r.err)
	case <-time.After(ttl + ttl/2):
	}
	if err := a.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting instance did not open after the owner released the prefix")
	}
	if r.err != nil {
		t.Fatalf("New after release: %v", r.err)
	}
	defer func() { _ = r.p.Shutdown() }()
	if got := dump(t, r.p); !equal(got, state{"c": {"m1"}}) {
		t.Fatalf("after the takeover: %v, want c: [m1]", got)
	}
}

func takeoverAfterLease(t *testing.T, nb NewBucket) {
	bucket := nb(t)
	const ttl = 2 * time.Second
	faulty := s3store.NewFaulty(bucket)
	a := open(t, faulty, s3persist.Config{LeaseTTL: ttl, Durability: s3persist.Sync})
	sa := sessions(t, a)
	if err := sa.Create([]byte("c"), &vlpersistence.SessionBase{Timestamp: "t", Version: 4}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := store(sa, "c", "before"); err != nil {
		t.Fatalf("store: %v", err)
	}
	faulty.SetFailing(true) // a is cut off: it can neither renew nor write
	start := time.Now()
	b := open(t, bucket, s3persist.Config{LeaseTTL: ttl})
	defer func() { _ = b.Shutdown() }()
	if waited := time.Since(start); waited < ttl {
		t.Fatalf("took over after %v, before the lease of %v could have expired", waited, ttl)
	}
	want := dump(t, b)
	if !equal(want, state{"c": {"before"}}) {
		t.Fatalf("the new owner loaded %v, want c: [before]", want)
	}
	faulty.SetFailing(false) // a comes back: it must find out and write nothing
	deadline := time.Now().Add(10 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = store(sa, "c", "after"); errors.Is(err, s3persist.ErrFenced) {
			break
		}
		time.Sleep(ttl / 10)
	}
	if !errors.Is(err, s3persist.ErrFenced) {
		t.Fatalf("a store by the old owner returned %v, want ErrFenced", err)
	}
	waitFenced(t, a, 10*time.Second)
	if err := a.Flush(context.Background()); !errors.Is(err, s3persist.ErrFenced) {
		t.Fatalf("Flush of the fenced owner: %v, want ErrFenced", err)
	}
	_ = a.Shutdown()
	if err := b.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	c := open(t, bucket, s3persist.Config{})
	defer func() { _ = c.Shutdown() }()
	if got := dump(t, c); !equal(got, want) {
		t.Fatalf("after the fenced owner's attempts: %v, want %v", got, want)
	}
}

func forceTakeoverFencesLiveOwner(t *testing.T, nb NewBucket) {
	bucket := nb(t)
	const ttl = 3 * time.Second
	a := open(t, bucket, s3persist.Config{LeaseTTL: ttl, FlushInterval: 20 * time.Millisecond})
	sa := sessions(t, a)
	for _, id := range []string{"x", "y"} {
		if err := sa.Create([]byte(id), &vlpersistence.SessionBase{Timestamp: "t", Version: 4}); err != nil {
			t.Fatalf("Create: %v", err)
		}
	}
	if err := a.Checkpoint(context.Background()); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	// a keeps writing to x (and checkpointing) until it finds out; bounded in count.
	var stores atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; i < 20000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := store(sa, "x", "a-"+strconv.Itoa(i)); err != nil {
				if !errors.Is(err, s3persist.ErrFenced) {
					t.Errorf("store by the old owner: %v, want ErrFenced once it fails", err)
				}
				return
			}
			stores.Add(1)
			if i%200 == 199 {
				_ = a.Checkpoint(context.Background()) // may fail once fenced
			}
			time.Sleep(time.Millisecond)
		}
	})
	for stores.Load() < 100 {
		time.Sleep(5 * time.Millisecond)
	}
	atTakeover := stores.Load()
	b := open(t, bucket, s3persist.Config{LeaseTTL: ttl, ForceTakeover: true})
	sb := sessions(t, b)
	if err := store(sb, "y", "b-1"); err != nil {
		t.Fatalf("store by the new owner: %v", err)
	}
	waitFenced(t, a, 2*ttl)
	close(stop)
	wg.Wait()
	t.Logf("the old owner accepted %d stores from the start of the takeover until it found out", stores.Load()-atTakeover)
	if err := a.Flush(context.Background()); !errors.Is(err, s3persist.ErrFenced) {
		t.Fatalf("Flush of the fenced owner: %v, want ErrFenced", err)
	}
	if err := a.Checkpoint(context.Background()); err == nil {
		t.Fatal("a checkpoint of the fenced owner succeeded")
	}
	if err := a.Shutdown(); !errors.Is(err, s3persist.ErrFenced) {
		t.Fatalf("Shutdown of the fenced owner: %v, want ErrFenced", err)
	}
	want := dump(t, b)
	if got := want["y"]; !slices.Equal(got, []string{"b-1"}) {
		t.Fatalf("the new owner's y: %v, want [b-1]", got)
	}
	if err := b.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	c := open(t, bucket, s3persist.Config{})
	defer func() { _ = c.Shutdown() }()
	if got := dump(t, c); !equal(got, want) {
		t.Fatalf("the fenced owner changed the new owner's state:\n got %v\nwant %v", summary(got), summary(want))
	}
	// Whatever the fenced owner uploaded late is deleted by the next checkpoint.
	if err := sessions(t, c).Create([]byte("z"), &vlpersistence.SessionBase{Timestamp: "t", Version: 4}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := c.Checkpoint(context.Background()); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	if keys := list(t, bucket, "j/"); len(keys) != 0 {
		t.Fatalf("journal segments left after a checkpoint: %v", keys)
	}
}

func summary(s state) string {
	out := ""
	for _, id := range slices.Sorted(func(yield func(string) bool) {
		for id := range s {
			if !yield(id) {
				return
			}
		}
	}) {
		p := s[id]
		last := ""
		if len(p) > 0 {
			last = p[len(p)-1]
		}
		out += fmt.Sprintf("%s: %d packets (last %q); ", id, len(p), last)
	}
	return out
}

func list(t *testing.T, s s3store.Store, prefix string) []string {
	t.Helper()
	var keys []string
	if err := s3store.ListAll(context.Background(), s, prefix, func(o s3store.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatalf("List: %v", err)
	}
	return keys
}

// lostAck applies the next put of the ownership record and then reports a failure, as
// a response lost on the way back would.
type lostAck struct {
	s3store.Store
	armed atomic.Bool
}

func (l *lostAck) Put(ctx context.Context, key string, data []byte, opts s3store.PutOptions) (s3store.ObjectInfo, error) {
	info, err := l.Store.Put(ctx, key, data, opts)
	if err == nil && key == "owner" && l.armed.CompareAndSwap(true, false) {
		return s3store.ObjectInfo{}, errors.New("fencetest: connection reset after the request was sent")
	}
	return info, err
}

func lostRenewalAck(t *testing.T, nb NewBucket) {
	bucket := &lostAck{Store: nb(t)}
	p := open(t, bucket, s3persist.Config{LeaseTTL: time.Hour}) // no background renewal
	defer func() { _ = p.Shutdown() }()
	s := sessions(t, p)
	if err := s.Create([]byte("c"), &vlpersistence.SessionBase{Timestamp: "t", Version: 4}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	mustFlush(t, p)
	bucket.armed.Store(true)
	if err := p.Checkpoint(context.Background()); err == nil || errors.Is(err, s3persist.ErrFenced) {
		t.Fatalf("checkpoint whose renewal lost its response: %v, want a failure that is not ErrFenced", err)
	}
	// The next renewal's condition fails (the lost one landed): the record still names
	// this instance, so it is adopted.
	if err := p.Checkpoint(context.Background()); err != nil {
		t.Fatalf("checkpoint after the lost acknowledgement: %v", err)
	}
	select {
	case <-p.Fenced():
		t.Fatal("the instance fenced itself over its own renewal")
	default:
	}
	if err := store(s, "c", "m"); err != nil {
		t.Fatalf("store: %v", err)
	}
	mustFlush(t, p)
}

// unconditional ignores the conditions of every put.
type unconditional struct{ s3store.Store }

func (u unconditional) Put(ctx context.Context, key string, data []byte, _ s3store.PutOptions) (s3store.ObjectInfo, error) {
	return u.Store.Put(ctx, key, data, s3store.PutOptions{})
}

func refusesStoreWithoutConditions(t *testing.T, nb NewBucket) {
	_, err := openErr(context.Background(), unconditional{nb(t)}, s3persist.Config{})
	if !errors.Is(err, s3persist.ErrNoConditionalWrites) {
		t.Fatalf("New on a store without conditional writes: %v, want ErrNoConditionalWrites", err)
	}
}

// Takeovers runs how many takeovers repeatedTakeovers makes: S3PERSIST_TAKEOVERS, or 10.
func Takeovers() int {
	if n, err := strconv.Atoi(os.Getenv("S3PERSIST_TAKEOVERS")); err == nil && n > 0 {
		return n
	}
	return 10
}

// repeatedTakeovers hands the prefix from instance to instance, alternating a clean
// release, a crash taken over after the lease, and a forced takeover of a live owner
// that keeps writing; every round checks that what was flushed before it is all there.
func repeatedTakeovers(t *testing.T, nb NewBucket) {
	bucket := nb(t)
	const ttl = time.Second
	want := state{}
	faulty := s3store.NewFaulty(bucket)
	cur := open(t, faulty, s3persist.Config{LeaseTTL: ttl})
	n := Takeovers()
	for round := range n {
		id := "r" + strconv.Itoa(round%4)
		s := sessions(t, cur)
		if err := s.Create([]byte(id), &vlpersistence.SessionBase{Timestamp: "t", Version: 4}); err != nil && err != vlpersistence.ErrAlreadyExists {
			t.Fatalf("round %d: Create: %v", round, err)
		}
		if _, ok := want[id]; !ok {
			want[id] = nil
		}
		for i := range 5 {
			msg := fmt.Sprintf("%d-%d", round, i)
			if err := store(s, id, msg); err != nil {
				t.Fatalf("round %d: store: %v", round, err)
			}
			want[id] = append(want[id], msg)
		}
		mustFlush(t, cur)
		if round%3 == 1 {
			if err := cur.Checkpoint(context.Background()); err != nil {
				t.Fatalf("round %d: Checkpoint: %v", round, err)
			}
		}
		nextFaulty := s3store.NewFaulty(bucket)
		var next *s3persist.Persistence
		switch round % 3 {
		case 0: // clean handover
			if err := cur.Shutdown(); err != nil {
				t.Fatalf("round %d: Shutdown: %v", round, err)
			}
			next = open(t, nextFaulty, s3persist.Config{LeaseTTL: ttl})
		case 1: // crash, taken over after the lease
			faulty.SetFailing(true)
			next = open(t, nextFaulty, s3persist.Config{LeaseTTL: ttl})
			_ = cur.Shutdown()
		case 2: // forced takeover of a live owner, which keeps trying to write
			next = open(t, nextFaulty, s3persist.Config{LeaseTTL: ttl, ForceTakeover: true})
			old := sessions(t, cur)
			deadline := time.Now().Add(5 * time.Second)
			for i := 0; time.Now().Before(deadline); i++ {
				if err := store(old, id, "late"); err != nil {
					break
				}
				time.Sleep(ttl / 50)
			}
			waitFenced(t, cur, 5*time.Second)
			_ = cur.Shutdown()
		}
		got := dump(t, next)
		if !equal(got, want) {
			t.Fatalf("round %d: after the takeover:\n got %v\nwant %v", round, summary(got), summary(want))
		}
		cur, faulty = next, nextFaulty
	}
	if err := cur.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	t.Logf("%d takeovers (clean, after a lease, forced), nothing flushed was lost", n)
}
