package s3persist

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist/s3store"
)

// Tests of what bounds a start-up and a Sync shutdown: the checkpoint that the journal's
// segment count starts, and BeginShutdown.

// journalRequests counts the GETs and PUTs of journal segments (keys under "j/").
type journalRequests struct {
	s3store.Store
	gets, puts atomic.Int64
}

func (j *journalRequests) Get(ctx context.Context, key string) ([]byte, s3store.ObjectInfo, error) {
	if strings.HasPrefix(key, "j/") {
		j.gets.Add(1)
	}
	return j.Store.Get(ctx, key)
}

func (j *journalRequests) Put(ctx context.Context, key string, data []byte, opts s3store.PutOptions) (s3store.ObjectInfo, error) {
	if strings.HasPrefix(key, "j/") {
		j.puts.Add(1)
	}
	return j.Store.Put(ctx, key, data, opts)
}

// syncCalls creates n sessions and stores a packet to each from 8 goroutines, in Sync
// mode: a segment per call or per few calls, none with more than 256 bytes of payload.
func syncCalls(t *testing.T, s vlpersistence.Sessions, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < n; i += 8 {
				id := fmt.Appendf(nil, "client-%04d", i)
				if err := s.Create(id, &vlpersistence.SessionBase{Timestamp: "t", Version: 4}); err != nil {
					errs <- err
					return
				}
				if err := s.PacketStoreQoS12(id, &vlpersistence.PersistedPacket{Data: []byte("payload")}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// checkSessionsWithOnePacket checks that the n sessions of syncCalls are all there, each
// with its packet.
func checkSessionsWithOnePacket(t *testing.T, p *Persistence, n int) {
	t.Helper()
	s, _ := p.Sessions()
	if got := s.Count(); got != uint64(n) {
		t.Fatalf("%d sessions after the restart, want %d", got, n)
	}
	for i := range n {
		id := fmt.Appendf(nil, "client-%04d", i)
		packets := 0
		if err := s.PacketsForEachQoS12(id, nil, func(interface{}, *vlpersistence.PersistedPacket) (bool, error) {
			packets++
			return false, nil
		}); err != nil || packets != 1 {
			t.Fatalf("%s: %d packets (%v), want 1", id, packets, err)
		}
	}
}

// Sync calls carry next to no payload, so CheckpointBytes never starts a checkpoint for
// them; CheckpointSegments does, and bounds what a restart reads.
func TestSyncCallsStartCheckpointsThatBoundTheJournalARestartReads(t *testing.T) {
	const maxSegments, sessions = 20, 200
	mem := s3store.NewMemory()
	p, err := New(context.Background(), Config{Store: mem, Durability: Sync, CheckpointSegments: maxSegments})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := p.Sessions()
	syncCalls(t, s, sessions)
	// A change starts a checkpoint when the journal has reached its bound: one more,
	// after the last upload of the calls above.
	if err := s.SubscriptionsStore([]byte("client-0000"), []byte("topic:1")); err != nil {
		t.Fatal(err)
	}
	// The checkpoints run in the background: wait (bounded) until the last one is done.
	deadline := time.Now().Add(10 * time.Second)
	for p.Stats().UncoveredSegments >= maxSegments {
		if time.Now().After(deadline) {
			t.Fatalf("%d journal segments are not covered after 10 s (CheckpointSegments %d, %d checkpoints)",
				p.Stats().UncoveredSegments, maxSegments, p.Stats().Checkpoints)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p.Stats().Checkpoints == 0 {
		t.Fatal("no checkpoint ran")
	}
	// A crash: the next instance takes over without a Shutdown of this one.
	counted := &journalRequests{Store: mem}
	next, err := New(context.Background(), Config{Store: counted, Durability: Sync, ForceTakeover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = next.Shutdown() }()
	if got := counted.gets.Load(); got >= maxSegments {
		t.Fatalf("the restart read %d journal segments, want fewer than CheckpointSegments (%d)", got, maxSegments)
	}
	checkSessionsWithOnePacket(t, next, sessions)
}

func TestCheckpointSegmentsValidates(t *testing.T) {
	if err := (Config{Store: s3store.NewMemory(), CheckpointSegments: -1}).Validate(); err == nil ||
		!strings.Contains(err.Error(), "CheckpointSegments") {
		t.Fatalf("Validate of a negative CheckpointSegments: %v", err)
	}
}

// After BeginShutdown, Sync calls share segments that Shutdown makes durable, instead of
// a segment (a round trip) each; Shutdown still loses nothing.
func TestBeginShutdownLetsSyncCallsShareTheFinalFlush(t *testing.T) {
	const sessions = 200
	mem := s3store.NewMemory()
	counted := &journalRequests{Store: mem}
	// A FlushInterval longer than the test: only Shutdown cuts the batches.
	p, err := New(context.Background(), Config{Store: counted, Durability: Sync, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := p.Sessions()
	p.BeginShutdown()
	syncCalls(t, s, sessions)
	if got := counted.puts.Load(); got != 0 {
		t.Fatalf("%d journal segments written before Shutdown, want 0: calls after BeginShutdown must not cut batches", got)
	}
	if err := p.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if got := counted.puts.Load(); got == 0 || got > int64(p.cfg.JournalStreams) {
		t.Fatalf("Shutdown wrote %d journal segments for %d calls, want 1 to %d (one per stream)", got, 2*sessions, p.cfg.JournalStreams)
	}
	next, err := New(context.Background(), Config{Store: mem, Durability: Sync})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = next.Shutdown() }()
	checkSessionsWithOnePacket(t, next, sessions)
}

// A crash after BeginShutdown loses only what was called after it: a Sync call that
// returned before it stays durable.
func TestACrashAfterBeginShutdownKeepsWhatSyncCallsReturnedBefore(t *testing.T) {
	const sessions = 40
	mem := s3store.NewMemory()
	cut := s3store.NewFaulty(mem)
	p, err := New(context.Background(), Config{Store: cut, Durability: Sync, FlushInterval: time.Hour, ShutdownTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Shutdown() }()
	s, _ := p.Sessions()
	syncCalls(t, s, sessions)
	p.BeginShutdown()
	if err := s.Create([]byte("after"), &vlpersistence.SessionBase{Version: 4}); err != nil {
		t.Fatal(err)
	}
	// The same sessions change again, after BeginShutdown: their records follow the
	// durable ones on any stream.
	for i := range sessions {
		if err := s.PacketsDelete(fmt.Appendf(nil, "client-%04d", i)); err != nil {
			t.Fatal(err)
		}
	}
	cut.SetFailing(true) // the process dies: nothing more of it lands
	next, err := New(context.Background(), Config{Store: mem, Durability: Sync, ForceTakeover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = next.Shutdown() }()
	checkSessionsWithOnePacket(t, next, sessions)
	ns, _ := next.Sessions()
	if ns.Exists([]byte("after")) {
		t.Fatal(`"after" exists: a change made after BeginShutdown landed although no batch was cut`)
	}
}

// failingSegmentGets fails the GETs of journal segments after the first ok of them.
type failingSegmentGets struct {
	s3store.Store
	ok   int64
	gets atomic.Int64
}

var errSegmentGet = fmt.Errorf("injected: the store did not answer")

func (f *failingSegmentGets) Get(ctx context.Context, key string) ([]byte, s3store.ObjectInfo, error) {
	if strings.HasPrefix(key, "j/") && f.gets.Add(1) > f.ok {
		return nil, s3store.ObjectInfo{}, errSegmentGet
	}
	return f.Store.Get(ctx, key)
}

// New reads many journal segments at once; one it cannot read fails New, which opens
// no partial state, and a New that can read them all finds everything.
func TestANewThatCannotReadAJournalSegmentFailsAndLosesNothing(t *testing.T) {
	const sessions = 150
	mem := s3store.NewMemory()
	p, err := New(context.Background(), Config{Store: mem, Durability: Sync, CheckpointSegments: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := p.Sessions()
	syncCalls(t, s, sessions)
	// A crash, then a successor whose reads of segments fail after the first 100.
	_, err = New(context.Background(), Config{Store: &failingSegmentGets{Store: mem, ok: 100}, Durability: Sync,
		ForceTakeover: true, ShutdownTimeout: time.Second})
	if !errors.Is(err, errSegmentGet) {
		t.Fatalf("New with unreadable journal segments: %v, want an error wrapping %v", err, errSegmentGet)
	}
	next, err := New(context.Background(), Config{Store: mem, Durability: Sync, ForceTakeover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = next.Shutdown() }()
	checkSessionsWithOnePacket(t, next, sessions)
}
