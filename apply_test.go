package s3persist

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist/batching"
	"github.com/s3persist/s3persist/s3store"
)

// journalHold is a store that holds the next journal segment put, once armed, until
// released: a slow upload on one journal stream.
type journalHold struct {
	s3store.Store
	mu      sync.Mutex
	armed   bool
	held    chan struct{} // closed when the held put arrived
	release chan struct{} // closed by the test to let it land
}

func (h *journalHold) arm() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed, h.held, h.release = true, make(chan struct{}), make(chan struct{})
}

func (h *journalHold) Put(ctx context.Context, key string, data []byte, opts s3store.PutOptions) (s3store.ObjectInfo, error) {
	h.mu.Lock()
	hold := h.armed && strings.HasPrefix(key, journalRoot)
	var release chan struct{}
	if hold {
		h.armed = false
		close(h.held)
		release = h.release
	}
	h.mu.Unlock()
	if hold {
		select {
		case <-release:
		case <-ctx.Done():
			return s3store.ObjectInfo{}, ctx.Err()
		}
	}
	return h.Store.Put(ctx, key, data, opts)
}

// openOn opens an instance on store with test-friendly timers: checkpoints and lease
// renewals only when the test asks.
func openOn(t *testing.T, store s3store.Store, cfg Config) (*Persistence, vlpersistence.Sessions) {
	t.Helper()
	cfg.Store = store
	cfg.CheckpointInterval, cfg.LeaseTTL = time.Hour, time.Hour
	p, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s, _ := p.Sessions()
	return p, s
}

// recoverAfterCrash cuts the instance off from storage, as a dead process, and opens a
// new one on the same bucket.
func recoverAfterCrash(t *testing.T, old *Persistence, cut *s3store.Faulty, mem *s3store.Memory) vlpersistence.Sessions {
	t.Helper()
	cut.SetFailing(true)
	_ = old.Shutdown() // stops its goroutines; nothing of it reaches the store
	p, s := openOn(t, mem, Config{ForceTakeover: true})
	t.Cleanup(func() { _ = p.Shutdown() })
	return s
}

// Bug: in Sync mode a session's records could go to different journal streams, and
// replay created a session from any state record. SubscriptionsStore's upload on one
// stream was slow; Delete went to another stream, became durable and returned nil; a
// checkpoint forgot the session and deleted Delete's segment; the slow segment landed
// and the process crashed: the deleted session came back, without its packets.
func TestASyncDeleteThatReturnedNilStaysDeletedWhenAnEarlierRecordLandsLate(t *testing.T) {
	mem := s3store.NewMemory()
	hold := &journalHold{Store: mem}
	cut := s3store.NewFaulty(hold)
	p, s := openOn(t, cut, Config{Durability: Sync, JournalStreams: 2})
	id := []byte("x")
	if err := s.Create(id, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.PacketStoreQoS12(id, pkt("q1")); err != nil {
		t.Fatal(err)
	}

	hold.arm()
	subscribed := make(chan error, 1)
	go func() { subscribed <- s.SubscriptionsStore(id, []byte("subs")) }() // owned: received below
	<-hold.held
	deleted := make(chan error, 1)
	go func() { deleted <- s.Delete(id) }() // owned: received below
	// The Delete is applied in memory before it waits for durability.
	for deadline := time.Now().Add(10 * time.Second); s.Exists(id); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Delete was not applied in memory within 10s")
		}
	}
	if err := p.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	close(hold.release)
	if err := <-subscribed; err != nil {
		t.Fatalf("SubscriptionsStore: %v", err)
	}
	if err := <-deleted; err != nil {
		t.Fatalf("Delete: %v", err)
	}

	s2 := recoverAfterCrash(t, p, cut, mem)
	if s2.Exists(id) {
		var subs string
		_ = s2.LoadForEach(loaderFunc(func(id []byte, st *vlpersistence.SessionState) error {
			subs = string(st.Subscriptions)
			return nil
		}), nil)
		t.Fatalf("the deleted session came back after the crash (subscriptions %q); Delete had returned nil", subs)
	}
	if n := s2.Count(); n != 0 {
		t.Fatalf("Count = %d after recovery, want 0", n)
	}
}

// checkpointAfterAppend is the journal as commit sees it, with a checkpoint run right
// after a record is appended and durable, before commit goes on: the widest the gap
// between append and application can be.
type checkpointAfterAppend struct {
	recordJournal
	p    *Persistence
	once sync.Once
	ran  chan error // the checkpoint's result
}

func (c *checkpointAfterAppend) add(ctx context.Context, hh int, prev batching.Ticket, prevStream int, rec []byte, urgent bool) (batching.Ticket, int, error) {
	t, stream, err := c.recordJournal.add(ctx, hh, prev, prevStream, rec, urgent)
	if err != nil {
		return t, stream, err
	}
	c.once.Do(func() {
		if err := t.Wait(ctx); err != nil {
			c.ran <- err
			return
		}
		done := make(chan error, 1)
		go func() { done <- c.p.Checkpoint(context.Background()) }() // owned: its result goes to c.ran
		select {
		case err := <-done:
			c.ran <- err // it needed nothing of this session
		case <-time.After(time.Second):
			// It waits for this session, whose lock the caller holds: it will include
			// the change. Let commit go on; the test collects its result.
			go func() { c.ran <- <-done }() // owned: ends when the checkpoint does
		}
	})
	return t, stream, nil
}

// Bug: a record was appended to the journal before its index shard was marked dirty.
// If its segment became durable in that gap and a checkpoint ran, the checkpoint
// counted the segment as covered without rewriting the shard, and deleted it: a crash
// before the next checkpoint lost the change, even that of a Sync call that returned
// nil.
func TestACheckpointBetweenAppendAndApplyDoesNotLoseTheRecord(t *testing.T) {
	mem := s3store.NewMemory()
	cut := s3store.NewFaulty(mem)
	p, s := openOn(t, cut, Config{Durability: Sync})
	id := []byte("x")
	if err := s.Create(id, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	hook := &checkpointAfterAppend{recordJournal: p.records, p: p, ran: make(chan error, 1)}
	p.records = hook
	if err := s.SubscriptionsStore(id, []byte("subs")); err != nil {
		t.Fatalf("SubscriptionsStore: %v", err)
	}
	if err := <-hook.ran; err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}

	s2 := recoverAfterCrash(t, p, cut, mem)
	var subs string
	found := false
	if err := s2.LoadForEach(loaderFunc(func(got []byte, st *vlpersistence.SessionState) error {
		found, subs = string(got) == string(id), string(st.Subscriptions)
		return nil
	}), nil); err != nil {
		t.Fatal(err)
	}
	if !found || subs != "subs" {
		t.Fatalf("after the crash: session found %v, subscriptions %q; want the change SubscriptionsStore returned nil for", found, subs)
	}
}

// Bug (found by the simulation, seed 897): in Sync mode a PacketsDelete that found the
// queues already emptied by another PacketsDelete, still in flight, returned nil at once.
// The first one's record was then lost in a crash, and the packets came back although a
// Sync call that empties the queues had returned nil.
func TestASyncCallThatChangesNothingWaitsForTheChangeItRestsOn(t *testing.T) {
	mem := s3store.NewMemory()
	cut := s3store.NewFaulty(mem)
	hold := &journalHold{Store: cut} // above the cut: a held put has not reached the store
	p, s := openOn(t, hold, Config{Durability: Sync, CallTimeout: 500 * time.Millisecond, ShutdownTimeout: 100 * time.Millisecond})
	id := []byte("x")
	if err := s.Create(id, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.PacketStoreQoS12(id, pkt("q1")); err != nil {
		t.Fatal(err)
	}
	hold.arm()
	first := make(chan error, 1)
	go func() { first <- s.PacketsDelete(id) }() // owned: received below
	<-hold.held
	second := make(chan error, 1)
	go func() { second <- s.PacketsDelete(id) }() // owned: received below

	// The process dies: the first PacketsDelete's segment never lands.
	cut.SetFailing(true)
	close(hold.release)
	if err := <-second; err == nil {
		t.Fatal("the second PacketsDelete returned nil while the removal it rests on was not durable")
	}
	if err := <-first; err == nil {
		t.Fatal("the first PacketsDelete returned nil though its record never landed")
	}
	s2 := recoverAfterCrash(t, p, cut, mem)
	if n, err := s2.PacketCountQoS12(id); err != nil || n != 1 {
		t.Fatalf("after the crash: %d packets, %v; want the one no returned call removed", n, err)
	}
}

// A first checkpoint that wrote a session's packets into a pack and died before its
// index delta leaves the packets both in the pack and in the journal. The next New
// replays the journal: each packet is queued once, in order, and the pack that no index
// names is garbage.
func TestAReplayAfterACheckpointThatDiedBeforeItsIndexQueuesEachPacketOnce(t *testing.T) {
	mem := s3store.NewMemory()
	noShards := &hookStore{Store: mem, onPut: func(key string) error {
		if strings.HasPrefix(key, deltaRoot) || strings.HasPrefix(key, indexRoot) {
			return errors.New("index objects refused")
		}
		return nil
	}}
	cut := s3store.NewFaulty(noShards)
	p, s := openOn(t, cut, Config{Durability: Sync})
	id := []byte("x")
	if err := s.Create(id, nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"p1", "p2"} {
		if err := s.PacketStoreQoS12(id, pkt(d)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Checkpoint(context.Background()); err == nil {
		t.Fatal("Checkpoint succeeded though every index put was refused")
	}
	if !slices.ContainsFunc(mem.Keys(), func(k string) bool { return strings.HasPrefix(k, packRoot) }) {
		t.Fatalf("no pack was written before the index failed: %v", mem.Keys())
	}

	s2 := recoverAfterCrash(t, p, cut, mem)
	var got []string
	if err := s2.PacketsForEachQoS12(id, nil, func(_ interface{}, pk *vlpersistence.PersistedPacket) (bool, error) {
		got = append(got, string(pk.Data))
		return false, nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "p1,p2" {
		t.Fatalf("queue after the replay: %v, want [p1 p2]", got)
	}
}
