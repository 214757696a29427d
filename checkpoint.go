package s3persist

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/s3persist/s3persist/s3store"
)

// A checkpoint makes the durable state of sessions independent of the journal, so that
// the journal segments it covered can be deleted. Its cost follows the bytes and the
// sessions that changed, never the number of sessions (docs/layout.md, "Cost"):
//
//  0. it notes the durable journal segments (T0), then takes the garbage and the dirty
//     sessions (those changed since the index last included them): every record in
//     those segments was made before T0, so each session's state taken after T0
//     includes it;
//  1. for every dirty session, under the session's lock, it takes a snapshot: state,
//     watermark (last record number), its batches with their live packets, and the
//     packets only the journal holds (pinned). A merge (below) also takes every other
//     session of the shards it rewrites;
//  2. it moves the pinned packets out of the journal: a session with at least
//     ownBatchBytes of them gets a batch object of its own; the others share pack
//     objects, each session's batch a byte range of one. A batch is adopted in memory
//     as soon as it is durable (its payloads leave the pinned memory for the cache);
//  3. it writes the index: one delta object holding what changed in the sessions it
//     took (new batches, removed packets, the state if it changed; the whole session for
//     a new incarnation), or, when the deltas have grown (Config.IndexMergeDeltas of
//     them, or as many bytes as the base shards), a merge: the base shard of every shard a delta names, rewritten
//     whole from memory;
//  4. only when all of that is durable, it deletes the covered journal segments and the
//     garbage (objects no live packet needs, the deltas a merge replaced).
//
// A failure anywhere before 4 marks the sessions dirty again and leaves the segments in
// place: the next checkpoint tries again, and recovery in between replays the journal
// on top of whatever index objects were written (records at or below a session's
// watermark are skipped). Garbage whose deletion fails in 4 is queued again. One
// checkpoint runs at a time; it holds no session lock during a request.

// Tuning of the write path, documented with its cost formula in docs/layout.md.
const (
	// ownBatchBytes is the size of pinned payloads from which a session's batch gets
	// an object of its own rather than a range of a pack.
	ownBatchBytes = 64 << 10
	// packBytes is the size at which a pack is closed and the next one begun.
	packBytes = 8 << 20
	// minMergeBytes: deltas weighing as much as the base shards start a merge once they
	// weigh this much (Config.IndexMergeDeltas counts them too).
	minMergeBytes = 4 << 20
)

// dirtyList holds the sessions of one shard changed since the index last included them.
type dirtyList struct {
	mu      sync.Mutex
	entries []*entry
}

// markDirty records that e changed: the next checkpoint writes it to the index. e is
// locked (or New is loading on one goroutine).
func (p *Persistence) markDirty(e *entry) {
	if e.dirty {
		return
	}
	e.dirty = true
	l := &p.dirtyLists[e.hh]
	l.mu.Lock()
	l.entries = append(l.entries, e)
	l.mu.Unlock()
}

// takeDirty empties the dirty lists and returns what they held.
func (p *Persistence) takeDirty() []*entry {
	var all []*entry
	for hh := range numShards {
		l := &p.dirtyLists[hh]
		l.mu.Lock()
		all = append(all, l.entries...)
		l.entries = nil
		l.mu.Unlock()
	}
	return all
}

// indexState is what the checkpointer knows of the index objects in the bucket.
// Guarded by Persistence.ckptMu (written before New returns, then by checkpoints).
type indexState struct {
	deltas      []deltaInfo      // live delta objects, in checkpoint order
	deltaShards [numShards]bool  // shards some live delta names sessions of
	baseBytes   [numShards]int64 // size of each base shard
}

type deltaInfo struct {
	cp   uint64
	size int64
}

// mergeDue reports whether the next index write should be a merge, with maxDeltas live
// deltas at most.
func (ix *indexState) mergeDue(maxDeltas int) bool {
	var deltaBytes, baseBytes int64
	for _, d := range ix.deltas {
		deltaBytes += d.size
	}
	for _, b := range ix.baseBytes {
		baseBytes += b
	}
	return len(ix.deltas) >= maxDeltas || deltaBytes >= max(baseBytes, minMergeBytes)
}

// errCheckpointAbandoned fails a checkpoint that Shutdown stopped.
var errCheckpointAbandoned = errors.New("abandoned: the instance is shutting down")

// stopRequested reports whether Shutdown has begun. A checkpoint then starts no more
// requests and fails: those in flight finish (so nothing of it lands after Shutdown
// returns), its sessions stay dirty and the journal keeps everything, which the next
// start replays (within CheckpointSegments and CheckpointBytes). Shutdown thus waits
// for the final flush, not for a checkpoint of every session a stopping broker touched.
func (p *Persistence) stopRequested() bool {
	select {
	case <-p.stopping:
		return true
	default:
		return false
	}
}

// kickCheckpoint asks the checkpointer for a checkpoint soon.
func (p *Persistence) kickCheckpoint() {
	select {
	case p.ckptKick <- struct{}{}:
	default:
	}
}

// addGarbage queues objects for deletion by the next checkpoint, once the index no
// longer names them.
func (p *Persistence) addGarbage(keys ...string) {
	if len(keys) == 0 {
		return
	}
	p.garbageMu.Lock()
	p.garbage = append(p.garbage, keys...)
	p.garbageMu.Unlock()
}

// unsureBatch is a batch object whose put failed with an unknown outcome (a lost
// acknowledgement, a timeout): it may exist. If a later checkpoint writes the same
// packets again, it writes the same key (a batch is named after its lowest packet
// number) and the session names it; otherwise nothing ever names it, and the checkpoint
// deletes it rather than leave it to the garbage collection of the next start. (A pack
// whose put failed so is plain garbage: pack numbers are never used twice.)
type unsureBatch struct {
	id  []byte
	key string
	seq uint64
}

func (p *Persistence) addUnsure(u unsureBatch) {
	p.garbageMu.Lock()
	p.unsure = append(p.unsure, u)
	p.garbageMu.Unlock()
}

func (p *Persistence) takeGarbage() ([]string, []unsureBatch) {
	p.garbageMu.Lock()
	defer p.garbageMu.Unlock()
	g, u := p.garbage, p.unsure
	p.garbage, p.unsure = nil, nil
	return g, u
}

// unnamedBatches returns the keys of the unsure batches that no session names. The
// caller holds ckptMu, so no batch object is written meanwhile, and has written every
// batch of its snapshots: a packet still only in the journal has a higher number than
// any unsure batch of its session, whose lowest packet was moved or removed since.
func (p *Persistence) unnamedBatches(us []unsureBatch) []string {
	var keys []string
	for _, u := range us {
		named := false
		if e := p.lookup(u.id, false); e != nil {
			if e.exists && e.q != nil {
				for q := range numQueues {
					for _, r := range e.q.q[q] {
						named = named || r.obj != nil && r.obj.pack == nil && r.obj.seq == u.seq
					}
				}
			}
			e.mu.Unlock()
		}
		if !named {
			keys = append(keys, u.key)
		}
	}
	return keys
}

// runCheckpointer is the background goroutine of checkpoints, owned by Persistence and
// stopped by Shutdown.
func (p *Persistence) runCheckpointer() {
	defer p.bg.Done()
	tick := time.NewTicker(p.cfg.CheckpointInterval)
	defer tick.Stop()
	for {
		select {
		case <-p.stopping:
			return
		case <-p.ckptKick:
		case <-tick.C:
		}
		if p.shuttingDown.Load() {
			// After BeginShutdown the final flush needs the store more than a
			// checkpoint that Shutdown would abandon anyway.
			continue
		}
		ctx, cancel := context.WithTimeout(p.bgCtx, p.cfg.CheckpointTimeout)
		err := p.checkpoint(ctx)
		cancel()
		if err != nil && p.bgCtx.Err() == nil && !errors.Is(err, errCheckpointAbandoned) {
			p.stats.checkpointFailures.Add(1)
			p.log.Warn("s3persist: checkpoint failed; the journal keeps everything and the next one retries", "err", err)
		}
	}
}

// sessionSnap is what a checkpoint took of one session.
type sessionSnap struct {
	e            *entry
	inc          uint64
	rec          shardSession // the whole session, as a base shard holds it
	deleted      bool         // no incarnation exists: a tombstone in the delta
	stateChanged bool         // took e.stateDirty: the delta carries the state
	full         bool         // took e.indexFull: the delta carries the whole session
	tookDirty    bool         // took e.dirty: a failed checkpoint marks it again
	fresh        int          // index in rec.Batches of the batch of moved, or -1
	moved        []*packetRef // pinned packets to move into a new batch
	movedPkts    []*queuedPacket
	movedBytes   int
	freshObj     *batchObj   // the batch of moved, once durable
	objs         []*batchObj // the batches of rec.Batches that exist (not fresh)
	removed      []uint64    // took e.q.removed: removed since the index last named it
	newSeqs      []uint64    // the batches no index object names yet (by lowest number)
}

// newBatches are the batches of s that no index object names yet: what a delta that is
// not Full carries.
func (s *sessionSnap) newBatches() []shardBatch {
	var out []shardBatch
	for _, b := range s.rec.Batches {
		if slices.Contains(s.newSeqs, b.Seq) {
			out = append(out, b)
		}
	}
	return out
}

// checkpoint runs one checkpoint (see above). It returns nil when there was nothing to
// do or everything is durable.
func (p *Persistence) checkpoint(ctx context.Context) error { return p.runCheckpoint(ctx, false) }

// mergeIndex runs a checkpoint that merges the whole index into base shards: every shard
// is rewritten and every delta deleted.
func (p *Persistence) mergeIndex(ctx context.Context) error { return p.runCheckpoint(ctx, true) }

func (p *Persistence) runCheckpoint(ctx context.Context, mergeAll bool) error {
	p.ckptMu.Lock()
	defer p.ckptMu.Unlock()
	start := time.Now()
	ix := &p.index

	covered := p.journal.durable() // T0
	// Garbage before the dirty sessions: whatever made an object garbage marked its
	// session dirty first, so every object taken here is dropped by the index written
	// below.
	garbage, unsure := p.takeGarbage()
	dirty := p.takeDirty()
	if !mergeAll && len(dirty) == 0 && len(covered) == 0 && len(garbage) == 0 && len(unsure) == 0 {
		return nil
	}
	merge := mergeAll || len(dirty) > 0 && ix.mergeDue(p.cfg.IndexMergeDeltas)

	// 1. Snapshots.
	var snaps []*sessionSnap
	for _, e := range dirty {
		snaps = append(snaps, p.snapshot(e, true))
	}
	var mergeShards [numShards]bool
	if merge {
		taken := make(map[*entry]bool, len(dirty))
		for _, e := range dirty {
			taken[e] = true
			mergeShards[e.hh] = true
		}
		for hh := range numShards {
			mergeShards[hh] = mergeAll || mergeShards[hh] || ix.deltaShards[hh]
		}
		p.tableMu.RLock()
		others := make([]*entry, 0, len(p.table))
		for _, e := range p.table {
			if mergeShards[e.hh] && !taken[e] {
				others = append(others, e)
			}
		}
		p.tableMu.RUnlock()
		for _, e := range others {
			snaps = append(snaps, p.snapshot(e, false))
		}
	}
	snaps = dropShadowedTombstones(snaps)

	failed := func(err error) error {
		p.retake(snaps)
		p.addGarbage(garbage...)
		for _, u := range unsure {
			p.addUnsure(u)
		}
		return fmt.Errorf("s3persist: checkpoint: %w", err)
	}
	cp, err := p.seq.take(1)
	if err != nil {
		return failed(err)
	}

	// Before each step that replaces or deletes what another owner may need, the
	// checkpoint confirms that this instance still owns the prefix (see fence.go).
	if len(snaps) > 0 {
		if err := p.lease.renew(ctx); err != nil {
			return failed(err)
		}
	}

	// 2. Packets out of the journal.
	if err := p.movePackets(ctx, snaps); err != nil {
		return failed(err)
	}

	// 3. The index.
	var deltaSize int64
	if merge {
		if err := p.lease.renew(ctx); err != nil {
			return failed(err)
		}
		if err := p.writeShards(ctx, cp, &mergeShards, snaps); err != nil {
			return failed(err)
		}
		for _, d := range ix.deltas {
			garbage = append(garbage, deltaKey(d.cp))
		}
		ix.deltas, ix.deltaShards = nil, [numShards]bool{}
	} else if len(snaps) > 0 {
		if deltaSize, err = p.writeDelta(ctx, cp, snaps); err != nil {
			return failed(err)
		}
		ix.deltas = append(ix.deltas, deltaInfo{cp: cp, size: deltaSize})
		for _, s := range snaps {
			ix.deltaShards[s.e.hh] = true
		}
	}
	p.indexed(snaps)

	// 4. What the new index no longer needs.
	garbage = append(garbage, p.unnamedBatches(unsure)...)
	if len(covered) > 0 || len(garbage) > 0 {
		if err := p.lease.renew(ctx); err != nil {
			// The index is written: only the deletions wait for the next checkpoint.
			p.addGarbage(garbage...)
			return fmt.Errorf("s3persist: checkpoint: %w", err)
		}
	}
	var errs []error
	if len(covered) > 0 {
		if err := p.store.DeleteMany(ctx, covered); err != nil {
			var dm *s3store.DeleteManyError
			if !errors.As(err, &dm) {
				p.addGarbage(garbage...) // not tried: the next checkpoint does
				return fmt.Errorf("s3persist: checkpoint: delete covered journal segments: %w", err)
			}
			kept := make(map[string]bool, len(dm.Remaining))
			for _, k := range dm.Remaining {
				kept[k] = true
			}
			covered = slices.DeleteFunc(covered, func(k string) bool { return kept[k] })
			errs = append(errs, fmt.Errorf("delete covered journal segments: %w", err))
		}
		p.journal.covered(covered)
	}
	if len(garbage) > 0 {
		if err := p.store.DeleteMany(ctx, garbage); err != nil {
			// Nothing names what remains any more: the next checkpoint tries again
			// (and the garbage collection of the next start, should this process end).
			p.requeueGarbage(err, garbage)
			errs = append(errs, fmt.Errorf("delete garbage: %w", err))
		}
	}
	p.stats.checkpoints.Add(1)
	if merge {
		p.stats.merges.Add(1)
	}
	p.log.Debug("s3persist: checkpoint", "sessions", len(snaps), "merge", merge, "delta_bytes", deltaSize,
		"segments_deleted", len(covered), "garbage", len(garbage), "took", time.Since(start))
	if len(errs) > 0 {
		return fmt.Errorf("s3persist: checkpoint: %w", errors.Join(errs...))
	}
	return nil
}

// snapshot takes what a checkpoint needs of e. With dirty, e came from a dirty list:
// its flags are taken (and given back by retake if the checkpoint fails).
func (p *Persistence) snapshot(e *entry, dirty bool) *sessionSnap {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := &sessionSnap{e: e, inc: e.inc, fresh: -1}
	if dirty {
		s.tookDirty, e.dirty = true, false
	}
	if !e.exists || e.detached {
		s.deleted = true
		s.rec.ID = e.id
		return s
	}
	if dirty {
		s.stateChanged, e.stateDirty = e.stateDirty, false
		s.full, e.indexFull = e.indexFull, false
		if e.q != nil {
			s.removed, e.q.removed = e.q.removed, nil
			slices.Sort(s.removed)
		}
	}
	s.rec = shardSession{ID: e.id, Incarnation: e.inc, State: e.state.record(), Watermark: e.lastRec}
	if e.q.empty() {
		return s
	}
	objs := map[*batchObj]*shardBatch{}
	var fresh shardBatch
	for q := range numQueues {
		for _, r := range e.q.q[q] {
			if r.obj != nil {
				b := objs[r.obj]
				if b == nil {
					b = &shardBatch{Seq: r.obj.seq}
					if r.obj.pack != nil {
						b.Pack, b.Off, b.Len = r.obj.pack.seq, uint64(r.obj.off), uint64(r.obj.length)
					}
					objs[r.obj] = b
				}
				b.Live[q] = append(b.Live[q], r.seq)
				continue
			}
			r.moving = true
			s.moved = append(s.moved, r)
			s.movedBytes += int(r.size)
			fresh.Live[q] = append(fresh.Live[q], r.seq)
		}
	}
	if len(s.moved) > 0 {
		slices.SortFunc(s.moved, func(a, b *packetRef) int { return cmpU64(a.seq, b.seq) })
		s.movedPkts = make([]*queuedPacket, len(s.moved))
		for i, r := range s.moved {
			s.movedPkts[i] = r.pinned
		}
		fresh.Seq = s.moved[0].seq
		s.rec.Batches = append(s.rec.Batches, fresh)
		s.newSeqs = append(s.newSeqs, fresh.Seq)
	}
	for obj, b := range objs {
		s.rec.Batches = append(s.rec.Batches, *b)
		s.objs = append(s.objs, obj)
		if !obj.indexed {
			s.newSeqs = append(s.newSeqs, obj.seq)
		}
	}
	slices.SortFunc(s.rec.Batches, func(a, b shardBatch) int { return cmpU64(a.Seq, b.Seq) })
	if len(s.moved) > 0 {
		s.fresh = slices.IndexFunc(s.rec.Batches, func(b shardBatch) bool { return b.Seq == fresh.Seq })
	}
	return s
}

// dropShadowedTombstones drops the tombstone of an id that also has a live snapshot: a
// Delete detaches an entry for good, so the live one is the later incarnation.
func dropShadowedTombstones(snaps []*sessionSnap) []*sessionSnap {
	live := map[string]bool{}
	for _, s := range snaps {
		if !s.deleted {
			live[string(s.rec.ID)] = true
		}
	}
	seen := map[string]bool{}
	return slices.DeleteFunc(snaps, func(s *sessionSnap) bool {
		if !s.deleted {
			return false
		}
		drop := live[string(s.rec.ID)] || seen[string(s.rec.ID)]
		seen[string(s.rec.ID)] = true
		return drop
	})
}

// retake gives back what a failed checkpoint took: the sessions become dirty again, with
// their changed state and removals.
func (p *Persistence) retake(snaps []*sessionSnap) {
	for _, s := range snaps {
		if !s.tookDirty {
			continue
		}
		e := s.e
		e.mu.Lock()
		if e.exists && e.inc == s.inc {
			e.stateDirty = e.stateDirty || s.stateChanged
			e.indexFull = e.indexFull || s.full
			if len(s.removed) > 0 && e.q != nil {
				e.q.removed = append(s.removed, e.q.removed...)
			}
		}
		p.markDirty(e)
		e.mu.Unlock()
	}
}

// indexed notes that the index now names what snaps took: their batches need not be in
// the next delta again.
func (p *Persistence) indexed(snaps []*sessionSnap) {
	for _, s := range snaps {
		if s.deleted || len(s.objs) == 0 && s.freshObj == nil {
			continue
		}
		e := s.e
		e.mu.Lock()
		if e.exists && e.inc == s.inc {
			for _, obj := range s.objs {
				obj.indexed = true
			}
			if s.freshObj != nil {
				s.freshObj.indexed = true
			}
		}
		e.mu.Unlock()
	}
}

// packJob is one pack object: the batches of several sessions, back to back.
type packJob struct {
	seq   uint64
	data  []byte
	snaps []*sessionSnap
}

// movePackets writes the pinned packets of snaps: own batch objects for the large ones,
// packs for the rest, and adopts each as soon as it is durable.
func (p *Persistence) movePackets(ctx context.Context, snaps []*sessionSnap) error {
	var own []*sessionSnap
	var packs []*packJob
	var cur *packJob
	for _, s := range snaps {
		if len(s.moved) == 0 {
			continue
		}
		if s.movedBytes >= ownBatchBytes {
			own = append(own, s)
			continue
		}
		if cur == nil || len(cur.data) >= packBytes {
			seq, err := p.seq.take(1)
			if err != nil {
				return err
			}
			cur = &packJob{seq: seq, data: uploadBuffers.get(packBytes + ownBatchBytes)}
			packs = append(packs, cur)
		}
		off := len(cur.data)
		cur.data = appendBatch(cur.data, s.movedPkts)
		b := &s.rec.Batches[s.fresh]
		b.Pack, b.Off, b.Len = cur.seq, uint64(off), uint64(len(cur.data)-off)
		cur.snaps = append(cur.snaps, s)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.cfg.LoadConcurrency)
	for _, job := range packs {
		if p.stopRequested() {
			g.Go(func() error { return errCheckpointAbandoned })
			break
		}
		g.Go(func() error { return p.writePack(gctx, job) })
	}
	for _, s := range own {
		if p.stopRequested() {
			g.Go(func() error { return errCheckpointAbandoned })
			break
		}
		g.Go(func() error { return p.writeBatch(gctx, s) })
	}
	return g.Wait()
}

// writePack writes one pack and adopts its batches.
func (p *Persistence) writePack(ctx context.Context, job *packJob) error {
	key := packKey(job.seq)
	if _, err := p.store.Put(ctx, key, job.data, s3store.PutOptions{}); err != nil {
		p.addGarbage(key) // it may exist; nothing will ever name it
		return fmt.Errorf("write pack %q: %w", key, err)
	}
	uploadBuffers.put(job.data)
	pack := &packObj{seq: job.seq}
	pack.live.Store(1) // held while its batches are adopted
	for _, s := range job.snaps {
		b := s.rec.Batches[s.fresh]
		p.adoptBatch(s, &batchObj{seq: b.Seq, pack: pack, off: uint32(b.Off), length: uint32(b.Len)})
	}
	if pack.live.Add(-1) == 0 {
		p.addGarbage(key)
	}
	return nil
}

// writeBatch writes the own batch object of s and adopts it.
func (p *Persistence) writeBatch(ctx context.Context, s *sessionSnap) error {
	data := encodeBatch(s.movedPkts)
	key := batchKey(clientPrefix(s.rec.ID), s.moved[0].seq)
	if _, err := p.store.Put(ctx, key, data, s3store.PutOptions{}); err != nil {
		p.addUnsure(unsureBatch{id: s.rec.ID, key: key, seq: s.moved[0].seq})
		return fmt.Errorf("write packets of %q: %w", s.rec.ID, err)
	}
	uploadBuffers.put(data)
	obj := &batchObj{seq: s.moved[0].seq}
	p.adoptBatch(s, obj)
	if obj.live == 0 {
		p.addGarbage(key)
	}
	return nil
}

// adoptBatch points the moved packets of s that are still queued at obj, now durable: their
// payloads leave the pinned memory for the cache. A pack counts obj as live if any is.
func (p *Persistence) adoptBatch(s *sessionSnap, obj *batchObj) {
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.exists || e.inc != s.inc {
		return
	}
	var unpinned int64
	for i, r := range s.moved {
		if r.pinned != s.movedPkts[i] || !e.q.has(int(r.queue), r.seq) {
			continue // removed meanwhile
		}
		r.obj, r.pinned = obj, nil
		obj.live++
		unpinned += int64(r.size)
		_ = p.cache.Add(r.seq, s.movedPkts[i], int64(r.size))
	}
	if obj.live > 0 && obj.pack != nil {
		obj.pack.live.Add(1)
	}
	s.freshObj = obj
	p.unpin(unpinned)
}

// writeDelta writes the index delta of checkpoint cp and returns its size.
func (p *Persistence) writeDelta(ctx context.Context, cp uint64, snaps []*sessionSnap) (int64, error) {
	rec := deltaRecord{Format: formatVersion, Checkpoint: cp, Sessions: make([]deltaSession, len(snaps))}
	slices.SortFunc(snaps, func(a, b *sessionSnap) int { return cmp.Compare(string(a.rec.ID), string(b.rec.ID)) })
	for i, s := range snaps {
		if s.deleted {
			rec.Sessions[i] = deltaSession{ID: s.rec.ID, Deleted: true}
			continue
		}
		ds := deltaSession{ID: s.rec.ID, Incarnation: s.rec.Incarnation, Watermark: s.rec.Watermark, Full: s.full}
		if s.full || s.stateChanged {
			ds.State = &s.rec.State
		}
		if s.full {
			ds.Batches = s.rec.Batches
		} else {
			ds.Removed = s.removed
			ds.Batches = s.newBatches()
		}
		rec.Sessions[i] = ds
	}
	data, err := encode(rec)
	if err != nil {
		return 0, err
	}
	key := deltaKey(cp)
	if _, err := p.store.Put(ctx, key, data, s3store.PutOptions{}); err != nil {
		// A delta that may exist is harmless: recovery applies it, and it holds what
		// the sessions were when taken, older than what the journal replays on top and
		// than the next index write, after which the next checkpoint deletes it.
		p.addGarbage(key)
		return 0, fmt.Errorf("write index delta %q: %w", key, err)
	}
	return int64(len(data)), nil
}

// writeShards writes the base shard of every shard in which, from the live sessions of
// snaps, as of checkpoint cp.
func (p *Persistence) writeShards(ctx context.Context, cp uint64, which *[numShards]bool, snaps []*sessionSnap) error {
	var byShard [numShards][]shardSession
	for _, s := range snaps {
		if !s.deleted {
			byShard[s.e.hh] = append(byShard[s.e.hh], s.rec)
		}
	}
	var sizes [numShards]atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.cfg.LoadConcurrency)
	for hh := range numShards {
		if !which[hh] {
			continue
		}
		if p.stopRequested() {
			g.Go(func() error { return errCheckpointAbandoned })
			break
		}
		g.Go(func() error {
			sessions := byShard[hh]
			slices.SortFunc(sessions, func(a, b shardSession) int { return cmp.Compare(string(a.ID), string(b.ID)) })
			data, err := encode(shardRecord{Format: formatVersion, Sessions: sessions, Through: cp})
			if err != nil {
				return err
			}
			if _, err := p.store.Put(gctx, shardKey(hh), data, s3store.PutOptions{}); err != nil {
				return fmt.Errorf("write index shard %02x: %w", hh, err)
			}
			sizes[hh].Store(int64(len(data)))
			return nil
		})
	}
	err := g.Wait()
	for hh := range numShards {
		if n := sizes[hh].Load(); n > 0 {
			p.index.baseBytes[hh] = n
		}
	}
	return err
}

// requeueGarbage queues again for the next checkpoint what a failed deletion of garbage
// may have left.
func (p *Persistence) requeueGarbage(err error, garbage []string) {
	var dm *s3store.DeleteManyError
	if errors.As(err, &dm) {
		p.addGarbage(dm.Remaining...)
		return
	}
	p.addGarbage(garbage...)
}
