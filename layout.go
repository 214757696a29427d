package s3persist

// # Object layout (format version 1)
//
// This comment is the layout specification; docs/layout.md repeats it for operators.
// Every key below is relative to Config.Prefix (for example "volantmq/"). All objects are
// CBOR (RFC 8949) maps with small-integer keys; key 0 of every record is its format
// version, currently 1 (records.go lists every field).
//
//	system                                   system record: layout version, creation
//	                                         time, boot epoch. Created once (create-only
//	                                         put); its epoch is bumped (if-match put) by
//	                                         every New.
//	retained                                 the whole retained-message set, replaced by
//	                                         one put (readers see the old or the new set).
//	c/<hh>/<client>/session                  session record: the full client id, the
//	                                         incarnation, base, subscriptions, expiry and
//	                                         the removal marks of the three queues.
//	c/<hh>/<client>/b/<seq>-<n0>-<n12>-<nua> packet batch: the packets of one store call
//	                                         (n0 QoS0, n12 QoS1/2, nua unacknowledged), in
//	                                         queue order. Immutable once written.
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
//     the session record, and loading checks that it hashes to its key, so even a SHA-256
//     collision would be reported, not merged.
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
// One 64-bit counter numbers incarnations and packets: the system record's boot epoch in
// the high 24 bits and a per-process counter in the low 40. Every New bumps the epoch
// (and also starts above any sequence number found in the bucket), so numbers grow across
// restarts. A batch of n packets takes n consecutive numbers; <seq> is the first, as 16
// lower-case hex digits, so listing order is FIFO order. A packet's number identifies it:
// removal marks name packets, never positions.
//
// # No resurrection (S4)
//
// Create takes a fresh sequence number as the session's incarnation and marks everything
// below it removed in all three queues. Any batch left over from an earlier incarnation,
// including one whose upload raced with Delete, has lower numbers and is therefore never
// visited; it is garbage, deleted when found.
//
// # Removal marks
//
// A queue's packet is removed when its number is below the queue's low-water mark or
// listed in the queue's exception list. The broker drains queues in order, so the mark
// moves and the list stays empty; packets kept in place by a loader go to the list.
// Batch objects are immutable: a batch whose every packet is removed is deleted after the
// session record that says so is durable; until then it is ignored.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// LayoutVersion is the object layout this package reads and writes, reported by
// System().GetInfo().Version. New refuses a bucket written with another layout.
const LayoutVersion = "s3persist-layout-1"

const (
	keySystem        = "system"
	keyRetained      = "retained"
	clientsRoot      = "c/"
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

// batchKey names the batch of counts[q] packets per queue starting at sequence number seq.
func batchKey(prefix string, seq uint64, counts [numQueues]uint32) string {
	return fmt.Sprintf("%s%s%016x-%d-%d-%d", prefix, batchDir, seq, counts[0], counts[1], counts[2])
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
	seq        uint64
	counts     [numQueues]uint32
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
	parts := strings.Split(name, "-")
	if len(parts) != 1+numQueues || len(parts[0]) != 16 || !isLowerHex(parts[0]) {
		return foreign("bad batch name")
	}
	seq, err := strconv.ParseUint(parts[0], 16, 64)
	if err != nil {
		return foreign("bad batch sequence number")
	}
	total := uint64(0)
	for q := range numQueues {
		n, err := strconv.ParseUint(parts[1+q], 10, 32)
		if err != nil || strconv.FormatUint(n, 10) != parts[1+q] {
			return foreign("bad batch count")
		}
		pk.counts[q] = uint32(n)
		total += n
	}
	if total == 0 || seq > ^uint64(0)-total {
		return foreign("batch counts out of range")
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
