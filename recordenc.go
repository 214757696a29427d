package s3persist

import "sync"

// Append-style encoders of the records written on the hot path: journal records (one per
// call), journal segments and packet batches (the checkpoint's bulk). They write exactly
// the bytes encMode.Marshal writes for the same value (the tests and fuzz targets compare
// the two on random records), without reflection and into one buffer sized up front, so
// a call costs one allocation for its encoding and copies each payload once. Every other
// record goes through encMode, where speed does not matter.
//
// The rules they follow are those of encMode with the struct tags in records.go: a struct
// is a map keyed by its field numbers in declaration order; an omitempty field that is
// empty is left out (and not counted in the map's head); a nil byte slice or array that
// is not omitempty is null; integers and lengths take their shortest head.

// CBOR major types, shifted into the head's top bits.
const (
	cborUint   = 0 << 5
	cborBytes  = 2 << 5
	cborArray  = 4 << 5
	cborMap    = 5 << 5
	cborNull   = 0xf6
	maxHeadLen = 9 // a head with an 8-byte argument
)

// appendHead appends the head of a data item of major type major with argument n, in
// its shortest form.
func appendHead(b []byte, major byte, n uint64) []byte {
	switch {
	case n < 24:
		return append(b, major|byte(n))
	case n <= 0xff:
		return append(b, major|24, byte(n))
	case n <= 0xffff:
		return append(b, major|25, byte(n>>8), byte(n))
	case n <= 0xffffffff:
		return append(b, major|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	default:
		return append(b, major|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// appendUintField appends map key k and unsigned value v.
func appendUintField(b []byte, k byte, v uint64) []byte {
	return appendHead(append(b, cborUint|k), cborUint, v)
}

// appendBytesField appends map key k and byte string v: null if v is nil.
func appendBytesField(b []byte, k byte, v []byte) []byte {
	b = append(b, cborUint|k)
	if v == nil {
		return append(b, cborNull)
	}
	return append(appendHead(b, cborBytes, uint64(len(v))), v...)
}

// appendQueuedPacket appends p and returns where its Data and ExpireAt begin in the
// result (ExpireAt's offset is meaningless when it is empty: it is left out).
func appendQueuedPacket(b []byte, p *queuedPacket) (out []byte, dataAt, expireAt int) {
	fields := uint64(3)
	if len(p.ExpireAt) > 0 {
		fields++
	}
	b = appendHead(b, cborMap, fields)
	b = appendUintField(b, 0, p.Seq)
	b = appendUintField(b, 1, uint64(p.Queue))
	if len(p.ExpireAt) > 0 {
		b = appendHead(append(b, cborUint|2), cborBytes, uint64(len(p.ExpireAt)))
		expireAt = len(b)
		b = append(b, p.ExpireAt...)
	}
	b = append(b, cborUint|3)
	if p.Data == nil {
		return append(b, cborNull), len(b), expireAt
	}
	b = appendHead(b, cborBytes, uint64(len(p.Data)))
	dataAt = len(b)
	return append(b, p.Data...), dataAt, expireAt
}

// headSize is the size of the head of a data item with argument n.
func headSize(n uint64) int {
	switch {
	case n < 24:
		return 1
	case n <= 0xff:
		return 2
	case n <= 0xffff:
		return 3
	case n <= 0xffffffff:
		return 5
	default:
		return 9
	}
}

// bytesFieldSize is the size of a map key below 24 and byte string v (null if nil).
func bytesFieldSize(v []byte) int {
	if v == nil {
		return 2
	}
	return 1 + headSize(uint64(len(v))) + len(v)
}

// queuedPacketSize is the encoded size of p.
func queuedPacketSize(p *queuedPacket) int {
	n := 1 + 1 + headSize(p.Seq) + 1 + headSize(uint64(p.Queue)) + bytesFieldSize(p.Data)
	if len(p.ExpireAt) > 0 {
		n += bytesFieldSize(p.ExpireAt)
	}
	return n
}

func appendStateRecord(b []byte, s *stateRecord) []byte {
	fields := uint64(0)
	for _, set := range [...]bool{len(s.Timestamp) > 0, s.Version != 0, len(s.Subscriptions) > 0, s.Expiry != nil} {
		if set {
			fields++
		}
	}
	b = appendHead(b, cborMap, fields)
	if len(s.Timestamp) > 0 {
		b = appendBytesField(b, 0, s.Timestamp)
	}
	if s.Version != 0 {
		b = appendUintField(b, 1, uint64(s.Version))
	}
	if len(s.Subscriptions) > 0 {
		b = appendBytesField(b, 2, s.Subscriptions)
	}
	if x := s.Expiry; x != nil {
		b = appendHead(append(b, cborUint|3), cborMap, 3)
		b = appendBytesField(b, 0, x.Since)
		b = appendBytesField(b, 1, x.ExpireIn)
		b = appendBytesField(b, 2, x.Will)
	}
	return b
}

// stateRecordSize is the encoded size of s.
func stateRecordSize(s *stateRecord) int {
	n := 1
	if len(s.Timestamp) > 0 {
		n += bytesFieldSize(s.Timestamp)
	}
	if s.Version != 0 {
		n += 1 + headSize(uint64(s.Version))
	}
	if len(s.Subscriptions) > 0 {
		n += bytesFieldSize(s.Subscriptions)
	}
	if x := s.Expiry; x != nil {
		n += 1 + 1 + bytesFieldSize(x.Since) + bytesFieldSize(x.ExpireIn) + bytesFieldSize(x.Will)
	}
	return n
}

// journalRecordSize is the encoded size of r: its buffer is exactly that big, since a
// record waiting for its upload counts against MaxPendingBytes by its length.
func journalRecordSize(r *journalRecord) int {
	n := 1 + 1 + headSize(uint64(r.Kind)) + 1 + headSize(r.Seq) + bytesFieldSize(r.ID) + 1 + headSize(r.Inc)
	if r.State != nil {
		n += 1 + stateRecordSize(r.State)
	}
	if len(r.Packets) > 0 {
		n += 1 + headSize(uint64(len(r.Packets)))
		for i := range r.Packets {
			n += queuedPacketSize(&r.Packets[i])
		}
	}
	if len(r.Removed) > 0 {
		n += 1 + headSize(uint64(len(r.Removed)))
		for _, s := range r.Removed {
			n += headSize(s)
		}
	}
	return n
}

// encodeJournalRecord encodes r as encMode would, into r.buf if it has room. The packets
// of r then alias the encoding: their Data and ExpireAt are re-pointed into it, so that
// the pinned copy of a payload and the journal's share one buffer (a call copies each
// payload once).
func encodeJournalRecord(r *journalRecord) []byte {
	b := r.buf[:0]
	if size := journalRecordSize(r); cap(b) < size {
		b = make([]byte, 0, size)
	}
	fields := uint64(4)
	for _, set := range [...]bool{r.State != nil, len(r.Packets) > 0, len(r.Removed) > 0} {
		if set {
			fields++
		}
	}
	b = appendHead(b, cborMap, fields)
	b = appendUintField(b, 0, uint64(r.Kind))
	b = appendUintField(b, 1, r.Seq)
	b = appendBytesField(b, 2, r.ID)
	b = appendUintField(b, 3, r.Inc)
	if r.State != nil {
		b = appendStateRecord(append(b, cborUint|4), r.State)
	}
	type at struct{ data, expire int }
	var few [4]at // the usual call stores one packet: no allocation for its offsets
	offsets := few[:0]
	if len(r.Packets) > 0 {
		if len(r.Packets) > len(few) {
			offsets = make([]at, len(r.Packets))
		} else {
			offsets = few[:len(r.Packets)]
		}
		b = appendHead(append(b, cborUint|5), cborArray, uint64(len(r.Packets)))
		for i := range r.Packets {
			b, offsets[i].data, offsets[i].expire = appendQueuedPacket(b, &r.Packets[i])
		}
	}
	if len(r.Removed) > 0 {
		b = appendHead(append(b, cborUint|6), cborArray, uint64(len(r.Removed)))
		for _, s := range r.Removed {
			b = appendHead(b, cborUint, s)
		}
	}
	// Only now that b will not move again do the packets point into it.
	for i, o := range offsets {
		p := &r.Packets[i]
		if p.Data != nil {
			p.Data = b[o.data : o.data+len(p.Data) : o.data+len(p.Data)]
		}
		if len(p.ExpireAt) > 0 {
			p.ExpireAt = b[o.expire : o.expire+len(p.ExpireAt) : o.expire+len(p.ExpireAt)]
		}
	}
	return b
}

// encodeSegment encodes a journal segment of already encoded records as encMode would
// encode a segmentRecord holding them, into a buffer of uploadBuffers.
func encodeSegment(records [][]byte) []byte {
	n := 1 + 2 + maxHeadLen + 1 + maxHeadLen
	for _, r := range records {
		n += len(r)
	}
	b := appendHead(uploadBuffers.get(n), cborMap, 2)
	b = appendUintField(b, 0, formatVersion)
	b = append(b, cborUint|1)
	if records == nil {
		return append(b, cborNull)
	}
	b = appendHead(b, cborArray, uint64(len(records)))
	for _, r := range records {
		b = append(b, r...)
	}
	return b
}

// encodeBatch encodes a packet batch object holding pkts as encMode would encode a
// batchRecord with those packets, into a buffer of uploadBuffers.
func encodeBatch(pkts []*queuedPacket) []byte {
	return appendBatch(uploadBuffers.get(batchSize(pkts)), pkts)
}

// batchSize is at least the size of the batch record of pkts.
func batchSize(pkts []*queuedPacket) int {
	n := 1 + 2 + maxHeadLen + 1 + maxHeadLen
	for _, p := range pkts {
		n += queuedPacketSize(p)
	}
	return n
}

// appendBatch appends the batch record of pkts to b: a batch object, or one batch of a
// pack.
func appendBatch(b []byte, pkts []*queuedPacket) []byte {
	b = appendHead(b, cborMap, 2)
	b = appendUintField(b, 0, formatVersion)
	b = appendHead(append(b, cborUint|1), cborArray, uint64(len(pkts)))
	for _, p := range pkts {
		b, _, _ = appendQueuedPacket(b, p)
	}
	return b
}

// uploadBuffers recycles the buffers of journal segments and packet batches: megabytes
// each, written once and dropped after their upload, they would otherwise be most of
// what the garbage collector does and fresh memory to fault in for every upload. A
// buffer goes back only after a Put that succeeded (the Store contract lets the caller
// reuse data once Put returns; after a failure an HTTP transport may still be reading
// the body, so such a buffer is left to the collector).
var uploadBuffers bufferPool

// maxPooledBuffer is the largest buffer kept for reuse: a segment of the default
// BatchBytes with room to spare. Larger ones (a huge batch object) are left to the
// collector rather than held.
const maxPooledBuffer = 16 << 20

type bufferPool struct{ p sync.Pool }

// get returns an empty buffer with room for at least n bytes.
func (bp *bufferPool) get(n int) []byte {
	if v, ok := bp.p.Get().(*[]byte); ok && cap(*v) >= n {
		return (*v)[:0]
	} else if ok {
		bp.p.Put(v) // too small for this one; keep it for a smaller one
	}
	return make([]byte, 0, n)
}

// put returns b for reuse. Its caller must not touch b again.
func (bp *bufferPool) put(b []byte) {
	if cap(b) == 0 || cap(b) > maxPooledBuffer {
		return
	}
	bp.p.Put(&b)
}
