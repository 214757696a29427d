package s3store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/s3persist/s3persist/s3store"
	"github.com/s3persist/s3persist/s3store/storetest"
)

func newMemory(t *testing.T) *s3store.Memory {
	m := s3store.NewMemory()
	t.Cleanup(func() { m.Close() })
	return m
}

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) s3store.Store { return newMemory(t) })
}

func TestPrefixConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) s3store.Store {
		s, err := s3store.WithPrefix(newMemory(t), "tenant/p/")
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, storetest.PrefixLen(len("tenant/p/")))
}

func TestCountingConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) s3store.Store { return s3store.NewCounting(newMemory(t)) })
}

func TestStackedWrappersConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) s3store.Store {
		s, err := s3store.WithPrefix(s3store.NewCounting(newMemory(t)), "p/")
		if err != nil {
			t.Fatal(err)
		}
		return s3store.NewCounting(s)
	}, storetest.PrefixLen(len("p/")))
}

func TestMemoryKeepsObjectsForInspectionAfterClose(t *testing.T) {
	m := s3store.NewMemory()
	ctx := t.Context()
	for _, k := range []string{"b", "a", "c/d"} {
		if _, err := m.Put(ctx, k, []byte(k), s3store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Delete(ctx, "c/d"); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if m.Len() != 2 || !slices.Equal(m.Keys(), []string{"a", "b"}) {
		t.Fatalf("after Close: Len %d, Keys %q; want 2, [a b]", m.Len(), m.Keys())
	}
}

func TestMemoryRefusesNestedKeysLikeMinIOCannotList(t *testing.T) {
	m := newMemory(t)
	ctx := t.Context()
	mustPut := func(k string) {
		t.Helper()
		if _, err := m.Put(ctx, k, []byte(k), s3store.PutOptions{}); err != nil {
			t.Fatalf("Put(%q): %v", k, err)
		}
	}
	refused := func(k string) {
		t.Helper()
		for _, opts := range []s3store.PutOptions{{}, {IfNoneMatch: true}} {
			if _, err := m.Put(ctx, k, []byte(k), opts); !errors.Is(err, s3store.ErrInvalidKey) || !strings.Contains(err.Error(), "MinIO") {
				t.Fatalf("Put(%q, %+v) = %v, want ErrInvalidKey for nesting", k, opts, err)
			}
		}
	}
	mustPut("x")
	refused("x/y")
	refused("x/y/z")
	mustPut("x0/y") // "x0/" is not below "x"
	mustPut("a/b/c")
	mustPut("a/b/d")
	refused("a/b")
	refused("a")
	mustPut("a/bc")
	mustPut("a/b/c") // overwriting an existing key is not nesting
	if err := m.Delete(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	mustPut("x/y")
	refused("x")
	if err := m.DeleteMany(ctx, []string{"a/b/c", "a/b/d"}); err != nil {
		t.Fatal(err)
	}
	mustPut("a/b")
	refused("a/b/e")
	if !slices.Equal(m.Keys(), []string{"a/b", "a/bc", "x/y", "x0/y"}) {
		t.Fatalf("keys = %q", m.Keys())
	}
}

func TestMemoryETagIsHexMD5LikeMinIO(t *testing.T) {
	m := newMemory(t)
	info, err := m.Put(t.Context(), "k", nil, s3store.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// MinIO's ETag of an empty single-part object, as minio-go returns it: unquoted.
	if info.ETag != "d41d8cd98f00b204e9800998ecf8427e" {
		t.Fatalf("ETag = %q", info.ETag)
	}
}

// TestMemoryListingStaysSortedUnderMixedWrites exercises the lazily sorted index:
// appends in order, out-of-order inserts, deletes and overwrites between listings.
func TestMemoryListingStaysSortedUnderMixedWrites(t *testing.T) {
	m := newMemory(t)
	ctx := t.Context()
	want := map[string]bool{}
	check := func() {
		t.Helper()
		var got []string
		if err := s3store.ListAll(ctx, m, "", func(o s3store.ObjectInfo) error {
			got = append(got, o.Key)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var exp []string
		for k := range want {
			exp = append(exp, k)
		}
		slices.Sort(exp)
		if !slices.Equal(got, exp) {
			t.Fatalf("listing %q, want %q", got, exp)
		}
	}
	for i := range 300 {
		k := fmt.Sprintf("k%03d", (i*7919)%300) // a permutation, out of order
		if i%3 == 0 {
			k = fmt.Sprintf("k%03d", i) // in order
		}
		if _, err := m.Put(ctx, k, []byte("x"), s3store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		want[k] = true
		if i%5 == 0 {
			d := fmt.Sprintf("k%03d", i/2)
			if err := m.Delete(ctx, d); err != nil {
				t.Fatal(err)
			}
			delete(want, d)
		}
		if i%17 == 0 {
			check()
		}
	}
	check()
}

func TestWithPrefixIsolatesAndMapsKeys(t *testing.T) {
	inner := newMemory(t)
	ctx := t.Context()
	view, err := s3store.WithPrefix(inner, "tenant/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inner.Put(ctx, "other/x", []byte("outside"), s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := inner.Put(ctx, "tenantx", []byte("lookalike"), s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	info, err := view.Put(ctx, "a/b", []byte("inside"), s3store.PutOptions{})
	if err != nil || info.Key != "a/b" {
		t.Fatalf("Put = %+v, %v", info, err)
	}
	if !slices.Equal(inner.Keys(), []string{"other/x", "tenant/a/b", "tenantx"}) {
		t.Fatalf("inner keys = %q", inner.Keys())
	}
	page, err := view.List(ctx, "", "", 0)
	if err != nil || len(page.Objects) != 1 || page.Objects[0].Key != "a/b" {
		t.Fatalf("view List = %+v, %v", page, err)
	}
	if _, _, err := view.Get(ctx, "x"); !errors.Is(err, s3store.ErrNotFound) {
		t.Fatalf("view Get of an object outside it: %v", err)
	}
	// The full key must fit too.
	_, err = view.Put(ctx, strings.Repeat("k", s3store.MaxKeyLen-3), nil, s3store.PutOptions{})
	if !errors.Is(err, s3store.ErrInvalidKey) {
		t.Fatalf("Put of a key too long once prefixed: %v", err)
	}
	// Closing the view leaves the shared store open.
	view.Close()
	if _, _, err := view.Get(ctx, "a/b"); !errors.Is(err, s3store.ErrClosed) {
		t.Fatalf("view Get after Close: %v", err)
	}
	if _, _, err := inner.Get(ctx, "tenant/a/b"); err != nil {
		t.Fatalf("inner Get after closing the view: %v", err)
	}
}

func TestWithPrefixValidatesPrefix(t *testing.T) {
	m := newMemory(t)
	if s, err := s3store.WithPrefix(m, ""); err != nil || s != s3store.Store(m) {
		t.Fatalf(`WithPrefix(""): %v, %v; want the store itself`, s, err)
	}
	for _, p := range []string{"tenant", "/", "a//", "./", "a/../", "/a/", "a\x00/", strings.Repeat("s", 256) + "/"} {
		if _, err := s3store.WithPrefix(m, p); err == nil {
			t.Errorf("WithPrefix(%q) accepted", p)
		}
	}
	for _, p := range []string{"tenant/", "a/b/", "é/"} {
		if _, err := s3store.WithPrefix(m, p); err != nil {
			t.Errorf("WithPrefix(%q): %v", p, err)
		}
	}
}

// failingDeletes is a Store whose DeleteMany leaves the given keys behind.
type failingDeletes struct {
	s3store.Store
	stuck []string
}

func (f failingDeletes) DeleteMany(ctx context.Context, keys []string) error {
	return &s3store.DeleteManyError{Remaining: f.stuck, Total: len(keys), Err: s3store.ErrAccessDenied}
}

func TestWithPrefixMapsKeysOfDeleteManyError(t *testing.T) {
	view, err := s3store.WithPrefix(failingDeletes{newMemory(t), []string{"p/a", "p/b"}}, "p/")
	if err != nil {
		t.Fatal(err)
	}
	err = view.DeleteMany(t.Context(), []string{"a", "b", "c"})
	dm, ok := errors.AsType[*s3store.DeleteManyError](err)
	if !ok || !slices.Equal(dm.Remaining, []string{"a", "b"}) || dm.Total != 3 || !errors.Is(err, s3store.ErrAccessDenied) {
		t.Fatalf("DeleteMany error = %#v", err)
	}
}

func TestDeleteManyErrorMessage(t *testing.T) {
	var keys []string
	for i := range 8 {
		keys = append(keys, fmt.Sprintf("k%d", i))
	}
	err := &s3store.DeleteManyError{Remaining: keys, Total: 1000, Err: errors.New("boom")}
	want := `s3store: delete many: 8 of 1000 keys may remain ("k0", "k1", "k2", "k3", "k4" and 3 more): boom`
	if err.Error() != want {
		t.Fatalf("message\n got %s\nwant %s", err.Error(), want)
	}
}

func TestCountingCountsRequestsAndBytes(t *testing.T) {
	c := s3store.NewCounting(newMemory(t))
	ctx := t.Context()
	if _, err := c.Put(ctx, "a", []byte("12345"), s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// A failed conditional put is a request that sent its body.
	if _, err := c.Put(ctx, "a", []byte("123"), s3store.PutOptions{IfNoneMatch: true}); !errors.Is(err, s3store.ErrPreconditionFailed) {
		t.Fatal(err)
	}
	if _, _, err := c.Get(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Get(ctx, "missing"); !errors.Is(err, s3store.ErrNotFound) {
		t.Fatal(err)
	}
	// A ranged read is a GET too, and counts the bytes of its range.
	if _, _, err := c.GetRange(ctx, "a", 1, 3); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.GetRange(ctx, "a", 4, 2); !errors.Is(err, s3store.ErrRangeNotSatisfiable) {
		t.Fatal(err)
	}
	if _, err := c.List(ctx, "", "", 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 2*s3store.MaxDeleteBatch+1)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	if err := c.DeleteMany(ctx, append(keys, keys[0])); err != nil { // the duplicate is not counted
		t.Fatal(err)
	}
	if err := c.DeleteMany(ctx, nil); err != nil {
		t.Fatal(err)
	}
	want := s3store.CountingStats{Puts: 2, Gets: 4, Lists: 1, Deletes: 1, DeleteManyRequests: 3, BytesPut: 8, BytesGot: 8}
	if got := c.Stats(); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
	if got := c.Stats().Requests(); got != 11 {
		t.Fatalf("Requests = %d, want 11", got)
	}
	c.Reset()
	if got := c.Stats(); got != (s3store.CountingStats{}) {
		t.Fatalf("after Reset: %+v", got)
	}
}

func TestCountingDoesNotCountCallsRefusedBeforeAnyRequest(t *testing.T) {
	c := s3store.NewCounting(newMemory(t))
	ctx := t.Context()
	c.Put(ctx, "bad//key", []byte("x"), s3store.PutOptions{})
	c.Put(ctx, "k", []byte("x"), s3store.PutOptions{IfNoneMatch: true, IfMatch: "e"})
	c.Get(ctx, "")
	c.GetRange(ctx, "", 0, 1)
	c.GetRange(ctx, "k", -1, 1)
	c.GetRange(ctx, "k", 0, 0)
	c.List(ctx, "a//", "", 0)
	c.Delete(ctx, "..")
	c.DeleteMany(ctx, []string{"ok", "/bad"})
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	c.Get(cancelled, "k")
	c.GetRange(cancelled, "k", 0, 1)
	c.Close()
	c.Get(ctx, "k")
	c.GetRange(ctx, "k", 0, 1)
	if got := c.Stats(); got != (s3store.CountingStats{}) {
		t.Fatalf("Stats = %+v, want none", got)
	}
}

func TestValidateKey(t *testing.T) {
	for _, k := range storetest.InvalidKeys {
		if err := s3store.ValidateKey(k); !errors.Is(err, s3store.ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v", k, err)
		}
	}
	for _, k := range append(slices.Clone(storetest.WeirdKeys(s3store.MaxKeyLen)), "a", "a/b", "...", "a..b", ".a", "a.") {
		if err := s3store.ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q) = %v", k, err)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	for _, p := range storetest.InvalidPrefixes {
		if err := s3store.ValidatePrefix(p); !errors.Is(err, s3store.ErrInvalidKey) {
			t.Errorf("ValidatePrefix(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", "a", "a/", "a/b/", "a/.b", "a/..b", "/", " ", "a/b/" + strings.Repeat("s", 300)} {
		if err := s3store.ValidatePrefix(p); err != nil {
			t.Errorf("ValidatePrefix(%q) = %v", p, err)
		}
	}
}

// FuzzValidateKey checks that ValidateKey never panics and that every key it accepts
// round-trips through the in-memory store and is also a valid prefix.
func FuzzValidateKey(f *testing.F) {
	for _, k := range append(slices.Clone(storetest.WeirdKeys(s3store.MaxKeyLen)), storetest.InvalidKeys...) {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if s3store.ValidateKey(key) != nil {
			return
		}
		m := s3store.NewMemory()
		if err := s3store.ValidatePrefix(key); err != nil {
			t.Fatalf("valid key %q is not a valid prefix: %v", key, err)
		}
		if _, err := m.Put(t.Context(), key, []byte(key), s3store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		data, _, err := m.Get(t.Context(), key)
		if err != nil || string(data) != key {
			t.Fatalf("Get(%q) = %q, %v", key, data, err)
		}
	})
}

func TestFaultyConformanceWhileHealthy(t *testing.T) {
	storetest.Run(t, func(t *testing.T) s3store.Store { return s3store.NewFaulty(newMemory(t)) })
}

func TestFaultyFailsEveryRequestWhileFailing(t *testing.T) {
	ctx := context.Background()
	mem := newMemory(t)
	f := s3store.NewFaulty(mem)
	if _, err := f.Put(ctx, "k", []byte("v"), s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	f.SetFailing(true)
	_, putErr := f.Put(ctx, "k", []byte("w"), s3store.PutOptions{})
	_, _, getErr := f.Get(ctx, "k")
	_, _, rangeErr := f.GetRange(ctx, "k", 0, 1)
	_, listErr := f.List(ctx, "", "", 0)
	delErr := f.Delete(ctx, "k")
	manyErr := f.DeleteMany(ctx, []string{"k"})
	for name, err := range map[string]error{"put": putErr, "get": getErr, "get range": rangeErr, "list": listErr, "delete": delErr, "delete many": manyErr} {
		if !errors.Is(err, s3store.ErrInjected) || errors.Is(err, s3store.ErrNotFound) {
			t.Errorf("%s while failing: %v, want an error wrapping only ErrInjected", name, err)
		}
	}
	if data, _, err := mem.Get(ctx, "k"); err != nil || string(data) != "v" {
		t.Fatalf("the wrapped store changed while failing: %q, %v", data, err)
	}
	f.SetFailing(false)
	if _, _, err := f.Get(ctx, "k"); err != nil {
		t.Fatalf("get after healing: %v", err)
	}
}

func TestDelayedConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) s3store.Store {
		return s3store.NewDelayed(newMemory(t), time.Millisecond)
	})
}

func TestMemoryCloneIsAnIndependentCopy(t *testing.T) {
	ctx := t.Context()
	m := newMemory(t)
	for _, k := range []string{"b", "a/x", "c"} {
		if _, err := m.Put(ctx, k, []byte(k), s3store.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c := m.Clone()
	defer c.Close()
	if _, err := m.Put(ctx, "b", []byte("changed"), s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "a/y", []byte("new"), s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "a", nil, s3store.PutOptions{}); !errors.Is(err, s3store.ErrInvalidKey) {
		t.Fatalf("the clone lost the nesting rule: %v", err)
	}
	if data, _, err := c.Get(ctx, "b"); err != nil || string(data) != "b" {
		t.Fatalf("clone Get(b) = %q, %v", data, err)
	}
	page, err := c.List(ctx, "", "", 0)
	if err != nil || !slices.Equal(keysOf(page.Objects), []string{"a/x", "a/y", "b"}) {
		t.Fatalf("clone List = %+v, %v", page, err)
	}
	if !slices.Equal(m.Keys(), []string{"a/x", "b", "c"}) {
		t.Fatalf("the original changed with its clone: %q", m.Keys())
	}
}

func keysOf(objs []s3store.ObjectInfo) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}
