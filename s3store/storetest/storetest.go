// Package storetest is the conformance suite of s3store.Store: the executable form of
// the contract written on the interface. Every implementation runs it, bare and through
// every wrapper, so that a difference in behaviour between the in-memory store the unit
// tests use and a real S3 server is a failing case with a name, not a production bug.
//
// A harness is a few lines:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) s3store.Store {
//			s := s3store.NewMemory()
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/s3persist/s3persist/s3store"
)

// Run runs every case of the suite as a parallel subtest of t.
//
// newStore must return a new, empty store for the case that calls it (a new bucket, or
// a new prefix in a shared one) and register with t.Cleanup whatever removes it. The
// suite may close the store itself; closing twice must return nil, as the contract
// says. Cases run in parallel, so newStore must be safe for concurrent calls.
func Run(t *testing.T, newStore func(t *testing.T) s3store.Store, opts ...Option) {
	o := options{maxKeyLen: s3store.MaxKeyLen}
	for _, f := range opts {
		f(&o)
	}
	known := map[string]bool{}
	for _, c := range cases(o) {
		known[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			if reason, ok := o.skip[c.name]; ok {
				t.Skip(reason)
			}
			t.Parallel()
			c.run(t, newStore(t))
		})
	}
	for name := range o.skip {
		if !known[name] {
			t.Errorf("storetest: Skip(%q) names no case of the suite", name)
		}
	}
}

// Option adapts the suite to the stores under test.
type Option func(*options)

type options struct {
	maxKeyLen int
	skip      map[string]string // case name -> why the store under test fails it
}

// Skip skips the case named name (as go test prints it below the suite) for a store
// known to fail it, with the reason, which should name the server's limitation. Run
// fails if name is no case, so a skip cannot outlive a renamed case.
func Skip(name, reason string) Option {
	return func(o *options) {
		if o.skip == nil {
			o.skip = map[string]string{}
		}
		o.skip[name] = reason
	}
}

// CaseListingBelowSlash is the name of the one case MinIO is known to fail: see
// s3store's package documentation, "Listing order on MinIO".
const CaseListingBelowSlash = "listing_stays_in_byte_order_where_a_name_extends_a_directory_with_a_byte_below_slash"

// PrefixLen tells the suite that newStore returns views that put n bytes of prefix
// before every key (WithPrefix), so that the longest key it may use is MaxKeyLen-n.
func PrefixLen(n int) Option {
	return func(o *options) { o.maxKeyLen = s3store.MaxKeyLen - n }
}

type testCase struct {
	name string
	run  func(t *testing.T, s s3store.Store)
}

func cases(o options) []testCase {
	return []testCase{
		{"put_then_get_returns_exact_bytes", putThenGet},
		{"put_replaces_existing_object_and_its_etag", putReplaces},
		{"get_missing_returns_not_found", getMissing},
		{"get_range_returns_the_bytes_asked_for_and_the_whole_objects_info", getRangeInside},
		{"get_range_past_the_end_returns_ErrRangeNotSatisfiable_and_no_data", getRangePastEnd},
		{"get_range_of_missing_key_returns_not_found", getRangeMissing},
		{"get_range_with_bad_offset_or_length_is_refused_before_any_request", getRangeInvalid},
		{"errors_are_wrapped_once_with_key_in_message", errorsWrappedOnce},
		{"create_only_put_succeeds_when_object_is_missing", createOnlyMissing},
		{"create_only_put_fails_when_object_exists_and_changes_nothing", createOnlyExists},
		{"create_only_put_succeeds_after_delete", createOnlyAfterDelete},
		{"if_match_put_with_current_etag_replaces_object", ifMatchCurrent},
		{"if_match_put_with_stale_etag_fails", ifMatchStale},
		{"if_match_on_missing_object_fails", ifMatchMissing},
		{"put_with_both_conditions_is_refused_and_changes_nothing", putBothConditions},
		{"concurrent_create_only_puts_have_exactly_one_winner", concurrentCreateOnly},
		{"concurrent_if_match_puts_have_exactly_one_winner", concurrentIfMatch},
		{"concurrent_gets_see_old_or_new_content_never_a_mix", concurrentGetsWhole},
		{"caller_may_reuse_put_buffer_and_owns_get_result", bufferOwnership},
		{"empty_object_round_trips", emptyObject},
		{"large_object_round_trips", largeObject},
		{"listing_is_in_byte_order_across_pages", listingByteOrder(orderKeys)},
		{CaseListingBelowSlash, listingByteOrder(belowSlashKeys)},
		{"listing_more_than_a_page_pages_by_default", listingManyPages},
		{"list_honours_prefix_and_start_after", listPrefixStartAfter},
		{"list_of_empty_store_returns_empty_page", listEmpty},
		{"keys_that_extend_other_keys_coexist", extendedKeys},
		{"delete_removes_object", deleteRemoves},
		{"delete_missing_key_succeeds", deleteMissing},
		{"delete_many_removes_all_named_keys", deleteManyRemoves},
		{"delete_many_with_no_keys_succeeds", deleteManyNone},
		{"invalid_keys_are_rejected_before_any_request", invalidKeys},
		{"weird_but_valid_keys_round_trip", weirdKeys(WeirdKeys(o.maxKeyLen), o.maxKeyLen)},
		{"cancelled_context_returns_error", cancelledContext},
		{"closed_store_returns_ErrClosed", closedStore},
	}
}

// sentinels are the outcomes an error may name; an error names at most one.
var sentinels = []error{
	s3store.ErrNotFound, s3store.ErrPreconditionFailed, s3store.ErrAccessDenied,
	s3store.ErrNoSuchBucket, s3store.ErrInvalidKey, s3store.ErrClosed,
	s3store.ErrInvalidArgument, s3store.ErrRangeNotSatisfiable,
}

// --- helpers -------------------------------------------------------------------

func put(t *testing.T, s s3store.Store, key string, data []byte) s3store.ObjectInfo {
	t.Helper()
	info, err := s.Put(t.Context(), key, data, s3store.PutOptions{})
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	if info.Key != key || info.Size != int64(len(data)) || info.ETag == "" {
		t.Fatalf("Put(%q) = %+v, want key %q, size %d and an ETag", key, info, key, len(data))
	}
	return info
}

func putAll(t *testing.T, s s3store.Store, keys []string, content func(key string) []byte) map[string]s3store.ObjectInfo {
	t.Helper()
	var mu sync.Mutex
	infos := make(map[string]s3store.ObjectInfo, len(keys))
	g, ctx := errgroup.WithContext(t.Context())
	g.SetLimit(16)
	for _, k := range keys {
		g.Go(func() error {
			info, err := s.Put(ctx, k, content(k), s3store.PutOptions{})
			if err != nil {
				return fmt.Errorf("Put(%q): %w", k, err)
			}
			mu.Lock()
			infos[k] = info
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return infos
}

func get(t *testing.T, s s3store.Store, key string) ([]byte, s3store.ObjectInfo) {
	t.Helper()
	data, info, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if info.Key != key || info.Size != int64(len(data)) || info.ETag == "" {
		t.Fatalf("Get(%q) info = %+v for %d bytes, want key %q, that size and an ETag", key, info, len(data), key)
	}
	return data, info
}

func wantContent(t *testing.T, s s3store.Store, key string, want []byte) s3store.ObjectInfo {
	t.Helper()
	data, info := get(t, s, key)
	if !bytes.Equal(data, want) {
		t.Fatalf("Get(%q) = %d bytes %.40q, want %d bytes %.40q", key, len(data), data, len(want), want)
	}
	return info
}

// getRange reads a range that must succeed and checks the info against the object's,
// as Put returned it.
func getRange(t *testing.T, s s3store.Store, key string, offset, length int64, obj s3store.ObjectInfo) []byte {
	t.Helper()
	data, info, err := s.GetRange(t.Context(), key, offset, length)
	if err != nil {
		t.Fatalf("GetRange(%q, %d, %d) of a %d-byte object: %v", key, offset, length, obj.Size, err)
	}
	if int64(len(data)) != length {
		t.Fatalf("GetRange(%q, %d, %d) returned %d bytes", key, offset, length, len(data))
	}
	if info != obj {
		t.Fatalf("GetRange(%q, %d, %d) info = %+v, want the whole object's %+v", key, offset, length, info, obj)
	}
	return data
}

// wantRange checks that GetRange returns exactly want[offset:offset+length].
func wantRange(t *testing.T, s s3store.Store, key string, want []byte, offset, length int64, obj s3store.ObjectInfo) {
	t.Helper()
	if got := getRange(t, s, key, offset, length, obj); !bytes.Equal(got, want[offset:offset+length]) {
		t.Fatalf("GetRange(%q, %d, %d) = %.40q, want %.40q", key, offset, length, got, want[offset:offset+length])
	}
}

// wantUnsatisfiable checks that GetRange fails with ErrRangeNotSatisfiable, and with no
// other sentinel, and returns no data.
func wantUnsatisfiable(t *testing.T, s s3store.Store, key string, offset, length int64) {
	t.Helper()
	data, _, err := s.GetRange(t.Context(), key, offset, length)
	what := fmt.Sprintf("GetRange(%q, %d, %d)", key, offset, length)
	wantErrIs(t, what, err, s3store.ErrRangeNotSatisfiable)
	for _, other := range sentinels {
		if other != s3store.ErrRangeNotSatisfiable && errors.Is(err, other) {
			t.Fatalf("%s: error %v is also %v", what, err, other)
		}
	}
	if len(data) != 0 {
		t.Fatalf("%s: %d bytes with the error, want none", what, len(data))
	}
}

func wantMissing(t *testing.T, s s3store.Store, key string) {
	t.Helper()
	if _, _, err := s.Get(t.Context(), key); !errors.Is(err, s3store.ErrNotFound) {
		t.Fatalf("Get(%q) error = %v, want ErrNotFound", key, err)
	}
}

func wantErrIs(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: error = %v, want one wrapping %v", what, err, target)
	}
}

// listAll follows pages of the given limit and checks the page rules on the way.
func listAll(t *testing.T, s s3store.Store, prefix, startAfter string, limit int) []s3store.ObjectInfo {
	t.Helper()
	var all []s3store.ObjectInfo
	for pages := 0; ; pages++ {
		if pages > 10_000 {
			t.Fatalf("List(%q) did not end after %d pages", prefix, pages)
		}
		page, err := s.List(t.Context(), prefix, startAfter, limit)
		if err != nil {
			t.Fatalf("List(%q, %q, %d): %v", prefix, startAfter, limit, err)
		}
		if limit > 0 && len(page.Objects) > limit || len(page.Objects) > s3store.MaxListPage {
			t.Fatalf("List(%q, %q, %d) returned %d objects", prefix, startAfter, limit, len(page.Objects))
		}
		for _, o := range page.Objects {
			if !strings.HasPrefix(o.Key, prefix) {
				t.Fatalf("List(%q) returned %q, outside the prefix", prefix, o.Key)
			}
			if startAfter != "" && o.Key <= startAfter {
				t.Fatalf("List(%q, %q) returned %q, not after startAfter", prefix, startAfter, o.Key)
			}
			if n := len(all); n > 0 && o.Key <= all[n-1].Key {
				t.Fatalf("List(%q) returned %q after %q: not in byte order", prefix, o.Key, all[n-1].Key)
			}
			all = append(all, o)
		}
		if page.NextStartAfter == "" {
			return all
		}
		startAfter = page.NextStartAfter
	}
}

func keysOf(objs []s3store.ObjectInfo) []string {
	keys := make([]string, len(objs))
	for i, o := range objs {
		keys[i] = o.Key
	}
	return keys
}

func wantKeys(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: keys = %q, want %q", what, got, want)
	}
}

func sorted(keys []string) []string {
	keys = slices.Clone(keys)
	slices.Sort(keys) // Go compares strings byte by byte: S3's order
	return keys
}

func randomBytes(seed uint64, n int) []byte {
	var key [32]byte
	key[0] = byte(seed)
	key[1] = byte(seed >> 8)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

// --- cases ---------------------------------------------------------------------

func putThenGet(t *testing.T, s s3store.Store) {
	data := make([]byte, 0, 512)
	for i := range 512 {
		data = append(data, byte(i))
	}
	info := put(t, s, "a/b/object", data)
	got := wantContent(t, s, "a/b/object", data)
	if got != info {
		t.Fatalf("Get info = %+v, Put info = %+v: want equal", got, info)
	}
}

func putReplaces(t *testing.T, s s3store.Store) {
	first := put(t, s, "k", []byte("first version"))
	second := put(t, s, "k", []byte("second, longer version"))
	if first.ETag == second.ETag {
		t.Fatalf("different content has the same ETag %q", first.ETag)
	}
	if got := wantContent(t, s, "k", []byte("second, longer version")); got.ETag != second.ETag {
		t.Fatalf("Get ETag = %q, want the last Put's %q", got.ETag, second.ETag)
	}
	wantKeys(t, "List", keysOf(listAll(t, s, "", "", 0)), []string{"k"})
}

func getMissing(t *testing.T, s s3store.Store) {
	wantMissing(t, s, "never/written")
	put(t, s, "never/written/below", []byte("x"))
	wantMissing(t, s, "never/written")
	wantMissing(t, s, "never")
}

func getRangeInside(t *testing.T, s s3store.Store) {
	data := randomBytes(7, 1000)
	info := put(t, s, "r/object", data)
	for _, c := range []struct{ offset, length int64 }{
		{0, 1},      // the first byte
		{10, 20},    // inside
		{500, 499},  // inside, up to the last byte but one
		{990, 10},   // ending exactly at the end
		{999, 1},    // the last byte
		{1, 999},    // from the second byte to the end
		{0, 1000},   // from 0, covering all
		{0, 999},    // all but the last byte
		{333, 333},  // the middle third
		{0, 1 << 9}, // a power of two
	} {
		wantRange(t, s, "r/object", data, c.offset, c.length, info)
	}
	// After a replacement, the range comes from the new content and its info.
	longer := randomBytes(8, 1500)
	info = put(t, s, "r/object", longer)
	wantRange(t, s, "r/object", longer, 1000, 500, info)
}

func getRangePastEnd(t *testing.T, s s3store.Store) {
	data := []byte("0123456789")
	info := put(t, s, "r/short", data)
	for _, c := range []struct{ offset, length int64 }{
		{5, 6},                 // starts inside, ends one byte past the end
		{0, 11},                // the whole object and one byte more
		{9, 2},                 // the last byte and one more
		{0, 1 << 20},           // far past the end
		{10, 1},                // starts exactly at the end
		{11, 1},                // starts past the end
		{1 << 40, 1},           // far past the end
		{math.MaxInt64 - 1, 1}, // the largest valid offset
		{0, math.MaxInt64},     // the largest valid length
		{1, math.MaxInt64 - 1}, // ending at the largest valid end
		{10, math.MaxInt64 - 10},
	} {
		wantUnsatisfiable(t, s, "r/short", c.offset, c.length)
	}
	// The object is intact and still readable by range.
	if got := wantContent(t, s, "r/short", data); got != info {
		t.Fatalf("Get info = %+v, Put info = %+v", got, info)
	}
	wantRange(t, s, "r/short", data, 5, 5, info)
}

func getRangeMissing(t *testing.T, s s3store.Store) {
	wantRangeMissing := func(key string) {
		t.Helper()
		data, _, err := s.GetRange(t.Context(), key, 0, 1)
		wantErrIs(t, fmt.Sprintf("GetRange(%q)", key), err, s3store.ErrNotFound)
		if errors.Is(err, s3store.ErrRangeNotSatisfiable) || len(data) != 0 {
			t.Fatalf("GetRange(%q) of a missing key: %d bytes, %v; want no data and only ErrNotFound", key, len(data), err)
		}
	}
	wantRangeMissing("never/written")
	put(t, s, "never/written/below", []byte("x"))
	wantRangeMissing("never/written")
	wantRangeMissing("never")
	put(t, s, "gone", []byte("content"))
	if err := s.Delete(t.Context(), "gone"); err != nil {
		t.Fatal(err)
	}
	wantRangeMissing("gone")
}

func getRangeInvalid(t *testing.T, s s3store.Store) {
	info := put(t, s, "r/k", []byte("0123456789"))
	for _, c := range []struct{ offset, length int64 }{
		{-1, 1},
		{0, 0},
		{5, 0},
		{10, 0},
		{0, -1},
		{-5, -5},
		{math.MinInt64, 1},
		{math.MaxInt64, 1}, // offset+length overflows
		{1, math.MaxInt64}, // offset+length overflows
		{math.MaxInt64, math.MaxInt64},
	} {
		if s3store.ValidateRange(c.offset, c.length) == nil {
			t.Fatalf("ValidateRange(%d, %d) accepts a range the suite calls invalid", c.offset, c.length)
		}
		// Refused before any request: the same answer whether the object exists or not.
		for _, key := range []string{"r/k", "r/missing"} {
			data, _, err := s.GetRange(t.Context(), key, c.offset, c.length)
			what := fmt.Sprintf("GetRange(%q, %d, %d)", key, c.offset, c.length)
			wantErrIs(t, what, err, s3store.ErrInvalidArgument)
			if errors.Is(err, s3store.ErrNotFound) || errors.Is(err, s3store.ErrRangeNotSatisfiable) || len(data) != 0 {
				t.Fatalf("%s: %d bytes, %v; want no data and only ErrInvalidArgument", what, len(data), err)
			}
		}
	}
	wantRange(t, s, "r/k", []byte("0123456789"), 0, 10, info)
}

func errorsWrappedOnce(t *testing.T, s s3store.Store) {
	check := func(what string, err, sentinel error, key string, keyOnce bool) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error", what)
		}
		msg := err.Error()
		for _, other := range sentinels {
			if is := errors.Is(err, other); is != (other == sentinel) {
				t.Fatalf("%s: errors.Is(%v) = %t for error %q", what, other, is, msg)
			}
		}
		if n := strings.Count(msg, sentinel.Error()); n != 1 {
			t.Fatalf("%s: error %q holds %q %d times, want once", what, msg, sentinel.Error(), n)
		}
		if n := strings.Count(msg, key); n == 0 || keyOnce && n != 1 {
			t.Fatalf("%s: error %q names key %q %d times, want once", what, msg, key, n)
		}
		if !strings.HasPrefix(msg, "s3store: ") {
			t.Fatalf("%s: error %q does not start with the package name", what, msg)
		}
	}
	_, _, err := s.Get(t.Context(), "wrap/missing-object")
	check("Get missing", err, s3store.ErrNotFound, "wrap/missing-object", true)

	info := put(t, s, "wrap/existing-object", []byte("x"))
	_, err = s.Put(t.Context(), "wrap/existing-object", []byte("y"), s3store.PutOptions{IfNoneMatch: true})
	check("create-only Put on existing", err, s3store.ErrPreconditionFailed, "wrap/existing-object", true)
	_, err = s.Put(t.Context(), "wrap/absent-object", []byte("y"), s3store.PutOptions{IfMatch: info.ETag})
	check("If-Match Put on missing", err, s3store.ErrPreconditionFailed, "wrap/absent-object", true)
	_, err = s.Put(t.Context(), "wrap//invalid", []byte("y"), s3store.PutOptions{})
	check("Put invalid key", err, s3store.ErrInvalidKey, "wrap//invalid", false)
	_, _, err = s.GetRange(t.Context(), "wrap/missing-object", 0, 1)
	check("GetRange missing", err, s3store.ErrNotFound, "wrap/missing-object", true)
	_, _, err = s.GetRange(t.Context(), "wrap/existing-object", 0, 2) // ends past the end
	check("GetRange ending past the end", err, s3store.ErrRangeNotSatisfiable, "wrap/existing-object", true)
	_, _, err = s.GetRange(t.Context(), "wrap/existing-object", 1, 1) // starts at the end
	check("GetRange starting at the end", err, s3store.ErrRangeNotSatisfiable, "wrap/existing-object", true)
	_, _, err = s.GetRange(t.Context(), "wrap/existing-object", -1, 1)
	check("GetRange negative offset", err, s3store.ErrInvalidArgument, "wrap/existing-object", true)
	_, err = s.List(t.Context(), "wrap//", "", 0)
	check("List invalid prefix", err, s3store.ErrInvalidKey, "wrap//", false)
}

func createOnlyMissing(t *testing.T, s s3store.Store) {
	info, err := s.Put(t.Context(), "c", []byte("created"), s3store.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatalf("create-only Put of a missing key: %v", err)
	}
	if got := wantContent(t, s, "c", []byte("created")); got.ETag != info.ETag {
		t.Fatalf("Get ETag = %q, Put ETag = %q", got.ETag, info.ETag)
	}
}

func createOnlyExists(t *testing.T, s s3store.Store) {
	info := put(t, s, "c", []byte("original"))
	for _, data := range [][]byte{[]byte("intruder"), []byte("original"), nil} {
		_, err := s.Put(t.Context(), "c", data, s3store.PutOptions{IfNoneMatch: true})
		wantErrIs(t, fmt.Sprintf("create-only Put of %q over an existing object", data), err, s3store.ErrPreconditionFailed)
	}
	if got := wantContent(t, s, "c", []byte("original")); got.ETag != info.ETag {
		t.Fatalf("ETag changed from %q to %q by failed puts", info.ETag, got.ETag)
	}
}

func createOnlyAfterDelete(t *testing.T, s s3store.Store) {
	put(t, s, "c", []byte("first life"))
	if err := s.Delete(t.Context(), "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(t.Context(), "c", []byte("second life"), s3store.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatalf("create-only Put after Delete: %v", err)
	}
	wantContent(t, s, "c", []byte("second life"))
}

func ifMatchCurrent(t *testing.T, s s3store.Store) {
	old := put(t, s, "m", []byte("v1"))
	info, err := s.Put(t.Context(), "m", []byte("v2"), s3store.PutOptions{IfMatch: old.ETag})
	if err != nil {
		t.Fatalf("If-Match Put with the current ETag: %v", err)
	}
	if info.ETag == old.ETag || info.Size != 2 || info.Key != "m" {
		t.Fatalf("If-Match Put = %+v (old %+v)", info, old)
	}
	// The new ETag is current now: a chain of conditional updates works.
	if _, err := s.Put(t.Context(), "m", []byte("v3"), s3store.PutOptions{IfMatch: info.ETag}); err != nil {
		t.Fatalf("second If-Match Put: %v", err)
	}
	wantContent(t, s, "m", []byte("v3"))
}

func ifMatchStale(t *testing.T, s s3store.Store) {
	stale := put(t, s, "m", []byte("v1"))
	current := put(t, s, "m", []byte("v2"))
	_, err := s.Put(t.Context(), "m", []byte("v3"), s3store.PutOptions{IfMatch: stale.ETag})
	wantErrIs(t, "If-Match Put with a stale ETag", err, s3store.ErrPreconditionFailed)
	if got := wantContent(t, s, "m", []byte("v2")); got.ETag != current.ETag {
		t.Fatalf("ETag = %q, want %q", got.ETag, current.ETag)
	}
}

func ifMatchMissing(t *testing.T, s s3store.Store) {
	other := put(t, s, "other", []byte("v1"))
	_, err := s.Put(t.Context(), "m", []byte("v1"), s3store.PutOptions{IfMatch: other.ETag})
	wantErrIs(t, "If-Match Put on a never-written key", err, s3store.ErrPreconditionFailed)
	wantMissing(t, s, "m")

	gone := put(t, s, "gone", []byte("v1"))
	if err := s.Delete(t.Context(), "gone"); err != nil {
		t.Fatal(err)
	}
	_, err = s.Put(t.Context(), "gone", []byte("v1"), s3store.PutOptions{IfMatch: gone.ETag})
	wantErrIs(t, "If-Match Put on a deleted key, with its last ETag", err, s3store.ErrPreconditionFailed)
	wantMissing(t, s, "gone")
}

func putBothConditions(t *testing.T, s s3store.Store) {
	info := put(t, s, "b", []byte("v1"))
	for _, opts := range []s3store.PutOptions{
		{IfNoneMatch: true, IfMatch: info.ETag},
		{IfMatch: "*"},
	} {
		_, err := s.Put(t.Context(), "b", []byte("v2"), opts)
		if err == nil {
			t.Fatalf("Put with %+v succeeded", opts)
		}
		for _, sentinel := range sentinels {
			if errors.Is(err, sentinel) {
				t.Fatalf("Put with %+v: error %v is %v; want no sentinel", opts, err, sentinel)
			}
		}
	}
	wantContent(t, s, "b", []byte("v1"))
}

// race runs n writers of distinct content through do, started together, and checks
// that exactly one succeeded and the others failed the precondition.
func race(t *testing.T, s s3store.Store, key string, n int, do func(data []byte) error) {
	t.Helper()
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = do(fmt.Appendf(nil, "writer %d", i))
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("%s: writers %d and %d both succeeded", key, winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, s3store.ErrPreconditionFailed):
			t.Fatalf("%s: writer %d: %v, want success or ErrPreconditionFailed", key, i, err)
		}
	}
	if winner < 0 {
		t.Fatalf("%s: no writer succeeded", key)
	}
	wantContent(t, s, key, fmt.Appendf(nil, "writer %d", winner))
}

func concurrentCreateOnly(t *testing.T, s s3store.Store) {
	for round := range 5 {
		key := fmt.Sprintf("race/%d", round)
		race(t, s, key, 16, func(data []byte) error {
			_, err := s.Put(t.Context(), key, data, s3store.PutOptions{IfNoneMatch: true})
			return err
		})
	}
}

func concurrentIfMatch(t *testing.T, s s3store.Store) {
	for round := range 5 {
		key := fmt.Sprintf("race/%d", round)
		base := put(t, s, key, []byte("base"))
		race(t, s, key, 16, func(data []byte) error {
			_, err := s.Put(t.Context(), key, data, s3store.PutOptions{IfMatch: base.ETag})
			return err
		})
	}
}

func concurrentGetsWhole(t *testing.T, s s3store.Store) {
	versions := [][]byte{bytes.Repeat([]byte{'a'}, 300<<10), bytes.Repeat([]byte{'b'}, 200<<10)}
	put(t, s, "whole", versions[0])
	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	var g errgroup.Group
	for range 4 {
		g.Go(func() error {
			for ctx.Err() == nil {
				data, info, err := s.Get(ctx, "whole")
				if ctx.Err() != nil {
					return nil
				}
				if err != nil {
					return err
				}
				if !bytes.Equal(data, versions[0]) && !bytes.Equal(data, versions[1]) {
					return fmt.Errorf("Get returned %d bytes that are neither version (first %q, last %q)",
						len(data), data[:min(len(data), 1)], data[max(len(data)-1, 0):])
				}
				if info.Size != int64(len(data)) {
					return fmt.Errorf("Get info size %d for %d bytes", info.Size, len(data))
				}
			}
			return nil
		})
	}
	// A range that both versions hold comes from one version, with that version's size.
	const offset, length = 100 << 10, 50 << 10
	for range 2 {
		g.Go(func() error {
			for ctx.Err() == nil {
				data, info, err := s.GetRange(ctx, "whole", offset, length)
				if ctx.Err() != nil {
					return nil
				}
				if err != nil {
					return err
				}
				i := slices.IndexFunc(versions, func(v []byte) bool { return int64(len(v)) == info.Size })
				if i < 0 {
					return fmt.Errorf("GetRange info size %d is neither version's", info.Size)
				}
				if !bytes.Equal(data, versions[i][offset:offset+length]) {
					return fmt.Errorf("GetRange returned %d bytes that are not version %d's, whose size its info has (first %q, last %q)",
						len(data), i, data[:min(len(data), 1)], data[max(len(data)-1, 0):])
				}
			}
			return nil
		})
	}
	for i := range 12 {
		if _, err := s.Put(t.Context(), "whole", versions[i%2], s3store.PutOptions{}); err != nil {
			stop()
			g.Wait()
			t.Fatal(err)
		}
	}
	stop()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

func bufferOwnership(t *testing.T, s s3store.Store) {
	buf := []byte("original content")
	if _, err := s.Put(t.Context(), "buf", buf, s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	copy(buf, "OVERWRITTEN!!!!!")
	got, _ := get(t, s, "buf")
	if string(got) != "original content" {
		t.Fatalf("after reusing the Put buffer, Get = %q", got)
	}
	for i := range got {
		got[i] = 'X'
	}
	wantContent(t, s, "buf", []byte("original content"))
	info := put(t, s, "buf", []byte("original content"))
	part := getRange(t, s, "buf", 0, 8, info)
	for i := range part {
		part[i] = 'X'
	}
	wantRange(t, s, "buf", []byte("original content"), 0, 16, info)
}

func emptyObject(t *testing.T, s s3store.Store) {
	a := put(t, s, "empty/nil", nil)
	b := put(t, s, "empty/zero-length", []byte{})
	for _, want := range []s3store.ObjectInfo{a, b} {
		data, info := get(t, s, want.Key)
		if len(data) != 0 || info != want {
			t.Fatalf("Get(%q) = %d bytes, %+v; want 0 bytes, %+v", want.Key, len(data), info, want)
		}
	}
	objs := listAll(t, s, "empty/", "", 0)
	if len(objs) != 2 || objs[0] != a || objs[1] != b {
		t.Fatalf("List = %+v, want %+v and %+v", objs, a, b)
	}
	// An empty object has no byte to read: every range is past its end.
	wantUnsatisfiable(t, s, "empty/nil", 0, 1)
	wantUnsatisfiable(t, s, "empty/zero-length", 0, 10)
	wantUnsatisfiable(t, s, "empty/zero-length", 1, 1)
}

func largeObject(t *testing.T, s s3store.Store) {
	data := randomBytes(6, 6<<20+1)
	info := put(t, s, "large", data)
	if got := wantContent(t, s, "large", data); got != info {
		t.Fatalf("Get info = %+v, Put info = %+v", got, info)
	}
	n := int64(len(data))
	wantRange(t, s, "large", data, 3<<20+7, 1<<20, info) // a MiB in the middle
	wantRange(t, s, "large", data, n-100, 100, info)     // the tail
	wantRange(t, s, "large", data, 1, n-1, info)         // all but the first byte
	wantUnsatisfiable(t, s, "large", n-100, 101)
}

// orderKeys differ where byte order, rune order and "directory" order disagree: ' ' and
// '!' sort before '/', '0' after it, upper case before lower case, and multi-byte UTF-8
// after every ASCII byte. No directory ("a" of "a/b") has a sibling that extends its name
// with a byte below '/': belowSlashKeys has those.
var orderKeys = []string{
	"a/b", "a/c/d", "a/b0", "a/b_c", "a0", "A", "B/a", "b", "b c", "b!", "b-c", "b.c", "é", "e/x",
	"z", "~", "\u00ff", "\u0100", "日本", "\U0001F642", "Z", "_", "a/.b", "a/b!",
}

// belowSlashKeys hold a directory "a" next to names that extend "a" with bytes below
// '/' (the smallest set on which MinIO's paged listing lost keys).
var belowSlashKeys = []string{"a b", "a!", "a-b", "a.b", "a/b", "a/b.c", "a/b0"}

func listingByteOrder(keys []string) func(t *testing.T, s s3store.Store) {
	return func(t *testing.T, s s3store.Store) {
		infos := putAll(t, s, keys, func(k string) []byte { return []byte("content of " + k) })
		want := sorted(keys)
		for _, limit := range []int{1, 2, 3, 7, 0} {
			got := listAll(t, s, "", "", limit)
			wantKeys(t, fmt.Sprintf("listing with limit %d", limit), keysOf(got), want)
			for _, o := range got {
				if o != infos[o.Key] {
					t.Fatalf("listed %+v, Put returned %+v", o, infos[o.Key])
				}
			}
		}
	}
}

func listingManyPages(t *testing.T, s s3store.Store) {
	const n = s3store.MaxListPage + 50
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("many/%05d", i)
	}
	putAll(t, s, append(slices.Clone(keys), "manz", "man"), func(string) []byte { return []byte("x") })
	for _, limit := range []int{0, s3store.MaxListPage + 1, 1 << 30} {
		page, err := s.List(t.Context(), "many/", "", limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Objects) == 0 || len(page.Objects) > s3store.MaxListPage || page.NextStartAfter == "" {
			t.Fatalf("first page with limit %d: %d objects, NextStartAfter %q; want 1..%d and more to come",
				limit, len(page.Objects), page.NextStartAfter, s3store.MaxListPage)
		}
	}
	wantKeys(t, "paged listing", keysOf(listAll(t, s, "many/", "", 0)), keys)
	var all []string
	if err := s3store.ListAll(t.Context(), s, "many/", func(o s3store.ObjectInfo) error {
		all = append(all, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wantKeys(t, "ListAll", all, keys)
}

func listPrefixStartAfter(t *testing.T, s s3store.Store) {
	putAll(t, s, []string{"o", "p!", "p/a", "p/b", "p/c", "p0", "pa", "q/a"}, func(k string) []byte { return []byte(k) })
	for _, c := range []struct {
		prefix, startAfter string
		want               []string
	}{
		{"p/", "", []string{"p/a", "p/b", "p/c"}},
		{"p/", "p/a", []string{"p/b", "p/c"}},
		{"p/", "p/b0", []string{"p/c"}},
		{"p/", "p/c", nil},
		{"p/", "a", []string{"p/a", "p/b", "p/c"}},
		{"p/", "p", []string{"p/a", "p/b", "p/c"}},
		{"p/", "p0", nil},
		{"p/", "z", nil},
		{"p", "", []string{"p!", "p/a", "p/b", "p/c", "p0", "pa"}},
		{"p", "p/c", []string{"p0", "pa"}},
		{"", "p/c", []string{"p0", "pa", "q/a"}},
		{"", "", []string{"o", "p!", "p/a", "p/b", "p/c", "p0", "pa", "q/a"}},
		{"x/", "", nil},
		{"p/a/", "", nil},
	} {
		for _, limit := range []int{0, 1, 2} {
			got := keysOf(listAll(t, s, c.prefix, c.startAfter, limit))
			if len(got) == 0 {
				got = nil
			}
			wantKeys(t, fmt.Sprintf("List(%q, %q, %d)", c.prefix, c.startAfter, limit), got, c.want)
		}
	}
}

func listEmpty(t *testing.T, s s3store.Store) {
	for _, prefix := range []string{"", "p/", "nothing"} {
		page, err := s.List(t.Context(), prefix, "", 0)
		if err != nil || len(page.Objects) != 0 || page.NextStartAfter != "" {
			t.Fatalf("List(%q) on an empty store = %+v, %v; want an empty, final page", prefix, page, err)
		}
	}
}

// extendedKeys are keys that start with another key. None continues with "/": keys
// must not nest (see the s3store package documentation).
func extendedKeys(t *testing.T, s s3store.Store) {
	keys := []string{"x", "x y", "x-y", "x.y", "x0", "xy/z"}
	for _, k := range keys {
		put(t, s, k, []byte("content of "+k))
	}
	for _, k := range keys {
		wantContent(t, s, k, []byte("content of "+k))
	}
	wantKeys(t, "List(x)", keysOf(listAll(t, s, "x", "", 0)), keys)
	wantKeys(t, "List(x, after x)", keysOf(listAll(t, s, "x", "x", 1)), keys[1:])
	if err := s.Delete(t.Context(), "x"); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, s, "x")
	wantContent(t, s, "x0", []byte("content of x0"))
	wantKeys(t, "List after deleting the shortest key", keysOf(listAll(t, s, "", "", 0)), keys[1:])
}

func deleteRemoves(t *testing.T, s s3store.Store) {
	put(t, s, "d/1", []byte("x"))
	put(t, s, "d/2", []byte("y"))
	if err := s.Delete(t.Context(), "d/1"); err != nil {
		t.Fatal(err)
	}
	wantMissing(t, s, "d/1")
	wantContent(t, s, "d/2", []byte("y"))
	wantKeys(t, "List", keysOf(listAll(t, s, "d/", "", 0)), []string{"d/2"})
}

func deleteMissing(t *testing.T, s s3store.Store) {
	if err := s.Delete(t.Context(), "never/written"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	put(t, s, "once", []byte("x"))
	for range 2 {
		if err := s.Delete(t.Context(), "once"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	wantMissing(t, s, "once")
}

func deleteManyRemoves(t *testing.T, s s3store.Store) {
	const n = s3store.MaxListPage + 50 // more than one batch of 1,000
	var doomed []string
	for i := range n {
		doomed = append(doomed, fmt.Sprintf("dm/%05d", i))
	}
	keep := []string{"dm-keep", "dm0", "keep/1"}
	putAll(t, s, append(slices.Clone(doomed), keep...), func(string) []byte { return []byte("x") })

	// Missing keys and duplicates are fine; order does not matter.
	arg := append(slices.Clone(doomed), "dm/missing-1", "dm/missing-2", doomed[0], doomed[n-1], doomed[500])
	rand.Shuffle(len(arg), func(i, j int) { arg[i], arg[j] = arg[j], arg[i] })
	if err := s.DeleteMany(t.Context(), arg); err != nil {
		t.Fatalf("DeleteMany of %d keys: %v", len(arg), err)
	}
	wantKeys(t, "List after DeleteMany", keysOf(listAll(t, s, "", "", 0)), keep)
	wantMissing(t, s, doomed[0])
	// Again: every key is missing now, which is still success.
	if err := s.DeleteMany(t.Context(), doomed[:10]); err != nil {
		t.Fatalf("DeleteMany of deleted keys: %v", err)
	}
}

func deleteManyNone(t *testing.T, s s3store.Store) {
	put(t, s, "k", []byte("x"))
	for _, keys := range [][]string{nil, {}} {
		if err := s.DeleteMany(t.Context(), keys); err != nil {
			t.Fatalf("DeleteMany(%#v): %v", keys, err)
		}
	}
	wantContent(t, s, "k", []byte("x"))
}

// InvalidKeys are keys every Store must refuse with ErrInvalidKey.
var InvalidKeys = []string{
	"",
	" ",
	"\t\n",
	"/leading-slash",
	"trailing-slash/",
	"double//slash",
	"/",
	".",
	"..",
	"a/./b",
	"a/../b",
	"a/..",
	"../a",
	`a\..\b`,
	`a\.`,
	"a/ .. /b",
	"a/.\t/b",
	"nul\x00byte",
	"bad utf-8 \xff\xfe",
	strings.Repeat("k", s3store.MaxKeyLen+1),
	"seg/" + strings.Repeat("s", s3store.MaxSegmentLen+1),
	"seg/" + strings.Repeat("é", 128), // 256 bytes in 128 runes
}

// InvalidPrefixes are prefixes every Store's List must refuse with ErrInvalidKey.
var InvalidPrefixes = []string{
	"a//", "//", "a/.", "a/..", ".", "..", `a\..`, "nul\x00", "bad \xff",
	strings.Repeat("p", s3store.MaxKeyLen+1),
}

func invalidKeys(t *testing.T, s s3store.Store) {
	ctx := t.Context()
	put(t, s, "valid", []byte("x"))
	for _, k := range InvalidKeys {
		if s3store.ValidateKey(k) == nil {
			t.Fatalf("ValidateKey(%q) accepts a key the suite calls invalid", k)
		}
		_, err := s.Put(ctx, k, []byte("x"), s3store.PutOptions{})
		wantErrIs(t, fmt.Sprintf("Put(%q)", k), err, s3store.ErrInvalidKey)
		_, err = s.Put(ctx, k, []byte("x"), s3store.PutOptions{IfNoneMatch: true})
		wantErrIs(t, fmt.Sprintf("create-only Put(%q)", k), err, s3store.ErrInvalidKey)
		_, _, err = s.Get(ctx, k)
		wantErrIs(t, fmt.Sprintf("Get(%q)", k), err, s3store.ErrInvalidKey)
		_, _, err = s.GetRange(ctx, k, 0, 1)
		wantErrIs(t, fmt.Sprintf("GetRange(%q)", k), err, s3store.ErrInvalidKey)
		wantErrIs(t, fmt.Sprintf("Delete(%q)", k), s.Delete(ctx, k), s3store.ErrInvalidKey)
		// One bad key refuses the whole call before any delete.
		wantErrIs(t, fmt.Sprintf("DeleteMany(valid, %q)", k), s.DeleteMany(ctx, []string{"valid", k}), s3store.ErrInvalidKey)
	}
	for _, p := range InvalidPrefixes {
		if s3store.ValidatePrefix(p) == nil {
			t.Fatalf("ValidatePrefix(%q) accepts a prefix the suite calls invalid", p)
		}
		_, err := s.List(ctx, p, "", 0)
		wantErrIs(t, fmt.Sprintf("List(%q)", p), err, s3store.ErrInvalidKey)
	}
	wantKeys(t, "List after invalid calls", keysOf(listAll(t, s, "", "", 0)), []string{"valid"})
	wantContent(t, s, "valid", []byte("x"))
}

// WeirdKeys returns valid keys that stress escaping on the way to the server and back:
// URL and XML metacharacters, white space and control characters, non-ASCII text, and
// the length limits, with the longest key maxKeyLen bytes long.
func WeirdKeys(maxKeyLen int) []string {
	keys := []string{
		"with space",
		" leading and trailing space ",
		"percent%20encoded%2F%zz",
		"plus+sign",
		"unicode/ünïcødé/日本語/🙂",
		"hash#fragment",
		"question?mark=1&amp=2",
		`back\slash\`,
		"tab\tnewline\ncarriage\rreturn",
		"control\x01\x1f\x7fchars",
		`quotes"'` + "`",
		"<xml>&amp;</xml>",
		"semi;colon:comma,equals=",
		"brackets[]{}()",
		"caret^pipe|tilde~star*",
		"...",
		".hidden/..x/x../.a.",
		"trailing dot.",
		"-dash/_underscore/!bang/$dollar/@at",
		"\u200bzero-width\ufeffbom",
		"\U0010ffff-max-rune",
	}
	// The longest key, in segments of the longest allowed size.
	long := strings.Repeat(strings.Repeat("L", s3store.MaxSegmentLen)+"/", 3)
	long += strings.Repeat("L", maxKeyLen-len(long)-2) + "/L"
	keys = append(keys, long)
	// Many segments.
	keys = append(keys, strings.TrimSuffix(strings.Repeat("s/", 300), "/"))
	// Segments of 255 bytes, in ASCII and in multi-byte UTF-8.
	keys = append(keys, "seg/"+strings.Repeat("s", s3store.MaxSegmentLen)+"/end")
	keys = append(keys, "seg/"+strings.Repeat("é", 127)+"x")
	return keys
}

func weirdKeys(keys []string, maxKeyLen int) func(t *testing.T, s s3store.Store) {
	return func(t *testing.T, s s3store.Store) { roundTripKeys(t, s, keys, maxKeyLen) }
}

func roundTripKeys(t *testing.T, s s3store.Store, keys []string, maxKeyLen int) {
	longest := 0
	for _, k := range keys {
		if err := s3store.ValidateKey(k); err != nil {
			t.Fatalf("the suite's weird key %.60q is invalid: %.200v", k, err)
		}
		longest = max(longest, len(k))
	}
	if longest != maxKeyLen {
		t.Fatalf("the longest weird key has %d bytes, want %d", longest, maxKeyLen)
	}
	infos := putAll(t, s, keys, func(k string) []byte { return []byte(k) })
	for _, k := range keys {
		if got := wantContent(t, s, k, []byte(k)); got != infos[k] {
			t.Fatalf("Get(%q) info = %+v, Put info = %+v", k, got, infos[k])
		}
		wantRange(t, s, k, []byte(k), int64(len(k)-1), 1, infos[k])
		objs := listAll(t, s, k, "", 0)
		if len(objs) == 0 || objs[0] != infos[k] {
			t.Fatalf("List(prefix %q) = %+v, want %+v first", k, objs, infos[k])
		}
	}
	wantKeys(t, "List", keysOf(listAll(t, s, "", "", 0)), sorted(keys))
	half := len(keys) / 2
	for _, k := range keys[:half] {
		if err := s.Delete(t.Context(), k); err != nil {
			t.Fatalf("Delete(%q): %v", k, err)
		}
		wantMissing(t, s, k)
	}
	if err := s.DeleteMany(t.Context(), keys[half:]); err != nil {
		t.Fatalf("DeleteMany: %v", err)
	}
	wantKeys(t, "List after deleting everything", keysOf(listAll(t, s, "", "", 0)), []string{})
}

func cancelledContext(t *testing.T, s s3store.Store) {
	put(t, s, "existing", []byte("x"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.Put(ctx, "new", []byte("x"), s3store.PutOptions{})
	wantErrIs(t, "Put", err, context.Canceled)
	_, err = s.Put(ctx, "new", []byte("x"), s3store.PutOptions{IfNoneMatch: true})
	wantErrIs(t, "create-only Put", err, context.Canceled)
	_, _, err = s.Get(ctx, "existing")
	wantErrIs(t, "Get", err, context.Canceled)
	_, _, err = s.GetRange(ctx, "existing", 0, 1)
	wantErrIs(t, "GetRange", err, context.Canceled)
	_, _, err = s.GetRange(ctx, "existing", -1, 0) // ctx is checked before the arguments
	wantErrIs(t, "GetRange with a bad range", err, context.Canceled)
	_, err = s.List(ctx, "", "", 0)
	wantErrIs(t, "List", err, context.Canceled)
	wantErrIs(t, "Delete", s.Delete(ctx, "existing"), context.Canceled)
	wantErrIs(t, "DeleteMany", s.DeleteMany(ctx, []string{"existing"}), context.Canceled)

	expired, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
	defer cancel()
	_, _, err = s.Get(expired, "existing")
	wantErrIs(t, "Get with an expired deadline", err, context.DeadlineExceeded)
	_, _, err = s.GetRange(expired, "existing", 0, 1)
	wantErrIs(t, "GetRange with an expired deadline", err, context.DeadlineExceeded)

	// A call whose context had ended changed nothing.
	wantMissing(t, s, "new")
	wantContent(t, s, "existing", []byte("x"))
}

func closedStore(t *testing.T, s s3store.Store) {
	ctx := t.Context()
	put(t, s, "k", []byte("x"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_, err := s.Put(ctx, "k2", []byte("x"), s3store.PutOptions{})
	wantErrIs(t, "Put after Close", err, s3store.ErrClosed)
	_, _, err = s.Get(ctx, "k")
	wantErrIs(t, "Get after Close", err, s3store.ErrClosed)
	_, _, err = s.GetRange(ctx, "k", 0, 1)
	wantErrIs(t, "GetRange after Close", err, s3store.ErrClosed)
	_, _, err = s.GetRange(ctx, "k", -1, 0) // closed is checked before the arguments
	wantErrIs(t, "GetRange with a bad range after Close", err, s3store.ErrClosed)
	_, err = s.List(ctx, "", "", 0)
	wantErrIs(t, "List after Close", err, s3store.ErrClosed)
	wantErrIs(t, "Delete after Close", s.Delete(ctx, "k"), s3store.ErrClosed)
	wantErrIs(t, "DeleteMany after Close", s.DeleteMany(ctx, []string{"k"}), s3store.ErrClosed)
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
