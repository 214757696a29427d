package s3persist

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
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

// load reads the system record, the retained set and the index, replays the journal, and
// takes a new boot epoch above every number found. It returns the journal segments it
// replayed: the next checkpoint covers them.
//
// A bucket of layout 2 is converted by the same write that stores the epoch: its objects
// are valid objects of layout 3 (index shards with no deltas merged, batch objects, the
// same journal), except for the session records, which layout 3 never reads and the
// garbage collection deletes. From that write on, a release of layout 2 refuses the
// bucket rather than miss the objects only layout 3 writes.
func (p *Persistence) load(ctx context.Context, prev ownerRecord) ([]string, error) {
	start := time.Now()
	sys, sysETag, err := p.loadSystem(ctx)
	if err != nil {
		return nil, err
	}
	from := sys.Layout
	p.sys = vlpersistence.SystemState{Version: LayoutVersion, CreatedAt: sys.CreatedAt}
	p.loadRetained(ctx)
	highest, err := p.loadIndex(ctx, from)
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
	if from != LayoutVersion {
		p.log.Info("s3persist: converted the bucket prefix to this release's layout", "from", from, "to", LayoutVersion)
	}
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
		if rec.Layout != LayoutVersion && rec.Layout != layout2 {
			return rec, "", fmt.Errorf("s3persist: the bucket prefix holds layout %q; this release reads %q and converts %q", rec.Layout, LayoutVersion, layout2)
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
		rec.Epoch, rec.Layout = next, LayoutVersion
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

// loadIndex reads the index into the table: every base shard, then the deltas in
// checkpoint order, each applied to the shards whose base is older than it. An index
// object that cannot be read fails New: the state of its sessions is nowhere else, and
// running without it would lose them (docs/layout.md, "Recovery"). For a bucket of
// layout 2, a missing shard is rebuilt from the session records of its sessions. It
// returns the highest number found.
func (p *Persistence) loadIndex(ctx context.Context, layout string) (uint64, error) {
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
	var deltaCPs []uint64
	err = s3store.ListAll(ctx, p.store, deltaRoot, func(o s3store.ObjectInfo) error {
		cp, err := parseNumberedKey(deltaRoot, o.Key)
		if err != nil {
			p.log.Warn("s3persist: left alone an object this layout does not write", "err", err)
			return nil
		}
		deltaCPs = append(deltaCPs, cp)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("s3persist: list index deltas: %w", err)
	}
	// The deltas first, each split by shard as it is decoded: every shard's build needs
	// them. Then each shard is read, decoded and built on its own (its base, then the
	// deltas' sessions of that shard after it, in checkpoint order), side by side, and its
	// decoded record dropped at once; the table is filled at the end. Nothing else sees
	// the table before New returns.
	type splitDelta struct {
		size    int64
		byShard [numShards][]*deltaSession
	}
	deltas := make([]*splitDelta, len(deltaCPs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.cfg.LoadConcurrency)
	for i, cp := range deltaCPs {
		g.Go(func() error {
			key := deltaKey(cp)
			data, _, err := p.store.Get(gctx, key)
			switch {
			case errors.Is(err, s3store.ErrNotFound):
				return nil // gone between the listing and the read
			case err != nil:
				return fmt.Errorf("s3persist: read index delta %q: %w", key, err)
			}
			rec, err := decodeDelta(key, data)
			if err == nil && rec.Checkpoint != cp {
				err = brokenEntry(key, "holds checkpoint %d", rec.Checkpoint)
			}
			if err != nil {
				return fmt.Errorf("s3persist: index delta %q cannot be read; the state of its sessions is only there, so New stops rather than lose them: %w", key, err)
			}
			d := &splitDelta{size: int64(len(data))}
			for j := range rec.Sessions {
				hh := shardOf(rec.Sessions[j].ID)
				d.byShard[hh] = append(d.byShard[hh], &rec.Sessions[j])
			}
			deltas[i] = d
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	ix := &p.index
	for i, d := range deltas {
		if d != nil {
			ix.deltas = append(ix.deltas, deltaInfo{cp: deltaCPs[i], size: d.size})
		}
	}
	var (
		built   [numShards][]*entry
		highest [numShards]uint64
		named   [numShards]bool // a delta after the base names sessions of the shard
		packs   packRegistry
	)
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(p.cfg.LoadConcurrency)
	for hh := range numShards {
		g.Go(func() error {
			var base shardRecord
			switch {
			case !present[hh] && layout == layout2:
				r, err := p.rebuildShard(gctx, hh)
				if err != nil {
					return err
				}
				base = r
			case present[hh]:
				key := shardKey(hh)
				data, _, err := p.store.Get(gctx, key)
				switch {
				case errors.Is(err, s3store.ErrNotFound):
				case err != nil:
					return fmt.Errorf("s3persist: read index shard %q: %w", key, err)
				default:
					if base, err = decodeShard(key, data); err != nil {
						return fmt.Errorf("s3persist: index shard %q cannot be read; the state of its sessions is only there, so New stops rather than lose them (repair the object, or delete it to give them up): %w", key, err)
					}
					ix.baseBytes[hh] = int64(len(data))
				}
			}
			var after []deltaEntry
			for i, d := range deltas {
				if d == nil || deltaCPs[i] <= base.Through {
					continue // gone, or merged into the base shard
				}
				for _, ds := range d.byShard[hh] {
					after = append(after, deltaEntry{deltaCPs[i], ds})
				}
			}
			named[hh] = len(after) > 0
			built[hh], highest[hh] = p.buildShard(hh, &base, after, &packs)
			highest[hh] = max(highest[hh], base.Through)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	top, total := uint64(0), 0
	for hh := range numShards {
		total += len(built[hh])
	}
	if len(p.table) == 0 {
		p.table = make(map[string]*entry, total) // no rehashing while a million are added
	}
	for hh := range numShards {
		ix.deltaShards[hh] = named[hh]
		top = max(top, highest[hh])
		for _, e := range built[hh] {
			p.adopt(e)
		}
		if !present[hh] && layout == layout2 {
			for _, e := range built[hh] {
				// Rebuilt from layout-2 session records: the index must get it before
				// the garbage collection may delete those (see collectGarbage).
				e.stateDirty, e.indexFull = true, true
				p.markDirty(e)
				p.keepSessionRecords = true
			}
		}
	}
	for _, d := range ix.deltas {
		top = max(top, d.cp)
	}
	return top, nil
}

// deltaEntry is a session of the delta of checkpoint cp.
type deltaEntry struct {
	cp uint64
	ds *deltaSession
}

// packRegistry gives the batches of every shard one packObj per pack.
type packRegistry struct {
	mu    sync.Mutex
	packs map[uint64]*packObj
}

func (r *packRegistry) get(seq uint64) *packObj {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.packs == nil {
		r.packs = map[uint64]*packObj{}
	}
	pk := r.packs[seq]
	if pk == nil {
		pk = &packObj{seq: seq}
		r.packs[seq] = pk
	}
	return pk
}

// buildShard builds the entries of shard hh from its base and the deltas after it, and
// returns them with the highest number they hold.
func (p *Persistence) buildShard(hh int, base *shardRecord, deltas []deltaEntry, packs *packRegistry) ([]*entry, uint64) {
	entries := make([]*entry, 0, len(base.Sessions))
	var byID map[string]*entry
	if len(deltas) > 0 {
		byID = make(map[string]*entry, len(base.Sessions))
	}
	highest := uint64(0)
	for _, ss := range base.Sessions {
		e := &entry{id: ss.ID, hh: uint8(hh), exists: true, inc: ss.Incarnation, lastRec: ss.Watermark, state: ss.State.state()}
		e.addBatches(ss.Batches, packs)
		highest = max(highest, ss.Incarnation, ss.Watermark)
		entries = append(entries, e)
		if byID != nil {
			byID[string(e.id)] = e
		}
	}
	for _, de := range deltas {
		ds := de.ds
		highest = max(highest, ds.Incarnation, ds.Watermark)
		e := byID[string(ds.ID)]
		if ds.Deleted {
			if e != nil {
				e.exists = false
				delete(byID, string(ds.ID))
			}
			continue
		}
		replace := e == nil || ds.Full || e.inc != ds.Incarnation
		if replace && !ds.Full {
			p.log.Warn("s3persist: an index delta changes a session that no earlier index object holds; it loads with what the delta says", "key", deltaKey(de.cp), "id", fmt.Sprintf("%q", ds.ID))
		}
		if e == nil {
			e = &entry{id: ds.ID, hh: uint8(hh), exists: true}
			entries = append(entries, e)
			byID[string(e.id)] = e
		}
		if replace {
			e.q, e.state = nil, sessionState{}
		}
		e.inc, e.lastRec = ds.Incarnation, ds.Watermark
		if ds.State != nil {
			e.state = ds.State.state()
		}
		e.addBatches(ds.Batches, packs)
		e.dropNumbers(ds.Removed)
	}
	if len(deltas) > 0 {
		entries = slices.DeleteFunc(entries, func(e *entry) bool { return !e.exists || byID[string(e.id)] != e })
	}
	// Queues in number order, each packet once (a delta may name again a batch an
	// earlier delta named, when the checkpoint that wrote that one failed after its
	// upload); then each batch counts its live packets, and each pack (shared) its
	// batches with a live packet.
	for _, e := range entries {
		if e.q == nil {
			continue
		}
		for q := range numQueues {
			e.q.q[q] = uniqueBySeq(e.q.q[q])
			for _, r := range e.q.q[q] {
				highest = max(highest, r.seq)
				if r.obj.live++; r.obj.live == 1 && r.obj.pack != nil {
					r.obj.pack.live.Add(1)
					highest = max(highest, r.obj.pack.seq)
				}
			}
		}
	}
	return entries, highest
}

// addBatches adds to e's queues the packets of the batches an index object lists.
// buildShard puts the queues in order and counts the live packets at the end.
func (e *entry) addBatches(batches []shardBatch, packs *packRegistry) {
	for _, b := range batches {
		obj := &batchObj{seq: b.Seq, indexed: true}
		if b.Pack != 0 {
			obj.pack, obj.off, obj.length = packs.get(b.Pack), uint32(b.Off), uint32(b.Len)
		}
		for q := range numQueues {
			for _, seq := range b.Live[q] {
				e.addRef(&packetRef{seq: seq, queue: uint8(q), obj: obj})
			}
		}
	}
}

// dropNumbers removes the packets numbered seqs (ascending) from e's queues.
func (e *entry) dropNumbers(seqs []uint64) {
	if e.q == nil || len(seqs) == 0 {
		return
	}
	for q := range numQueues {
		e.q.q[q] = slices.DeleteFunc(e.q.q[q], func(r *packetRef) bool {
			_, found := slices.BinarySearch(seqs, r.seq)
			return found
		})
	}
}

// uniqueBySeq sorts refs by number and keeps the last of each number (the one of the
// latest index object).
func uniqueBySeq(refs []*packetRef) []*packetRef {
	slices.SortStableFunc(refs, func(a, b *packetRef) int { return cmpU64(a.seq, b.seq) })
	out := refs[:0]
	for i, r := range refs {
		if i+1 < len(refs) && refs[i+1].seq == r.seq {
			continue
		}
		out = append(out, r)
	}
	return out
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

// addRef appends r to its queue; loadIndex restores number order at the end.
func (e *entry) addRef(r *packetRef) {
	if e.q == nil {
		e.q = &queues{}
	}
	e.q.q[r.queue] = append(e.q.q[r.queue], r)
}

// rebuildShard reads the sessions of shard hh of a layout-2 bucket from their session
// records and batch objects (c/<hh>/...): that layout rebuilt a shard it had lost from
// them, and so does its conversion. Every packet of a batch object counts as live, since
// the removals were in the shard: after a rebuild a packet may be delivered twice, never
// lost. An object that cannot be read fails New.
func (p *Persistence) rebuildShard(ctx context.Context, hh int) (shardRecord, error) {
	type client struct {
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
			c = &client{}
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
	var r shardRecord
	if err != nil {
		return r, fmt.Errorf("s3persist: list sessions of shard %02x: %w", hh, err)
	}
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
			return r, fmt.Errorf("s3persist: read session record %q: %w", key, err)
		}
		rec, err := decodeSession(key, data)
		if err == nil && clientPrefix(rec.ID) != cp {
			err = brokenEntry(key, "holds client id %q, which belongs under another key", rec.ID)
		}
		if err != nil {
			return r, fmt.Errorf("s3persist: converting from layout 2, session record %q cannot be read (repair the object, or delete it to give the session up): %w", key, err)
		}
		ss := shardSession{ID: rec.ID, Incarnation: rec.Incarnation, State: rec.State}
		for _, seq := range c.batches {
			if seq < rec.Incarnation {
				continue // of an earlier incarnation: garbage
			}
			bkey := batchKey(cp, seq)
			data, _, err := p.store.Get(ctx, bkey)
			if err != nil {
				return r, fmt.Errorf("s3persist: read packets %q: %w", bkey, err)
			}
			b, err := decodeBatch(bkey, data, seq)
			if err != nil {
				return r, fmt.Errorf("s3persist: converting from layout 2, a batch of packets cannot be read (repair the object, or delete it to give its packets up): %w", err)
			}
			sb := shardBatch{Seq: seq}
			for _, pk := range b.Packets {
				sb.Live[pk.Queue] = append(sb.Live[pk.Queue], pk.Seq)
			}
			ss.Batches = append(ss.Batches, sb)
		}
		r.Sessions = append(r.Sessions, ss)
	}
	if len(r.Sessions) > 0 {
		p.log.Warn("s3persist: rebuilt a layout-2 index shard from per-client objects", "shard", fmt.Sprintf("%02x", hh), "sessions", len(r.Sessions))
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
	e := p.table[string(rec.ID)]
	if e == nil {
		// apply decides whether the record makes a session; replayJournal drops the
		// entries left without one.
		e = &entry{id: clone(rec.ID), hh: uint8(shardOf(rec.ID))}
		p.table[string(e.id)] = e
	}
	// Whatever the record does, its segment will be deleted by the next checkpoint, which
	// must therefore write the session to the index: a replayed Delete leaves a
	// tombstone.
	p.markDirty(e)
	p.apply(e, rec)
}

// collectGarbage deletes, once after start, the objects that no session needs: batch
// objects and packs of earlier processes that the index does not name (left by a crash
// during a checkpoint, or by a failed deletion), the session records of layout 2 (which
// this layout never reads), and probe objects of the conditional-write self-test that a
// crash left behind. It runs in the background, owned by Persistence, and holds the
// checkpoint lock while it decides and deletes, so that it never races with a checkpoint
// writing new objects.
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
	var packs []uint64
	var probes []string
	err := s3store.ListAll(ctx, p.store, clientsRoot, func(o s3store.ObjectInfo) error {
		pk, err := parseClientKey(o.Key)
		if err == nil {
			candidates = append(candidates, pk)
		}
		return nil
	})
	if err == nil {
		err = s3store.ListAll(ctx, p.store, packRoot, func(o s3store.ObjectInfo) error {
			if n, err := parseNumberedKey(packRoot, o.Key); err == nil {
				packs = append(packs, n)
			}
			return nil
		})
	}
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
			p.log.Warn("s3persist: garbage collection could not list the bucket prefix; it runs again at the next start", "err", err)
		}
		return
	}
	p.ckptMu.Lock()
	defer p.ckptMu.Unlock()
	needed := map[string]bool{} // batch objects and packs named by a session
	// The entries are copied first: waiting for an entry's lock (its owner may wait for
	// room in the journal) with tableMu held would stall every call that creates a
	// session, and with it every reader queued behind that writer.
	p.tableMu.RLock()
	entries := slices.Collect(maps.Values(p.table))
	p.tableMu.RUnlock()
	for _, e := range entries {
		e.mu.Lock()
		if e.exists && e.q != nil {
			for q := range numQueues {
				for _, r := range e.q.q[q] {
					switch {
					case r.obj == nil:
					case r.obj.pack != nil:
						needed[packKey(r.obj.pack.seq)] = true
					default:
						needed[batchKey(clientPrefix(e.id), r.obj.seq)] = true
					}
				}
			}
		}
		e.mu.Unlock()
	}
	first := p.seq.first()
	garbage := probes
	for _, pk := range candidates {
		switch pk.kind {
		case keySession:
			// Unless New rebuilt a shard from them: its sessions are then only in
			// memory until a checkpoint writes them, and the next start deletes these.
			if !p.keepSessionRecords {
				garbage = append(garbage, pk.prefix+sessionKeySuffix)
			}
		case keyBatch:
			key := batchKey(pk.prefix, pk.seq)
			if pk.seq < first && !needed[key] {
				garbage = append(garbage, key)
			}
		}
	}
	for _, n := range packs {
		if key := packKey(n); n < first && !needed[key] {
			garbage = append(garbage, key)
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
