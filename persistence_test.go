package s3persist

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist/persistencetest"
	"github.com/s3persist/s3persist/s3store"
)

// memoryBackend runs the conformance suite on s3persist over an in-memory store behind a
// fault switch, in one durability mode. Reopen opens a new instance on the same store
// after Shutdown. In Sync mode, Crash opens one without Shutdown, with the old instance
// cut off from storage as a dead process would be (G3). Break makes every request of the
// instance fail.
func memoryBackend(prefix string, mode Durability) persistencetest.Backend {
	var mu sync.Mutex
	stores := map[vlpersistence.IFace]*s3store.Faulty{}
	// force: the previous instance died without releasing the prefix (a crash).
	open := func(t testing.TB, mem *s3store.Memory, force bool) vlpersistence.IFace {
		store := s3store.NewFaulty(mem)
		p, err := New(context.Background(), Config{Store: store, Prefix: prefix, Durability: mode, ForceTakeover: force,
			// Broken storage must fail calls quickly in G2, not after the defaults.
			CallTimeout: time.Second, ShutdownTimeout: time.Second})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		mu.Lock()
		stores[p] = store
		mu.Unlock()
		return p
	}
	faulty := func(inst vlpersistence.IFace) *s3store.Faulty {
		mu.Lock()
		defer mu.Unlock()
		return stores[inst]
	}
	b := persistencetest.Backend{
		Open: func(t testing.TB) vlpersistence.IFace { return open(t, s3store.NewMemory(), false) },
		Reopen: func(t testing.TB, old vlpersistence.IFace) vlpersistence.IFace {
			if err := old.Shutdown(); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			return open(t, faulty(old).Unwrap().(*s3store.Memory), false)
		},
		Break: func(t testing.TB, inst vlpersistence.IFace) { faulty(inst).SetFailing(true) },
	}
	if mode == Sync {
		b.Crash = func(t testing.TB, old vlpersistence.IFace) vlpersistence.IFace {
			f := faulty(old)
			f.SetFailing(true)
			return open(t, f.Unwrap().(*s3store.Memory), true)
		}
	}
	return b
}

func TestConformanceAsync(t *testing.T) { persistencetest.Run(t, memoryBackend("", Async)) }

func TestConformanceSync(t *testing.T) { persistencetest.Run(t, memoryBackend("", Sync)) }

func TestConformanceAsyncWithPrefix(t *testing.T) {
	persistencetest.Run(t, memoryBackend("brokers/eu-1/", Async))
}

// fixture is an instance over a counting in-memory store behind a fault switch.
type fixture struct {
	t      *testing.T
	cfg    Config
	mem    *s3store.Memory
	faulty *s3store.Faulty
	count  *s3store.Counting
	p      *Persistence
	s      vlpersistence.Sessions
}

func newFixture(t *testing.T, cfg Config) *fixture {
	f := &fixture{t: t, cfg: cfg, mem: s3store.NewMemory()}
	f.open()
	t.Cleanup(func() { _ = f.p.Shutdown() })
	return f
}

// open opens a new instance over the fixture's bucket.
func (f *fixture) open() { f.openAfter(false) }

// openAfter opens a new instance; crashed says the previous one died without releasing
// the prefix, so the new one takes it over at once, as an operator who knows it is
// gone would (Config.ForceTakeover).
func (f *fixture) openAfter(crashed bool) {
	f.t.Helper()
	f.faulty = s3store.NewFaulty(f.mem)
	f.count = s3store.NewCounting(f.faulty)
	cfg := f.cfg
	cfg.Store = f.count
	cfg.ForceTakeover = cfg.ForceTakeover || crashed
	if cfg.CheckpointInterval == 0 {
		cfg.CheckpointInterval = time.Hour // tests call Checkpoint themselves
	}
	if cfg.LeaseTTL == 0 {
		cfg.LeaseTTL = time.Hour // no background renewal in the request counts
	}
	p, err := New(context.Background(), cfg)
	if err != nil {
		f.t.Fatalf("New: %v", err)
	}
	f.p = p
	f.s, _ = p.Sessions()
	f.count.Reset()
}

// crash abandons the instance as a dead process would (it can reach storage no more)
// and opens a new one.
func (f *fixture) crash() {
	f.t.Helper()
	f.faulty.SetFailing(true)
	old := f.p
	f.openAfter(true)
	_ = old.Shutdown() // releases its goroutines; it cannot write any more
}

// restart shuts the instance down and opens a new one.
func (f *fixture) restart() {
	f.t.Helper()
	if err := f.p.Shutdown(); err != nil {
		f.t.Fatalf("Shutdown: %v", err)
	}
	f.open()
}

func (f *fixture) requests() int64 { return f.count.Stats().Requests() }

func (f *fixture) flush() {
	f.t.Helper()
	if err := f.p.Flush(context.Background()); err != nil {
		f.t.Fatalf("Flush: %v", err)
	}
}

func (f *fixture) checkpoint() {
	f.t.Helper()
	if err := f.p.Checkpoint(context.Background()); err != nil {
		f.t.Fatalf("Checkpoint: %v", err)
	}
}

func (f *fixture) keys(prefix string) []string {
	var out []string
	for _, k := range f.mem.Keys() {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out
}

func pkt(s string) *vlpersistence.PersistedPacket {
	return &vlpersistence.PersistedPacket{Data: []byte(s)}
}

func (f *fixture) drain(id string, q func(id []byte, ctx interface{}, l vlpersistence.PacketLoader) error, keep func(string) bool) []string {
	f.t.Helper()
	var got []string
	err := q([]byte(id), nil, func(_ interface{}, p *vlpersistence.PersistedPacket) (bool, error) {
		got = append(got, string(p.Data))
		return !keep(string(p.Data)), nil
	})
	if err != nil {
		f.t.Fatalf("PacketsForEach %q: %v", id, err)
	}
	return got
}

// keepNone and keepAll are keep functions for drain: remove every packet, or none.
func keepNone(string) bool { return false }
func keepAll(string) bool  { return true }

type loaderFunc func(id []byte, st *vlpersistence.SessionState) error

func (l loaderFunc) LoadSession(_ interface{}, id []byte, st *vlpersistence.SessionState) error {
	return l(id, st)
}

func (f *fixture) mustCreate(id string) {
	f.t.Helper()
	if err := f.s.Create([]byte(id), &vlpersistence.SessionBase{Timestamp: "t", Version: 4}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) mustStore(id, data string) {
	f.t.Helper()
	if err := f.s.PacketStoreQoS12([]byte(id), pkt(data)); err != nil {
		f.t.Fatal(err)
	}
}

func TestReadsOfEmptyOrMissingSessionsMakeNoRequest(t *testing.T) {
	f := newFixture(t, Config{})
	f.mustCreate("a")
	f.flush()
	f.count.Reset()
	for _, id := range []string{"a", "missing"} {
		f.s.Exists([]byte(id))
		f.s.Count()
		_, _ = f.s.PacketCountQoS12([]byte(id))
		f.drain(id, f.s.PacketsForEachQoS0, keepNone)
		f.drain(id, f.s.PacketsForEachQoS12, keepNone)
		f.drain(id, f.s.PacketsForEachUnAck, keepNone)
		if err := f.s.PacketsStore([]byte(id), vlpersistence.PersistedPackets{QoS12: []*vlpersistence.PersistedPacket{nil}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.s.LoadForEach(loaderFunc(func([]byte, *vlpersistence.SessionState) error { return nil }), nil); err != nil {
		t.Fatal(err)
	}
	if n := f.requests(); n != 0 {
		t.Fatalf("reads of empty and missing sessions made %d requests: %+v", n, f.count.Stats())
	}
}

// The fan-out case: one message to each of many sessions costs one journal segment per
// stream, not one request per session.
func TestStoresToManySessionsShareJournalSegments(t *testing.T) {
	f := newFixture(t, Config{JournalStreams: 4})
	for i := range 1000 {
		f.mustCreate(fmt.Sprint("s", i))
	}
	f.flush()
	f.count.Reset()
	for i := range 1000 {
		f.mustStore(fmt.Sprint("s", i), "m")
	}
	f.flush()
	if st := f.count.Stats(); st.Puts > 5 || st.Requests() != st.Puts {
		t.Fatalf("1,000 stores to 1,000 sessions and a Flush: %+v, want at most 5 puts (one per stream, and the renewal that confirms ownership after them)", st)
	}
}

// A packet stored and drained between two checkpoints never costs a per-client request,
// and the checkpoint after it deletes the journal without writing a batch for it.
func TestAPacketRemovedBeforeACheckpointCostsNoPerClientRequest(t *testing.T) {
	f := newFixture(t, Config{})
	f.mustCreate("a")
	f.checkpoint()
	for i := range 10 {
		f.mustStore("a", fmt.Sprint(i))
	}
	f.flush()
	if got := f.drain("a", f.s.PacketsForEachQoS12, keepNone); len(got) != 10 {
		t.Fatalf("drained %v", got)
	}
	f.flush()
	f.count.Reset()
	f.checkpoint()
	if k := f.keys(clientPrefix([]byte("a")) + batchDir); len(k) != 0 {
		t.Fatalf("a checkpoint after the drain wrote batches %v", k)
	}
	if k := f.keys(journalRoot); len(k) != 0 {
		t.Fatalf("the checkpoint left journal segments %v", k)
	}
	if st := f.count.Stats(); st.Gets != 0 || st.Puts != 3 {
		t.Fatalf("checkpoint: %+v, want three puts (the index shard, and the renewals of the lease before it and before the deletion) and no get", st)
	}
}

// After a checkpoint the journal is empty, the packets live in one batch per session, and
// a new process finds everything with a handful of requests: no GET per session.
func TestCheckpointMovesPacketsOutOfTheJournal(t *testing.T) {
	f := newFixture(t, Config{})
	for i := range 50 {
		id := fmt.Sprint("c", i)
		f.mustCreate(id)
		if err := f.s.SubscriptionsStore([]byte(id), []byte("subs-"+id)); err != nil {
			t.Fatal(err)
		}
		for j := range 3 {
			f.mustStore(id, fmt.Sprint(id, "-", j))
		}
	}
	f.flush()
	f.checkpoint()
	if k := f.keys(journalRoot); len(k) != 0 {
		t.Fatalf("journal segments left: %v", k)
	}
	// 50 sessions with small queues share one pack and one index delta: no object of
	// their own.
	if n := len(f.keys(clientsRoot)); n != 0 {
		t.Fatalf("%d objects under %s, want none", n, clientsRoot)
	}
	if p, d := len(f.keys(packRoot)), len(f.keys(deltaRoot)); p != 1 || d != 1 {
		t.Fatalf("%d packs and %d deltas, want 1 and 1", p, d)
	}
	f.restart()
	if st := f.count.Stats(); st.Gets > numShards+4 {
		t.Fatalf("New read %d objects for 50 sessions", st.Gets)
	}
	// New made its requests before Reset; reading the state needs none, the packets one
	// ranged GET of the pack per session (then cached).
	for i := range 50 {
		id := fmt.Sprint("c", i)
		got := f.drain(id, f.s.PacketsForEachQoS12, keepAll)
		if strings.Join(got, ",") != fmt.Sprintf("%s-0,%s-1,%s-2", id, id, id) {
			t.Fatalf("queue of %s after a checkpoint and a restart: %v", id, got)
		}
	}
	subs := 0
	err := f.s.LoadForEach(loaderFunc(func(id []byte, st *vlpersistence.SessionState) error {
		if string(st.Subscriptions) == "subs-"+string(id) {
			subs++
		}
		return nil
	}), nil)
	if err != nil || subs != 50 {
		t.Fatalf("LoadForEach: %v, %d sessions with their subscriptions", err, subs)
	}
}

// In Async mode, everything accepted before a Flush that returned nil survives a crash.
func TestAsyncCrashAfterFlushLosesNothing(t *testing.T) {
	f := newFixture(t, Config{})
	want := map[string][]string{}
	for i := range 20 {
		id := fmt.Sprint("c", i)
		f.mustCreate(id)
		for j := range 5 {
			f.mustStore(id, fmt.Sprint(j))
			want[id] = append(want[id], fmt.Sprint(j))
		}
		if i == 10 {
			f.flush()
			f.checkpoint() // half of it checkpointed, half only in the journal
		}
	}
	f.drain("c0", f.s.PacketsForEachQoS12, func(s string) bool { return s != "0" })
	want["c0"] = want["c0"][1:]
	if err := f.s.Delete([]byte("c1")); err != nil {
		t.Fatal(err)
	}
	delete(want, "c1")
	f.flush()
	f.crash()
	if n := f.s.Count(); n != uint64(len(want)) {
		t.Fatalf("after a crash: %d sessions, want %d", n, len(want))
	}
	for id, w := range want {
		if got := f.drain(id, f.s.PacketsForEachQoS12, keepAll); strings.Join(got, ",") != strings.Join(w, ",") {
			t.Fatalf("after a crash, queue of %s: %v, want %v", id, got, w)
		}
	}
}

// A checkpoint that dies at any request loses nothing: for every k, the k-th request of
// the checkpoint is not applied (CrashBefore) or applied with its answer lost
// (CrashAfter), all after it fail (the process died there), and a new instance finds
// every session and packet, in order. crash_test.go does the same for a whole workload.
func TestACheckpointDyingAtAnyRequestLosesNothing(t *testing.T) {
	for _, fault := range []s3store.Fault{s3store.CrashBefore, s3store.CrashAfter} {
		for k := int64(1); ; k++ {
			if !checkpointDyingAt(t, fault, k) {
				if k == 1 {
					t.Fatal("the checkpoint made no request")
				}
				t.Logf("checked a checkpoint dying (%v) at each of its %d requests", fault, k-1)
				break
			}
		}
	}
}

// checkpointDyingAt runs a checkpoint that dies at request k and checks what a new
// instance finds; it returns false when the checkpoint completed before request k.
func checkpointDyingAt(t *testing.T, fault s3store.Fault, k int64) bool {
	f := newFixture(t, Config{})
	want := map[string][]string{}
	for i := range 6 {
		id := fmt.Sprint("c", i)
		f.mustCreate(id)
		for j := range 3 {
			f.mustStore(id, fmt.Sprint(i, "-", j))
			want[id] = append(want[id], fmt.Sprint(i, "-", j))
		}
	}
	f.flush()
	f.checkpoint() // a first checkpoint, so the second has old batches to drop
	f.drain("c0", f.s.PacketsForEachQoS12, keepNone)
	want["c0"] = nil
	f.drain("c1", f.s.PacketsForEachQoS12, func(s string) bool { return s != "1-0" })
	want["c1"] = want["c1"][1:]
	if err := f.s.Delete([]byte("c2")); err != nil {
		t.Fatal(err)
	}
	delete(want, "c2")
	f.mustStore("c3", "3-3")
	want["c3"] = append(want["c3"], "3-3")
	f.flush()
	dying := s3store.NewInjector(f.count, s3store.FailNth(k, fault))
	f.p.store = dying
	err := f.p.Checkpoint(context.Background())
	dying.Kill()
	f.p.store = f.count
	f.crash()
	for id, w := range want {
		if got := f.drain(id, f.s.PacketsForEachQoS12, keepAll); strings.Join(got, ",") != strings.Join(w, ",") {
			t.Fatalf("checkpoint dying (%v) at request %d: queue of %s: %v, want %v", fault, k, id, got, w)
		}
	}
	if n := f.s.Count(); n != uint64(len(want)) {
		t.Fatalf("checkpoint dying (%v) at request %d: %d sessions, want %d", fault, k, n, len(want))
	}
	return err != nil
}

func TestCorruptObjectsAreReportedAndTheRestLoads(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	for i := range 20 {
		id := fmt.Sprint("good-", i)
		f.mustCreate(id)
		f.mustStore(id, "m")
	}
	big := strings.Repeat("B", ownBatchBytes) // a batch object of its own
	f.mustCreate("big")
	f.mustStore("big", big)
	f.flush()
	f.checkpoint()
	packs := f.keys(packRoot)
	batches := f.keys(clientPrefix([]byte("big")) + batchDir)
	if len(packs) != 1 || len(batches) != 1 {
		t.Fatalf("packs %v, batches of big %v: want one of each", packs, batches)
	}
	// A pack damaged inside good-1's range, a damaged batch object, a corrupt retained set.
	pack, _, err := f.mem.Get(ctx, packs[0])
	if err != nil {
		t.Fatal(err)
	}
	for i := range pack {
		pack[i] ^= 0x5a
	}
	for k, v := range map[string][]byte{packs[0]: pack, batches[0]: {0xa1}, keyRetained: []byte("not cbor")} {
		if _, err := f.mem.Put(ctx, k, v, s3store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f.restart()
	if n := f.s.Count(); n != 21 {
		t.Fatalf("Count = %d, want 21", n)
	}
	for _, id := range []string{"good-1", "big"} {
		err := f.s.PacketsForEachQoS12([]byte(id), nil, func(interface{}, *vlpersistence.PersistedPacket) (bool, error) { return true, nil })
		if !errors.Is(err, vlpersistence.ErrBrokenEntry) {
			t.Fatalf("draining %s from a damaged object: %v, want an error wrapping ErrBrokenEntry", id, err)
		}
		if n, _ := f.s.PacketCountQoS12([]byte(id)); n != 1 {
			t.Fatalf("the packet of the damaged object of %s was removed: count %d", id, n)
		}
	}
	r, _ := f.p.Retained()
	if _, err := r.Load(); !errors.Is(err, vlpersistence.ErrBrokenEntry) || !strings.Contains(err.Error(), keyRetained) {
		t.Fatalf("Retained.Load over a corrupt object: %v", err)
	}
	// A damaged session can still be deleted, its objects with it, and its id reused.
	if err := f.s.Delete([]byte("big")); err != nil {
		t.Fatal(err)
	}
	if err := f.s.Create([]byte("big"), nil); err != nil {
		t.Fatal(err)
	}
	// A corrupt journal segment is reported and left alone; the rest replays.
	f.mustStore("good-2", "later")
	f.flush()
	seg := f.keys(journalRoot)
	if len(seg) == 0 {
		t.Fatal("no journal segment")
	}
	if _, err := f.mem.Put(ctx, seg[0], []byte{0x00}, s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	f.restart()
	if _, _, err := f.mem.Get(ctx, seg[0]); err != nil {
		t.Fatalf("the corrupt segment was not left in place: %v", err)
	}
}

// An index object that cannot be read holds the only copy of its sessions' state: New
// stops with an error that names it, and changes nothing, rather than run without them.
func TestAnUnreadableIndexObjectStopsNewAndChangesNothing(t *testing.T) {
	for _, root := range []string{indexRoot, deltaRoot} {
		t.Run(strings.TrimSuffix(root, "/"), func(t *testing.T) {
			f := newFixture(t, Config{})
			ctx := context.Background()
			for i := range 20 {
				f.mustCreate(fmt.Sprint("s-", i))
			}
			f.flush()
			f.checkpoint()
			if root == indexRoot {
				if err := f.p.mergeIndex(ctx); err != nil {
					t.Fatal(err)
				}
				if n := f.p.Stats().IndexMerges; n != 1 {
					t.Fatalf("Stats().IndexMerges = %d after a merge", n)
				}
			}
			keys := f.keys(root)
			if len(keys) == 0 {
				t.Fatalf("nothing under %s", root)
			}
			if _, err := f.mem.Put(ctx, keys[0], []byte{0xa1}, s3store.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := f.p.Shutdown(); err != nil {
				t.Fatal(err)
			}
			before := f.mem.Keys()
			_, err := New(ctx, Config{Store: f.mem})
			if !errors.Is(err, vlpersistence.ErrBrokenEntry) || !strings.Contains(err.Error(), keys[0]) {
				t.Fatalf("New over a damaged %s: %v, want an error naming it and wrapping ErrBrokenEntry", keys[0], err)
			}
			if after := f.mem.Keys(); !slices.Equal(before, after) {
				t.Fatalf("New that failed changed the objects: %v, then %v", before, after)
			}
		})
	}
}

// Objects that no session needs (left by a crash between a batch upload and its index
// shard) are deleted by the garbage collection after start; everything else stays.
func TestGarbageOfEarlierProcessesIsCollected(t *testing.T) {
	f := newFixture(t, Config{})
	f.mustCreate("a")
	f.mustStore("a", "m")
	f.flush()
	f.checkpoint()
	ctx := context.Background()
	orphan := batchKey(clientPrefix([]byte("a")), 1)
	stray := clientPrefix([]byte("gone")) + sessionKeySuffix
	for _, k := range []string{orphan, stray} {
		if _, err := f.mem.Put(ctx, k, []byte("x"), s3store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f.restart()
	<-f.p.gcDone // the collector runs in the background
	if err := f.p.Shutdown(); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{orphan, stray} {
		if _, _, err := f.mem.Get(ctx, k); !errors.Is(err, s3store.ErrNotFound) {
			t.Fatalf("garbage %q was not collected: %v", k, err)
		}
	}
	f.open()
	if got := f.drain("a", f.s.PacketsForEachQoS12, keepAll); strings.Join(got, ",") != "m" {
		t.Fatalf("the live batch was collected: %v", got)
	}
}

// In Sync mode concurrent callers share uploads (group commit).
func TestSyncCallersShareUploads(t *testing.T) {
	f := newFixture(t, Config{Durability: Sync, JournalStreams: 1})
	f.mustCreate("a")
	f.count.Reset()
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := range 10 {
				if err := f.s.PacketStoreQoS12([]byte("a"), pkt(fmt.Sprint(w, "-", i))); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if st := f.count.Stats(); st.Puts >= 320 {
		t.Fatalf("320 Sync stores made %d puts: no group commit", st.Puts)
	}
	f.crash()
	if n, _ := f.s.PacketCountQoS12([]byte("a")); n != 320 {
		t.Fatalf("after a crash, %d of 320 Sync stores are there", n)
	}
}

func TestNewRefusesAnotherLayoutOrAForeignSystemObject(t *testing.T) {
	for name, data := range map[string][]byte{
		"another layout": func() []byte {
			b, _ := encode(systemRecord{Format: formatVersion, Layout: "s3persist-layout-9", CreatedAt: "x"})
			return b
		}(),
		"not cbor": []byte("{\"json\": true}"),
	} {
		t.Run(name, func(t *testing.T) {
			mem := s3store.NewMemory()
			if _, err := mem.Put(context.Background(), keySystem, data, s3store.PutOptions{}); err != nil {
				t.Fatal(err)
			}
			_, err := New(context.Background(), Config{Store: mem})
			if err == nil || !strings.Contains(err.Error(), "layout") && !strings.Contains(err.Error(), "system record") {
				t.Fatalf("New over %s: %v", name, err)
			}
		})
	}
}

func TestSequenceNumbersGrowAcrossRestarts(t *testing.T) {
	f := newFixture(t, Config{})
	f.mustCreate("fifo")
	var want []string
	for round := range 5 {
		for i := range 3 {
			m := fmt.Sprint(round, "-", i)
			want = append(want, m)
			f.mustStore("fifo", m)
		}
		if round%2 == 1 {
			f.checkpoint()
		}
		f.restart()
	}
	if got := f.drain("fifo", f.s.PacketsForEachQoS12, keepNone); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("after 5 restarts the queue is %v, want %v", got, want)
	}
}

func isSentinel(err error) bool {
	for _, s := range []error{vlpersistence.ErrNotFound, vlpersistence.ErrInvalidArgs, vlpersistence.ErrAlreadyExists,
		vlpersistence.ErrNotOpen, vlpersistence.ErrBrokenEntry} {
		if err == s {
			return true
		}
	}
	return false
}

func TestConfigValidateNamesTheField(t *testing.T) {
	mem := s3store.NewMemory()
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "set S3"},
		{Config{Store: mem, S3: s3store.MinioConfig{Bucket: "b"}}, "both"},
		{Config{Store: mem, Prefix: "no-slash"}, "Prefix"},
		{Config{Store: mem, Prefix: "../"}, "Prefix"},
		{Config{Store: mem, CallTimeout: -1}, "CallTimeout"},
		{Config{Store: mem, LoadConcurrency: -1}, "LoadConcurrency"},
		{Config{Store: mem, ShutdownTimeout: -1}, "ShutdownTimeout"},
		{Config{Store: mem, LeaseTTL: time.Millisecond}, "LeaseTTL"},
		{Config{Store: mem, Durability: 7}, "Durability"},
		{Config{Store: mem, FlushInterval: -1}, "FlushInterval"},
		{Config{Store: mem, BatchBytes: -1}, "BatchBytes"},
		{Config{Store: mem, MaxPendingBytes: 1 << 20}, "MaxPendingBytes"},
		{Config{Store: mem, WhenStoreIsBehind: 7}, "WhenStoreIsBehind"},
		{Config{Store: mem, JournalStreams: 300}, "JournalStreams"},
		{Config{Store: mem, CheckpointBytes: -1}, "CheckpointBytes"},
		{Config{Store: mem, CheckpointInterval: -1}, "CheckpointInterval"},
		{Config{Store: mem, CheckpointTimeout: -1}, "CheckpointTimeout"},
		{Config{Store: mem, IndexMergeDeltas: -1}, "IndexMergeDeltas"},
		{Config{Store: mem, MaxPinnedBytes: -1}, "MaxPinnedBytes"},
		{Config{Store: mem, MaxPinnedBytes: 1 << 20}, "MaxPinnedBytes"},
		{Config{Store: mem, CacheBytes: -1}, "CacheBytes"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want an error mentioning %q", c.cfg, err, c.want)
		}
	}
	if err := (Config{Store: mem, Prefix: "a/b/"}).Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
}

// With the store down, Shutdown gives up at its deadline and says how much is lost.
func TestShutdownGivesUpAtItsDeadlineAndSaysWhatIsLost(t *testing.T) {
	f := newFixture(t, Config{ShutdownTimeout: 200 * time.Millisecond})
	f.mustCreate("a")
	f.faulty.SetFailing(true)
	for i := range 3 {
		f.mustStore("a", fmt.Sprint(i))
	}
	err := f.p.Shutdown()
	if err == nil || !strings.Contains(err.Error(), "not durable") || isSentinel(err) {
		t.Fatalf("Shutdown with the store down: %v, want an error saying what is not durable", err)
	}
	if !strings.Contains(err.Error(), "4 journaled changes") {
		t.Fatalf("Shutdown: %v, want it to count the 4 changes (a create and 3 stores)", err)
	}
}

// An outage in Async mode fails no call; once the store is back, the journal uploads
// what it kept and nothing is lost.
func TestAsyncRidesOutAnOutage(t *testing.T) {
	f := newFixture(t, Config{})
	f.mustCreate("a")
	f.flush()
	f.faulty.SetFailing(true)
	for i := range 50 {
		f.mustStore("a", fmt.Sprint(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := f.p.Flush(ctx)
	cancel()
	if err == nil || isSentinel(err) {
		t.Fatalf("Flush during the outage: %v, want a storage error", err)
	}
	f.faulty.SetFailing(false)
	f.flush()
	f.crash()
	if n, _ := f.s.PacketCountQoS12([]byte("a")); n != 50 {
		t.Fatalf("after the outage and a crash: %d of 50 packets", n)
	}
}

// When the journal's pending bound is reached (the store is down), the bound holds and
// nothing accepted is lost; a call fails at once with ErrStoreBehind (FailAtOnce, the
// default) or waits for room and fails after CallTimeout (WaitForRoom).
func TestBackpressureBoundsPendingMemory(t *testing.T) {
	for _, full := range []Backpressure{FailAtOnce, WaitForRoom} {
		t.Run(full.String(), func(t *testing.T) {
			const bound = 1 << 20
			f := newFixture(t, Config{BatchBytes: 64 << 10, MaxPendingBytes: bound, CallTimeout: 200 * time.Millisecond, WhenStoreIsBehind: full})
			f.mustCreate("a")
			f.flush()
			f.faulty.SetFailing(true)
			big := &vlpersistence.PersistedPacket{Data: make([]byte, 100<<10)}
			var err error
			accepted := 0
			for ; accepted < 100; accepted++ {
				if err = f.s.PacketStoreQoS12([]byte("a"), big); err != nil {
					break
				}
			}
			switch {
			case err == nil || isSentinel(err):
				t.Fatalf("storing 10 MiB against a store that is down with a 1 MiB bound: %v, want a storage error", err)
			case full == FailAtOnce && !errors.Is(err, ErrStoreBehind):
				t.Fatalf("FailAtOnce: %v, want ErrStoreBehind", err)
			case full == WaitForRoom && (errors.Is(err, ErrStoreBehind) || !errors.Is(err, context.DeadlineExceeded)):
				t.Fatalf("WaitForRoom: %v, want the end of CallTimeout", err)
			}
			if peak := f.p.Stats().Journal.PeakPendingBytes; peak > bound {
				t.Fatalf("pending bytes peaked at %d, above the bound %d", peak, bound)
			}
			if n, _ := f.s.PacketCountQoS12([]byte("a")); n != uint64(accepted) {
				t.Fatalf("%d packets queued; %d calls were accepted", n, accepted)
			}
			f.faulty.SetFailing(false)
			f.flush()
			f.crash()
			if n, _ := f.s.PacketCountQoS12([]byte("a")); n != uint64(accepted) {
				t.Fatalf("after the outage and a crash: %d packets; %d calls were accepted", n, accepted)
			}
		})
	}
}

// Packets beyond the payload cache are read back from their batch objects.
func TestPacketsBeyondTheCacheAreReadFromTheirObjects(t *testing.T) {
	f := newFixture(t, Config{CacheBytes: 1000})
	var want []string
	for i := range 5 {
		id := fmt.Sprint("c", i)
		f.mustCreate(id)
		for j := range 20 {
			f.mustStore(id, fmt.Sprint(id, "-", j))
			if i == 0 {
				want = append(want, fmt.Sprint(id, "-", j))
			}
		}
	}
	f.flush()
	f.checkpoint()
	f.count.Reset()
	if got := f.drain("c0", f.s.PacketsForEachQoS12, keepAll); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("queue read through a 1,000-byte cache: %v", got)
	}
	st := f.p.Stats().Cache
	if st.Misses == 0 || f.count.Stats().Gets == 0 || st.Bytes > 1000 {
		t.Fatalf("cache %+v, %d gets: want misses served by GETs within the budget", st, f.count.Stats().Gets)
	}
}

// A checkpoint still running when Shutdown starts does not use up the deadline the
// journal needs: the changes accepted before Shutdown are made durable even when the
// checkpoint outlives ShutdownTimeout (it is cancelled then).
func TestShutdownFlushesTheJournalWhileASlowCheckpointRuns(t *testing.T) {
	mem := s3store.NewMemory()
	slowShard := make(chan struct{})
	var once sync.Once
	inj := s3store.NewInjector(mem, func(r s3store.Request) s3store.Action {
		if r.Op == "put" && strings.HasPrefix(r.Key, deltaRoot) {
			once.Do(func() { close(slowShard) })
			return s3store.Action{Delay: time.Hour} // ends with the checkpoint's ctx
		}
		return s3store.Action{}
	})
	p, err := New(context.Background(), Config{Store: inj, FlushInterval: time.Hour, CheckpointInterval: time.Hour,
		ShutdownTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := p.Sessions()
	if err := s.Create([]byte("a"), nil); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	p.kickCheckpoint()
	<-slowShard // the background checkpoint is writing its index delta
	if err := s.PacketStoreQoS12([]byte("a"), pkt("after the checkpoint started")); err != nil {
		t.Fatal(err)
	}
	if err := p.Shutdown(); err != nil {
		t.Fatalf("Shutdown during a slow checkpoint: %v", err)
	}
	f := &fixture{t: t, mem: mem}
	f.cfg = Config{ForceTakeover: true} // the release may not fit in what the checkpoint left of the deadline
	f.open()
	defer f.p.Shutdown()
	if got := f.drain("a", f.s.PacketsForEachQoS12, keepAll); !slices.Equal(got, []string{"after the checkpoint started"}) {
		t.Fatalf("after Shutdown during a slow checkpoint: %v", got)
	}
}
