package s3persist

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist/s3store"
)

// churnModel is the live data a churn run left: the queue (payloads, in order) of every
// session that exists, and the retained set.
type churnModel struct {
	queues   map[string][]string
	retained []string // nil when never stored
}

// expectedObjects is what the live data of m needs in the bucket, from the layout
// (docs/layout.md). It is the one place that knows it: a new kind of object (the
// ownership object of fencing, say) is added here.
type expectedObjects struct {
	// required are the keys that must exist: the system record, the ownership object
	// (fencing), the retained set once stored.
	required map[string]bool
	// sessions are the ids the index (base shards and deltas) must name, and only them.
	sessions map[string]bool
	// live are the payloads of the packets each session (by client prefix) still has.
	// Its batch objects are needed while they hold at least one of them; a pack while
	// it holds one of any session's (payloads are unique across sessions).
	live map[string]map[string]bool
}

func expectedFor(m churnModel) expectedObjects {
	e := expectedObjects{required: map[string]bool{keySystem: true, keyOwner: true}, sessions: map[string]bool{}, live: map[string]map[string]bool{}}
	if m.retained != nil {
		e.required[keyRetained] = true
	}
	for id, q := range m.queues {
		e.sessions[id] = true
		live := map[string]bool{}
		for _, d := range q {
			live[d] = true
		}
		e.live[clientPrefix([]byte(id))] = live
	}
	return e
}

// indexView reads the index as recovery does, independently of load.go: each base shard,
// then the deltas in checkpoint order for the shards whose base is older.
func indexView(t *testing.T, store s3store.Store) map[string]bool {
	t.Helper()
	ctx := context.Background()
	view := map[string]bool{}
	var through [numShards]uint64
	var deltas []string
	err := s3store.ListAll(ctx, store, "", func(o s3store.ObjectInfo) error {
		switch {
		case strings.HasPrefix(o.Key, indexRoot):
			data, _, err := store.Get(ctx, o.Key)
			if err != nil {
				return err
			}
			rec, err := decodeShard(o.Key, data)
			if err != nil {
				return err
			}
			hh, _ := parseShardKey(o.Key)
			through[hh] = rec.Through
			for _, ss := range rec.Sessions {
				view[string(ss.ID)] = true
			}
		case strings.HasPrefix(o.Key, deltaRoot):
			deltas = append(deltas, o.Key) // listed in checkpoint order
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read the index: %v", err)
	}
	for _, k := range deltas {
		data, _, err := store.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := decodeDelta(k, data)
		if err != nil {
			t.Fatal(err)
		}
		for _, ds := range rec.Sessions {
			if rec.Checkpoint > through[shardOf(ds.ID)] {
				view[string(ds.ID)] = !ds.Deleted
			}
		}
	}
	for id, named := range view {
		if !named {
			delete(view, id)
		}
	}
	return view
}

// packBatches decodes a pack: batch records back to back.
func packBatches(key string, data []byte) ([]batchRecord, error) {
	var out []batchRecord
	for len(data) > 0 {
		var b batchRecord
		rest, err := decMode.UnmarshalFirst(data, &b)
		if err != nil {
			return nil, fmt.Errorf("pack %q: %w", key, err)
		}
		out, data = append(out, b), rest
	}
	return out, nil
}

// storageReport is what a bucket holds next to what its live data needs.
type storageReport struct {
	objects, bytes             int
	needed, neededBytes        int // required objects, batches and packs holding a live packet
	indexObjects, indexBytes   int // base shards and deltas
	deadPacketBytes            int // payload bytes of removed packets inside needed batches
	livePayloadBytes           int
	garbage                    []string
	missingRequired, uncovered []string
}

func (r storageReport) String() string {
	return fmt.Sprintf("%d objects of %d bytes; needed %d objects of %d bytes, plus %d index objects of %d bytes; "+
		"live payloads %d bytes, removed payloads still inside needed batches %d bytes; garbage %d, missing %d, uncovered %d",
		r.objects, r.bytes, r.needed, r.neededBytes, r.indexObjects, r.indexBytes,
		r.livePayloadBytes, r.deadPacketBytes, len(r.garbage), len(r.missingRequired), len(r.uncovered))
}

// inspectStorage compares every object in store with what m needs.
func inspectStorage(t *testing.T, store s3store.Store, m churnModel) storageReport {
	t.Helper()
	ctx := context.Background()
	exp := expectedFor(m)
	var r storageReport
	seen := map[string]bool{}
	covered := map[string]map[string]bool{}
	err := s3store.ListAll(ctx, store, "", func(o s3store.ObjectInfo) error {
		r.objects++
		r.bytes += int(o.Size)
		seen[o.Key] = true
		if exp.required[o.Key] {
			r.needed++
			r.neededBytes += int(o.Size)
			return nil
		}
		if strings.HasPrefix(o.Key, indexRoot) || strings.HasPrefix(o.Key, deltaRoot) {
			r.indexObjects++
			r.indexBytes += int(o.Size)
			return nil
		}
		if strings.HasPrefix(o.Key, packRoot) {
			data, _, err := store.Get(ctx, o.Key)
			if err != nil {
				return err
			}
			batches, err := packBatches(o.Key, data)
			if err != nil {
				return err
			}
			live, dead := 0, 0
			for _, b := range batches {
				for _, p := range b.Packets {
					found := false
					for prefix, l := range exp.live {
						if l[string(p.Data)] {
							found = true
							if covered[prefix] == nil {
								covered[prefix] = map[string]bool{}
							}
							covered[prefix][string(p.Data)] = true
						}
					}
					if found {
						live++
					} else {
						dead += len(p.Data)
					}
				}
			}
			if live == 0 {
				r.garbage = append(r.garbage, o.Key+" (a pack with no live packet)")
				return nil
			}
			r.needed++
			r.neededBytes += int(o.Size)
			r.deadPacketBytes += dead
			return nil
		}
		pk, err := parseClientKey(o.Key)
		if err != nil || pk.kind != keyBatch || exp.live[pk.prefix] == nil {
			r.garbage = append(r.garbage, o.Key)
			return nil
		}
		data, _, err := store.Get(ctx, o.Key)
		if err != nil {
			return err
		}
		b, err := decodeBatch(o.Key, data, pk.seq)
		if err != nil {
			return err
		}
		live, dead := 0, 0
		for _, p := range b.Packets {
			if exp.live[pk.prefix][string(p.Data)] {
				live++
				if covered[pk.prefix] == nil {
					covered[pk.prefix] = map[string]bool{}
				}
				covered[pk.prefix][string(p.Data)] = true
			} else {
				dead += len(p.Data)
			}
		}
		if live == 0 {
			r.garbage = append(r.garbage, o.Key+" (a batch with no live packet)")
			return nil
		}
		r.needed++
		r.neededBytes += int(o.Size)
		r.deadPacketBytes += dead
		return nil
	})
	if err != nil {
		t.Fatalf("inspect the bucket: %v", err)
	}
	for k := range exp.required {
		if !seen[k] {
			r.missingRequired = append(r.missingRequired, k)
		}
	}
	view := indexView(t, store)
	for id := range exp.sessions {
		if !view[id] {
			r.missingRequired = append(r.missingRequired, fmt.Sprintf("index entry of %q", id))
		}
	}
	for id := range view {
		if !exp.sessions[id] {
			r.garbage = append(r.garbage, fmt.Sprintf("index entry of %q (no such session)", id))
		}
	}
	for prefix, live := range exp.live {
		for d := range live {
			r.livePayloadBytes += len(d)
			if !covered[prefix][d] {
				r.uncovered = append(r.uncovered, prefix+" "+d)
			}
		}
	}
	slices.Sort(r.garbage)
	slices.Sort(r.missingRequired)
	return r
}

// churnRounds is the number of rounds of TestChurnLeavesOnlyWhatTheLiveDataNeeds:
// S3PERSIST_CHURN_ROUNDS, or a few for CI.
func churnRounds(t *testing.T) int {
	if v := os.Getenv("S3PERSIST_CHURN_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("S3PERSIST_CHURN_ROUNDS=%q is not a positive number", v)
		}
		return n
	}
	return 8
}

// A long churn (sessions created, filled, drained, deleted, with checkpoints, restarts,
// crashes after a flush and crashes in the middle of a checkpoint in between) leaves,
// after a final checkpoint and the garbage collection of a restart, exactly the objects
// the live data needs, and the live data is all there.
func TestChurnLeavesOnlyWhatTheLiveDataNeeds(t *testing.T) {
	rounds := churnRounds(t)
	rng := rand.New(rand.NewPCG(uint64(rounds), 5))
	f := newFixture(t, Config{})
	m := churnModel{queues: map[string][]string{}}
	next := 0
	payload := func() string {
		next++
		return fmt.Sprintf("p%07d-%s", next, strings.Repeat("x", rng.IntN(500)))
	}
	liveIDs := func() []string {
		ids := make([]string, 0, len(m.queues))
		for id := range m.queues {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return ids
	}
	var crashesAfterFlush, crashesInCheckpoint, restarts, lostAckCheckpoints int
	for round := range rounds {
		for i := range 8 {
			id := fmt.Sprintf("r%d-s%d", round, i)
			f.mustCreate(id)
			m.queues[id] = nil
		}
		ids := liveIDs()
		for range 150 {
			id := ids[rng.IntN(len(ids))]
			d := payload()
			f.mustStore(id, d)
			m.queues[id] = append(m.queues[id], d)
			if rng.IntN(100) == 0 {
				f.checkpoint()
			}
		}
		if rng.IntN(3) == 0 {
			// A checkpoint whose requests land but whose acknowledgements are lost at
			// random; the instance lives on and the next checkpoint tries again.
			f.flush()
			restore := f.swapStore(func(s s3store.Store) s3store.Store {
				return &lostAckStore{Store: s, rng: rand.New(rand.NewPCG(uint64(round), 9)), percent: 30}
			})
			if err := f.p.Checkpoint(context.Background()); err != nil {
				lostAckCheckpoints++
			}
			restore()
		}
		if rng.IntN(2) == 0 {
			f.flush()
			f.checkpoint()
		}
		for _, id := range ids {
			switch rng.IntN(6) {
			case 0: // drained
				f.drain(id, f.s.PacketsForEachQoS12, keepNone)
				m.queues[id] = nil
			case 1: // partly drained: every other packet acknowledged
				var kept []string
				odd := false
				f.drain(id, f.s.PacketsForEachQoS12, func(d string) bool {
					odd = !odd
					if odd {
						kept = append(kept, d)
					}
					return odd
				})
				m.queues[id] = kept
			case 2, 3: // deleted
				if err := f.s.Delete([]byte(id)); err != nil {
					t.Fatal(err)
				}
				delete(m.queues, id)
			}
		}
		if rng.IntN(3) == 0 {
			r, _ := f.p.Retained()
			m.retained = []string{payload()}
			if err := r.Store([]*vlpersistence.PersistedPacket{pkt(m.retained[0])}); err != nil {
				t.Fatal(err)
			}
		}
		f.flush()
		switch rng.IntN(3) {
		case 0:
			f.crash()
			crashesAfterFlush++
		case 1: // dies at a random request of a checkpoint, then the process is gone
			after := rng.IntN(40)
			restore := f.swapStore(func(s s3store.Store) s3store.Store {
				return s3store.NewInjector(s, s3store.FailNth(int64(after+1), s3store.CrashBefore))
			})
			_ = f.p.Checkpoint(context.Background())
			restore()
			f.crash()
			crashesInCheckpoint++
		default:
			f.restart()
			restarts++
		}
	}
	<-f.p.gcDone // what the last instance found at its start is gone
	f.flush()
	f.checkpoint()
	before := inspectStorage(t, f.mem, m)
	f.restart()
	<-f.p.gcDone
	f.checkpoint() // nothing changed: it writes nothing and deletes nothing

	for id, want := range m.queues {
		if got := f.drain(id, f.s.PacketsForEachQoS12, keepAll); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("queue of %s: %d packets, want %d", id, len(got), len(want))
		}
	}
	if n := f.s.Count(); n != uint64(len(m.queues)) {
		t.Fatalf("%d sessions, want %d", n, len(m.queues))
	}
	rep := inspectStorage(t, f.mem, m)
	t.Logf("after %d rounds (%d restarts, %d crashes after a flush, %d crashes in a checkpoint, %d checkpoints failed by lost acknowledgements), %d sessions live: %v; "+
		"before the last restart's garbage collection: %d garbage objects %q",
		rounds, restarts, crashesAfterFlush, crashesInCheckpoint, lostAckCheckpoints, len(m.queues), rep, len(before.garbage), before.garbage)
	if len(rep.garbage) > 0 || len(rep.missingRequired) > 0 || len(rep.uncovered) > 0 {
		t.Fatalf("garbage %q; missing %q; live packets in no batch %q", rep.garbage, rep.missingRequired, rep.uncovered)
	}
}

// lostAckStore applies every request, but fails percent of the puts and batch deletes
// after they were applied, as a lost acknowledgement does.
type lostAckStore struct {
	s3store.Store
	mu      sync.Mutex
	rng     *rand.Rand
	percent int
	only    string // when set, only puts of keys holding it lose their acknowledgement
}

func (l *lostAckStore) lost() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rng.IntN(100) < l.percent
}

func (l *lostAckStore) Put(ctx context.Context, key string, data []byte, opts s3store.PutOptions) (s3store.ObjectInfo, error) {
	info, err := l.Store.Put(ctx, key, data, opts)
	if err == nil && strings.Contains(key, l.only) && l.lost() {
		return s3store.ObjectInfo{}, fmt.Errorf("put %q: %w", key, s3store.ErrInjected)
	}
	return info, err
}

func (l *lostAckStore) DeleteMany(ctx context.Context, keys []string) error {
	err := l.Store.DeleteMany(ctx, keys)
	if err == nil && len(keys) > 0 && l.lost() {
		return &s3store.DeleteManyError{Remaining: keys, Total: len(keys), Err: s3store.ErrInjected}
	}
	return err
}

// swapStore puts wrap(the instance's store) in its place and returns what restores it.
// It waits for the garbage collection after start and for any checkpoint in flight, the
// background readers of p.store; the test's own calls come after it.
func (f *fixture) swapStore(wrap func(s3store.Store) s3store.Store) (restore func()) {
	<-f.p.gcDone
	f.p.ckptMu.Lock()
	old := f.p.store
	f.p.store = wrap(old)
	f.p.ckptMu.Unlock()
	return func() {
		f.p.ckptMu.Lock()
		f.p.store = old
		f.p.ckptMu.Unlock()
	}
}

// failDeletes fails every DeleteMany without deleting anything, with a
// *DeleteManyError naming every key (many) or a bare error.
type failDeletes struct {
	s3store.Store
	many bool
}

func (f failDeletes) DeleteMany(_ context.Context, keys []string) error {
	if f.many {
		return &s3store.DeleteManyError{Remaining: keys, Total: len(keys), Err: s3store.ErrInjected}
	}
	return s3store.ErrInjected
}

// Garbage whose deletion failed is deleted by a later checkpoint of the same process,
// not left until the next start: a broker that runs for weeks through transient store
// errors does not accumulate it.
func TestGarbageWhoseDeletionFailedIsDeletedByTheNextCheckpoint(t *testing.T) {
	for _, many := range []bool{false, true} {
		t.Run(fmt.Sprintf("DeleteManyError=%t", many), func(t *testing.T) { garbageDeletionFails(t, many) })
	}
}

func garbageDeletionFails(t *testing.T, many bool) {
	f := newFixture(t, Config{})
	f.mustCreate("a")
	f.mustStore("a", strings.Repeat("m", ownBatchBytes)) // a batch object of its own
	f.mustCreate("gone")
	f.mustStore("gone", "small") // in a pack
	f.flush()
	f.checkpoint()
	batches := f.keys(clientPrefix([]byte("a")) + "b/")
	packs := f.keys(packRoot)
	if len(batches) != 1 || len(packs) != 1 {
		t.Fatalf("after the first checkpoint: batches %q, packs %q", batches, packs)
	}
	f.drain("a", f.s.PacketsForEachQoS12, keepNone)
	if err := f.s.Delete([]byte("gone")); err != nil {
		t.Fatal(err)
	}
	f.flush()
	restore := f.swapStore(func(s s3store.Store) s3store.Store { return failDeletes{s, many} })
	if err := f.p.Checkpoint(context.Background()); err == nil {
		t.Fatal("a checkpoint whose deletes all failed reported no error")
	}
	restore()
	f.checkpoint()
	if left := append(f.keys(batches[0]), f.keys(packs[0])...); len(left) > 0 {
		t.Fatalf("garbage left after a second checkpoint: %q", left)
	}
	if left := f.keys(journalRoot); len(left) > 0 {
		t.Fatalf("journal segments left after a second checkpoint: %q", left)
	}
}

// A batch object whose put landed but whose acknowledgement was lost is deleted by a
// later checkpoint once no session names it (its packets were drained meanwhile), not
// left until the next start.
func TestABatchWhoseAckWasLostIsDeletedOnceNothingNamesIt(t *testing.T) {
	f := newFixture(t, Config{})
	f.mustCreate("kept")
	f.mustStore("kept", "kept-1")
	f.mustCreate("drained")
	f.flush()
	f.checkpoint()
	f.mustStore("drained", "drained-1"+strings.Repeat("x", ownBatchBytes)) // a batch object of its own
	f.mustStore("drained", "drained-2")
	f.flush()
	restore := f.swapStore(func(s s3store.Store) s3store.Store {
		return &lostAckStore{Store: s, rng: rand.New(rand.NewPCG(1, 1)), percent: 100, only: "/b/"}
	})
	if err := f.p.Checkpoint(context.Background()); err == nil {
		t.Fatal("a checkpoint whose batch put lost its acknowledgement reported no error")
	}
	restore()
	if n := len(f.keys(clientPrefix([]byte("drained")) + "b/")); n != 1 {
		t.Fatalf("%d batch objects of the drained session landed, want 1", n)
	}
	f.drain("drained", f.s.PacketsForEachQoS12, keepNone)
	f.flush()
	f.checkpoint()
	m := churnModel{queues: map[string][]string{"drained": nil, "kept": {"kept-1"}}}
	if rep := inspectStorage(t, f.mem, m); len(rep.garbage) > 0 || len(rep.missingRequired) > 0 || len(rep.uncovered) > 0 {
		t.Fatalf("after the checkpoint that followed: %v: garbage %q, missing %q, uncovered %q", rep, rep.garbage, rep.missingRequired, rep.uncovered)
	}
	f.crash()
	if got := f.drain("kept", f.s.PacketsForEachQoS12, keepAll); strings.Join(got, ",") != "kept-1" {
		t.Fatalf("after a crash the kept session holds %v", got)
	}
}
