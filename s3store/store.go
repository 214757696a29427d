// Package s3store is the object-store boundary of s3persist.
//
// # Contract
//
// Store is the whole surface the adapter needs from S3-compatible storage: conditional
// puts, gets of whole objects or of byte ranges, ordered paginated listings and
// deletes. Every implementation (the minio-go backend, the in-memory backend, and every
// wrapper) must pass the conformance suite in package storetest, which is the
// executable form of the rules written on each method.
//
// # Errors
//
// Implementations map their native errors exactly once, at this boundary, to the
// sentinels below, wrapped with the operation and key (for example
// "s3store: get \"a/b\": s3store: not found"). Callers test them with errors.Is.
// Anything that is not one of the outcomes named by a sentinel (network failures,
// 5xx responses, timeouts) is returned wrapped but not equal to any sentinel.
//
// # Keys
//
// Keys are non-empty UTF-8 strings of at most MaxKeyLen bytes. S3 itself accepts almost
// any such string, but MinIO stores each object as a directory path on a filesystem and
// refuses what a path cannot hold. The rules below are the intersection, so that a key
// that works on the in-memory store works on every backend:
//
//   - no NUL byte, and not only white space (minio-go refuses those client-side);
//   - no empty "/"-separated segment: no leading or trailing "/", no "//";
//   - no segment longer than MaxSegmentLen bytes (a filesystem's NAME_MAX);
//   - no "." or ".." segment, where MinIO also splits on "\" and ignores white space
//     around a segment, so "a\..\b" and "a/ . /b" are refused too.
//
// Implementations reject other keys with ErrInvalidKey before any request. The
// adapter's layout only produces valid keys; the check exists so that a bug there is an
// error, never an object in an unexpected place (or one that exists on one backend only).
//
// One more rule spans keys, so ValidateKey cannot check it: keys must not nest. While
// an object "a/b" exists, no object may have a key that starts with "a/b/", and the
// reverse. S3 allows it, and MinIO accepts the puts too, but MinIO keeps "a/b" as a
// directory holding its metadata, and its listings then stop at "a/b": every object
// below "a/b/" is missing from List, even from a List of prefix "a/b/", while Get still
// finds it. Memory refuses a Put that would nest with ErrInvalidKey, so a layout that
// nests fails in unit tests; Minio does not check, as that would cost a request per
// segment of every key.
//
// # Listing order on MinIO
//
// S3 lists in byte order of key, and so do Memory and the List contract. MinIO does so
// too, except across pages: when a "directory" ("a" of "a/b") has a sibling that extends
// its name with a byte that sorts before "/" (" ", "!", "-", "."; "a-b" next to "a/"),
// a listing that MinIO continues after a marker skips keys (seen with the pinned MinIO
// release: storetest's case CaseListingBelowSlash). A single page is complete. Layouts
// that list more than a page must therefore keep such names apart; s3persist's layout
// uses only bytes above "/" in its client segments for this reason.
package s3store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

const (
	// MaxKeyLen is the longest key S3 accepts, in bytes.
	MaxKeyLen = 1024
	// MaxSegmentLen is the longest "/"-separated segment of a key, in bytes: MinIO keeps
	// each segment as a file or directory name.
	MaxSegmentLen = 255
	// MaxListPage is the most objects one List call returns, as S3 caps a listing
	// request; the in-memory store caps its pages the same way so that callers that
	// assume larger pages fail in unit tests too.
	MaxListPage = 1000
)

// Sentinel errors. Implementations wrap them with context; test with errors.Is.
var (
	// ErrNotFound: the object (or, for a bucket check, the bucket) does not exist.
	ErrNotFound = errors.New("s3store: not found")
	// ErrPreconditionFailed: a conditional Put did not hold (the object already exists
	// for IfNoneMatch, or its ETag differs or it is missing for IfMatch).
	ErrPreconditionFailed = errors.New("s3store: precondition failed")
	// ErrAccessDenied: the credentials are wrong, expired, or lack permission.
	ErrAccessDenied = errors.New("s3store: access denied")
	// ErrNoSuchBucket: the configured bucket does not exist.
	ErrNoSuchBucket = errors.New("s3store: no such bucket")
	// ErrInvalidKey: the key breaks the rules in the package documentation.
	ErrInvalidKey = errors.New("s3store: invalid key")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("s3store: closed")
	// ErrInvalidArgument: an argument other than a key breaks the rules of its method
	// (a GetRange offset or length; see ValidateRange).
	ErrInvalidArgument = errors.New("s3store: invalid argument")
	// ErrRangeNotSatisfiable: the object is shorter than the end of the range GetRange
	// asked for.
	ErrRangeNotSatisfiable = errors.New("s3store: range not satisfiable")
)

// PutOptions are the conditions of a Put. The zero value is an unconditional put.
// At most one of IfNoneMatch and IfMatch may be set; a Put with both fails before any
// request with an error that is none of the sentinels.
type PutOptions struct {
	// IfNoneMatch makes the put create-only: it fails with ErrPreconditionFailed when
	// an object with the key exists (S3 "If-None-Match: *").
	IfNoneMatch bool
	// IfMatch makes the put succeed only if the current object's ETag equals this value;
	// otherwise, or when the object is missing, it fails with ErrPreconditionFailed.
	// Pass an ETag exactly as an ObjectInfo holds it ("*" is not an ETag and is refused
	// like two conditions are).
	IfMatch string
}

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key  string
	Size int64
	// ETag identifies the object's current content: equal ETags mean equal content
	// for objects written by Put. Opaque; compare only for equality. Writing the same
	// content again gives the same ETag, so IfMatch cannot tell A-B-A apart.
	ETag string
}

// ListPage is one page of a listing.
type ListPage struct {
	// Objects are in ascending byte order of Key, all with the requested prefix.
	Objects []ObjectInfo
	// NextStartAfter is empty when the listing is complete; otherwise pass it as
	// startAfter to get the next page.
	NextStartAfter string
}

// Store is an S3-compatible object store scoped to one bucket.
//
// All methods are safe for concurrent use. Every method honours ctx: when it ends,
// the call returns ctx.Err() (wrapped) as soon as it can; a call whose ctx has already
// ended makes no request. After Close, every method returns an error wrapping ErrClosed.
// The checks that need no request come in a fixed order: closed, then ctx, then
// arguments.
//
// Consistency: a successful Put, Delete or DeleteMany is visible to every later Get,
// GetRange and List (read-after-write, as S3 and MinIO provide today).
type Store interface {
	// Put stores data under key, replacing any existing object atomically: a concurrent
	// Get sees the old or the new content, never a mix. The store keeps its own copy:
	// the caller may reuse data after Put returns. Empty data stores an empty object.
	// On a conditional failure it returns ErrPreconditionFailed and changes nothing.
	// A nil error means the object is durable as far as the store promises. Any other
	// error (a network failure, a timeout, ctx ending mid-request) leaves the outcome
	// unknown: the object may have been written. Conditional puts are therefore sent
	// once, never retried behind the caller's back, since a retry of a put that did
	// succeed would report ErrPreconditionFailed against the caller's own write.
	Put(ctx context.Context, key string, data []byte, opts PutOptions) (ObjectInfo, error)

	// Get returns the whole content and the info of the object, or ErrNotFound.
	// The returned slice belongs to the caller.
	Get(ctx context.Context, key string) ([]byte, ObjectInfo, error)

	// GetRange returns length bytes of the object starting at offset, with the object's
	// info (whose Size is the whole object's size, not length), or ErrNotFound. The
	// bytes and the info come from one version of the object, as with Get. offset must
	// be >= 0, length > 0 and offset+length no more than math.MaxInt64, or it fails with
	// ErrInvalidArgument before any request (see ValidateRange). If the object is
	// shorter than offset+length, it returns ErrRangeNotSatisfiable and no data, never
	// a short read: a caller that asks for an exact range treats a short object as
	// damage. The returned slice belongs to the caller.
	GetRange(ctx context.Context, key string, offset, length int64) ([]byte, ObjectInfo, error)

	// List returns up to limit objects whose keys start with prefix and sort strictly
	// after startAfter ("" = from the beginning), in ascending byte order of key.
	// limit <= 0 means the implementation's page size (1,000 for S3), and no page holds
	// more than MaxListPage objects. A page may hold fewer objects than limit even when
	// more follow, even none; only an empty NextStartAfter means the end. An empty
	// prefix lists the whole bucket. Listing a prefix with no objects returns an empty
	// page and no error. startAfter may be any string, inside the prefix or not.
	//
	// prefix need not be a key, but must be one MinIO accepts (see ValidatePrefix):
	// "a/" and "a/b" are fine, while "a//" and "a/." fail with ErrInvalidKey, even
	// though keys such as "a/.b" are valid.
	List(ctx context.Context, prefix, startAfter string, limit int) (ListPage, error)

	// Delete removes the object. Deleting a missing key succeeds (it is idempotent),
	// as S3's DeleteObject does.
	Delete(ctx context.Context, key string) error

	// DeleteMany removes every listed key, idempotently like Delete, using as few
	// requests as the store allows (S3: up to 1,000 keys per request). Keys are
	// validated before any request; a key listed twice is deleted once. On failure it
	// returns a *DeleteManyError that names the keys that may remain; keys not named
	// are gone.
	DeleteMany(ctx context.Context, keys []string) error

	// Close releases the store's resources (idle connections). It does not wait for
	// calls in flight; calls made after it fail with ErrClosed. Calling Close again
	// returns nil.
	Close() error
}

// DeleteManyError is the error of a DeleteMany that may have left some keys in place.
// errors.Is and errors.As see through it to the first failure, so a DeleteMany refused
// for wrong credentials is still errors.Is(err, ErrAccessDenied).
type DeleteManyError struct {
	// Remaining are the keys that may remain, in the order DeleteMany was given them.
	Remaining []string
	// Total is the number of distinct keys DeleteMany was given.
	Total int
	// Err is the first failure.
	Err error
}

// deleteManyErrorKeys is how many remaining keys Error names before "and N more":
// enough to recognise the pattern, few enough to keep a log line readable.
const deleteManyErrorKeys = 5

func (e *DeleteManyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "s3store: delete many: %d of %d keys may remain (", len(e.Remaining), e.Total)
	for i, k := range e.Remaining {
		if i == deleteManyErrorKeys {
			fmt.Fprintf(&b, " and %d more", len(e.Remaining)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q", k)
	}
	b.WriteString(")")
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *DeleteManyError) Unwrap() error { return e.Err }

// ValidateKey reports whether key is acceptable to every Store; the error wraps
// ErrInvalidKey and says why.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: key of %d bytes is longer than %d", ErrInvalidKey, len(key), MaxKeyLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: key %q is not valid UTF-8", ErrInvalidKey, key)
	case strings.IndexByte(key, 0) >= 0:
		return fmt.Errorf("%w: key %q holds a NUL byte", ErrInvalidKey, key)
	case strings.TrimSpace(key) == "":
		return fmt.Errorf("%w: key %q is only white space", ErrInvalidKey, key)
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("%w: key %q has an empty segment (a leading, trailing or double \"/\")", ErrInvalidKey, key)
		case len(seg) > MaxSegmentLen:
			return fmt.Errorf("%w: key %q has a segment of %d bytes, longer than %d", ErrInvalidKey, key, len(seg), MaxSegmentLen)
		}
	}
	if seg, bad := dotSegment(key); bad {
		return fmt.Errorf("%w: key %q has a %q segment", ErrInvalidKey, key, seg)
	}
	return nil
}

// ValidateRange reports whether offset and length are a range GetRange accepts; the
// error wraps ErrInvalidArgument and says why.
func ValidateRange(offset, length int64) error {
	switch {
	case offset < 0:
		return fmt.Errorf("%w: negative offset %d", ErrInvalidArgument, offset)
	case length <= 0:
		return fmt.Errorf("%w: length %d is not positive", ErrInvalidArgument, length)
	case length > math.MaxInt64-offset:
		return fmt.Errorf("%w: offset %d plus length %d overflows int64", ErrInvalidArgument, offset, length)
	}
	return nil
}

// ValidatePrefix reports whether prefix is acceptable to List on every Store; the
// error wraps ErrInvalidKey and says why. The empty prefix is valid. Other prefixes
// follow the key rules, except that they may end with "/" and may be longer than a
// key's segments allow, and that a last, partial segment of "." or ".." is refused
// as MinIO refuses it.
func ValidatePrefix(prefix string) error {
	switch {
	case prefix == "":
		return nil
	case len(prefix) > MaxKeyLen:
		return fmt.Errorf("%w: prefix of %d bytes is longer than %d", ErrInvalidKey, len(prefix), MaxKeyLen)
	case !utf8.ValidString(prefix):
		return fmt.Errorf("%w: prefix %q is not valid UTF-8", ErrInvalidKey, prefix)
	case strings.IndexByte(prefix, 0) >= 0:
		return fmt.Errorf("%w: prefix %q holds a NUL byte", ErrInvalidKey, prefix)
	case strings.Contains(prefix, "//"):
		return fmt.Errorf("%w: prefix %q holds \"//\"", ErrInvalidKey, prefix)
	}
	if seg, bad := dotSegment(prefix); bad {
		return fmt.Errorf("%w: prefix %q has a %q segment", ErrInvalidKey, prefix, seg)
	}
	return nil
}

// dotSegment finds a "." or ".." segment the way MinIO's hasBadPathComponent does:
// segments are separated by "/" or "\\" and trimmed of the bytes that
// unicode.IsSpace(rune(b)) accepts, since MinIO tests bytes, not runes.
func dotSegment(s string) (string, bool) {
	for seg := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == '/' || r == '\\' }) {
		t := trimSpaceBytes(seg)
		if t == "." || t == ".." {
			return seg, true
		}
	}
	return "", false
}

func trimSpaceBytes(s string) string {
	isSpace := func(b byte) bool {
		switch b {
		case ' ', '\t', '\n', '\v', '\f', '\r', 0x85, 0xA0:
			return true
		}
		return false
	}
	for len(s) > 0 && isSpace(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isSpace(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// ListAll calls fn for every object under prefix, in key order, following pages.
// It stops at the first error, from the store or from fn, and returns it.
func ListAll(ctx context.Context, s Store, prefix string, fn func(ObjectInfo) error) error {
	startAfter := ""
	for {
		page, err := s.List(ctx, prefix, startAfter, 0)
		if err != nil {
			return err
		}
		for _, o := range page.Objects {
			if err := fn(o); err != nil {
				return err
			}
		}
		if page.NextStartAfter == "" {
			return nil
		}
		startAfter = page.NextStartAfter
	}
}
