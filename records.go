package s3persist

import (
	"errors"
	"fmt"

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

// packetRecord is one vlpersistence.PersistedPacket.
type packetRecord struct {
	ExpireAt []byte `cbor:"0,keyasint,omitempty"`
	Data     []byte `cbor:"1,keyasint"`
}

// expiryRecord is one vlpersistence.SessionDelays.
type expiryRecord struct {
	Since    []byte `cbor:"0,keyasint"`
	ExpireIn []byte `cbor:"1,keyasint"`
	Will     []byte `cbor:"2,keyasint"`
}

// removalRecord marks removed packets of one queue: every number below Below, and the
// numbers in Also (ascending, all >= Below).
type removalRecord struct {
	Below uint64   `cbor:"0,keyasint"`
	Also  []uint64 `cbor:"1,keyasint,omitempty"`
}

// sessionRecord is the object at "<client prefix>session".
type sessionRecord struct {
	Format        uint                     `cbor:"0,keyasint"`
	ID            []byte                   `cbor:"1,keyasint"`
	Incarnation   uint64                   `cbor:"2,keyasint"`
	Timestamp     []byte                   `cbor:"3,keyasint"`
	Version       byte                     `cbor:"4,keyasint"`
	Subscriptions []byte                   `cbor:"5,keyasint"`
	Expiry        *expiryRecord            `cbor:"6,keyasint"`
	Removed       [numQueues]removalRecord `cbor:"7,keyasint"`
}

// batchRecord is one packet batch object.
type batchRecord struct {
	Format uint                      `cbor:"0,keyasint"`
	Seq    uint64                    `cbor:"1,keyasint"`
	Queues [numQueues][]packetRecord `cbor:"2,keyasint"`
}

// retainedRecord is the object at keyRetained.
type retainedRecord struct {
	Format  uint           `cbor:"0,keyasint"`
	Packets []packetRecord `cbor:"1,keyasint"`
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

func decodeSession(key string, data []byte) (sessionRecord, error) {
	var r sessionRecord
	if err := decodeRecord(key, data, &r, &r.Format); err != nil {
		return r, err
	}
	if len(r.ID) == 0 || len(r.ID) > maxIDLen {
		return r, brokenEntry(key, "client id of %d bytes", len(r.ID))
	}
	for q := range numQueues {
		also := r.Removed[q].Also
		for i, s := range also {
			if s < r.Removed[q].Below || i > 0 && s <= also[i-1] {
				return r, brokenEntry(key, "removal marks of queue %s out of order", queueNames[q])
			}
		}
	}
	return r, nil
}

func decodeBatch(key string, data []byte, seq uint64, counts [numQueues]uint32) (batchRecord, error) {
	var r batchRecord
	if err := decodeRecord(key, data, &r, &r.Format); err != nil {
		return r, err
	}
	if r.Seq != seq {
		return r, brokenEntry(key, "holds sequence number %d, its key says %d", r.Seq, seq)
	}
	for q := range numQueues {
		if uint64(len(r.Queues[q])) != uint64(counts[q]) {
			return r, brokenEntry(key, "holds %d %s packets, its key says %d", len(r.Queues[q]), queueNames[q], counts[q])
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

func encode(v any) ([]byte, error) {
	b, err := encMode.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("s3persist: encode %T: %w", v, err)
	}
	return b, nil
}

func toPacketRecord(p *vlpersistence.PersistedPacket) packetRecord {
	// The record is encoded before the call returns, so it may share the caller's bytes
	// (G6 forbids keeping them, not reading them).
	return packetRecord{ExpireAt: []byte(p.ExpireAt), Data: p.Data}
}

func (r packetRecord) packet() *vlpersistence.PersistedPacket {
	// Decoded records own fresh slices, so the caller may keep and modify them (G6).
	return &vlpersistence.PersistedPacket{ExpireAt: string(r.ExpireAt), Data: r.Data}
}

func isBroken(err error) bool { return errors.Is(err, vlpersistence.ErrBrokenEntry) }
