package s3persist

import (
	"errors"
	"fmt"
	"slices"

	"github.com/VolantMQ/vlapi/vlpersistence"
	"github.com/fxamacker/cbor/v2"
)

// formatVersion is key 0 of every record. A reader refuses any other value: a record from
// a newer release is reported, never half-understood. Fields may be added within a
// version (readers ignore unknown keys); removing or changing one needs a new version.
const formatVersion = 1

// Queue indexes, in the order of every per-queue array in records and keys.
const (
	queueQoS0 = iota
	queueQoS12
	queueUnAck
	numQueues
)

var queueNames = [numQueues]string{"QoS0", "QoS12", "UnAck"}

// Opaque broker values (G7: byte-exact, and not necessarily UTF-8) are kept as CBOR byte
// strings, never text strings, so that no encoder or decoder rule can touch them.

// systemRecord is the object at keySystem.
type systemRecord struct {
	Format    uint   `cbor:"0,keyasint"`
	Layout    string `cbor:"1,keyasint"`
	CreatedAt string `cbor:"2,keyasint"` // RFC 3339, set once
	Epoch     uint64 `cbor:"3,keyasint"` // bumped by every New; high bits of sequence numbers
}

// ownerRecord is the ownership object (keyOwner): which instance may write the bucket
// prefix, the lease it holds, and which journal segments of earlier owners are valid.
// Every write of it is conditional (create-only, or if-match on the ETag the writer
// read), so exactly one instance holds it at a time.
type ownerRecord struct {
	Format   uint   `cbor:"0,keyasint"`
	Instance string `cbor:"1,keyasint"` // random id of the owning process
	Host     string `cbor:"2,keyasint,omitempty"`
	Epoch    uint64 `cbor:"3,keyasint,omitempty"` // the owner's boot epoch; 0 while it loads
	Renewal  uint64 `cbor:"4,keyasint"`           // bumped by every renewal, so every write changes the ETag
	LeaseMS  int64  `cbor:"5,keyasint"`           // the lease the owner promises to honour, in ms
	Released bool   `cbor:"6,keyasint,omitempty"` // the owner shut down: no need to wait
	// Journal segments of epochs below Floor are void unless listed in Sealed: a fenced
	// owner's late uploads must never be replayed.
	Floor  uint64   `cbor:"7,keyasint,omitempty"`
	Sealed []string `cbor:"8,keyasint,omitempty"`
}

// packetRecord is one vlpersistence.PersistedPacket (retained set).
type packetRecord struct {
	ExpireAt []byte `cbor:"0,keyasint,omitempty"`
	Data     []byte `cbor:"1,keyasint"`
}

// queuedPacket is one queued packet with its number and queue, in journal records and
// packet batches.
type queuedPacket struct {
	Seq      uint64 `cbor:"0,keyasint"`
	Queue    uint8  `cbor:"1,keyasint"`
	ExpireAt []byte `cbor:"2,keyasint,omitempty"`
	Data     []byte `cbor:"3,keyasint"`
}

// expiryRecord is one vlpersistence.SessionDelays.
type expiryRecord struct {
	Since    []byte `cbor:"0,keyasint"`
	ExpireIn []byte `cbor:"1,keyasint"`
	Will     []byte `cbor:"2,keyasint"`
}

// stateRecord is the state of a session the broker sets: base, subscriptions, expiry.
type stateRecord struct {
	Timestamp     []byte        `cbor:"0,keyasint,omitempty"`
	Version       byte          `cbor:"1,keyasint,omitempty"`
	Subscriptions []byte        `cbor:"2,keyasint,omitempty"`
	Expiry        *expiryRecord `cbor:"3,keyasint,omitempty"`
}

// sessionRecord is the object at "<client prefix>session".
type sessionRecord struct {
	Format      uint        `cbor:"0,keyasint"`
	ID          []byte      `cbor:"1,keyasint"`
	Incarnation uint64      `cbor:"2,keyasint"`
	State       stateRecord `cbor:"3,keyasint"`
}

// batchRecord is one packet batch object: packets in ascending number.
type batchRecord struct {
	Format  uint           `cbor:"0,keyasint"`
	Packets []queuedPacket `cbor:"1,keyasint"`
}

// retainedRecord is the object at keyRetained.
type retainedRecord struct {
	Format  uint           `cbor:"0,keyasint"`
	Packets []packetRecord `cbor:"1,keyasint"`
}

// Journal record kinds.
const (
	recState   = 1 // the session's whole state: Create, an implicit create, any state change
	recDelete  = 2 // Delete
	recPackets = 3 // packets appended to the queues
	recRemove  = 4 // packets removed from the queues
)

// journalRecord is one change of one session. Seq is its number, above every number the
// session had before; the packets of a recPackets record carry their own numbers, the
// last of which is Seq.
type journalRecord struct {
	Kind    uint8          `cbor:"0,keyasint"`
	Seq     uint64         `cbor:"1,keyasint"`
	ID      []byte         `cbor:"2,keyasint"`
	Inc     uint64         `cbor:"3,keyasint"`
	State   *stateRecord   `cbor:"4,keyasint,omitempty"`
	Packets []queuedPacket `cbor:"5,keyasint,omitempty"`
	Removed []uint64       `cbor:"6,keyasint,omitempty"`

	// Room a live call allocates before it takes its session's lock, so that nothing
	// under the lock allocates (an allocation can stall on the garbage collector while
	// every other caller of the session waits): buf for the encoding, refs for the
	// queue entries of Packets. Not encoded; nil in replay.
	buf  []byte
	refs []packetRef
}

// segmentRecord is one journal segment: records encoded one by one when they were made.
type segmentRecord struct {
	Format  uint              `cbor:"0,keyasint"`
	Records []cbor.RawMessage `cbor:"1,keyasint"`
}

// shardBatch is one packet batch of a session as the index knows it: the lowest number,
// the numbers still live in each queue (ascending), and where the batch is. Pack 0 means
// the session's own batch object (c/<hh>/<client>/b/<Seq>); otherwise the batch is the
// Len bytes at Off of pack object Pack (p/<Pack>), and those bytes decode as a batch
// record on their own.
type shardBatch struct {
	Seq  uint64              `cbor:"0,keyasint"`
	Live [numQueues][]uint64 `cbor:"1,keyasint"`
	Pack uint64              `cbor:"2,keyasint,omitempty"`
	Off  uint64              `cbor:"3,keyasint,omitempty"`
	Len  uint64              `cbor:"4,keyasint,omitempty"`
}

// shardSession is one session in an index shard.
type shardSession struct {
	ID          []byte       `cbor:"0,keyasint"`
	Incarnation uint64       `cbor:"1,keyasint"`
	State       stateRecord  `cbor:"2,keyasint"`
	Watermark   uint64       `cbor:"3,keyasint"` // journal records of this session up to it are included
	Batches     []shardBatch `cbor:"4,keyasint,omitempty"`
}

// shardRecord is one index shard object. Through is the number of the checkpoint that
// wrote it: the index deltas up to it are merged into it (0 in layout 2, which had none).
type shardRecord struct {
	Format   uint           `cbor:"0,keyasint"`
	Sessions []shardSession `cbor:"1,keyasint"`
	Through  uint64         `cbor:"2,keyasint,omitempty"`
}

// deltaSession is one session in an index delta: what changed since the index objects
// before it (a base shard, earlier deltas) last named the session. With Full, the whole
// incarnation: its state and every batch. Otherwise the batches written since (a batch
// named twice is one batch), the packets removed since, and State only when it changed.
// With Deleted, the fact that no incarnation of the id exists.
type deltaSession struct {
	ID          []byte       `cbor:"0,keyasint"`
	Incarnation uint64       `cbor:"1,keyasint,omitempty"`
	State       *stateRecord `cbor:"2,keyasint,omitempty"`
	Watermark   uint64       `cbor:"3,keyasint,omitempty"`
	Batches     []shardBatch `cbor:"4,keyasint,omitempty"`
	Deleted     bool         `cbor:"5,keyasint,omitempty"`
	Removed     []uint64     `cbor:"6,keyasint,omitempty"`
	Full        bool         `cbor:"7,keyasint,omitempty"`
}

// deltaRecord is one index delta object: what checkpoint Checkpoint changed in the index,
// for every shard.
type deltaRecord struct {
	Format     uint           `cbor:"0,keyasint"`
	Checkpoint uint64         `cbor:"1,keyasint"`
	Sessions   []deltaSession `cbor:"2,keyasint"`
}

// The modes are built once: building one validates options and caches type info.
var (
	encMode = mustEncMode()
	// decMode is set for untrusted input: objects in a bucket may have been written by
	// anyone with access, or damaged. Limits bound the work and memory a hostile object
	// can cause beyond its own size; nothing a decoder sees can make it panic.
	decMode = mustDecMode()
)

func mustEncMode() cbor.EncMode {
	m, err := cbor.EncOptions{}.EncMode()
	if err != nil {
		panic(err) // static options: fails only if the options above are wrong
	}
	return m
}

func mustDecMode() cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  8,
		MaxArrayElements: 1 << 24,
		MaxMapPairs:      64,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}

// brokenEntry wraps vlpersistence.ErrBrokenEntry with the key and the cause.
func brokenEntry(key string, format string, args ...any) error {
	return fmt.Errorf("s3persist: object %q: %s: %w", key, fmt.Sprintf(format, args...), vlpersistence.ErrBrokenEntry)
}

// decodeRecord decodes data into v (a pointer to a record whose first field is Format)
// and checks the format version. Any failure wraps vlpersistence.ErrBrokenEntry.
func decodeRecord(key string, data []byte, v any, format *uint) error {
	if err := decMode.Unmarshal(data, v); err != nil {
		return brokenEntry(key, "not a valid record (%d bytes): %v", len(data), err)
	}
	if *format != formatVersion {
		return brokenEntry(key, "unknown format version %d (this release reads %d)", *format, formatVersion)
	}
	return nil
}

func decodeSystem(key string, data []byte) (systemRecord, error) {
	var r systemRecord
	if err := decodeRecord(key, data, &r, &r.Format); err != nil {
		return r, err
	}
	return r, nil
}

func decodeOwner(key string, data []byte) (ownerRecord, error) {
	var r ownerRecord
	if err := decodeRecord(key, data, &r, &r.Format); err != nil {
		return r, err
	}
	if r.Instance == "" || r.LeaseMS <= 0 {
		return r, brokenEntry(key, "owner record without an instance or a lease")
	}
	return r, nil
}

func decodeSession(key string, data []byte) (sessionRecord, error) {
	var r sessionRecord
	if err := decodeRecord(key, data, &r, &r.Format); err != nil {
		return r, err
	}
	if len(r.ID) == 0 || len(r.ID) > maxIDLen {
		return r, brokenEntry(key, "client id of %d bytes", len(r.ID))
	}
	return r, nil
}

func decodeBatch(key string, data []byte, seq uint64) (batchRecord, error) {
	var r batchRecord
	if err := decodeRecord(key, data, &r, &r.Format); err != nil {
		return r, err
	}
	if len(r.Packets) == 0 || r.Packets[0].Seq != seq {
		return r, brokenEntry(key, "does not start with packet %d, as its key says", seq)
	}
	for i, pk := range r.Packets {
		if i > 0 && pk.Seq <= r.Packets[i-1].Seq || pk.Queue >= numQueues || len(pk.Data) == 0 {
			return r, brokenEntry(key, "packet %d is out of order, in no queue, or empty", i)
		}
	}
	return r, nil
}

func decodeRetained(key string, data []byte) (retainedRecord, error) {
	var r retainedRecord
	if err := decodeRecord(key, data, &r, &r.Format); err != nil {
		return r, err
	}
	return r, nil
}

func decodeShard(key string, data []byte) (shardRecord, error) {
	var r shardRecord
	if err := decodeRecord(key, data, &r, &r.Format); err != nil {
		return r, err
	}
	for _, ss := range r.Sessions {
		if len(ss.ID) == 0 || len(ss.ID) > maxIDLen {
			return r, brokenEntry(key, "client id of %d bytes", len(ss.ID))
		}
		if err := checkBatches(key, ss.ID, ss.Batches); err != nil {
			return r, err
		}
	}
	return r, nil
}

func checkBatches(key string, id []byte, batches []shardBatch) error {
	for _, b := range batches {
		for q := range numQueues {
			if !slices.IsSorted(b.Live[q]) {
				return brokenEntry(key, "live packets of %q out of order", id)
			}
		}
		if b.Pack != 0 && (b.Len == 0 || b.Len > maxPackBytes || b.Off > maxPackBytes-b.Len) {
			return brokenEntry(key, "batch %d of %q lies outside any pack", b.Seq, id)
		}
	}
	return nil
}

func decodeDelta(key string, data []byte) (deltaRecord, error) {
	var r deltaRecord
	if err := decodeRecord(key, data, &r, &r.Format); err != nil {
		return r, err
	}
	for _, ds := range r.Sessions {
		if len(ds.ID) == 0 || len(ds.ID) > maxIDLen {
			return r, brokenEntry(key, "client id of %d bytes", len(ds.ID))
		}
		if err := checkBatches(key, ds.ID, ds.Batches); err != nil {
			return r, err
		}
		if !slices.IsSorted(ds.Removed) {
			return r, brokenEntry(key, "removed packets of %q out of order", ds.ID)
		}
	}
	return r, nil
}

// decodeSegment decodes a journal segment and each of its records. A record that cannot
// be decoded fails the whole segment: replaying around a hole would reorder a session.
func decodeSegment(key string, data []byte) ([]journalRecord, error) {
	var r segmentRecord
	if err := decodeRecord(key, data, &r, &r.Format); err != nil {
		return nil, err
	}
	out := make([]journalRecord, len(r.Records))
	for i, raw := range r.Records {
		if err := decMode.Unmarshal(raw, &out[i]); err != nil {
			return nil, brokenEntry(key, "record %d: %v", i, err)
		}
		rec := &out[i]
		if rec.Kind < recState || rec.Kind > recRemove || len(rec.ID) == 0 || len(rec.ID) > maxIDLen {
			return nil, brokenEntry(key, "record %d: kind %d, id of %d bytes", i, rec.Kind, len(rec.ID))
		}
		if !slices.IsSorted(rec.Removed) {
			return nil, brokenEntry(key, "record %d: removed packets out of order", i)
		}
		for j, pk := range rec.Packets {
			if pk.Queue >= numQueues || len(pk.Data) == 0 || pk.Seq > rec.Seq || j > 0 && pk.Seq <= rec.Packets[j-1].Seq {
				return nil, brokenEntry(key, "record %d: packet %d is out of order, in no queue, or empty", i, j)
			}
		}
	}
	return out, nil
}

func encode(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("s3persist: encode %T: %w", v, err)
	}
	return b, nil
}

// packet returns a fresh copy of the queued packet for the broker, who may keep and
// modify it (G6).
func (r *queuedPacket) packet() *vlpersistence.PersistedPacket {
	return &vlpersistence.PersistedPacket{ExpireAt: string(r.ExpireAt), Data: clone(r.Data)}
}

func (r stateRecord) state() sessionState {
	st := sessionState{timestamp: string(r.Timestamp), version: r.Version, subs: r.Subscriptions}
	if x := r.Expiry; x != nil {
		st.expiry = &vlpersistence.SessionDelays{Since: string(x.Since), ExpireIn: string(x.ExpireIn), Will: x.Will}
	}
	return st
}

func isBroken(err error) bool { return errors.Is(err, vlpersistence.ErrBrokenEntry) }
