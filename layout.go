package s3persist

// # Object layout (format version 1, layout "s3persist-layout-3")
//
// This comment is the layout specification; docs/layout.md repeats it for operators.
// Every key below is relative to Config.Prefix (for example "volantmq/"). All objects are
// CBOR (RFC 8949) maps with small-integer keys; key 0 of every record is its format
// version, currently 1 (records.go lists every field).
//
//	system                        system record: layout version, creation time, boot
//	                              epoch. Created once (create-only put); its epoch is
//	                              bumped (if-match put) by every New.
//	owner                         ownership record: the instance that may write the
//	                              prefix, its lease, the journal floor and the sealed
//	                              segments of earlier epochs (fence.go). Create-only,
//	                              then if-match puts only.
//	probe/<instance>              New's conditional-write self-test; deleted at once.
//	retained                      the whole retained-message set, replaced by one put.
//	j/<ss>/<epoch>-<n>            journal segment: the changes of many sessions, in the
//	                              order they were made, as one batch upload of stream
//	                              <ss> (2 hex digits). <epoch> (6 hex) is the boot epoch
//	                              of the writer, <n> (10 hex) the stream's batch number.
//	d/<cp>                        index delta: what changed in every session a checkpoint
//	                              found changed since the index last included it,
//	                              whatever its shard (new batches, removed packets, the
//	                              state if changed; whole for a new incarnation; a
//	                              tombstone for a deleted one). <cp> (16 hex) is the
//	                              checkpoint's number.
//	i/<hh>                        base index shard: every session whose <hh> is the
//	                              shard's, with its batches and the journal watermark its
//	                              state includes, and the checkpoint whose deltas it
//	                              includes. Rewritten by a merge of the deltas.
//	p/<n>                         pack: the packet batches of many sessions back to back,
//	                              each read alone by the byte range the index names.
//	c/<hh>/<client>/b/<seq>       packet batch of one session that had 64 KiB or more of
//	                              packets to move out of the journal. Immutable.
//
// # Write path
//
// Every change (create, state, delete, packets stored, packets removed) is a journal
// record appended to the stream of its session (hash of the id modulo the number of
// streams): one upload carries the changes of many sessions, so the request count does
// not grow with the number of sessions. A background checkpoint moves the packets still
// queued out of the journal into packs (or, for a session with many, a batch object of
// its own), writes the sessions that changed into one index delta (or, every few
// checkpoints, merges the deltas into the base shards), and then deletes the journal
// segments it covered. Its cost follows the bytes and the sessions that changed, never the
// number of sessions (docs/layout.md, "Cost"). A packet removed before a checkpoint never
// costs a per-client request.
//
// # Recovery
//
// New reads the base shards and the deltas (at most 256 plus a few objects, whatever the
// number of sessions), then replays every journal segment in sequence order. Each session
// in the index carries the watermark of its state: a journal record of that session with
// a number at or below it is already included and is skipped, so replay is idempotent and
// a checkpoint that died half way loses nothing.
//
// # Client segment
//
// <hh> is the first byte of SHA-256(id) in two hex digits: sessions spread evenly over 256
// key prefixes, so an S3 bucket can partition request load. <client> encodes the id
// injectively and never leaves its prefix:
//
//   - Readable form, for ids whose encoding is at most maxReadableSegment bytes: every
//     byte in [a-z0-9] stands for itself; every other byte is "_" and two lowercase hex
//     digits ("Car/1" becomes "_43ar_2f1", "sensor-7" becomes "sensor_2d7"). Upper-case
//     letters are escaped so that stores on case-insensitive file systems cannot merge
//     two ids. The form never holds "/" and is never "." or "..".
//   - Hashed form, for longer ids: "~" and the 64 hex digits of SHA-256(id). "~" never
//     starts a readable segment, so the two forms cannot collide. The full id is inside
//     the index, which names the session's batch objects: a key is never turned back
//     into an id.
//
// Every byte of a client segment sorts after "/". This is not taste: MinIO keeps each
// segment as a directory, and a listing it continues after a marker skips keys when a
// directory has a sibling that extends its name with a byte that sorts before "/" (such
// as "-" or "."): "abc/" and "abc-x/" side by side lost most of a paged listing in our
// tests. With segments above "/", MinIO's walk order is byte order and New sees every
// session (integration test TestLayoutListsCompletelyInSmallPagesOnMinio).
//
// Keys stay far below S3's 1,024 bytes and every path segment below 255 bytes, whatever
// the id (G8: any byte string up to 65,535 bytes).
//
// # Sequence numbers
//
// One 64-bit counter numbers incarnations, journal records and packets: the system
// record's boot epoch in the high 24 bits and a per-process counter in the low 40. Every
// New bumps the epoch (and also starts above any number found in the bucket), so numbers
// grow across restarts and a packet's number is its identity: removals name packets,
// never positions, and queues are ordered by number (FIFO across restarts).
//
// # No resurrection (S4)
//
// Create takes a fresh number as the session's incarnation; records of an earlier
// incarnation, including a store that raced with Delete, carry the old incarnation and
// are never applied to the new one.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// LayoutVersion is the object layout this package writes, reported by
// System().GetInfo().Version. New converts a bucket of layout2 (see load.go) and refuses
// any other.
const LayoutVersion = "s3persist-layout-3"

// layout2 is the layout of the previous releases: no index deltas and no packs, and a
// session record object per session.
const layout2 = "s3persist-layout-2"

const (
	keySystem        = "system"
	keyRetained      = "retained"
	keyOwner         = "owner"
	probeRoot        = "probe/"
	clientsRoot      = "c/"
	journalRoot      = "j/"
	indexRoot        = "i/"
	deltaRoot        = "d/"
	packRoot         = "p/"
	sessionKeySuffix = "session"
	batchDir         = "b/"

	// maxReadableSegment bounds the readable client segment; longer ids are hashed.
	// 160 keeps a batch key under 240 bytes.
	maxReadableSegment = 160
	hashedMarker       = '~'
	escapeMarker       = '_'
)

// clientPrefix returns "c/<hh>/<client>/": the prefix every object of the session lives
// under. id must be non-empty.
func clientPrefix(id []byte) string {
	sum := sha256.Sum256(id)
	var b strings.Builder
	b.Grow(len(clientsRoot) + 3 + min(maxReadableSegment, 3*len(id)) + 1)
	b.WriteString(clientsRoot)
	b.WriteString(hex.EncodeToString(sum[:1]))
	b.WriteByte('/')
	if readableLen(id) <= maxReadableSegment {
		for _, c := range id {
			if isPlainByte(c) {
				b.WriteByte(c)
			} else {
				b.WriteByte(escapeMarker)
				b.WriteString(hex.EncodeToString([]byte{c}))
			}
		}
	} else {
		b.WriteByte(hashedMarker)
		b.WriteString(hex.EncodeToString(sum[:]))
	}
	b.WriteByte('/')
	return b.String()
}

// isPlainByte reports whether c stands for itself in a readable client segment.
func isPlainByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
}

func readableLen(id []byte) int {
	n := 0
	for _, c := range id {
		if isPlainByte(c) {
			n++
		} else {
			n += 3
		}
		if n > maxReadableSegment {
			break
		}
	}
	return n
}

func sessionKey(id []byte) string { return clientPrefix(id) + sessionKeySuffix }

// batchKey names the packet batch of the client prefix whose lowest number is seq.
func batchKey(prefix string, seq uint64) string {
	return fmt.Sprintf("%s%s%016x", prefix, batchDir, seq)
}

// shardOf returns the index shard of id: the first byte of SHA-256(id), the <hh> of its
// client prefix.
func shardOf(id []byte) int {
	sum := sha256.Sum256(id)
	return int(sum[0])
}

// numShards is the number of index shards, one per value of <hh>.
const numShards = 256

// shardKey names index shard hh.
func shardKey(hh int) string { return fmt.Sprintf("%s%02x", indexRoot, hh) }

// parseShardKey returns the shard a listed key under indexRoot names.
func parseShardKey(key string) (int, error) {
	rest, ok := strings.CutPrefix(key, indexRoot)
	if !ok || len(rest) != 2 || !isLowerHex(rest) {
		return 0, fmt.Errorf("%w: %q: not an index shard", errForeignKey, key)
	}
	v, _ := strconv.ParseUint(rest, 16, 8)
	return int(v), nil
}

// maxPackBytes bounds a pack object, so that an offset into one is small.
const maxPackBytes = 1 << 30

// deltaKey names the index delta of checkpoint cp; packKey the pack numbered n. Both
// list in number order.
func deltaKey(cp uint64) string { return fmt.Sprintf("%s%016x", deltaRoot, cp) }
func packKey(n uint64) string   { return fmt.Sprintf("%s%016x", packRoot, n) }

// parseNumberedKey returns the number of a listed key under root written by deltaKey or
// packKey.
func parseNumberedKey(root, key string) (uint64, error) {
	rest, ok := strings.CutPrefix(key, root)
	if !ok || len(rest) != 16 || !isLowerHex(rest) {
		return 0, fmt.Errorf("%w: %q: not a numbered object of %s", errForeignKey, key, root)
	}
	return strconv.ParseUint(rest, 16, 64)
}

// segmentKey names batch n of journal stream ss written in boot epoch epoch. Keys sort
// by epoch, then batch number: a stream's segments list in the order they were written.
func segmentKey(ss int, epoch uint64, n uint64) string {
	return fmt.Sprintf("%s%02x/%06x-%010x", journalRoot, ss, epoch, n)
}

// parseSegmentKey takes apart a listed key under journalRoot.
func parseSegmentKey(key string) (ss int, epoch, n uint64, err error) {
	foreign := func() (int, uint64, uint64, error) {
		return 0, 0, 0, fmt.Errorf("%w: %q: not a journal segment", errForeignKey, key)
	}
	rest, ok := strings.CutPrefix(key, journalRoot)
	if !ok || len(rest) != 2+1+6+1+10 || rest[2] != '/' || rest[9] != '-' {
		return foreign()
	}
	if !isLowerHex(rest[:2]) || !isLowerHex(rest[3:9]) || !isLowerHex(rest[10:]) {
		return foreign()
	}
	s, _ := strconv.ParseUint(rest[:2], 16, 8)
	epoch, _ = strconv.ParseUint(rest[3:9], 16, 64)
	n, _ = strconv.ParseUint(rest[10:], 16, 64)
	return int(s), epoch, n, nil
}

// keyKind tells what a listed key under clientsRoot is.
type keyKind int

const (
	keyForeign keyKind = iota // not written by this layout: left alone and reported
	keySession
	keyBatch
)

// parsedKey is a key under clientsRoot taken apart.
type parsedKey struct {
	kind   keyKind
	prefix string // "c/<hh>/<client>/"
	// readableID is the decoded id of a readable client segment; nil for a hashed one.
	readableID []byte
	seq        uint64 // of a batch: its lowest packet number
}

var errForeignKey = errors.New("not a key of this layout")

// parseClientKey takes apart a key listed under clientsRoot. Keys this layout never
// writes return errForeignKey (wrapped with the reason).
func parseClientKey(key string) (parsedKey, error) {
	foreign := func(why string) (parsedKey, error) {
		return parsedKey{}, fmt.Errorf("%w: %q: %s", errForeignKey, key, why)
	}
	rest, ok := strings.CutPrefix(key, clientsRoot)
	if !ok {
		return foreign("outside " + clientsRoot)
	}
	hh, rest, ok := strings.Cut(rest, "/")
	if !ok || len(hh) != 2 || !isLowerHex(hh) {
		return foreign("bad hash prefix")
	}
	seg, rest, ok := strings.Cut(rest, "/")
	if !ok || seg == "" {
		return foreign("no client segment")
	}
	pk := parsedKey{prefix: key[:len(clientsRoot)+len(hh)+1+len(seg)+1]}
	if seg[0] == hashedMarker {
		if len(seg) != 65 || !isLowerHex(seg[1:]) {
			return foreign("bad hashed client segment")
		}
	} else {
		id, err := decodeReadable(seg)
		if err != nil {
			return foreign(err.Error())
		}
		if clientPrefix(id) != pk.prefix {
			return foreign("client segment does not match its hash prefix")
		}
		pk.readableID = id
	}
	if rest == sessionKeySuffix {
		pk.kind = keySession
		return pk, nil
	}
	name, ok := strings.CutPrefix(rest, batchDir)
	if !ok {
		return foreign("unknown object in client prefix")
	}
	if len(name) != 16 || !isLowerHex(name) {
		return foreign("bad batch name")
	}
	seq, err := strconv.ParseUint(name, 16, 64)
	if err != nil {
		return foreign("bad batch sequence number")
	}
	pk.kind, pk.seq = keyBatch, seq
	return pk, nil
}

func decodeReadable(seg string) ([]byte, error) {
	id := make([]byte, 0, len(seg))
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case isPlainByte(c):
			id = append(id, c)
		case c == escapeMarker && i+2 < len(seg) && isLowerHex(seg[i+1:i+3]):
			v, _ := hex.DecodeString(seg[i+1 : i+3])
			if isPlainByte(v[0]) {
				return nil, errors.New("escaped plain byte in client segment")
			}
			id = append(id, v[0])
			i += 2
		default:
			return nil, errors.New("bad byte in client segment")
		}
	}
	if len(id) == 0 || readableLen(id) > maxReadableSegment {
		return nil, errors.New("client segment length out of range")
	}
	return id, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return s != ""
}
