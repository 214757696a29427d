package s3persist

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/s3persist/s3persist/s3store"
)

// A checkpoint makes the durable state of sessions independent of the journal, so that
// the journal segments it covered can be deleted:
//
//  0. it notes the durable journal segments (T0), then takes the dirty index shards and
//     the garbage: every record in those segments was made before T0, so each session's
//     state taken after T0 includes it;
//  1. for every session of a dirty shard, under the session's lock, it takes a snapshot:
//     state, watermark (last record number), its batch objects with their live packets,
//     and the packets only the journal holds (pinned);
//  2. it writes one new batch object per session with pinned packets, and adopts it in
//     memory (the payloads leave the pinned memory for the cache);
//  3. it writes the session record of every session whose state changed;
//  4. it writes the dirty index shards;
//  5. only when all of that is durable, it deletes the covered journal segments and the
//     garbage (batch objects with no live packet, records of deleted sessions).
//
// Garbage whose deletion fails in 5 is queued again: the next checkpoint deletes it (the
// records of deleted ids after checking again that the id was not created anew).
// A failure anywhere before 5 leaves the shards dirty and the segments in place: the
// next checkpoint tries again, and recovery in between replays the journal on top of
// whatever shards were written (records at or below a shard's watermark are skipped).
// One checkpoint runs at a time; it holds no session lock during a request.

// markDirty records that index shard hh must be rewritten.
func (p *Persistence) markDirty(hh int) { p.dirty[hh].Store(true) }

// errCheckpointAbandoned fails a checkpoint that Shutdown stopped.
var errCheckpointAbandoned = errors.New("abandoned: the instance is shutting down")

// stopRequested reports whether Shutdown has begun. A checkpoint then starts no more
// requests and fails: those in flight finish (so nothing of it lands after Shutdown
// returns), its shards stay dirty and the journal keeps everything, which the next
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

// addGarbage queues batch objects for deletion by the next checkpoint, which rewrites
// the shards that named them.
func (p *Persistence) addGarbage(keys ...string) {
	if len(keys) == 0 {
		return
	}
	p.garbageMu.Lock()
	p.garbage = append(p.garbage, keys...)
	p.garbageMu.Unlock()
}

// addDeletedRecord queues the session record object of a deleted id for deletion.
func (p *Persistence) addDeletedRecord(id []byte) {
	p.garbageMu.Lock()
	p.deletedRecords = append(p.deletedRecords, id)
	p.garbageMu.Unlock()
}

// unsureBatch is a batch object whose put failed with an unknown outcome (a lost
// acknowledgement, a timeout): it may exist. If a later checkpoint writes the same
// packets again, it writes the same key (a batch is named after its lowest packet
// number) and the session names it; otherwise nothing ever names it, and the checkpoint
// deletes it rather than leave it to the garbage collection of the next start.
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

func (p *Persistence) takeGarbage() ([]string, [][]byte, []unsureBatch) {
	p.garbageMu.Lock()
	defer p.garbageMu.Unlock()
	g, d, u := p.garbage, p.deletedRecords, p.unsure
	p.garbage, p.deletedRecords, p.unsure = nil, nil, nil
	return g, d, u
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
						named = named || r.obj != nil && r.obj.seq == u.seq
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
	e          *entry
	inc        uint64
	rec        shardSession
	moved      []*packetRef    // pinned packets to move into a new batch object
	movedPkts  []*queuedPacket // their payloads, in ascending number
	writeState bool
}

// checkpoint runs one checkpoint (see above). It returns nil when there was nothing to
// do or everything is durable.
func (p *Persistence) checkpoint(ctx context.Context) error {
	p.ckptMu.Lock()
	defer p.ckptMu.Unlock()
	start := time.Now()

	covered := p.journal.durable() // T0
	// Garbage before the dirty flags: whatever made an object garbage marked its shard
	// dirty first, so every object taken here is dropped by a shard written below.
	garbage, deleted, unsure := p.takeGarbage()
	var dirty [numShards]bool
	var shards []int
	for hh := range numShards {
		if p.dirty[hh].Swap(false) {
			dirty[hh] = true
			shards = append(shards, hh)
		}
	}
	if len(shards) == 0 && len(covered) == 0 && len(garbage) == 0 && len(deleted) == 0 && len(unsure) == 0 {
		return nil
	}
	failed := func(err error) error {
		for _, hh := range shards {
			p.markDirty(hh)
		}
		p.addGarbage(garbage...)
		for _, id := range deleted {
			p.addDeletedRecord(id)
		}
		for _, u := range unsure {
			p.addUnsure(u)
		}
		return fmt.Errorf("s3persist: checkpoint: %w", err)
	}

	// 1. Snapshots.
	p.tableMu.RLock()
	entries := make([]*entry, 0, len(p.table))
	for _, e := range p.table {
		if dirty[e.hh] {
			entries = append(entries, e)
		}
	}
	p.tableMu.RUnlock()
	byShard := make(map[int][]*sessionSnap, len(shards))
	var snaps []*sessionSnap
	for _, e := range entries {
		if s := p.snapshot(e); s != nil {
			byShard[int(e.hh)] = append(byShard[int(e.hh)], s)
			snaps = append(snaps, s)
		}
	}

	// Before each step that replaces or deletes what another owner may need, the
	// checkpoint confirms that this instance still owns the prefix (see fence.go).
	steps23 := slices.ContainsFunc(snaps, func(s *sessionSnap) bool { return len(s.moved) > 0 || s.writeState })
	if steps23 {
		if err := p.lease.renew(ctx); err != nil {
			p.restoreStateDirty(snaps)
			return failed(err)
		}
	}

	// 2 and 3. Batch objects and session records, side by side; a session's batch is
	// adopted as soon as it is durable.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.cfg.LoadConcurrency)
	for _, s := range snaps {
		if p.stopRequested() {
			g.Go(func() error { return errCheckpointAbandoned })
			break
		}
		if len(s.moved) > 0 {
			g.Go(func() error { return p.writeBatch(gctx, s) })
		}
		if s.writeState {
			g.Go(func() error { return p.writeSessionRecord(gctx, s) })
		}
	}
	if err := g.Wait(); err != nil {
		p.restoreStateDirty(snaps)
		return failed(err)
	}

	// 4. Index shards.
	if len(shards) > 0 {
		if err := p.lease.renew(ctx); err != nil {
			return failed(err)
		}
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(p.cfg.LoadConcurrency)
	for _, hh := range shards {
		if p.stopRequested() {
			g.Go(func() error { return errCheckpointAbandoned })
			break
		}
		if p.frozen[hh] {
			continue // its object is unreadable: left for an operator (see load.go)
		}
		g.Go(func() error { return p.writeShard(gctx, hh, byShard[hh]) })
	}
	if err := g.Wait(); err != nil {
		return failed(err)
	}

	// 5. What the new shards no longer need.
	garbage = append(garbage, p.unnamedBatches(unsure)...)
	records := p.sessionRecordGarbage(deleted)
	if len(covered) > 0 || len(garbage)+len(records) > 0 {
		if err := p.lease.renew(ctx); err != nil {
			return failed(err)
		}
	}
	var errs []error
	if len(covered) > 0 {
		if err := p.store.DeleteMany(ctx, covered); err != nil {
			var dm *s3store.DeleteManyError
			if !errors.As(err, &dm) {
				p.requeueGarbage(err, garbage, deleted) // not tried: the next checkpoint does
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
	if len(garbage)+len(records) > 0 {
		if err := p.store.DeleteMany(ctx, append(slices.Clip(garbage), records...)); err != nil {
			// Nothing names what remains any more: the next checkpoint tries again
			// (and the garbage collection of the next start, should this process end).
			p.requeueGarbage(err, garbage, deleted)
			errs = append(errs, fmt.Errorf("delete garbage: %w", err))
		}
	}
	p.stats.checkpoints.Add(1)
	p.log.Debug("s3persist: checkpoint", "shards", len(shards), "sessions", len(snaps),
		"segments_deleted", len(covered), "garbage", len(garbage)+len(records), "took", time.Since(start))
	if len(errs) > 0 {
		return fmt.Errorf("s3persist: checkpoint: %w", errors.Join(errs...))
	}
	return nil
}

// snapshot takes what a checkpoint needs of e, or nil if e is no session.
func (p *Persistence) snapshot(e *entry) *sessionSnap {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.exists || e.detached || e.broken != nil {
		return nil
	}
	s := &sessionSnap{e: e, inc: e.inc, writeState: e.stateDirty}
	e.stateDirty = false
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
					objs[r.obj] = b
				}
				b.Live[q] = append(b.Live[q], r.seq)
				continue
			}
			s.moved = append(s.moved, r)
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
	}
	for _, b := range objs {
		s.rec.Batches = append(s.rec.Batches, *b)
	}
	slices.SortFunc(s.rec.Batches, func(a, b shardBatch) int { return cmpU64(a.Seq, b.Seq) })
	return s
}

// writeBatch writes the new batch object of s and adopts it: its packets leave the
// pinned memory for the cache, unless they were removed meanwhile.
func (p *Persistence) writeBatch(ctx context.Context, s *sessionSnap) error {
	data := encodeBatch(s.movedPkts)
	key := batchKey(clientPrefix(s.rec.ID), s.moved[0].seq)
	if _, err := p.store.Put(ctx, key, data, s3store.PutOptions{}); err != nil {
		p.addUnsure(unsureBatch{id: s.rec.ID, key: key, seq: s.moved[0].seq})
		return fmt.Errorf("write packets of %q: %w", s.rec.ID, err)
	}
	uploadBuffers.put(data)
	e := s.e
	e.mu.Lock()
	defer e.mu.Unlock()
	obj := &batchObj{seq: s.moved[0].seq}
	if e.exists && e.inc == s.inc {
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
		p.pinned.Add(-unpinned)
	}
	if obj.live == 0 {
		p.addGarbage(key)
	}
	return nil
}

// writeSessionRecord writes the session record object of s.
func (p *Persistence) writeSessionRecord(ctx context.Context, s *sessionSnap) error {
	data, err := encode(sessionRecord{Format: formatVersion, ID: s.rec.ID, Incarnation: s.inc, State: s.rec.State})
	if err != nil {
		return err
	}
	if _, err := p.store.Put(ctx, clientPrefix(s.rec.ID)+sessionKeySuffix, data, s3store.PutOptions{}); err != nil {
		return fmt.Errorf("write the session record of %q: %w", s.rec.ID, err)
	}
	e := s.e
	e.mu.Lock()
	if e.exists && e.inc == s.inc {
		e.stored = true
	}
	e.mu.Unlock()
	return nil
}

// restoreStateDirty marks the sessions whose record a failed checkpoint meant to write.
func (p *Persistence) restoreStateDirty(snaps []*sessionSnap) {
	for _, s := range snaps {
		if s.writeState {
			s.e.mu.Lock()
			if s.e.exists && s.e.inc == s.inc {
				s.e.stateDirty = true
			}
			s.e.mu.Unlock()
		}
	}
}

// writeShard writes index shard hh holding snaps.
func (p *Persistence) writeShard(ctx context.Context, hh int, snaps []*sessionSnap) error {
	rec := shardRecord{Format: formatVersion, Sessions: make([]shardSession, len(snaps))}
	for i, s := range snaps {
		rec.Sessions[i] = s.rec
	}
	data, err := encode(rec)
	if err != nil {
		return err
	}
	if _, err := p.store.Put(ctx, shardKey(hh), data, s3store.PutOptions{}); err != nil {
		return fmt.Errorf("write index shard %02x: %w", hh, err)
	}
	return nil
}

// requeueGarbage queues again for the next checkpoint what a failed deletion of garbage
// (batch objects) and of the records of deleted ids may have left. A record goes back as
// its id, so that the next checkpoint checks again that the id was not created anew.
func (p *Persistence) requeueGarbage(err error, garbage []string, deleted [][]byte) {
	remaining := map[string]bool{}
	var dm *s3store.DeleteManyError
	if errors.As(err, &dm) {
		for _, k := range dm.Remaining {
			remaining[k] = true
		}
	} else {
		for _, k := range garbage {
			remaining[k] = true
		}
		for _, id := range deleted {
			remaining[sessionKey(id)] = true
		}
	}
	for _, k := range garbage {
		if remaining[k] {
			p.addGarbage(k)
		}
	}
	for _, id := range deleted {
		if remaining[sessionKey(id)] {
			p.addDeletedRecord(id)
		}
	}
}

// sessionRecordGarbage returns the keys of the session records of deleted ids that do
// not exist again; an id created again after its Delete owns its record now.
func (p *Persistence) sessionRecordGarbage(ids [][]byte) []string {
	var keys []string
	for _, id := range ids {
		if e := p.lookup(id, false); e != nil {
			alive := e.exists
			if alive {
				e.stored = true
			}
			e.mu.Unlock()
			if alive {
				continue
			}
		}
		keys = append(keys, clientPrefix(id)+sessionKeySuffix)
	}
	return keys
}
