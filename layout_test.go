package s3persist

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/s3persist/s3persist/s3store"
)

// hostileIDs returns at least n distinct ids built to break a key mapping: path
// separators and dot segments, NUL, invalid UTF-8, reserved-looking names, the escaped
// and hashed forms of other ids, lengths around the hashing threshold, and 65,535-byte ids.
func hostileIDs(n int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[string]bool{}
	var out [][]byte
	add := func(id []byte) {
		if len(id) == 0 || len(id) > maxIDLen || seen[string(id)] {
			return
		}
		seen[string(id)] = true
		out = append(out, id)
	}
	for _, s := range []string{
		"/", "//", ".", "..", "../", "../../etc/passwd", "a/../b", "./a", " ", "|", "\x00", "a\x00b",
		"\xff", "\xc3\x28", "\xed\xa0\x80", "count", "system", "retained", "sessions", "session", "c", "b",
		"Count", "COUNT", "A", "a", ".41", ".2f", ".2e.2e", "_41", "_2f", "a_", "_", "~", "~0", "%2f", "%2e%2e", "\\", "a\\..\\b",
		"c/00/x/session", "system/../retained", "\u00e9", "e\u0301", "🙂", "a b", "-", "_", "--", "~" + strings.Repeat("0", 64),
	} {
		add([]byte(s))
	}
	// Every single byte, and pairs around the escape character.
	for c := range 256 {
		add([]byte{byte(c)})
		add([]byte{'.', byte(c)})
		add([]byte{byte(c), '/'})
	}
	// Lengths around the readable threshold, with plain and escaped bytes.
	for l := maxReadableSegment - 4; l <= maxReadableSegment+4; l++ {
		add(bytes.Repeat([]byte("a"), l))
		add(append(bytes.Repeat([]byte("a"), l-1), '/'))
		if l%3 == 0 {
			add(bytes.Repeat([]byte("/"), l/3))
		}
	}
	// Long ids up to the MQTT maximum, differing only in the last byte.
	for i := range 8 {
		long := bytes.Repeat([]byte("x/"), maxIDLen/2)
		long = append(long, byte('a'+i))
		add(long[len(long)-maxIDLen:])
	}
	// Each id's readable key segment used as an id itself.
	for _, id := range slices.Clone(out) {
		add([]byte(strings.Split(clientPrefix(id), "/")[2]))
	}
	alphabet := []byte("/.\x00\xffaZ09 ~-_%|\\")
	for len(out) < n {
		l := 1 + rng.IntN(40)
		if rng.IntN(50) == 0 {
			l = 1 + rng.IntN(maxIDLen)
		}
		id := make([]byte, l)
		for i := range id {
			if rng.IntN(2) == 0 {
				id[i] = alphabet[rng.IntN(len(alphabet))]
			} else {
				id[i] = byte(rng.IntN(256))
			}
		}
		add(id)
	}
	return out
}

func TestHostileIDsMapToDistinctKeysInsideTheirPrefix(t *testing.T) {
	ids := hostileIDs(12000)
	if len(ids) < 10000 {
		t.Fatalf("only %d ids generated", len(ids))
	}
	owner := make(map[string][]byte, len(ids))
	for _, id := range ids {
		prefix := clientPrefix(id)
		if other, dup := owner[prefix]; dup {
			t.Fatalf("ids %q and %q share the prefix %q", trim(other), trim(id), prefix)
		}
		owner[prefix] = id
		keys := []string{sessionKey(id), batchKey(prefix, 1<<62)}
		for _, key := range keys {
			if !strings.HasPrefix(key, prefix) || !strings.HasPrefix(key, clientsRoot) {
				t.Fatalf("key %q of id %q leaves its prefix %q", key, trim(id), prefix)
			}
			if err := s3store.ValidateKey(key); err != nil {
				t.Fatalf("id %q: %v", trim(id), err)
			}
			if len(key) > 300 {
				t.Fatalf("id %q: key of %d bytes", trim(id), len(key))
			}
			for seg := range strings.SplitSeq(key, "/") {
				if len(seg) > 255 || seg == "" {
					t.Fatalf("id %q: key %q has a segment of %d bytes", trim(id), key, len(seg))
				}
			}
			if n := strings.Count(key, "/"); n != strings.Count(prefix, "/")+strings.Count(strings.TrimPrefix(key, prefix), "/") || strings.Count(prefix, "/") != 3 {
				t.Fatalf("id %q: prefix %q is not c/<hh>/<client>/", trim(id), prefix)
			}
		}
		seg := strings.TrimSuffix(prefix[len(clientsRoot)+3:], "/")
		for i := 0; i < len(seg); i++ {
			if seg[i] <= '/' {
				t.Fatalf("id %q: client segment %q holds %q, which sorts before \"/\" and breaks MinIO's paged listings", trim(id), seg, seg[i])
			}
		}
		pk, err := parseClientKey(sessionKey(id))
		if err != nil || pk.kind != keySession || pk.prefix != prefix {
			t.Fatalf("id %q: session key does not parse back: %+v, %v", trim(id), pk, err)
		}
		if pk.readableID != nil && !bytes.Equal(pk.readableID, id) {
			t.Fatalf("id %q: readable segment decodes to %q", trim(id), trim(pk.readableID))
		}
		if pk.readableID == nil && readableLen(id) <= maxReadableSegment {
			t.Fatalf("id %q: short id got a hashed segment", trim(id))
		}
	}
}

func trim(id []byte) string {
	if len(id) > 40 {
		return fmt.Sprintf("%q... (%d bytes)", id[:40], len(id))
	}
	return string(id)
}

func TestBatchKeysListInSequenceOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	prefix := clientPrefix([]byte("client"))
	seqs := make([]uint64, 2000)
	for i := range seqs {
		seqs[i] = rng.Uint64() >> (1 + rng.IntN(63))
	}
	seqs = append(seqs, 0, 1, 1<<40, 1<<40-1, ^uint64(0)-3000)
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)
	keys := make([]string, len(seqs))
	for i, s := range seqs {
		keys[i] = batchKey(prefix, s)
		pk, err := parseClientKey(keys[i])
		if err != nil || pk.kind != keyBatch || pk.seq != s || pk.prefix != prefix {
			t.Fatalf("batch key %q parses to %+v, %v", keys[i], pk, err)
		}
	}
	if !slices.IsSorted(keys) {
		t.Fatal("batch keys do not sort in sequence order")
	}
}

func TestForeignKeysAreRecognised(t *testing.T) {
	for _, key := range []string{
		"c/zz/abc/session", "c/00/abc/session", // wrong hash prefix
		"c/" + clientPrefix([]byte("a"))[2:] + "other",
		clientPrefix([]byte("a")) + "b/0000000000000001-1-0-0", // layout 1 batch name
		clientPrefix([]byte("a")) + "b/000000000000001",        // short sequence number
		clientPrefix([]byte("a")) + "b/000000000000000G",       // not hex
		clientPrefix([]byte("a")) + "b/00000000000000AB",       // upper-case hex
		"c/" + clientPrefix([]byte("A"))[2:5] + "_41x_4/session",
		"c/" + clientPrefix([]byte("a"))[2:5] + "_61/session", // escaped plain byte
		"c/" + clientPrefix([]byte("a"))[2:5] + "~abc/session",
		"system",
	} {
		if pk, err := parseClientKey(key); err == nil {
			t.Errorf("foreign key %q parsed as %+v", key, pk)
		}
	}
}

// Opening a layout-2 bucket converts it: the system record says layout 3 from the first
// write (so a layout-2 release refuses the bucket from then on), and the garbage
// collection deletes the session records, which layout 3 never reads.
func TestALayout2BucketIsConvertedAndItsSessionRecordsCollected(t *testing.T) {
	mem := s3store.NewMemory()
	ctx := context.Background()
	root := filepath.Join("testdata", "layout2", "objects")
	records := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		key, _ := filepath.Rel(root, path)
		key = filepath.ToSlash(key)
		if strings.HasSuffix(key, "/"+sessionKeySuffix) {
			records++
		}
		_, err = mem.Put(ctx, key, data, s3store.PutOptions{})
		return err
	})
	if err != nil || records == 0 {
		t.Fatalf("load the fixture: %v, %d session records", err, records)
	}
	p, err := New(ctx, Config{Store: mem})
	if err != nil {
		t.Fatal(err)
	}
	<-p.gcDone
	if err := p.Shutdown(); err != nil {
		t.Fatal(err)
	}
	data, _, err := mem.Get(ctx, keySystem)
	if err != nil {
		t.Fatal(err)
	}
	sys, err := decodeSystem(keySystem, data)
	if err != nil || sys.Layout != LayoutVersion {
		t.Fatalf("system record after the conversion: %+v, %v", sys, err)
	}
	for _, k := range mem.Keys() {
		if strings.HasSuffix(k, "/"+sessionKeySuffix) {
			t.Fatalf("session record %q left after the garbage collection", k)
		}
	}
}
