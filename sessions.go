package s3persist

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist/s3store"
)

// entry is the in-memory state of one client id. The session record in the store is the
// durable copy of the fields marked "record"; batches mirrors the batch objects.
//
// Lock order: Persistence.tableMu, then entry.mu. Neither is held during a request or a
// callback into the broker.
type entry struct {
	id     []byte // the client id; for a hashed key whose record is unreadable, a stand-in
	prefix string // client prefix of every object of this id

	mu sync.Mutex
	// Guarded by mu:
	detached bool  // removed from the table: look the id up again
	exists   bool  // record: the session exists (Exists, Count)
	broken   error // the record could not be read at New: state unknown, left alone

	incarnation uint64                       // record
	timestamp   string                       // record
	version     byte                         // record
	subs        []byte                       // record
	expiry      *vlpersistence.SessionDelays // record
	removed     [numQueues]removalRecord     // record
	batches     []batchMeta                  // live batch objects, ascending seq
	inflight    []uint64                     // first numbers of batch uploads in flight
	pendingDel  []string                     // batch objects to delete (no longer needed)
	record      serialSync                   // uploads of the session record
}

// batchMeta is a batch object as the index knows it: its first number and counts.
type batchMeta struct {
	seq    uint64
	counts [numQueues]uint32
}

// queueRange returns the numbers [first, first+n) of queue q's packets in the batch.
func (b batchMeta) queueRange(q int) (first uint64, n uint64) {
	first = b.seq
	for i := range q {
		first += uint64(b.counts[i])
	}
	return first, uint64(b.counts[q])
}

func (b batchMeta) key(prefix string) string { return batchKey(prefix, b.seq, b.counts) }

func (r *removalRecord) has(s uint64) bool {
	if s < r.Below {
		return true
	}
	_, found := slices.BinarySearch(r.Also, s)
	return found
}

// removedIn counts removed numbers in [first, first+n).
func (r *removalRecord) removedIn(first, n uint64) uint64 {
	end := first + n
	k := min(max(r.Below, first), end) - first
	lo, _ := slices.BinarySearch(r.Also, max(first, r.Below))
	hi, _ := slices.BinarySearch(r.Also, end)
	return k + uint64(hi-lo)
}

func (e *entry) liveIn(b batchMeta, q int) uint64 {
	first, n := b.queueRange(q)
	return n - e.removed[q].removedIn(first, n)
}

func (e *entry) consumed(b batchMeta) bool {
	for q := range numQueues {
		if e.liveIn(b, q) > 0 {
			return false
		}
	}
	return true
}

// normalize raises queue q's low-water mark to the first number that may still be live
// (indexed or in flight) and drops the exceptions below it, so the list stays short.
func (e *entry) normalize(q int, next uint64) {
	mark := next
	for _, s := range e.inflight {
		mark = min(mark, s)
	}
	r := &e.removed[q]
	for _, b := range e.batches {
		if b.seq >= mark {
			break
		}
		first, n := b.queueRange(q)
		for s := max(first, r.Below); s < first+n && s < mark; s++ {
			if !r.has(s) {
				mark = s
				break
			}
		}
	}
	if mark > r.Below {
		r.Below = mark
		i, _ := slices.BinarySearch(r.Also, mark)
		r.Also = slices.Clip(r.Also[i:])
	}
}

func (e *entry) reset() {
	e.incarnation, e.timestamp, e.version, e.subs, e.expiry = 0, "", 0, nil, nil
	e.removed = [numQueues]removalRecord{}
	e.broken = nil
	for _, b := range e.batches {
		e.pendingDel = append(e.pendingDel, b.key(e.prefix))
	}
	e.batches = nil
}

func (e *entry) state() *vlpersistence.SessionState {
	if e.broken != nil {
		return &vlpersistence.SessionState{Errors: []error{e.broken}}
	}
	st := &vlpersistence.SessionState{
		Subscriptions: clone(e.subs),
		SessionBase:   vlpersistence.SessionBase{Timestamp: e.timestamp, Version: e.version},
	}
	if e.expiry != nil {
		st.Expire = &vlpersistence.SessionDelays{Since: e.expiry.Since, ExpireIn: e.expiry.ExpireIn, Will: clone(e.expiry.Will)}
	}
	return st
}

// recordUpload captures the session record (or its deletion) for serialSync; mu held.
func (e *entry) recordUpload(p *Persistence) func(context.Context) error {
	key := e.prefix + sessionKeySuffix
	if !e.exists {
		return func(ctx context.Context) error {
			if err := p.store.Delete(ctx, key); err != nil {
				return fmt.Errorf("s3persist: delete session %q: %w", e.id, err)
			}
			return nil
		}
	}
	rec := sessionRecord{
		Format:        formatVersion,
		ID:            e.id,
		Incarnation:   e.incarnation,
		Timestamp:     []byte(e.timestamp),
		Version:       e.version,
		Subscriptions: e.subs,
		Removed:       e.removed,
	}
	if x := e.expiry; x != nil {
		rec.Expiry = &expiryRecord{Since: []byte(x.Since), ExpireIn: []byte(x.ExpireIn), Will: x.Will}
	}
	data, err := encode(rec) // under mu: the record shares the entry's slices
	return func(ctx context.Context) error {
		if err != nil {
			return err
		}
		if _, err := p.store.Put(ctx, key, data, s3store.PutOptions{}); err != nil {
			return fmt.Errorf("s3persist: store session %q: %w", e.id, err)
		}
		return nil
	}
}

// commitRecord makes the record's current version durable; mu held.
func (e *entry) commitRecord(ctx context.Context, p *Persistence) error {
	return e.record.await(ctx, &e.mu, e.record.changed(), func() func(context.Context) error { return e.recordUpload(p) })
}

// deleteBatches deletes batch objects no longer needed; mu not held. Keys that may
// remain are queued on the entry for the next Flush; whatever is left at a crash is
// garbage that New deletes.
func (e *entry) deleteBatches(ctx context.Context, p *Persistence, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	if err := p.store.DeleteMany(ctx, keys); err != nil {
		e.mu.Lock()
		e.pendingDel = append(e.pendingDel, keys...)
		e.mu.Unlock()
		return fmt.Errorf("s3persist: delete packets of %q: %w", e.id, err)
	}
	return nil
}

// flush uploads what is not durable: the record if dirty, and pending deletions.
func (e *entry) flush(ctx context.Context, p *Persistence) error {
	e.mu.Lock()
	var err error
	if e.record.dirty() || e.record.inFlight != nil {
		if e.exists && e.broken != nil {
			e.record.durable = e.record.version // nothing to write for an unreadable record
		} else {
			err = e.record.await(ctx, &e.mu, e.record.version, func() func(context.Context) error { return e.recordUpload(p) })
		}
	}
	keys := e.pendingDel
	e.pendingDel = nil
	e.mu.Unlock()
	err = errors.Join(err, e.deleteBatches(ctx, p, keys))
	p.detachIfGone(e)
	return err
}

// lookup returns the entry of id, or nil. With create, a missing entry is added (it does
// not exist as a session until the caller sets exists). The entry is returned locked and
// attached.
func (p *Persistence) lookup(id []byte, create bool) *entry {
	k := string(id)
	for {
		p.tableMu.RLock()
		e := p.table[k]
		p.tableMu.RUnlock()
		if e == nil {
			if !create {
				return nil
			}
			p.tableMu.Lock()
			if e = p.table[k]; e == nil {
				e = &entry{id: clone(id), prefix: clientPrefix(id)}
				p.table[k] = e
			}
			p.tableMu.Unlock()
		}
		e.mu.Lock()
		if !e.detached {
			return e
		}
		e.mu.Unlock()
	}
}

// detachIfGone drops the entry of a deleted id once nothing of it is in flight.
func (p *Persistence) detachIfGone(e *entry) {
	p.tableMu.Lock()
	defer p.tableMu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.exists && !e.detached && !e.record.dirty() && e.record.inFlight == nil && len(e.inflight) == 0 && len(e.pendingDel) == 0 {
		e.detached = true
		delete(p.table, string(e.id))
	}
}

// sessions is the Sessions handle.
type sessions struct{ p *Persistence }

var _ vlpersistence.Sessions = (*sessions)(nil)

func validID(id []byte) bool { return len(id) > 0 && len(id) <= maxIDLen }

// errBroken wraps the entry's load error for a call that needs its unreadable state.
func errBroken(e *entry) error {
	return fmt.Errorf("s3persist: session %q cannot be used until its record is repaired or the session deleted: %w", e.id, e.broken)
}

// Exists reports whether the session exists (S2). No request.
func (s *sessions) Exists(id []byte) bool {
	if s.p.closed.Load() || !validID(id) {
		return false
	}
	e := s.p.lookup(id, false)
	if e == nil {
		return false
	}
	defer e.mu.Unlock()
	return e.exists
}

// Count returns the number of sessions, unreadable ones included (S3). No request.
func (s *sessions) Count() uint64 {
	if s.p.closed.Load() {
		return 0
	}
	return uint64(max(s.p.live.Load(), 0))
}

// Create creates the session (S1). Durable when it returns nil.
func (s *sessions) Create(id []byte, base *vlpersistence.SessionBase) error {
	if s.p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	if !validID(id) {
		return vlpersistence.ErrInvalidArgs
	}
	ctx, cancel := s.p.callContext()
	defer cancel()
	e := s.p.lookup(id, true)
	defer e.mu.Unlock()
	if e.exists {
		return vlpersistence.ErrAlreadyExists
	}
	if err := s.p.revive(e); err != nil {
		return err
	}
	if base != nil {
		e.timestamp, e.version = base.Timestamp, base.Version
	}
	return e.commitRecord(ctx, s.p)
}

// revive makes e a new incarnation of its id: a fresh number below which every packet is
// removed, so nothing of an earlier incarnation can be visited (S4). mu held.
func (p *Persistence) revive(e *entry) error {
	inc, err := p.seq.take(1)
	if err != nil {
		return err
	}
	e.reset()
	e.incarnation, e.exists = inc, true
	for q := range numQueues {
		e.removed[q] = removalRecord{Below: inc}
	}
	p.live.Add(1)
	return nil
}

// Delete removes the session with its state and queues (S4). The session record's
// deletion is the commit point: durable when it returns nil. Its batch objects are
// deleted right after; any left by a failure or crash are garbage that New deletes.
func (s *sessions) Delete(id []byte) error {
	if s.p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	if !validID(id) {
		return vlpersistence.ErrInvalidArgs
	}
	e := s.p.lookup(id, false)
	if e == nil {
		return vlpersistence.ErrNotFound
	}
	if !e.exists {
		e.mu.Unlock()
		return vlpersistence.ErrNotFound
	}
	ctx, cancel := s.p.callContext()
	defer cancel()
	e.reset()
	e.exists = false
	s.p.live.Add(-1)
	err := e.commitRecord(ctx, s.p)
	keys := e.pendingDel
	e.pendingDel = nil
	e.mu.Unlock()
	if derr := e.deleteBatches(ctx, s.p, keys); derr != nil {
		s.p.log.Warn("s3persist: packets of a deleted session left for later", "err", derr)
	}
	s.p.detachIfGone(e)
	return err
}

// update applies fn to the existing session of id and makes the record durable.
// With create, a missing session is created first (B1).
func (s *sessions) update(id []byte, create bool, fn func(e *entry)) error {
	if s.p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	if !validID(id) {
		return vlpersistence.ErrInvalidArgs
	}
	e := s.p.lookup(id, create)
	if e == nil {
		return vlpersistence.ErrNotFound
	}
	defer e.mu.Unlock()
	if !e.exists {
		if !create {
			return vlpersistence.ErrNotFound
		}
		if err := s.p.revive(e); err != nil {
			return err
		}
	}
	if e.broken != nil {
		return errBroken(e)
	}
	ctx, cancel := s.p.callContext()
	defer cancel()
	fn(e)
	return e.commitRecord(ctx, s.p)
}

// SubscriptionsStore replaces the subscriptions byte-exact; nil or empty clears them. A
// missing session is created (B1). Durable when it returns nil.
func (s *sessions) SubscriptionsStore(id []byte, data []byte) error {
	return s.update(id, true, func(e *entry) {
		if len(data) == 0 {
			e.subs = nil
		} else {
			e.subs = clone(data)
		}
	})
}

// SubscriptionsDelete clears the subscriptions only (B2). Durable when it returns nil.
func (s *sessions) SubscriptionsDelete(id []byte) error {
	return s.update(id, false, func(e *entry) { e.subs = nil })
}

// StateStore merges st into the session (T1): subscriptions only if non-empty, expiry
// only if non-nil, timestamp only if non-empty, version only if non-zero. Durable when
// it returns nil.
func (s *sessions) StateStore(id []byte, st *vlpersistence.SessionState) error {
	if st == nil {
		if s.p.closed.Load() {
			return vlpersistence.ErrNotOpen
		}
		return vlpersistence.ErrInvalidArgs
	}
	return s.update(id, false, func(e *entry) {
		if len(st.Subscriptions) > 0 {
			e.subs = clone(st.Subscriptions)
		}
		if st.Expire != nil {
			e.expiry = copyDelays(st.Expire)
		}
		if st.Timestamp != "" {
			e.timestamp = st.Timestamp
		}
		if st.Version != 0 {
			e.version = st.Version
		}
	})
}

// StateDelete clears timestamp, version, subscriptions and expiry; the queues stay (T2).
// Durable when it returns nil.
func (s *sessions) StateDelete(id []byte) error {
	return s.update(id, false, func(e *entry) {
		e.timestamp, e.version, e.subs, e.expiry = "", 0, nil, nil
	})
}

// ExpiryStore replaces the whole expiry (E1). Durable when it returns nil.
func (s *sessions) ExpiryStore(id []byte, d *vlpersistence.SessionDelays) error {
	if d == nil {
		if s.p.closed.Load() {
			return vlpersistence.ErrNotOpen
		}
		return vlpersistence.ErrInvalidArgs
	}
	return s.update(id, false, func(e *entry) { e.expiry = copyDelays(d) })
}

// ExpiryDelete removes the expiry; nothing else changes (E2). Durable when it returns nil.
func (s *sessions) ExpiryDelete(id []byte) error {
	return s.update(id, false, func(e *entry) { e.expiry = nil })
}

func copyDelays(d *vlpersistence.SessionDelays) *vlpersistence.SessionDelays {
	return &vlpersistence.SessionDelays{Since: d.Since, ExpireIn: d.ExpireIn, Will: clone(d.Will)}
}

// LoadForEach calls loader.LoadSession once for every session that existed when it
// started and still exists at its turn (S5), with no lock held, so the loader may call
// any method for any id (G5). A session whose record could not be read gets a state
// whose Errors says why. No request.
func (s *sessions) LoadForEach(loader vlpersistence.SessionLoader, ctx interface{}) error {
	if s.p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	if loader == nil {
		return vlpersistence.ErrInvalidArgs
	}
	s.p.tableMu.RLock()
	all := make([]*entry, 0, len(s.p.table))
	for _, e := range s.p.table {
		all = append(all, e)
	}
	s.p.tableMu.RUnlock()
	for _, e := range all {
		if s.p.closed.Load() {
			return vlpersistence.ErrNotOpen
		}
		e.mu.Lock()
		if !e.exists || e.detached {
			e.mu.Unlock()
			continue
		}
		id, st := clone(e.id), e.state()
		e.mu.Unlock()
		if err := loader.LoadSession(ctx, id, st); err != nil {
			return err
		}
	}
	return nil
}

// PacketCountQoS0 returns the number of queued QoS 0 packets (P5). No request.
func (s *sessions) PacketCountQoS0(id []byte) (uint64, error) { return s.count(id, queueQoS0) }

// PacketCountQoS12 returns the number of queued QoS 1/2 packets (P5). No request.
func (s *sessions) PacketCountQoS12(id []byte) (uint64, error) { return s.count(id, queueQoS12) }

// PacketCountUnAck returns the number of unacknowledged packets (P5). No request.
func (s *sessions) PacketCountUnAck(id []byte) (uint64, error) { return s.count(id, queueUnAck) }

func (s *sessions) count(id []byte, q int) (uint64, error) {
	if s.p.closed.Load() {
		return 0, vlpersistence.ErrNotOpen
	}
	if !validID(id) {
		return 0, vlpersistence.ErrNotFound
	}
	e := s.p.lookup(id, false)
	if e == nil {
		return 0, vlpersistence.ErrNotFound
	}
	defer e.mu.Unlock()
	if !e.exists {
		return 0, vlpersistence.ErrNotFound
	}
	if e.broken != nil {
		return 0, errBroken(e)
	}
	n := uint64(0)
	for _, b := range e.batches {
		n += e.liveIn(b, q)
	}
	return n, nil
}

// PacketStoreQoS0 appends p to the QoS 0 queue (P1) with one object put. Durable when
// it returns nil.
func (s *sessions) PacketStoreQoS0(id []byte, p *vlpersistence.PersistedPacket) error {
	return s.storeOne(id, queueQoS0, p)
}

// PacketStoreQoS12 appends p to the QoS 1/2 queue (P1) with one object put. Durable
// when it returns nil.
func (s *sessions) PacketStoreQoS12(id []byte, p *vlpersistence.PersistedPacket) error {
	return s.storeOne(id, queueQoS12, p)
}

func (s *sessions) storeOne(id []byte, q int, p *vlpersistence.PersistedPacket) error {
	if s.p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	if !validID(id) || p == nil || len(p.Data) == 0 {
		return vlpersistence.ErrInvalidArgs
	}
	var queues [numQueues][]*vlpersistence.PersistedPacket
	queues[q] = []*vlpersistence.PersistedPacket{p}
	return s.storeBatch(id, queues)
}

// PacketsStore appends each list to its queue, in slice order, with one object put, so
// the call is all-or-nothing (P2). Nil elements are skipped; if none remain it returns
// nil with no request. Durable when it returns nil.
func (s *sessions) PacketsStore(id []byte, packets vlpersistence.PersistedPackets) error {
	if s.p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	queues := [numQueues][]*vlpersistence.PersistedPacket{
		slices.DeleteFunc(slices.Clone(packets.QoS0), isNil),
		slices.DeleteFunc(slices.Clone(packets.QoS12), isNil),
		slices.DeleteFunc(slices.Clone(packets.UnAck), isNil),
	}
	if len(queues[0])+len(queues[1])+len(queues[2]) == 0 {
		return nil
	}
	if !validID(id) {
		return vlpersistence.ErrInvalidArgs
	}
	return s.storeBatch(id, queues)
}

func isNil(p *vlpersistence.PersistedPacket) bool { return p == nil }

// storeBatch writes one batch object holding queues and indexes it.
func (s *sessions) storeBatch(id []byte, queues [numQueues][]*vlpersistence.PersistedPacket) error {
	rec := batchRecord{Format: formatVersion}
	var meta batchMeta
	total := uint64(0)
	for q := range numQueues {
		if uint64(len(queues[q])) > 1<<24 {
			return vlpersistence.ErrInvalidArgs // beyond what a batch may hold (decoder limit)
		}
		meta.counts[q] = uint32(len(queues[q]))
		total += uint64(len(queues[q]))
		rec.Queues[q] = make([]packetRecord, len(queues[q]))
		for i, p := range queues[q] {
			rec.Queues[q][i] = toPacketRecord(p)
		}
	}
	e := s.p.lookup(id, false)
	if e == nil {
		return vlpersistence.ErrNotFound
	}
	if !e.exists {
		e.mu.Unlock()
		return vlpersistence.ErrNotFound
	}
	if e.broken != nil {
		defer e.mu.Unlock()
		return errBroken(e)
	}
	first, err := s.p.seq.take(total)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	meta.seq, rec.Seq = first, first
	inc, prefix := e.incarnation, e.prefix
	e.inflight = append(e.inflight, first)
	e.mu.Unlock()

	key := meta.key(prefix)
	data, err := encode(rec)
	if err == nil {
		ctx, cancel := s.p.callContext()
		defer cancel()
		if _, err = s.p.store.Put(ctx, key, data, s3store.PutOptions{}); err != nil {
			err = fmt.Errorf("s3persist: store packets of %q: %w", id, err)
		}
	}

	e.mu.Lock()
	e.inflight = slices.DeleteFunc(e.inflight, func(s uint64) bool { return s == first })
	orphan := false
	if err == nil {
		if e.exists && e.incarnation == inc && !e.consumed(meta) {
			i, _ := slices.BinarySearchFunc(e.batches, first, func(b batchMeta, s uint64) int { return cmpU64(b.seq, s) })
			e.batches = slices.Insert(e.batches, i, meta)
		} else {
			// Deleted, or emptied by PacketsDelete, while the upload ran.
			orphan = true
			e.pendingDel = append(e.pendingDel, key)
		}
	}
	e.mu.Unlock()
	if orphan {
		s.p.flushDeletes(e)
	}
	return err
}

// flushDeletes deletes e's pending batch objects now; a failure leaves them for Flush.
func (p *Persistence) flushDeletes(e *entry) {
	e.mu.Lock()
	keys := e.pendingDel
	e.pendingDel = nil
	e.mu.Unlock()
	ctx, cancel := p.callContext()
	defer cancel()
	if err := e.deleteBatches(ctx, p, keys); err != nil {
		p.log.Warn("s3persist: packets no longer needed left for later", "err", err)
	}
	p.detachIfGone(e)
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// PacketsDelete empties the three queues and keeps the session (P6): one multi-object
// delete of its batches, none if the queues are empty. Durable when it returns nil.
func (s *sessions) PacketsDelete(id []byte) error {
	if s.p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	if !validID(id) {
		return vlpersistence.ErrInvalidArgs
	}
	e := s.p.lookup(id, false)
	if e == nil {
		return vlpersistence.ErrNotFound
	}
	if !e.exists {
		e.mu.Unlock()
		return vlpersistence.ErrNotFound
	}
	if e.broken != nil {
		defer e.mu.Unlock()
		return errBroken(e)
	}
	ctx, cancel := s.p.callContext()
	defer cancel()
	var keys []string
	for _, b := range e.batches {
		keys = append(keys, b.key(e.prefix))
	}
	e.batches = nil
	var err error
	if len(e.inflight) > 0 {
		// Uploads racing with this call land below the new marks and delete themselves;
		// the marks must be durable so that one landing before a crash stays removed.
		for q := range numQueues {
			e.removed[q] = removalRecord{Below: s.p.seq.peek()}
		}
		err = e.commitRecord(ctx, s.p)
	}
	e.mu.Unlock()
	return errors.Join(err, e.deleteBatches(ctx, s.p, keys))
}

// PacketsForEachQoS0 visits the QoS 0 queue (P3, P4).
func (s *sessions) PacketsForEachQoS0(id []byte, ctx interface{}, loader vlpersistence.PacketLoader) error {
	return s.forEach(id, ctx, queueQoS0, loader)
}

// PacketsForEachQoS12 visits the QoS 1/2 queue (P3, P4).
func (s *sessions) PacketsForEachQoS12(id []byte, ctx interface{}, loader vlpersistence.PacketLoader) error {
	return s.forEach(id, ctx, queueQoS12, loader)
}

// PacketsForEachUnAck visits the unacknowledged queue (P3, P4).
func (s *sessions) PacketsForEachUnAck(id []byte, ctx interface{}, loader vlpersistence.PacketLoader) error {
	return s.forEach(id, ctx, queueUnAck, loader)
}

// forEach visits queue q in FIFO order, reading each batch that holds live packets of q,
// and calls loader with no lock held (G5). Removals are committed when the visit ends:
// batches left with no live packet are deleted (one multi-object delete), and a batch
// left partly live gets its removed packets marked in the session record (one put).
// An empty queue costs no request. A batch that cannot be decoded is skipped, left in
// place, and reported in the returned error, after the rest of the queue was visited.
func (s *sessions) forEach(id []byte, cbCtx interface{}, q int, loader vlpersistence.PacketLoader) error {
	if s.p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	if loader == nil {
		return vlpersistence.ErrInvalidArgs
	}
	if !validID(id) {
		return nil
	}
	e := s.p.lookup(id, false)
	if e == nil {
		return nil
	}
	if !e.exists {
		e.mu.Unlock()
		return nil
	}
	if e.broken != nil {
		defer e.mu.Unlock()
		return errBroken(e)
	}
	inc, prefix := e.incarnation, e.prefix
	marks := removalRecord{Below: e.removed[q].Below, Also: slices.Clone(e.removed[q].Also)}
	var plan []batchMeta
	for _, b := range e.batches {
		if e.liveIn(b, q) > 0 {
			plan = append(plan, b)
		}
	}
	e.mu.Unlock()
	if len(plan) == 0 {
		return nil
	}

	ctx, cancel := s.p.callContext()
	defer cancel()
	var (
		removed []uint64
		errs    []error
	)
visit:
	for _, b := range plan {
		key := b.key(prefix)
		data, _, err := s.p.store.Get(ctx, key)
		if errors.Is(err, s3store.ErrNotFound) {
			continue // deleted meanwhile by a concurrent visit or PacketsDelete
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("s3persist: read packets of %q: %w", id, err))
			break
		}
		rec, err := decodeBatch(key, data, b.seq, b.counts)
		if err != nil {
			s.p.log.Error("s3persist: skipped a batch of packets that cannot be decoded", "err", err)
			errs = append(errs, err)
			continue
		}
		first, _ := b.queueRange(q)
		for i, pr := range rec.Queues[q] {
			seq := first + uint64(i)
			if marks.has(seq) {
				continue
			}
			rm, err := loader(cbCtx, pr.packet())
			if rm {
				removed = append(removed, seq)
			}
			if err != nil {
				break visit
			}
		}
	}
	if len(removed) > 0 {
		if err := s.commitRemovals(ctx, e, inc, q, removed); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// commitRemovals applies the removal of packets (numbers, ascending) of queue q.
func (s *sessions) commitRemovals(ctx context.Context, e *entry, inc uint64, q int, removed []uint64) error {
	e.mu.Lock()
	if !e.exists || e.incarnation != inc {
		e.mu.Unlock() // deleted meanwhile: nothing left to remove
		return nil
	}
	r := &e.removed[q]
	for _, seq := range removed {
		if i, found := slices.BinarySearch(r.Also, seq); !found && seq >= r.Below {
			r.Also = slices.Insert(r.Also, i, seq)
		}
	}
	var keys []string
	e.batches = slices.DeleteFunc(e.batches, func(b batchMeta) bool {
		if e.consumed(b) {
			keys = append(keys, b.key(e.prefix))
			return true
		}
		return false
	})
	e.normalize(q, s.p.seq.peek())
	// The record must mark removed packets only where a batch outlives this call; a
	// drain that consumes whole batches (the broker's usual case) just deletes them.
	marksNeeded := false
	for _, b := range e.batches {
		if first, n := b.queueRange(q); r.removedIn(first, n) > 0 {
			marksNeeded = true
			break
		}
	}
	var err error
	if marksNeeded {
		err = e.commitRecord(ctx, s.p)
	}
	e.mu.Unlock()
	return errors.Join(err, e.deleteBatches(ctx, s.p, keys))
}
