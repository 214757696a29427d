package s3persist

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/s3persist/s3persist/s3store"
)

// maxEpochAttempts bounds the read-modify-write of the system record's epoch when other
// processes bump it at the same moment.
const maxEpochAttempts = 8

// load reads the system record, the retained set and the index shards, replays the
// journal, and takes a new boot epoch above every number found. It returns the journal
// segments it replayed: the next checkpoint covers them.
func (p *Persistence) load(ctx context.Context, prev ownerRecord) ([]string, error) {
	start := time.Now()
	sys, sysETag, err := p.loadSystem(ctx)
	if err != nil {
		return nil, err
	}
	p.sys = vlpersistence.SystemState{Version: sys.Layout, CreatedAt: sys.CreatedAt}
	p.loadRetained(ctx)
	highest, err := p.loadShards(ctx)
	if err != nil {
		return nil, err
	}
	segments, records, h, err := p.replayJournal(ctx, prev)
	if err != nil {
		return nil, err
	}
	highest = max(highest, h)
	epoch, err := p.bumpEpoch(ctx, sys, sysETag, highest)
	if err != nil {
		return nil, err
	}
	p.seq = newSequencer(epoch)
	p.log.Info("s3persist: loaded", "sessions", p.live.Load(), "retained", len(p.retained.packets),
		"journal_segments", len(segments), "journal_records", records, "epoch", epoch, "took", time.Since(start))
	return segments, nil
}

// loadSystem reads the system record, creating it on first use.
func (p *Persistence) loadSystem(ctx context.Context) (systemRecord, string, error) {
	for range maxEpochAttempts {
		data, info, err := p.store.Get(ctx, keySystem)
		if errors.Is(err, s3store.ErrNotFound) {
			rec := systemRecord{Format: formatVersion, Layout: LayoutVersion, CreatedAt: time.Now().UTC().Format(time.RFC3339)}
			enc, err := encode(rec)
			if err != nil {
				return rec, "", err
			}
			info, err := p.store.Put(ctx, keySystem, enc, s3store.PutOptions{IfNoneMatch: true})
			if errors.Is(err, s3store.ErrPreconditionFailed) {
				continue // another process initialised it first: read theirs
			}
			if err != nil {
				return rec, "", fmt.Errorf("s3persist: initialise the bucket: %w", err)
			}
			p.log.Info("s3persist: initialised an empty bucket prefix", "layout", LayoutVersion)
			return rec, info.ETag, nil
		}
		if err != nil {
			return systemRecord{}, "", fmt.Errorf("s3persist: read the system record: %w", err)
		}
		rec, err := decodeSystem(keySystem, data)
		if err != nil {
			return rec, "", fmt.Errorf("s3persist: the bucket prefix holds an unreadable system record (is it used by something else?): %w", err)
		}
		if rec.Layout != LayoutVersion {
			return rec, "", fmt.Errorf("s3persist: the bucket prefix holds layout %q; this release reads %q only", rec.Layout, LayoutVersion)
		}
		return rec, info.ETag, nil
	}
	return systemRecord{}, "", errors.New("s3persist: the system record keeps changing under concurrent starts; retry")
}

// bumpEpoch stores an epoch above the stored one and above every number in use, with an
// if-match put so that two processes starting at once never share an epoch.
func (p *Persistence) bumpEpoch(ctx context.Context, rec systemRecord, etag string, highest uint64) (uint64, error) {
	for range maxEpochAttempts {
		next := max(rec.Epoch+1, highest>>counterBits+1)
		if next > maxEpoch {
			return 0, fmt.Errorf("s3persist: boot epoch %d exceeds %d", next, maxEpoch)
		}
		rec.Epoch = next
		data, err := encode(rec)
		if err != nil {
			return 0, err
		}
		_, err = p.store.Put(ctx, keySystem, data, s3store.PutOptions{IfMatch: etag})
		if err == nil {
			return next, nil
		}
		if !errors.Is(err, s3store.ErrPreconditionFailed) {
			return 0, fmt.Errorf("s3persist: store the boot epoch: %w", err)
		}
		if rec, etag, err = p.loadSystem(ctx); err != nil {
			return 0, err
		}
	}
	return 0, errors.New("s3persist: the system record keeps changing under concurrent starts; retry")
}

func (p *Persistence) loadRetained(ctx context.Context) {
	st := &p.retained
	data, _, err := p.store.Get(ctx, keyRetained)
	switch {
	case errors.Is(err, s3store.ErrNotFound):
	case err != nil:
		st.loadErr = fmt.Errorf("s3persist: read the retained set: %w", err)
	default:
		rec, derr := decodeRetained(keyRetained, data)
		if derr != nil {
			st.loadErr = fmt.Errorf("s3persist: the retained set cannot be loaded; delete or repair it: %w", derr)
			break
		}
		st.packets = rec.Packets
	}
	if st.loadErr != nil {
		p.log.Error("s3persist: retained set not loaded", "err", st.loadErr)
	}
}

// loadShards reads every index shard into the table. A shard that is missing or cannot
// be decoded is rebuilt from the per-client objects of its sessions (rebuildShard). It
// returns the highest number found.
func (p *Persistence) loadShards(ctx context.Context) (uint64, error) {
	var present [numShards]bool
	err := s3store.ListAll(ctx, p.store, indexRoot, func(o s3store.ObjectInfo) error {
		hh, err := parseShardKey(o.Key)
		if err != nil {
			p.log.Warn("s3persist: left alone an object this layout does not write", "err", err)
			return nil
		}
		present[hh] = true
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("s3persist: list index shards: %w", err)
	}
	var (
		mu      sync.Mutex
		loaded  [numShards][]shardSession
		rebuilt [numShards]*rebuiltShard
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.cfg.LoadConcurrency)
	for hh := range numShards {
		g.Go(func() error {
			if present[hh] {
				key := shardKey(hh)
				data, _, err := p.store.Get(gctx, key)
				switch {
				case errors.Is(err, s3store.ErrNotFound):
				case err != nil:
					return fmt.Errorf("s3persist: read index shard %q: %w", key, err)
				default:
					rec, err := decodeShard(key, data)
					if err == nil {
						mu.Lock()
						loaded[hh] = rec.Sessions
						mu.Unlock()
						return nil
					}
					p.log.Error("s3persist: index shard cannot be read; its sessions are rebuilt from their own objects and the shard is left for an operator", "err", err)
					p.frozen[hh] = true
				}
			}
			r, err := p.rebuildShard(gctx, hh)
			if err != nil {
				return err
			}
			mu.Lock()
			rebuilt[hh] = r
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	// Built here, on one goroutine, before New returns: nothing else sees the table yet.
	highest := uint64(0)
	for hh := range numShards {
		if !present[hh] || p.frozen[hh] {
			p.markDirty(hh)
		}
		for _, ss := range loaded[hh] {
			e := &entry{id: ss.ID, hh: uint8(hh), exists: true, stored: true, inc: ss.Incarnation, lastRec: ss.Watermark, state: ss.State.state()}
			highest = max(highest, ss.Incarnation, ss.Watermark)
			for _, b := range ss.Batches {
				obj := &batchObj{seq: b.Seq}
				for q := range numQueues {
					for _, seq := range b.Live[q] {
						e.addRef(&packetRef{seq: seq, queue: uint8(q), obj: obj})
						obj.live++
						highest = max(highest, seq)
					}
				}
			}
			e.sortQueues()
			p.adopt(e)
		}
		if r := rebuilt[hh]; r != nil {
			highest = max(highest, r.highest)
			if r.broken {
				// Rewriting the shard would drop the unreadable session, and the
				// garbage collector would then delete its objects: keep it as it is.
				p.frozen[hh] = true
			}
			for _, b := range r.brokenBatches {
				if p.brokenBatches == nil {
					p.brokenBatches = map[*entry][]string{}
				}
				p.brokenBatches[b.e] = append(p.brokenBatches[b.e], b.key)
			}
			for _, e := range r.entries {
				p.adopt(e)
			}
		}
	}
	return highest, nil
}

// adopt puts a loaded entry into the table, unless its id is taken (only a tampered or
// foreign object can make two places claim one id).
func (p *Persistence) adopt(e *entry) {
	if old := p.table[string(e.id)]; old != nil {
		p.log.Error("s3persist: two places claim one client id; the second is left alone", "id", fmt.Sprintf("%q", e.id))
		return
	}
	p.table[string(e.id)] = e
	p.live.Add(1)
}

// addRef appends r to its queue; sortQueues restores number order after a load.
func (e *entry) addRef(r *packetRef) {
	if e.q == nil {
		e.q = &queues{}
	}
	e.q.q[r.queue] = append(e.q.q[r.queue], r)
}

func (e *entry) sortQueues() {
	if e.q == nil {
		return
	}
	for q := range numQueues {
		slices.SortFunc(e.q.q[q], func(a, b *packetRef) int { return cmpU64(a.seq, b.seq) })
	}
}

// rebuiltShard is a shard rebuilt from per-client objects.
type rebuiltShard struct {
	entries []*entry
	highest uint64
	broken  bool // a session is unreadable: the shard must not be rewritten without it
	// brokenBatches are the objects (record and batches) of unreadable sessions.
	brokenBatches []brokenBatch
}

type brokenBatch struct {
	e   *entry
	key string
}

// rebuildShard reads the sessions of shard hh from their session records and batch
// objects (c/<hh>/...): the path for a shard never written (a bucket whose first
// checkpoint has not finished: then there is nothing here) or unreadable. Every packet of
// a batch object counts as live, since the removals were in the shard: after a rebuild a
// packet may be delivered twice, never lost. A session record that cannot be read makes
// a broken entry, reported by LoadForEach and left alone.
func (p *Persistence) rebuildShard(ctx context.Context, hh int) (*rebuiltShard, error) {
	type client struct {
		parsed  parsedKey
		session bool
		batches []uint64
	}
	clients := map[string]*client{}
	var order []string
	prefix := fmt.Sprintf("%s%02x/", clientsRoot, hh)
	err := s3store.ListAll(ctx, p.store, prefix, func(o s3store.ObjectInfo) error {
		pk, err := parseClientKey(o.Key)
		if err != nil {
			p.log.Warn("s3persist: left alone an object this layout does not write", "err", err)
			return nil
		}
		c := clients[pk.prefix]
		if c == nil {
			c = &client{parsed: pk}
			clients[pk.prefix] = c
			order = append(order, pk.prefix)
		}
		if pk.kind == keySession {
			c.session = true
		} else {
			c.batches = append(c.batches, pk.seq)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("s3persist: list sessions of shard %02x: %w", hh, err)
	}
	r := &rebuiltShard{}
	for _, cp := range order {
		c := clients[cp]
		if !c.session {
			continue // batches of no session: garbage for the collector
		}
		key := cp + sessionKeySuffix
		data, _, err := p.store.Get(ctx, key)
		if errors.Is(err, s3store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("s3persist: read session record %q: %w", key, err)
		}
		e := &entry{hh: uint8(hh), exists: true, stored: true}
		rec, err := decodeSession(key, data)
		if err == nil && clientPrefix(rec.ID) != cp {
			err = brokenEntry(key, "holds client id %q, which belongs under another key", rec.ID)
		}
		if err != nil {
			e.broken, e.id = err, c.parsed.readableID
			if e.id == nil {
				e.id = []byte(cp) // hashed key: the id is in the unreadable record
			}
			r.brokenBatches = append(r.brokenBatches, brokenBatch{e, key})
			for _, seq := range c.batches {
				r.brokenBatches = append(r.brokenBatches, brokenBatch{e, batchKey(cp, seq)})
			}
			p.log.Error("s3persist: session record cannot be read; the session is reported and left alone", "err", err)
			r.entries = append(r.entries, e)
			r.broken = true
			continue
		}
		e.id, e.inc, e.state = rec.ID, rec.Incarnation, rec.State.state()
		r.highest = max(r.highest, rec.Incarnation)
		for _, seq := range c.batches {
			if seq < rec.Incarnation {
				continue // of an earlier incarnation: garbage
			}
			bkey := batchKey(cp, seq)
			data, _, err := p.store.Get(ctx, bkey)
			if err != nil {
				return nil, fmt.Errorf("s3persist: read packets %q: %w", bkey, err)
			}
			b, err := decodeBatch(bkey, data, seq)
			if err != nil {
				p.log.Error("s3persist: a batch of packets cannot be decoded; left alone", "err", err)
				continue
			}
			obj := &batchObj{seq: seq}
			for _, pk := range b.Packets {
				e.addRef(&packetRef{seq: pk.Seq, queue: pk.Queue, obj: obj})
				obj.live++
				r.highest = max(r.highest, pk.Seq)
			}
		}
		e.sortQueues()
		r.entries = append(r.entries, e)
	}
	if len(r.entries) > 0 {
		p.log.Warn("s3persist: rebuilt an index shard from per-client objects", "shard", fmt.Sprintf("%02x", hh), "sessions", len(r.entries))
	}
	return r, nil
}

// segmentReadFactor and segmentReadBytes bound the reads of journal segments at New:
// up to segmentReadFactor times LoadConcurrency requests, with up to segmentReadBytes of
// segments (by their listed sizes) in flight.
const (
	segmentReadFactor = 4
	segmentReadBytes  = 64 << 20
)

// replayJournal reads every journal segment and applies its records in number order on
// top of the index. Records at or below a session's watermark are already in its state.
// A segment that cannot be decoded is reported and left alone (never deleted): replaying
// around it could reorder a session. It returns the keys of the segments replayed, the
// number of records, and the highest number found.
//
// Segments of an epoch below the previous owner's journal floor that it did not seal
// were uploaded by an owner after it was fenced (see fence.go): they are not replayed,
// and the next checkpoint deletes them.
func (p *Persistence) replayJournal(ctx context.Context, prev ownerRecord) ([]string, int, uint64, error) {
	var keys, void []string
	sealed := make(map[string]bool, len(prev.Sealed))
	for _, k := range prev.Sealed {
		sealed[k] = true
	}
	var sizes []int64
	err := s3store.ListAll(ctx, p.store, journalRoot, func(o s3store.ObjectInfo) error {
		_, epoch, _, err := parseSegmentKey(o.Key)
		switch {
		case err != nil:
			p.log.Warn("s3persist: left alone an object this layout does not write", "err", err)
		case epoch < prev.Floor && !sealed[o.Key]:
			void = append(void, o.Key)
		default:
			keys = append(keys, o.Key)
			sizes = append(sizes, o.Size)
		}
		return nil
	})
	if err != nil {
		return nil, 0, 0, fmt.Errorf("s3persist: list the journal: %w", err)
	}
	if len(void) > 0 {
		p.log.Warn("s3persist: ignored journal segments that a fenced owner uploaded after it lost the bucket prefix; they are deleted", "count", len(void))
		p.addGarbage(void...)
	}
	recs := make([][]journalRecord, len(keys))
	good := make([]bool, len(keys))
	broken := make([]bool, len(keys))
	// Segments are read segmentReadFactor times as many at once as other objects: in
	// Sync mode they are thousands of small ones (about a call each), and a start-up
	// waits for all of them. The bytes in flight stay within segmentReadBytes.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(segmentReadFactor * p.cfg.LoadConcurrency)
	inFlight := semaphore.NewWeighted(segmentReadBytes)
	var waitErr error // the group failed, or ctx ended
	for i, key := range keys {
		weight := min(max(sizes[i], 1), segmentReadBytes)
		if waitErr = inFlight.Acquire(gctx, weight); waitErr != nil {
			break
		}
		g.Go(func() error {
			defer inFlight.Release(weight)
			data, _, err := p.store.Get(gctx, key)
			if errors.Is(err, s3store.ErrNotFound) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("s3persist: read journal segment %q: %w", key, err)
			}
			r, err := decodeSegment(key, data)
			if err != nil {
				p.log.Error("s3persist: journal segment cannot be read; it is skipped and left alone", "err", err)
				broken[i] = true
				return nil
			}
			recs[i], good[i] = r, true
			return nil
		})
	}
	if err := g.Wait(); err != nil || waitErr != nil {
		return nil, 0, 0, cmp.Or(err, fmt.Errorf("s3persist: read the journal: %w", waitErr))
	}
	var all []journalRecord
	var replayed []string
	for i, key := range keys {
		if good[i] {
			all = append(all, recs[i]...)
			replayed = append(replayed, key)
		} else if broken[i] {
			p.brokenSegments = append(p.brokenSegments, key)
		}
	}
	slices.SortStableFunc(all, func(a, b journalRecord) int { return cmpU64(a.Seq, b.Seq) })
	highest := uint64(0)
	for i := range all {
		highest = max(highest, all[i].Seq)
		p.replay(&all[i])
	}
	for k, e := range p.table {
		if !e.exists {
			delete(p.table, k)
		}
	}
	return replayed, len(all), highest, nil
}

// replay applies one journal record to the table, through the same apply as live calls
// (before New returns: one goroutine, no locks).
func (p *Persistence) replay(rec *journalRecord) {
	// Whatever the record does, its segment will be deleted by the next checkpoint, which
	// must therefore rewrite the record's shard: a replayed Delete leaves no session
	// behind to mark it.
	p.markDirty(shardOf(rec.ID))
	e := p.table[string(rec.ID)]
	if e == nil {
		// apply decides whether the record makes a session; replayJournal drops the
		// entries left without one.
		e = &entry{id: clone(rec.ID), hh: uint8(shardOf(rec.ID))}
		p.table[string(e.id)] = e
	}
	p.apply(e, rec)
}

// collectGarbage deletes, once after start, the objects under c/ that no session needs:
// batch objects of earlier processes that no index names (left by a crash during a
// checkpoint, or by a failed deletion), session records of ids that do not exist, and
// probe objects of the conditional-write self-test that a crash left behind.
// It runs in the background, owned by Persistence, and holds the checkpoint lock while it
// decides and deletes, so that it never races with a checkpoint writing new objects.
func (p *Persistence) collectGarbage() {
	defer p.bg.Done()
	defer close(p.gcDone)
	ctx, cancel := context.WithCancel(p.bgCtx)
	defer cancel()
	go func() { // owned: ends with this function at the latest
		select {
		case <-p.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	var candidates []parsedKey
	var probes []string
	err := s3store.ListAll(ctx, p.store, clientsRoot, func(o s3store.ObjectInfo) error {
		pk, err := parseClientKey(o.Key)
		if err == nil {
			candidates = append(candidates, pk)
		}
		return nil
	})
	if err == nil {
		// Probe objects of New's self-test that a crash left behind: only owners write
		// them, and this instance deleted its own.
		err = s3store.ListAll(ctx, p.store, probeRoot, func(o s3store.ObjectInfo) error {
			probes = append(probes, o.Key)
			return nil
		})
	}
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("s3persist: garbage collection could not list the sessions; it runs again at the next start", "err", err)
		}
		return
	}
	p.ckptMu.Lock()
	defer p.ckptMu.Unlock()
	live := map[string]bool{}   // client prefixes of existing sessions
	needed := map[string]bool{} // batch keys named by a session
	// The entries are copied first: waiting for an entry's lock (its owner may wait for
	// room in the journal) with tableMu held would stall every call that creates a
	// session, and with it every reader queued behind that writer.
	p.tableMu.RLock()
	entries := slices.Collect(maps.Values(p.table))
	p.tableMu.RUnlock()
	for _, e := range entries {
		e.mu.Lock()
		if e.exists {
			prefix := clientPrefix(e.id)
			live[prefix] = true
			if e.q != nil {
				for q := range numQueues {
					for _, r := range e.q.q[q] {
						if r.obj != nil {
							needed[batchKey(prefix, r.obj.seq)] = true
						}
					}
				}
			}
		}
		e.mu.Unlock()
	}
	first := p.seq.first()
	garbage := probes
	for _, pk := range candidates {
		hh, _ := strconv.ParseUint(pk.prefix[len(clientsRoot):len(clientsRoot)+2], 16, 8)
		if p.frozen[hh] {
			continue // rebuilt from these objects: keep them all
		}
		switch pk.kind {
		case keySession:
			if !live[pk.prefix] {
				garbage = append(garbage, pk.prefix+sessionKeySuffix)
			}
		case keyBatch:
			key := batchKey(pk.prefix, pk.seq)
			if pk.seq < first && !needed[key] {
				garbage = append(garbage, key)
			}
		}
	}
	if len(garbage) == 0 {
		return
	}
	if err := p.lease.renew(ctx); err != nil {
		if ctx.Err() == nil {
			p.log.Warn("s3persist: garbage collection stopped: ownership not confirmed", "err", err)
		}
		return
	}
	if err := p.store.DeleteMany(ctx, garbage); err != nil && ctx.Err() == nil {
		p.log.Warn("s3persist: garbage collection left objects for the next start", "err", err)
		return
	}
	p.log.Info("s3persist: deleted objects no session needs", "count", len(garbage))
}
