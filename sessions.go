package s3persist

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/VolantMQ/vlapi/vlpersistence"

	"github.com/s3persist/s3persist/batching"
	"github.com/s3persist/s3persist/s3store"
)

// sessionState is the state of a session the broker sets. Its slices are never modified
// in place: a change replaces them, so a copy of the struct is a snapshot.
type sessionState struct {
	timestamp string
	version   byte
	subs      []byte
	expiry    *vlpersistence.SessionDelays
}

func (st sessionState) record() stateRecord {
	r := stateRecord{Timestamp: []byte(st.timestamp), Version: st.version, Subscriptions: st.subs}
	if x := st.expiry; x != nil {
		r.Expiry = &expiryRecord{Since: []byte(x.Since), ExpireIn: []byte(x.ExpireIn), Will: x.Will}
	}
	return r
}

// entry is the in-memory state of one client id: the truth for this process. The
// journal and the checkpointed objects are its durable copy.
//
// Lock order: Persistence.tableMu, then entry.mu. Neither is held during a request or a
// callback into the broker; entry.mu may be held while the journal applies backpressure
// (Add blocks until there is room), which only delays calls for the same id.
//
// The fields are ordered to keep the struct at 128 bytes, a size class of Go's
// allocator: an idle session costs little more than its entry (BenchmarkIdleSessionMemory).
type entry struct {
	id []byte // the client id
	hh uint8  // index shard (first byte of SHA-256(id))

	// Guarded by mu (declared before it, where they fill what would be padding):
	tailStream uint8 // the journal stream of tail
	detached   bool  // removed from the table: look the id up again
	exists     bool  // the session exists (Exists, Count)
	dirty      bool  // changed since the index last included it: in a dirty list (checkpoint.go)
	stateDirty bool  // the index holds an older state than state
	indexFull  bool  // the index holds no earlier state of this incarnation: the next delta carries it whole

	mu sync.Mutex
	// Guarded by mu:
	inc     uint64
	lastRec uint64 // number of the last journal record of the session: its watermark
	state   sessionState
	q       *queues         // nil while every queue is empty and no batch object is known
	tail    batching.Ticket // of the last record of this process, in tailStream (journal.add)
}

// queues are the queued packets of a session, each queue in FIFO (number) order, and
// the numbers of the packets removed since the index last included the session: the
// next index delta names them (ascending), so that recovery drops them from the batches
// an earlier index object named.
type queues struct {
	q       [numQueues][]*packetRef
	removed []uint64
}

func (qs *queues) empty() bool {
	return qs == nil || len(qs.q[0])+len(qs.q[1])+len(qs.q[2]) == 0
}

// packetRef is one queued packet. Its payload is pinned in memory from the moment it is
// stored until a checkpoint has moved it into a batch (obj); after that it is in the
// payload cache or read back from its batch.
type packetRef struct {
	seq    uint64
	queue  uint8
	moving bool          // a checkpoint took it to move: an index object may name it
	size   int32         // payload bytes, for the memory accounting
	pinned *queuedPacket // the payload while only the journal holds it; then nil
	obj    *batchObj     // the batch holding it, once checkpointed
}

// batchObj is one packet batch of one session: an object of its own, or a byte range of
// a pack. live counts its packets still queued. Guarded by the mu of the entry it
// belongs to.
type batchObj struct {
	seq     uint64   // lowest packet number: the key of an own batch object
	pack    *packObj // nil for an own batch object
	off     uint32   // the range of the pack, with length
	length  uint32
	live    int32
	indexed bool // an index object recovery reads names it: deltas need not again
}

// loc is where the batch is, for a read.
func (b *batchObj) loc() batchLoc {
	l := batchLoc{seq: b.seq}
	if b.pack != nil {
		l.pack, l.off, l.length = b.pack.seq, int64(b.off), int64(b.length)
	}
	return l
}

// batchLoc is a copy of where a batch is, taken under its entry's lock.
type batchLoc struct {
	seq         uint64
	pack        uint64 // 0: an own batch object
	off, length int64
}

// packObj is a pack object: the batches of many sessions. live counts its batches with a
// live packet; the pack is garbage when it drops to zero. Shared by the entries of those
// sessions, hence atomic.
type packObj struct {
	seq  uint64
	live atomic.Int32
}

// release notes that obj, a batch of e's session, has no live packet left and returns
// the object that became garbage, if any: its own object, or its pack when obj was the
// pack's last live batch.
func (e *entry) release(obj *batchObj) (string, bool) {
	if obj.pack == nil {
		return batchKey(clientPrefix(e.id), obj.seq), true
	}
	if obj.pack.live.Add(-1) == 0 {
		return packKey(obj.pack.seq), true
	}
	return "", false
}

// lookup returns the entry of id, or nil. With create, a missing entry is added (it does
// not exist as a session until the caller sets exists). The entry is returned locked and
// attached.
func (p *Persistence) lookup(id []byte, create bool) *entry {
	for {
		p.tableMu.RLock()
		e := p.table[string(id)] // no copy of id: the compiler looks it up in place
		p.tableMu.RUnlock()
		if e == nil {
			if !create {
				return nil
			}
			p.tableMu.Lock()
			if e = p.table[string(id)]; e == nil {
				e = &entry{id: clone(id), hh: uint8(shardOf(id))}
				p.table[string(e.id)] = e
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

// detach drops the entry of an id that does not exist. e.mu is held by the caller, who
// must not have tableMu; the lock is released and retaken to keep the lock order.
func (p *Persistence) detach(e *entry) {
	e.mu.Unlock()
	p.tableMu.Lock()
	e.mu.Lock()
	if !e.exists && !e.detached {
		e.detached = true
		if p.table[string(e.id)] == e {
			delete(p.table, string(e.id))
		}
	}
	p.tableMu.Unlock()
}

// existing returns the entry of the existing session of id, locked, or the bare
// ErrNotFound.
func (p *Persistence) existing(id []byte) (*entry, error) {
	e := p.lookup(id, false)
	if e == nil {
		return nil, vlpersistence.ErrNotFound
	}
	if !e.exists {
		e.mu.Unlock()
		return nil, vlpersistence.ErrNotFound
	}
	return e, nil
}

// await returns once the change behind t is durable, in Sync mode; at once in Async.
//
// A Sync call that changes nothing because of what another call changed (PacketsDelete
// of queues already emptied, removals already made) awaits the ticket of its session's
// last record (entry.tail): its nil must not rest on a change a crash can still lose.
// The zero ticket (no record of this process) is durable already.
func (p *Persistence) await(ctx context.Context, id []byte, t batching.Ticket) error {
	if !p.syncing() || t == (batching.Ticket{}) {
		return nil
	}
	if err := t.Wait(ctx); err != nil {
		return fmt.Errorf("s3persist: a change of %q is not known to be durable: %w", id, err)
	}
	return nil
}

// sessions is the Sessions handle.
type sessions struct{ p *Persistence }

var _ vlpersistence.Sessions = (*sessions)(nil)

func validID(id []byte) bool { return len(id) > 0 && len(id) <= maxIDLen }

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

// Create creates the session (S1). Async: accepted in memory and journaled; Sync:
// durable when it returns nil. No request in Async mode.
func (s *sessions) Create(id []byte, base *vlpersistence.SessionBase) error {
	if s.p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	if !validID(id) {
		return vlpersistence.ErrInvalidArgs
	}
	ctx, cancel := s.p.writeContext()
	defer cancel()
	e := s.p.lookup(id, true)
	if e.exists {
		e.mu.Unlock()
		return vlpersistence.ErrAlreadyExists
	}
	var st sessionState
	if base != nil {
		st.timestamp, st.version = base.Timestamp, base.Version
	}
	return s.createAndAwait(ctx, e, st)
}

// createAndAwait creates a new incarnation of e (locked, not existing) with state st
// (S1, B1), unlocks e, and waits for durability in Sync mode. A failure leaves no
// session. The creation is the state record whose number is its incarnation.
func (s *sessions) createAndAwait(ctx context.Context, e *entry, st sessionState) error {
	inc, err := s.p.seq.take(1)
	var t batching.Ticket
	if err == nil {
		t, err = s.p.commit(ctx, e, &journalRecord{Kind: recState, Seq: inc, ID: e.id, Inc: inc, State: new(st.record())})
	}
	if err != nil {
		s.p.detach(e)
		e.mu.Unlock()
		return err
	}
	e.mu.Unlock()
	return s.p.await(ctx, e.id, t)
}

// Delete removes the session with its state and queues (S4). Async: accepted in memory
// and journaled; Sync: durable when it returns nil. Its objects are deleted by the next
// checkpoint. No request in Async mode.
func (s *sessions) Delete(id []byte) error {
	if s.p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	if !validID(id) {
		return vlpersistence.ErrInvalidArgs
	}
	e, err := s.p.existing(id)
	if err != nil {
		return err
	}
	ctx, cancel := s.p.writeContext()
	defer cancel()
	seq, err := s.p.seq.take(1)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	t, err := s.p.commit(ctx, e, &journalRecord{Kind: recDelete, Seq: seq, ID: e.id, Inc: e.inc})
	if err != nil {
		e.mu.Unlock()
		return err
	}
	s.p.detach(e)
	e.mu.Unlock()
	return s.p.await(ctx, id, t)
}

// dropSession removes e's session from memory and queues its objects for deletion by
// the next checkpoint. e is locked.
func (p *Persistence) dropSession(e *entry) {
	var garbage []string
	var unpinned int64
	if e.q != nil {
		seen := map[*batchObj]bool{}
		for q := range numQueues {
			for _, r := range e.q.q[q] {
				if r.pinned != nil {
					unpinned += int64(r.size)
				}
				if r.obj != nil && !seen[r.obj] {
					seen[r.obj] = true
					if key, ok := e.release(r.obj); ok {
						garbage = append(garbage, key)
					}
				}
			}
		}
	}
	p.unpin(unpinned)
	p.addGarbage(garbage...)
	e.exists, e.q, e.stateDirty = false, nil, false
	e.state = sessionState{}
	p.live.Add(-1)
}

// update journals and applies fn to the state of the session of id. With create, a
// missing session is created first (B1).
func (s *sessions) update(id []byte, create bool, fn func(st *sessionState)) error {
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
	ctx, cancel := s.p.writeContext()
	defer cancel()
	if !e.exists {
		if !create {
			e.mu.Unlock()
			return vlpersistence.ErrNotFound
		}
		var st sessionState
		fn(&st)
		return s.createAndAwait(ctx, e, st)
	}
	st := e.state
	fn(&st)
	seq, err := s.p.seq.take(1)
	if err != nil {
		e.mu.Unlock()
		return err
	}
	t, err := s.p.commit(ctx, e, &journalRecord{Kind: recState, Seq: seq, ID: e.id, Inc: e.inc, State: new(st.record())})
	e.mu.Unlock()
	if err != nil {
		return err
	}
	return s.p.await(ctx, id, t)
}

// SubscriptionsStore replaces the subscriptions byte-exact; nil or empty clears them. A
// missing session is created (B1). Durability as for Create.
func (s *sessions) SubscriptionsStore(id []byte, data []byte) error {
	return s.update(id, true, func(st *sessionState) { st.subs = nonEmptyClone(data) })
}

// SubscriptionsDelete clears the subscriptions only (B2). Durability as for Create.
func (s *sessions) SubscriptionsDelete(id []byte) error {
	return s.update(id, false, func(st *sessionState) { st.subs = nil })
}

// StateStore merges st into the session (T1): subscriptions only if non-empty, expiry
// only if non-nil, timestamp only if non-empty, version only if non-zero. Durability as
// for Create.
func (s *sessions) StateStore(id []byte, in *vlpersistence.SessionState) error {
	if in == nil {
		if s.p.closed.Load() {
			return vlpersistence.ErrNotOpen
		}
		return vlpersistence.ErrInvalidArgs
	}
	return s.update(id, false, func(st *sessionState) {
		if len(in.Subscriptions) > 0 {
			st.subs = clone(in.Subscriptions)
		}
		if in.Expire != nil {
			st.expiry = copyDelays(in.Expire)
		}
		if in.Timestamp != "" {
			st.timestamp = in.Timestamp
		}
		if in.Version != 0 {
			st.version = in.Version
		}
	})
}

// StateDelete clears timestamp, version, subscriptions and expiry; the queues stay (T2).
// Durability as for Create.
func (s *sessions) StateDelete(id []byte) error {
	return s.update(id, false, func(st *sessionState) { *st = sessionState{} })
}

// ExpiryStore replaces the whole expiry (E1). Durability as for Create.
func (s *sessions) ExpiryStore(id []byte, d *vlpersistence.SessionDelays) error {
	if d == nil {
		if s.p.closed.Load() {
			return vlpersistence.ErrNotOpen
		}
		return vlpersistence.ErrInvalidArgs
	}
	return s.update(id, false, func(st *sessionState) { st.expiry = copyDelays(d) })
}

// ExpiryDelete removes the expiry; nothing else changes (E2). Durability as for Create.
func (s *sessions) ExpiryDelete(id []byte) error {
	return s.update(id, false, func(st *sessionState) { st.expiry = nil })
}

func copyDelays(d *vlpersistence.SessionDelays) *vlpersistence.SessionDelays {
	return &vlpersistence.SessionDelays{Since: d.Since, ExpireIn: d.ExpireIn, Will: clone(d.Will)}
}

func nonEmptyClone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return clone(b)
}

// LoadForEach calls loader.LoadSession once for every session that existed when it
// started and still exists at its turn (S5), with no lock held, so the loader may call
// any method for any id (G5). A session whose state could not be read gets a state
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
		id, st := clone(e.id), e.loadState()
		e.mu.Unlock()
		if err := loader.LoadSession(ctx, id, st); err != nil {
			return err
		}
	}
	return nil
}

// loadState is the state LoadForEach shows, as fresh copies (G6). e is locked.
func (e *entry) loadState() *vlpersistence.SessionState {
	st := &vlpersistence.SessionState{
		Subscriptions: clone(e.state.subs),
		SessionBase:   vlpersistence.SessionBase{Timestamp: e.state.timestamp, Version: e.state.version},
	}
	if x := e.state.expiry; x != nil {
		st.Expire = copyDelays(x)
	}
	return st
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
	e, err := s.p.existing(id)
	if err != nil {
		return 0, err
	}
	defer e.mu.Unlock()
	if e.q == nil {
		return 0, nil
	}
	return uint64(len(e.q.q[q])), nil
}

// PacketStoreQoS0 appends p to the QoS 0 queue (P1). Async: accepted in memory and
// journaled, no request; Sync: durable when it returns nil.
func (s *sessions) PacketStoreQoS0(id []byte, p *vlpersistence.PersistedPacket) error {
	return s.storeOne(id, queueQoS0, p)
}

// PacketStoreQoS12 appends p to the QoS 1/2 queue (P1). Durability as for
// PacketStoreQoS0.
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
	return s.storePackets(id, queues)
}

// PacketsStore appends each list to its queue, in slice order, as one journal record, so
// the call is all-or-nothing (P2). Nil elements are skipped; if none remain it returns
// nil at once. Durability as for PacketStoreQoS0.
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
	return s.storePackets(id, queues)
}

func isNil(p *vlpersistence.PersistedPacket) bool { return p == nil }

// maxPacketsPerCall bounds one store call: a journal record holds at most this many
// packets (the decoders' array limit).
const maxPacketsPerCall = 1 << 24

// storePackets journals one record holding queues and queues the packets.
func (s *sessions) storePackets(id []byte, queues [numQueues][]*vlpersistence.PersistedPacket) error {
	n := len(queues[0]) + len(queues[1]) + len(queues[2])
	if n > maxPacketsPerCall {
		return vlpersistence.ErrInvalidArgs
	}
	// The record's packets hold the broker's payloads only until commit encodes the
	// record: from then on they alias the encoding (one copy of each payload, shared by
	// the journal and the pinned packets), which is what later reads see (G6). Everything
	// the record needs is allocated before the session's lock; the packets get their
	// numbers under it, the maximum they may take is counted in the room for encoding.
	rec := &journalRecord{Kind: recPackets, Seq: ^uint64(0), ID: id, Inc: ^uint64(0), Packets: make([]queuedPacket, 0, n)}
	for q := range numQueues {
		for _, p := range queues[q] {
			if len(p.Data) == 0 {
				return vlpersistence.ErrInvalidArgs // as PacketStoreQoS0/12; the layout holds no empty packet
			}
			rec.Packets = append(rec.Packets, queuedPacket{Seq: ^uint64(0), Queue: uint8(q), ExpireAt: []byte(p.ExpireAt), Data: p.Data})
		}
	}
	rec.buf = make([]byte, 0, journalRecordSize(rec)) // with the largest numbers: enough for any
	rec.refs = make([]packetRef, n)
	ctx, cancel := s.p.writeContext()
	defer cancel()
	// Room in the pinned memory is taken before the session's lock, so that waiting for
	// a checkpoint never holds it; queuePinned counts it as taken.
	var pinned int64
	for i := range rec.Packets {
		pinned += int64(pinnedSize(&rec.Packets[i]))
	}
	if err := s.p.pinned.reserve(ctx, pinned, s.p.cfg.WhenStoreIsBehind == WaitForRoom); err != nil {
		return fmt.Errorf("s3persist: store packets of %q: %w", id, err)
	}
	e, err := s.p.existing(id)
	if err != nil {
		s.p.unpin(pinned)
		return err
	}
	first, err := s.p.seq.take(uint64(n))
	if err != nil {
		e.mu.Unlock()
		s.p.unpin(pinned)
		return err
	}
	for i := range rec.Packets {
		rec.Packets[i].Seq = first + uint64(i)
	}
	rec.Seq, rec.ID, rec.Inc = first+uint64(n)-1, e.id, e.inc
	t, err := s.p.commit(ctx, e, rec)
	e.mu.Unlock()
	if err != nil {
		s.p.unpin(pinned)
		return err
	}
	return s.p.await(ctx, id, t)
}

// queuePinned appends journal-resident packets (ascending numbers) to e's queues,
// skipping any already queued. A live call passes the refs it allocated and has
// reserved the pinned room of its packets (storePackets); replay passes none and counts
// them here. e is locked.
func (p *Persistence) queuePinned(e *entry, pkts []queuedPacket, refs []packetRef) {
	if e.q == nil {
		e.q = &queues{}
	}
	reserved := refs != nil
	if len(refs) != len(pkts) {
		refs = make([]packetRef, len(pkts))
	}
	var bytes int64
	for i := range pkts {
		pk := &pkts[i]
		r := &refs[i]
		*r = packetRef{seq: pk.Seq, queue: pk.Queue, size: pinnedSize(pk), pinned: pk}
		q := e.q.q[pk.Queue]
		if n := len(q); n == 0 || q[n-1].seq < r.seq {
			e.q.q[pk.Queue] = append(q, r) // the usual case: numbers grow
		} else {
			// Only a record replayed twice could get here: keep number order.
			at, found := slices.BinarySearchFunc(q, r.seq, func(x *packetRef, s uint64) int { return cmpU64(x.seq, s) })
			if found {
				continue
			}
			e.q.q[pk.Queue] = slices.Insert(q, at, r)
		}
		bytes += int64(r.size)
	}
	total := p.pinned.used.Load()
	if !reserved {
		total = p.pinned.add(bytes)
	}
	if total >= p.cfg.CheckpointBytes {
		p.kickCheckpoint()
	}
}

// packetSize is what a queued packet costs in memory, roughly.
func packetSize(pk *queuedPacket) int { return len(pk.Data) + len(pk.ExpireAt) + 48 }

// pinnedSize is packetSize as the pinned memory counts it.
func pinnedSize(pk *queuedPacket) int32 { return int32(min(packetSize(pk), 1<<31-1)) }

// PacketsDelete empties the three queues and keeps the session (P6). Durability as for
// Create; the batch objects are deleted by the next checkpoint.
func (s *sessions) PacketsDelete(id []byte) error {
	if s.p.closed.Load() {
		return vlpersistence.ErrNotOpen
	}
	if !validID(id) {
		return vlpersistence.ErrInvalidArgs
	}
	e, err := s.p.existing(id)
	if err != nil {
		return err
	}
	if e.q.empty() {
		prior := e.tail
		e.mu.Unlock()
		ctx, cancel := s.p.writeContext()
		defer cancel()
		return s.p.await(ctx, id, prior)
	}
	var all []uint64
	for q := range numQueues {
		for _, r := range e.q.q[q] {
			all = append(all, r.seq)
		}
	}
	slices.Sort(all)
	ctx, cancel := s.p.writeContext()
	defer cancel()
	t, err := s.p.removePackets(ctx, e, all)
	e.mu.Unlock()
	if err != nil {
		return err
	}
	return s.p.await(ctx, id, t)
}

// removePackets journals and applies the removal of the packets numbered seqs
// (ascending, all queued in e). e is locked.
func (p *Persistence) removePackets(ctx context.Context, e *entry, seqs []uint64) (batching.Ticket, error) {
	seq, err := p.seq.take(1)
	if err != nil {
		return batching.Ticket{}, err
	}
	return p.commit(ctx, e, &journalRecord{Kind: recRemove, Seq: seq, ID: e.id, Inc: e.inc, Removed: seqs})
}

// applyRemoval drops the packets numbered seqs (ascending) from e's queues. A batch left
// with no live packet makes its object (or its pack, when it was the pack's last live
// batch) garbage for the next checkpoint, whose index no longer names it. The numbers of
// packets an index object may name are kept for the next delta. e is locked.
func (p *Persistence) applyRemoval(e *entry, seqs []uint64) {
	if e.q == nil || len(seqs) == 0 {
		return
	}
	var garbage []string
	var unpinned int64
	for q := range numQueues {
		e.q.q[q] = slices.DeleteFunc(e.q.q[q], func(r *packetRef) bool {
			if _, found := slices.BinarySearch(seqs, r.seq); !found {
				return false
			}
			if r.obj != nil || r.moving {
				e.q.removed = append(e.q.removed, r.seq) // an index object may name it
			}
			if r.pinned != nil {
				unpinned += int64(r.size)
			}
			if r.obj != nil {
				if r.obj.live--; r.obj.live == 0 {
					if key, ok := e.release(r.obj); ok {
						garbage = append(garbage, key)
					}
				}
			}
			return true
		})
	}
	p.unpin(unpinned)
	p.addGarbage(garbage...)
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

// refView is what a visit needs of a packetRef, copied under the entry's lock.
type refView struct {
	seq    uint64
	pinned *queuedPacket
	loc    batchLoc // of its batch, once not pinned
}

// forEach visits queue q in FIFO order and calls loader with no lock held (G5). A
// payload comes from memory (pinned, or the cache) or, on a cache miss, from its batch
// object (one GET, whose other packets then fill the cache). Removals are journaled as
// one record when the visit ends; no per-client request. An empty queue costs nothing.
// A batch object that cannot be read or decoded ends the visit with an error and its
// packets stay queued, unless the packet was removed meanwhile (by a concurrent visit,
// its batch then deleted by a checkpoint): that packet is skipped.
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
	if !e.exists || e.q == nil || len(e.q.q[q]) == 0 {
		e.mu.Unlock()
		return nil
	}
	plan := make([]refView, len(e.q.q[q]))
	for i, r := range e.q.q[q] {
		plan[i] = refView{seq: r.seq, pinned: r.pinned}
		if r.obj != nil {
			plan[i].loc = r.obj.loc()
		}
	}
	e.mu.Unlock()

	ctx, cancel := s.p.callContext()
	defer cancel()
	var (
		removed []uint64
		readErr error
	)
	for _, v := range plan {
		pk := v.pinned
		if pk == nil {
			var err error
			if pk, err = s.p.payload(ctx, id, v.seq, v.loc); err != nil {
				if !e.queued(q, v.seq) {
					// Removed since the plan was taken (a concurrent visit), and its batch
					// object deleted by a checkpoint: nothing to visit (P4).
					continue
				}
				readErr = err
				break
			}
		}
		rm, err := loader(cbCtx, pk.packet())
		if rm {
			removed = append(removed, v.seq)
		}
		if err != nil {
			break
		}
	}
	if len(removed) == 0 {
		return readErr
	}
	// The entry of the visited incarnation: a Delete detaches it for good, and it keeps
	// the ticket of that Delete.
	e.mu.Lock()
	if !e.detached {
		// Only packets still queued: a concurrent visit may have removed some (P4).
		removed = slices.DeleteFunc(removed, func(seq uint64) bool { return !e.q.has(q, seq) })
	}
	if e.detached || len(removed) == 0 {
		// Deleted, or removed meanwhile, by calls whose records may not be durable yet.
		prior := e.tail
		e.mu.Unlock()
		return errors.Join(readErr, s.p.await(ctx, id, prior))
	}
	t, err := s.p.removePackets(ctx, e, removed)
	e.mu.Unlock()
	if err == nil {
		err = s.p.await(ctx, id, t)
	}
	return errors.Join(readErr, err)
}

// queued reports whether packet seq is still queued in q of e's incarnation: a Delete
// detaches the entry for good, a later incarnation has an entry of its own.
func (e *entry) queued(q int, seq uint64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !e.detached && e.q.has(q, seq)
}

// has reports whether packet seq is queued in q. qs's entry is locked.
func (qs *queues) has(q int, seq uint64) bool {
	if qs == nil {
		return false
	}
	_, found := slices.BinarySearchFunc(qs.q[q], seq, func(r *packetRef, s uint64) int { return cmpU64(r.seq, s) })
	return found
}

// payload returns checkpointed packet seq of id from the cache or, on a miss, from its
// batch (one GET of its own object, or of its range of a pack), whose packets then fill
// the cache.
func (p *Persistence) payload(ctx context.Context, id []byte, seq uint64, loc batchLoc) (*queuedPacket, error) {
	if pk, ok := p.cache.Get(seq); ok {
		return pk, nil
	}
	var (
		key  string
		data []byte
		err  error
	)
	if loc.pack == 0 {
		key = batchKey(clientPrefix(id), loc.seq)
		data, _, err = p.store.Get(ctx, key)
	} else {
		key = packKey(loc.pack)
		data, _, err = p.store.GetRange(ctx, key, loc.off, loc.length)
	}
	switch {
	case errors.Is(err, s3store.ErrNotFound):
		return nil, fmt.Errorf("s3persist: packets of %q: %q is missing: %w", id, key, vlpersistence.ErrBrokenEntry)
	case errors.Is(err, s3store.ErrRangeNotSatisfiable):
		return nil, fmt.Errorf("s3persist: packets of %q: %q is shorter than the index says: %w", id, key, vlpersistence.ErrBrokenEntry)
	case err != nil:
		return nil, fmt.Errorf("s3persist: read packets of %q: %w", id, err)
	}
	rec, err := decodeBatch(key, data, loc.seq)
	if err != nil {
		p.log.Error("s3persist: a batch of packets cannot be decoded", "err", err)
		return nil, err
	}
	var found *queuedPacket
	for i := range rec.Packets {
		pk := &rec.Packets[i]
		_ = p.cache.Add(pk.Seq, pk, int64(packetSize(pk)))
		if pk.Seq == seq {
			found = pk
		}
	}
	if found == nil {
		return nil, fmt.Errorf("s3persist: packets of %q: batch %d of %q lacks packet %d: %w", id, loc.seq, key, seq, vlpersistence.ErrBrokenEntry)
	}
	return found, nil
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
