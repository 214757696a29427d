package s3persist

// Fuzz targets of everything s3persist reads back from a bucket: one per record decoder
// (records.go) and one per key parser and the id→key mapping (layout.go). The seed
// corpora are under testdata/fuzz/<FuzzName>/; `go test` runs them as regression tests
// and scripts/fuzz.sh fuzzes each target in turn.
//
// The seeds named real-* are objects and keys of a real run (TestWriteFuzzCorpus writes
// them; it runs only when S3PERSIST_WRITE_FUZZ_CORPUS=1). TestRealCorpusObjectsDecode
// checks that this release still reads every one of them.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/VolantMQ/vlapi/vlpersistence"
	"github.com/fxamacker/cbor/v2"

	"github.com/s3persist/s3persist/s3store"
)

const fuzzKey = "k/fuzz-object"

// maxDecodeAlloc bounds the heap a decoder may allocate for n bytes of input. A record
// field costs at most a few hundred bytes of Go values per byte of CBOR (an empty map
// "a0" becomes a 128-byte journal record plus its 24-byte raw slice), and the runtime
// counts small allocations a span at a time, hence the fixed slack. A length that the
// input claims but does not hold must cost nothing beyond it.
func maxDecodeAlloc(n int) uint64 { return 1<<20 + 512*uint64(n) }

var allocSample = []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}

func heapAllocated() uint64 {
	metrics.Read(allocSample)
	return allocSample[0].Value.Uint64()
}

// checkDecoder is the property every decoder target checks on data:
//   - decode never panics and allocates within maxDecodeAlloc;
//   - a refusal wraps vlpersistence.ErrBrokenEntry and names the object's key;
//   - what it accepts encodes to an object it accepts again, with the same content
//     (empty and absent fields are the same thing in the format), and that encoding is
//     a fixed point: encoding it again gives the same bytes.
func checkDecoder[R any](t *testing.T, data []byte, decode func([]byte) (R, error), enc func(R) ([]byte, error)) {
	t.Helper()
	before := heapAllocated()
	r, err := decode(data)
	if got := heapAllocated() - before; got > maxDecodeAlloc(len(data)) {
		t.Fatalf("decoding %d bytes allocated %d bytes (bound %d)", len(data), got, maxDecodeAlloc(len(data)))
	}
	if err != nil {
		if !errors.Is(err, vlpersistence.ErrBrokenEntry) || !strings.Contains(err.Error(), strconv.Quote(fuzzKey)) {
			t.Fatalf("refusal does not wrap ErrBrokenEntry or does not name the key: %v", err)
		}
		return
	}
	first, err := enc(r)
	if err != nil {
		t.Fatalf("accepted %+v, which does not encode: %v", r, err)
	}
	again, err := decode(first)
	if err != nil {
		t.Fatalf("accepted %x as %+v, whose encoding %x is refused: %v", data, r, first, err)
	}
	if !sameContent(reflect.ValueOf(r), reflect.ValueOf(again)) {
		t.Fatalf("round trip changed the record:\n%+v\n%+v", r, again)
	}
	second, err := enc(again)
	if err != nil || !bytes.Equal(first, second) {
		t.Fatalf("encoding is not stable: %x, then %x (%v)", first, second, err)
	}
}

// sameContent is reflect.DeepEqual except that a nil slice equals an empty one (the
// format omits empty fields and decodes an empty byte string as an empty slice) and
// cbor.RawMessage fields are compared as the records they hold are elsewhere.
func sameContent(a, b reflect.Value) bool {
	if a.Type() != b.Type() {
		return false
	}
	switch a.Kind() {
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !sameContent(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Array:
		for i := range a.Len() {
			if !sameContent(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return sameContent(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			if !sameContent(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.String:
		return a.String() == b.String()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return a.Uint() == b.Uint()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return a.Int() == b.Int()
	case reflect.Bool:
		return a.Bool() == b.Bool()
	}
	panic(fmt.Sprintf("sameContent: unexpected kind %s", a.Kind()))
}

// encodeSegmentOf encodes a segment of recs through encMode (reflection): the reference
// the append-style encoders of recordenc.go are checked against.
func encodeSegmentOf(recs []journalRecord) ([]byte, error) {
	seg := segmentRecord{Format: formatVersion, Records: make([]cbor.RawMessage, len(recs))}
	for i := range recs {
		b, err := encode(recs[i])
		if err != nil {
			return nil, err
		}
		seg.Records[i] = b
	}
	return encode(seg)
}

func FuzzDecodeSystem(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecoder(t, data, func(d []byte) (systemRecord, error) { return decodeSystem(fuzzKey, d) },
			func(r systemRecord) ([]byte, error) { return encode(r) })
	})
}

func FuzzDecodeOwner(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecoder(t, data, func(d []byte) (ownerRecord, error) { return decodeOwner(fuzzKey, d) },
			func(r ownerRecord) ([]byte, error) { return encode(r) })
	})
}

func FuzzDecodeSession(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecoder(t, data, func(d []byte) (sessionRecord, error) { return decodeSession(fuzzKey, d) },
			func(r sessionRecord) ([]byte, error) { return encode(r) })
	})
}

func FuzzDecodeRetained(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecoder(t, data, func(d []byte) (retainedRecord, error) { return decodeRetained(fuzzKey, d) },
			func(r retainedRecord) ([]byte, error) { return encode(r) })
	})
}

func FuzzDecodeShard(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecoder(t, data, func(d []byte) (shardRecord, error) { return decodeShard(fuzzKey, d) },
			func(r shardRecord) ([]byte, error) { return encode(r) })
	})
}

func FuzzDecodeDelta(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecoder(t, data, func(d []byte) (deltaRecord, error) { return decodeDelta(fuzzKey, d) },
			func(r deltaRecord) ([]byte, error) { return encode(r) })
	})
}

// FuzzDecodeBatch takes the data and the number the batch's key names.
func FuzzDecodeBatch(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, seq uint64) {
		checkDecoder(t, data, func(d []byte) (batchRecord, error) { return decodeBatch(fuzzKey, d, seq) },
			func(r batchRecord) ([]byte, error) { return encode(r) })
	})
}

func FuzzDecodeSegment(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecoder(t, data, func(d []byte) ([]journalRecord, error) { return decodeSegment(fuzzKey, d) }, encodeSegmentOf)
	})
}

// FuzzEncodedRecordsDecode builds records of every kind the way the writers do, from
// fuzzed ids, payloads and numbers, and checks that each decodes to what was encoded:
// the byte-level targets above rarely assemble a valid record with many fields, so this
// one covers the accepting side of every decoder.
func FuzzEncodedRecordsDecode(f *testing.F) {
	f.Add([]byte("client"), []byte("payload"), []byte("2027-01-01T00:00:00Z"), uint64(1<<40), uint8(3), uint8(1))
	f.Add([]byte{0xff, 0, '/'}, []byte{}, []byte{}, ^uint64(0)-2, uint8(0), uint8(255))
	f.Add(bytes.Repeat([]byte("x"), maxIDLen), []byte{0xa0}, []byte(nil), uint64(0), uint8(7), uint8(2))
	f.Fuzz(func(t *testing.T, id, data, expire []byte, seq uint64, n, queue uint8) {
		if len(id) == 0 || len(id) > maxIDLen {
			return
		}
		if len(data) == 0 {
			data = []byte{0} // the broker never stores an empty packet
		}
		count := uint64(n%8) + 1
		if seq > ^uint64(0)-count {
			seq = ^uint64(0) - count
		}
		var pkts []queuedPacket
		var live [numQueues][]uint64
		for i := range count {
			q := (queue + uint8(i)) % numQueues
			pkts = append(pkts, queuedPacket{Seq: seq + i, Queue: q, ExpireAt: expire, Data: data})
			live[q] = append(live[q], seq+i)
		}
		last := seq + count - 1
		state := stateRecord{Timestamp: expire, Version: n, Subscriptions: data,
			Expiry: &expiryRecord{Since: expire, ExpireIn: data, Will: data}}
		if queue%2 == 0 {
			state.Expiry = nil
		}
		recs := []journalRecord{
			{Kind: recState, Seq: seq, ID: id, Inc: seq, State: &state},
			{Kind: recPackets, Seq: last, ID: id, Inc: seq, Packets: pkts},
			{Kind: recRemove, Seq: last, ID: id, Inc: seq, Removed: live[queue%numQueues]},
			{Kind: recDelete, Seq: last, ID: id, Inc: seq},
		}
		sameAsEncMode(t, recs, pkts)
		roundTrip(t, sessionRecord{Format: formatVersion, ID: id, Incarnation: seq, State: state},
			func(d []byte) (sessionRecord, error) { return decodeSession(fuzzKey, d) })
		roundTrip(t, batchRecord{Format: formatVersion, Packets: pkts},
			func(d []byte) (batchRecord, error) { return decodeBatch(fuzzKey, d, seq) })
		roundTrip(t, shardRecord{Format: formatVersion, Sessions: []shardSession{{ID: id, Incarnation: seq, State: state,
			Watermark: last, Batches: []shardBatch{{Seq: seq, Live: live}}}}},
			func(d []byte) (shardRecord, error) { return decodeShard(fuzzKey, d) })
		roundTrip(t, recs, func(d []byte) ([]journalRecord, error) { return decodeSegment(fuzzKey, d) })
		roundTrip(t, retainedRecord{Format: formatVersion, Packets: []packetRecord{{ExpireAt: expire, Data: data}, {Data: id}}},
			func(d []byte) (retainedRecord, error) { return decodeRetained(fuzzKey, d) })
		roundTrip(t, ownerRecord{Format: formatVersion, Instance: hex.EncodeToString(id[:min(len(id), 16)]),
			Host: strings.ToValidUTF8(string(data), "?"), Epoch: seq >> 40, Renewal: seq, LeaseMS: int64(n) + 1,
			Released: queue%2 == 1, Floor: seq >> 40, Sealed: []string{segmentKey(int(queue), seq>>40, seq&(1<<40-1))}},
			func(d []byte) (ownerRecord, error) { return decodeOwner(fuzzKey, d) })
		roundTrip(t, systemRecord{Format: formatVersion, Layout: LayoutVersion, CreatedAt: strings.ToValidUTF8(string(expire), "?"), Epoch: seq >> 40},
			func(d []byte) (systemRecord, error) { return decodeSystem(fuzzKey, d) })
	})
}

// sameAsEncMode checks that the append-style encoders (recordenc.go) write exactly what
// encMode writes for the same journal records, segment and packet batch, and that the
// packets of an encoded journal record alias its encoding with their content unchanged.
func sameAsEncMode(t *testing.T, recs []journalRecord, pkts []queuedPacket) {
	t.Helper()
	fast := make([][]byte, len(recs))
	for i, r := range recs {
		want, err := encode(r)
		if err != nil {
			t.Fatal(err)
		}
		r.Packets = slices.Clone(r.Packets)
		if size := journalRecordSize(&r); size != len(want) {
			t.Fatalf("journalRecordSize of %+v is %d, its encoding %d bytes", recs[i], size, len(want))
		}
		fast[i] = encodeJournalRecord(&r)
		if !bytes.Equal(fast[i], want) {
			t.Fatalf("journal record %+v:\nencodeJournalRecord %x\nencMode             %x", recs[i], fast[i], want)
		}
		for j, pk := range r.Packets {
			if !bytes.Equal(pk.Data, recs[i].Packets[j].Data) || !bytes.Equal(pk.ExpireAt, recs[i].Packets[j].ExpireAt) ||
				(pk.Data == nil) != (recs[i].Packets[j].Data == nil) {
				t.Fatalf("packet %d changed in encodeJournalRecord: %+v, was %+v", j, pk, recs[i].Packets[j])
			}
		}
	}
	want, err := encodeSegmentOf(recs)
	if err != nil {
		t.Fatal(err)
	}
	if got := encodeSegment(fast); !bytes.Equal(got, want) {
		t.Fatalf("segment:\nencodeSegment %x\nencMode       %x", got, want)
	}
	ptrs := make([]*queuedPacket, len(pkts))
	for i := range pkts {
		ptrs[i] = &pkts[i]
	}
	want, err = encode(batchRecord{Format: formatVersion, Packets: slices.Clone(pkts)})
	if err != nil {
		t.Fatal(err)
	}
	if got := encodeBatch(ptrs); !bytes.Equal(got, want) {
		t.Fatalf("batch:\nencodeBatch %x\nencMode     %x", got, want)
	}
}

// roundTrip checks that the decoder accepts the encoding of r and returns r.
func roundTrip[R any](t *testing.T, r R, decode func([]byte) (R, error)) {
	t.Helper()
	var data []byte
	var err error
	if recs, ok := any(r).([]journalRecord); ok {
		data, err = encodeSegmentOf(recs)
	} else {
		data, err = encode(r)
	}
	if err != nil {
		t.Fatalf("encode %+v: %v", r, err)
	}
	got, err := decode(data)
	if err != nil {
		t.Fatalf("%T as the writers make it is refused: %v", r, err)
	}
	if !sameContent(reflect.ValueOf(r), reflect.ValueOf(got)) {
		t.Fatalf("%T changed in a round trip:\n%+v\n%+v", r, r, got)
	}
}

// checkLayoutKey checks what every key this layout names must be: valid for every
// store, with no empty segment and none longer than 255 bytes.
func checkLayoutKey(t *testing.T, key string) {
	t.Helper()
	if err := s3store.ValidateKey(key); err != nil {
		t.Fatalf("layout key %q: %v", key, err)
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || len(seg) > 255 {
			t.Fatalf("layout key %q has a segment of %d bytes", key, len(seg))
		}
	}
}

// FuzzClientKey checks that parsing a listed client key never panics, that what parses
// re-encodes to the same key, and that a readable segment decodes to the id that maps
// to it.
func FuzzClientKey(f *testing.F) {
	for _, id := range hostileIDs(50) {
		f.Add(sessionKey(id))
		f.Add(batchKey(clientPrefix(id), 7))
	}
	f.Fuzz(func(t *testing.T, key string) {
		pk, err := parseClientKey(key)
		if err != nil {
			if !errors.Is(err, errForeignKey) {
				t.Fatalf("refusal of %q does not wrap errForeignKey: %v", key, err)
			}
			return
		}
		var again string
		switch pk.kind {
		case keySession:
			again = pk.prefix + sessionKeySuffix
		case keyBatch:
			again = batchKey(pk.prefix, pk.seq)
		default:
			t.Fatalf("%q parsed to kind %d without an error", key, pk.kind)
		}
		if again != key {
			t.Fatalf("%q parsed to %+v, which names %q", key, pk, again)
		}
		checkLayoutKey(t, key)
		if pk.readableID != nil && clientPrefix(pk.readableID) != pk.prefix {
			t.Fatalf("%q: readable id %q maps to %q", key, pk.readableID, clientPrefix(pk.readableID))
		}
	})
}

func FuzzParseSegmentKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, key string) {
		ss, epoch, n, err := parseSegmentKey(key)
		if err != nil {
			if !errors.Is(err, errForeignKey) {
				t.Fatalf("refusal of %q does not wrap errForeignKey: %v", key, err)
			}
			return
		}
		if again := segmentKey(ss, epoch, n); again != key {
			t.Fatalf("%q parsed to stream %d, epoch %d, batch %d, which name %q", key, ss, epoch, n, again)
		}
		if ss < 0 || ss > 0xff || epoch >= 1<<24 || n >= 1<<40 {
			t.Fatalf("%q parsed to stream %d, epoch %d, batch %d: out of range", key, ss, epoch, n)
		}
		checkLayoutKey(t, key)
	})
}

func FuzzParseShardKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, key string) {
		hh, err := parseShardKey(key)
		if err != nil {
			if !errors.Is(err, errForeignKey) {
				t.Fatalf("refusal of %q does not wrap errForeignKey: %v", key, err)
			}
			return
		}
		if hh < 0 || hh >= numShards || shardKey(hh) != key {
			t.Fatalf("%q parsed to shard %d, named %q", key, hh, shardKey(hh))
		}
		checkLayoutKey(t, key)
	})
}

// FuzzClientPrefix checks the id→key mapping on two ids: every key of a session is a
// valid key under "c/<hh>/<client>/" with <hh> its shard, no segment sorts before "/"
// (MinIO's paged listings, see layout.go), the keys parse back to the id (readable form)
// or to the hashed form exactly when the id is too long, and two different ids never
// share a prefix, nor does one's prefix nest inside the other's.
func FuzzClientPrefix(f *testing.F) {
	ids := hostileIDs(60)
	for i := 0; i+1 < len(ids); i += 2 {
		f.Add(ids[i], ids[i+1], uint64(i))
	}
	f.Fuzz(func(t *testing.T, a, b []byte, seq uint64) {
		if len(a) == 0 || len(a) > maxIDLen || len(b) == 0 || len(b) > maxIDLen {
			return
		}
		pa, pb := checkClientPrefix(t, a, seq), checkClientPrefix(t, b, seq)
		if bytes.Equal(a, b) != (pa == pb) {
			t.Fatalf("ids %q and %q map to %q and %q", a, b, pa, pb)
		}
		if pa != pb && (strings.HasPrefix(pa, pb) || strings.HasPrefix(pb, pa)) {
			t.Fatalf("prefix %q of %q and %q of %q nest", pa, a, pb, b)
		}
	})
}

func checkClientPrefix(t *testing.T, id []byte, seq uint64) string {
	t.Helper()
	prefix := clientPrefix(id)
	if prefix != clientPrefix(id) {
		t.Fatalf("id %q maps to %q, then %q", id, prefix, clientPrefix(id))
	}
	parts := strings.Split(prefix, "/")
	if len(parts) != 4 || parts[0]+"/" != clientsRoot || parts[1] != fmt.Sprintf("%02x", shardOf(id)) || parts[3] != "" {
		t.Fatalf("id %q: prefix %q is not c/<shard %02x>/<client>/", id, prefix, shardOf(id))
	}
	for i := 0; i < len(parts[2]); i++ {
		if parts[2][i] <= '/' {
			t.Fatalf("id %q: client segment %q holds %q, which sorts before \"/\"", id, parts[2], parts[2][i])
		}
	}
	for _, key := range []string{sessionKey(id), batchKey(prefix, seq)} {
		checkLayoutKey(t, key)
		pk, err := parseClientKey(key)
		if err != nil || pk.prefix != prefix {
			t.Fatalf("id %q: key %q parses to %+v, %v", id, key, pk, err)
		}
		hashed := readableLen(id) > maxReadableSegment
		if hashed && (pk.readableID != nil || parts[2] != "~"+hex.EncodeToString(sha256Sum(id))) {
			t.Fatalf("id %q of %d bytes: key %q is not in the hashed form", id, len(id), key)
		}
		if !hashed && !bytes.Equal(pk.readableID, id) {
			t.Fatalf("id %q: key %q decodes to id %q", id, key, pk.readableID)
		}
		if pk.kind == keyBatch && pk.seq != seq {
			t.Fatalf("id %q: batch key %q parses to number %d", id, key, pk.seq)
		}
	}
	return prefix
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// Seed corpora. The real-* seeds of each decoder are the objects of a run that uses
// every kind of record; the edge-* seeds are inputs built to hit the checks.

// corpusDir is where go test reads the seed corpus of a fuzz target.
func corpusDir(target string) string { return filepath.Join("testdata", "fuzz", target) }

// corpusFile is a seed in the file format of go test -fuzz ("go test fuzz v1").
func corpusFile(args ...any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case string:
			fmt.Fprintf(&b, "string(%q)\n", v)
		case uint64:
			fmt.Fprintf(&b, "uint64(%d)\n", v)
		default:
			panic(fmt.Sprintf("corpusFile: %T", a))
		}
	}
	return b.Bytes()
}

// parseCorpusFile reads the arguments of a seed written by corpusFile.
func parseCorpusFile(data []byte) ([]any, error) {
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) < 2 || lines[0] != "go test fuzz v1" {
		return nil, errors.New("not a go test fuzz v1 file")
	}
	var out []any
	for _, l := range lines[1:] {
		typ, rest, ok := strings.Cut(l, "(")
		if !ok || !strings.HasSuffix(rest, ")") {
			return nil, fmt.Errorf("bad line %q", l)
		}
		rest = strings.TrimSuffix(rest, ")")
		switch typ {
		case "[]byte", "string":
			s, err := strconv.Unquote(rest)
			if err != nil {
				return nil, fmt.Errorf("bad line %q: %v", l, err)
			}
			if typ == "string" {
				out = append(out, s)
			} else {
				out = append(out, []byte(s))
			}
		case "uint64":
			v, err := strconv.ParseUint(rest, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("bad line %q: %v", l, err)
			}
			out = append(out, v)
		default:
			return nil, fmt.Errorf("bad line %q", l)
		}
	}
	return out, nil
}

// realObjects runs a workload that writes every kind of object (sessions with readable
// and hashed ids, every queue, subscriptions, expiry, retained messages, checkpoints,
// removals, deletes) and returns the objects left in the bucket, by key.
func realObjects(t *testing.T) map[string][]byte {
	f := newFixture(t, Config{})
	ids := []string{"sensor-7", "Car/1", "a", "\xff\x00/..", strings.Repeat("long/", 40)}
	for i, id := range ids {
		f.mustCreate(id)
		must(t, f.s.SubscriptionsStore([]byte(id), []byte{0x82, 0x01, byte(i)}))
		must(t, f.s.ExpiryStore([]byte(id), &vlpersistence.SessionDelays{Since: "2026-12-01T00:00:00Z", ExpireIn: "3600", Will: []byte("will-" + id)}))
		must(t, f.s.PacketStoreQoS0([]byte(id), pkt("q0-"+id)))
		must(t, f.s.PacketStoreQoS12([]byte(id), &vlpersistence.PersistedPacket{ExpireAt: "2027-01-01T00:00:00Z", Data: []byte("q12-" + id)}))
		must(t, f.s.PacketsStore([]byte(id), vlpersistence.PersistedPackets{UnAck: []*vlpersistence.PersistedPacket{pkt("ua-" + id), pkt("ub-" + id)}}))
	}
	// A session with a batch object of its own (64 KiB or more to move).
	f.mustCreate("big/1")
	f.mustStore("big/1", strings.Repeat("B", ownBatchBytes))
	ret, err := f.p.Retained()
	must(t, err)
	must(t, ret.Store([]*vlpersistence.PersistedPacket{{ExpireAt: "2027-01-01T00:00:00Z", Data: []byte("r1")}, pkt("r2")}))
	f.flush()
	f.checkpoint()
	must(t, f.p.mergeIndex(t.Context())) // base shards that name packs
	must(t, f.s.PacketStoreQoS0([]byte(ids[1]), pkt("q0-later")))
	f.drain(ids[2], f.s.PacketsForEachUnAck, keepNone)
	f.flush()
	f.checkpoint() // a delta with new batches and removed packets
	// Changes after the checkpoint stay in journal segments: removals, a delete, a new
	// state, more packets.
	f.drain(ids[0], f.s.PacketsForEachQoS12, keepNone)
	must(t, f.s.Delete([]byte(ids[2])))
	must(t, f.s.StateStore([]byte(ids[1]), &vlpersistence.SessionState{Subscriptions: []byte{0xa0},
		SessionBase: vlpersistence.SessionBase{Timestamp: "t2", Version: 5}}))
	for i := range 3 {
		f.mustStore(ids[3], fmt.Sprintf("later-%d", i))
	}
	f.flush()
	out := map[string][]byte{}
	for _, k := range f.mem.Keys() {
		data, _, err := f.mem.Get(t.Context(), k)
		must(t, err)
		out[k] = data
	}
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// seedsOf sorts a real object into the target that decodes it, with its arguments.
func seedsOf(key string, data []byte) (target string, args []any) {
	switch {
	case key == keySystem:
		return "FuzzDecodeSystem", []any{data}
	case key == keyRetained:
		return "FuzzDecodeRetained", []any{data}
	case key == keyOwner:
		return "FuzzDecodeOwner", []any{data}
	case strings.HasPrefix(key, indexRoot):
		return "FuzzDecodeShard", []any{data}
	case strings.HasPrefix(key, deltaRoot):
		return "FuzzDecodeDelta", []any{data}
	case strings.HasPrefix(key, packRoot):
		return "", nil // read a batch at a time: FuzzDecodeBatch
	case strings.HasPrefix(key, journalRoot):
		return "FuzzDecodeSegment", []any{data}
	}
	pk, err := parseClientKey(key)
	if err != nil {
		return "", nil
	}
	if pk.kind == keySession {
		return "FuzzDecodeSession", []any{data}
	}
	return "FuzzDecodeBatch", []any{data, pk.seq}
}

// edgeSeeds are hand-made inputs for each target: truncations and small changes of real
// objects are left to the fuzzer; these are the shapes it would take long to build.
func edgeSeeds() map[string][][]any {
	enc := func(v any) []byte {
		b, err := encode(v)
		if err != nil {
			panic(err)
		}
		return b
	}
	rec := func(r journalRecord) cbor.RawMessage { return enc(r) }
	manyEmptyMaps := append([]byte{0xa2, 0x00, 0x01, 0x01, 0x9a, 0x00, 0x00, 0x10, 0x00}, bytes.Repeat([]byte{0xa0}, 4096)...)
	claimsHuge := []byte{0xa2, 0x00, 0x01, 0x01, 0x9a, 0x00, 0xff, 0xff, 0xff, 0xa0}
	common := [][]any{
		{[]byte{}}, {[]byte{0xf6}}, {[]byte{0xa0}}, {[]byte{0xa1, 0x00, 0x02}}, // empty, null, no version, version 2
		{[]byte{0xa1, 0x00, 0x01}},             // version only
		{[]byte{0xa2, 0x00, 0x01, 0x00, 0x01}}, // duplicate key
		{[]byte{0xbf, 0x00, 0x01, 0xff}},       // indefinite length
		{[]byte{0xc1, 0xa1, 0x00, 0x01}},       // tagged
		{[]byte{0xa1, 0x61, 0x30, 0x01}},       // text key "0"
		{manyEmptyMaps}, {claimsHuge},
		{bytes.Repeat([]byte{0x81}, 64)}, // deep nesting
	}
	withSeq := func(seeds [][]any, seq uint64) [][]any {
		var out [][]any
		for _, s := range seeds {
			out = append(out, append(append([]any{}, s...), seq))
		}
		return out
	}
	longID := bytes.Repeat([]byte("x"), maxIDLen+1)
	return map[string][][]any{
		"FuzzDecodeSystem": append(common,
			[]any{enc(systemRecord{Format: formatVersion, Layout: LayoutVersion, CreatedAt: "2026-12-01T00:00:00Z", Epoch: 1<<24 - 1})},
			[]any{enc(systemRecord{Format: formatVersion, Layout: "s3persist-layout-1"})},
			[]any{[]byte("\xa2\x00\x01\x01\x62\xff\xfe")}), // invalid UTF-8 layout
		"FuzzDecodeOwner": append(common,
			[]any{enc(ownerRecord{Format: formatVersion, Instance: "i", LeaseMS: 1, Released: true, Floor: 3,
				Sealed: []string{segmentKey(0, 2, 1), segmentKey(3, 2, 9)}})},
			[]any{enc(ownerRecord{Format: formatVersion, Instance: "i", LeaseMS: -1})},
			[]any{enc(ownerRecord{Format: formatVersion, LeaseMS: 1000})},
			[]any{enc(ownerRecord{Format: formatVersion, Instance: "i", LeaseMS: 1<<63 - 1, Epoch: ^uint64(0), Renewal: ^uint64(0)})}),
		"FuzzDecodeSession": append(common,
			[]any{enc(sessionRecord{Format: formatVersion, ID: longID})},
			[]any{enc(sessionRecord{Format: formatVersion, ID: []byte{}})},
			[]any{enc(sessionRecord{Format: formatVersion, ID: []byte("id"), State: stateRecord{Expiry: &expiryRecord{}}})}),
		"FuzzDecodeRetained": append(common,
			[]any{enc(retainedRecord{Format: formatVersion})},
			[]any{enc(retainedRecord{Format: formatVersion, Packets: []packetRecord{{}, {Data: []byte{0}}}})}),
		"FuzzDecodeShard": append(common,
			[]any{enc(shardRecord{Format: formatVersion, Sessions: []shardSession{{ID: []byte("a"), Batches: []shardBatch{{Seq: 9, Live: [numQueues][]uint64{{9, 3}}}}}}})},
			[]any{enc(shardRecord{Format: formatVersion, Sessions: []shardSession{{ID: longID}}})},
			[]any{enc(shardRecord{Format: formatVersion, Sessions: []shardSession{{ID: []byte("a"), Batches: []shardBatch{{Seq: 1, Live: [numQueues][]uint64{{1, 1}, nil, {^uint64(0)}}}}}}})}),
		"FuzzDecodeDelta": append(common,
			[]any{enc(deltaRecord{Format: formatVersion, Checkpoint: 7, Sessions: []deltaSession{{ID: []byte("a"), Removed: []uint64{3, 2}}}})},
			[]any{enc(deltaRecord{Format: formatVersion, Sessions: []deltaSession{{ID: []byte("a"), Deleted: true}, {ID: []byte("a"), Full: true}}})},
			[]any{enc(deltaRecord{Format: formatVersion, Sessions: []deltaSession{{ID: []byte("a"), Batches: []shardBatch{{Seq: 1, Pack: 2, Off: maxPackBytes, Len: 1}}}}})}),
		"FuzzDecodeBatch": append(withSeq(common, 1),
			[]any{enc(batchRecord{Format: formatVersion, Packets: []queuedPacket{{Seq: 5, Data: []byte("a")}, {Seq: 5, Data: []byte("b")}}}), uint64(5)},
			[]any{enc(batchRecord{Format: formatVersion, Packets: []queuedPacket{{Seq: 5, Queue: numQueues, Data: []byte("a")}}}), uint64(5)},
			[]any{enc(batchRecord{Format: formatVersion, Packets: []queuedPacket{{Seq: 5, Data: []byte("a")}}}), uint64(6)},
			[]any{enc(batchRecord{Format: formatVersion, Packets: []queuedPacket{{Seq: ^uint64(0), Queue: 2, ExpireAt: []byte{}, Data: []byte{0}}}}), ^uint64(0)}),
		"FuzzDecodeSegment": append(common,
			[]any{enc(segmentRecord{Format: formatVersion, Records: []cbor.RawMessage{
				rec(journalRecord{Kind: recState, Seq: 3, ID: []byte("a"), Inc: 3, State: &stateRecord{Version: 4}}),
				rec(journalRecord{Kind: recRemove, Seq: 4, ID: []byte("a"), Inc: 3, Removed: []uint64{1, 2, 2}}),
				rec(journalRecord{Kind: recDelete, Seq: 5, ID: []byte("a"), Inc: 3})}})},
			[]any{enc(segmentRecord{Format: formatVersion, Records: []cbor.RawMessage{
				rec(journalRecord{Kind: recPackets, Seq: 4, ID: []byte("a"), Packets: []queuedPacket{{Seq: 5, Data: []byte("d")}}})}})},
			[]any{enc(segmentRecord{Format: formatVersion, Records: []cbor.RawMessage{rec(journalRecord{Kind: 9, Seq: 1, ID: []byte("a")})}})},
			[]any{[]byte{0xa2, 0x00, 0x01, 0x01, 0x81, 0xff}}, // a record that is a lone break code
			[]any{append([]byte{0xa2, 0x00, 0x01, 0x01, 0x9a, 0x00, 0x00, 0x10, 0x00}, bytes.Repeat([]byte{0xa1, 0x00, 0x01}, 4096)...)}),
		"FuzzClientKey": {
			{"c/zz/abc/session"}, {"c/00/_61/session"}, {"c/00/~abc/session"}, {"c/00/a/b/0000000000000001-1-0-0"},
			{"c/00/a/b/00000000000000AB"}, {"c//a/session"}, {"c/00//session"}, {"c/00/_2f_2e_2e/session"}, {"c/00/_/session"},
		},
		"FuzzParseSegmentKey": {
			{segmentKey(0, 0, 0)}, {segmentKey(255, 1<<24-1, 1<<40-1)}, {"j/00/000001-000000000"}, {"j/0/000001-0000000000"},
			{"j/00/00000g-0000000000"}, {"j/00/00000A-0000000000"}, {"j/00/000001+0000000000"}, {"j/00/000001-00000000000"}, {""},
		},
		"FuzzParseShardKey": {{shardKey(0)}, {shardKey(255)}, {"i/0"}, {"i/GG"}, {"i/000"}, {"i/fF"}, {"i/-1"}, {"i/+f"}, {"i/"}},
		"FuzzClientPrefix": {
			{[]byte("a"), []byte("_61"), uint64(0)}, {[]byte("A"), []byte("_41"), uint64(1)}, {[]byte("/"), []byte("_2f"), ^uint64(0)},
			{bytes.Repeat([]byte("a"), maxReadableSegment), bytes.Repeat([]byte("a"), maxReadableSegment+1), uint64(7)},
			{bytes.Repeat([]byte("/"), maxReadableSegment/3), bytes.Repeat([]byte("/"), maxReadableSegment/3+1), uint64(7)},
			{[]byte("~" + strings.Repeat("0", 64)), []byte("."), uint64(2)}, {[]byte(".."), []byte("\x00"), uint64(3)},
			{[]byte("ab"), []byte("a"), uint64(4)}, {bytes.Repeat([]byte("x/"), maxIDLen/2), []byte("\xff"), uint64(5)},
		},
	}
}

// realKeySeeds are the key-parser seeds from a run's keys, at most 10 a parser.
func realKeySeeds(keys []string) map[string][][]any {
	out := map[string][][]any{}
	slices.Sort(keys)
	for _, k := range keys {
		switch {
		case len(out["FuzzParseSegmentKey"]) >= 10 && strings.HasPrefix(k, journalRoot),
			len(out["FuzzParseShardKey"]) >= 10 && strings.HasPrefix(k, indexRoot),
			len(out["FuzzClientKey"]) >= 10 && strings.HasPrefix(k, clientsRoot):
		case strings.HasPrefix(k, journalRoot):
			out["FuzzParseSegmentKey"] = append(out["FuzzParseSegmentKey"], []any{k})
		case strings.HasPrefix(k, indexRoot):
			out["FuzzParseShardKey"] = append(out["FuzzParseShardKey"], []any{k})
		case strings.HasPrefix(k, clientsRoot):
			out["FuzzClientKey"] = append(out["FuzzClientKey"], []any{k})
		}
	}
	return out
}

// TestWriteFuzzCorpus writes the seed corpora of the fuzz targets above. Run it after a
// change of the format:
//
//	S3PERSIST_WRITE_FUZZ_CORPUS=1 go test -run TestWriteFuzzCorpus .
//
// It replaces the real-* and edge-* seeds and leaves every other file (crashers the
// fuzzer found, which stay as regression tests) alone.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("S3PERSIST_WRITE_FUZZ_CORPUS") != "1" {
		t.Skip("writes testdata; set S3PERSIST_WRITE_FUZZ_CORPUS=1 to run it")
	}
	files := map[string][]byte{} // path -> content
	add := func(target, kind string, args []any) {
		content := corpusFile(args...)
		sum := sha256.Sum256(content)
		files[filepath.Join(corpusDir(target), kind+"-"+hex.EncodeToString(sum[:8]))] = content
	}
	objects := realObjects(t)
	// The objects of a layout-2 bucket too (testdata/layout2): this release converts them.
	must(t, filepath.WalkDir(filepath.Join("testdata", "layout2", "objects"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		key, _ := filepath.Rel(filepath.Join("testdata", "layout2", "objects"), path)
		if target, args := seedsOf(filepath.ToSlash(key), data); target != "" {
			add(target, "real", args)
		}
		return nil
	}))
	var keys []string
	for k, data := range objects {
		keys = append(keys, k)
		if target, args := seedsOf(k, data); target != "" {
			add(target, "real", args)
		}
		if strings.HasPrefix(k, packRoot) { // each batch of a pack is read alone
			batches, err := packBatches(k, data)
			must(t, err)
			for _, b := range batches {
				enc, err := encode(b)
				must(t, err)
				add("FuzzDecodeBatch", "real", []any{enc, b.Packets[0].Seq})
			}
		}
	}
	for target, seeds := range realKeySeeds(keys) {
		for _, args := range seeds {
			add(target, "real", args)
		}
	}
	for target, seeds := range edgeSeeds() {
		for _, args := range seeds {
			add(target, "edge", args)
		}
	}
	for _, target := range fuzzTargets {
		dir := corpusDir(target)
		old, _ := filepath.Glob(filepath.Join(dir, "real-*"))
		edge, _ := filepath.Glob(filepath.Join(dir, "edge-*"))
		for _, p := range append(old, edge...) {
			must(t, os.Remove(p))
		}
		must(t, os.MkdirAll(dir, 0o755))
	}
	for p, content := range files {
		must(t, os.WriteFile(p, content, 0o644))
	}
	t.Logf("wrote %d seeds from %d objects", len(files), len(objects))
}

// fuzzTargets are the fuzz targets of this package; scripts/fuzz.sh finds them itself.
var fuzzTargets = []string{"FuzzDecodeSystem", "FuzzDecodeOwner", "FuzzDecodeSession", "FuzzDecodeRetained", "FuzzDecodeShard", "FuzzDecodeDelta",
	"FuzzDecodeBatch", "FuzzDecodeSegment", "FuzzEncodedRecordsDecode", "FuzzClientKey", "FuzzParseSegmentKey", "FuzzParseShardKey", "FuzzClientPrefix"}

// TestRealCorpusObjectsDecode checks that this release reads every object of the
// committed real run (format compatibility), and that each target has real seeds.
func TestRealCorpusObjectsDecode(t *testing.T) {
	for _, target := range fuzzTargets {
		paths, err := filepath.Glob(filepath.Join(corpusDir(target), "real-*"))
		must(t, err)
		if len(paths) == 0 && target != "FuzzClientPrefix" && target != "FuzzEncodedRecordsDecode" {
			t.Errorf("%s has no real-* seeds in %s", target, corpusDir(target))
		}
		for _, p := range paths {
			data, err := os.ReadFile(p)
			must(t, err)
			args, err := parseCorpusFile(data)
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if err := decodeSeed(target, args); err != nil {
				t.Errorf("%s: this release refuses an object it wrote: %v", p, err)
			}
		}
	}
}

func decodeSeed(target string, args []any) error {
	var err error
	switch target {
	case "FuzzDecodeSystem":
		var r systemRecord
		if r, err = decodeSystem(fuzzKey, args[0].([]byte)); err == nil && r.Layout != LayoutVersion && r.Layout != layout2 {
			err = fmt.Errorf("layout %q", r.Layout)
		}
	case "FuzzDecodeOwner":
		_, err = decodeOwner(fuzzKey, args[0].([]byte))
	case "FuzzDecodeSession":
		_, err = decodeSession(fuzzKey, args[0].([]byte))
	case "FuzzDecodeRetained":
		_, err = decodeRetained(fuzzKey, args[0].([]byte))
	case "FuzzDecodeDelta":
		_, err = decodeDelta(fuzzKey, args[0].([]byte))
	case "FuzzDecodeShard":
		_, err = decodeShard(fuzzKey, args[0].([]byte))
	case "FuzzDecodeBatch":
		_, err = decodeBatch(fuzzKey, args[0].([]byte), args[1].(uint64))
	case "FuzzDecodeSegment":
		_, err = decodeSegment(fuzzKey, args[0].([]byte))
	case "FuzzClientKey":
		_, err = parseClientKey(args[0].(string))
	case "FuzzParseSegmentKey":
		_, _, _, err = parseSegmentKey(args[0].(string))
	case "FuzzParseShardKey":
		_, err = parseShardKey(args[0].(string))
	default:
		err = fmt.Errorf("no decoder for %s", target)
	}
	return err
}
