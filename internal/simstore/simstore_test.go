package simstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/s3persist/s3persist/internal/simstore"
	"github.com/s3persist/s3persist/s3store"
	"github.com/s3persist/s3persist/s3store/storetest"
)

func newStore(t *testing.T, under s3store.Store, opts simstore.Options) *simstore.Store {
	t.Helper()
	s, err := simstore.New(under, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func holdAll(simstore.Request) bool { return true }

// The Store keeps the contract of s3store.Store when nothing is held, and also when
// every request is held and a driver releases them in an order the seed picks: a caller
// never sees the difference, except in time.
func TestConformance(t *testing.T) {
	t.Run("pass-through", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) s3store.Store {
			return newStore(t, s3store.NewMemory(), simstore.Options{Hold: func(simstore.Request) bool { return false }})
		})
	})
	t.Run("every request held, released in random order", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) s3store.Store {
			s := newStore(t, s3store.NewMemory(), simstore.Options{Hold: holdAll, Seed: 7})
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() { // the driver: owned, stopped by the cleanup
				for {
					if _, err := s.WaitHeld(ctx, 1); err != nil {
						return
					}
					s.ReleaseAny()
				}
			})
			t.Cleanup(func() { cancel(); wg.Wait() })
			return s
		})
	})
}

// put starts a Put in a goroutine and returns a channel that receives its error.
func put(s s3store.Store, ctx context.Context, key string) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx, key, []byte(key), s3store.PutOptions{})
		done <- err
	}()
	return done
}

func waitHeld(t *testing.T, s *simstore.Store, n int) {
	t.Helper()
	if got, err := s.WaitHeld(t.Context(), n); err != nil || got != n {
		t.Fatalf("WaitHeld(%d) = %d, %v", n, got, err)
	}
}

func exists(t *testing.T, m *s3store.Memory, key string) bool {
	t.Helper()
	_, _, err := m.Get(context.Background(), key)
	if err != nil && !errors.Is(err, s3store.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func TestAHeldPutLandsOnlyWhenReleased(t *testing.T) {
	mem := s3store.NewMemory()
	s := newStore(t, mem, simstore.Options{Prefix: "p/"})
	done := put(s, t.Context(), "p/j/01/seg")
	waitHeld(t, s, 1)
	held := s.Held()
	if held[0].Key != "j/01/seg" || held[0].Stream != "01" || held[0].Op != simstore.OpPut {
		t.Fatalf("held %+v: want the put of j/01/seg on stream 01, prefix removed", held[0])
	}
	if exists(t, mem, "p/j/01/seg") {
		t.Fatal("a held put landed before its release")
	}
	// A read and a control object pass while the put is held.
	if _, err := s.Put(t.Context(), "p/owner", []byte("o"), s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if !s.Release(held[0].ID) {
		t.Fatal("Release of a held request reported false")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !exists(t, mem, "p/j/01/seg") {
		t.Fatal("a released put did not land")
	}
	if s.Release(held[0].ID) {
		t.Fatal("a second Release of the same request reported true")
	}
	if st := s.Stats(); st.Held != 1 || st.Released != 1 || st.Passed != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// ReleaseNext follows the latency model: the released request is never due after
// another held one, and ties go in key order.
func TestReleaseNextReleasesTheRequestDueFirst(t *testing.T) {
	for seed := range uint64(20) {
		s := newStore(t, s3store.NewMemory(), simstore.Options{Seed: seed, MaxLatency: 6})
		var dones []<-chan error
		for _, k := range []string{"j/00/a", "j/01/a", "j/02/a", "c/00/x/b/1", "i/00"} {
			dones = append(dones, put(s, t.Context(), k))
		}
		waitHeld(t, s, 5)
		for len(s.Held()) > 0 {
			held := s.Held()
			r, ok := s.ReleaseNext()
			if !ok {
				t.Fatal("ReleaseNext with requests held reported false")
			}
			for _, h := range held {
				if h.Due < r.Due || h.Due == r.Due && h.Key < r.Key {
					t.Fatalf("seed %d: released %v due at %d before %v due at %d", seed, r, r.Due, h, h.Due)
				}
			}
		}
		for _, d := range dones {
			if err := <-d; err != nil {
				t.Fatal(err)
			}
		}
		if _, ok := s.ReleaseNext(); ok {
			t.Fatal("ReleaseNext with nothing held reported true")
		}
	}
}

// decisions runs the same driver calls on a Store of seed whose requests arrive in the
// given order, and describes every decision it made.
func decisions(t *testing.T, seed uint64, keys []string) string {
	mem := s3store.NewMemory()
	s := newStore(t, mem, simstore.Options{Seed: seed})
	var dones []<-chan error
	for i, k := range keys {
		dones = append(dones, put(s, t.Context(), k))
		waitHeld(t, s, i+1) // arrival in this order
	}
	var out []string
	for range 3 {
		r, _ := s.ReleaseAny()
		out = append(out, fmt.Sprintf("any %s due %d", r.Key, r.Due))
	}
	r, _ := s.ReleaseNext()
	out = append(out, "next "+r.Key)
	for _, l := range s.Crash() {
		out = append(out, fmt.Sprintf("crash %s landed %t", l.Request.Key, l.Landed))
	}
	for _, d := range dones {
		<-d
	}
	return fmt.Sprint(out, mem.Keys())
}

// Replay: a seed makes the same decisions whatever the order in which concurrent
// requests arrived, and different seeds make different ones.
func TestTheSameSeedMakesTheSameDecisionsWhateverTheArrivalOrder(t *testing.T) {
	keys := []string{"j/00/1", "j/01/1", "j/02/1", "j/03/1", "c/aa/x/session", "i/aa", "c/bb/y/b/7", "i/bb"}
	reversed := slices.Clone(keys)
	slices.Reverse(reversed)
	seen := map[string]bool{}
	for seed := range uint64(8) {
		a, b := decisions(t, seed, keys), decisions(t, seed, reversed)
		if a != b {
			t.Fatalf("seed %d: arrival order changed the decisions:\n%s\n%s", seed, a, b)
		}
		seen[a] = true
	}
	if len(seen) < 2 {
		t.Fatal("eight seeds made the same decisions")
	}
}

func TestACrashLandsSomeHeldRequestsAndNothingAfterwards(t *testing.T) {
	mem := s3store.NewMemory()
	s := newStore(t, mem, simstore.Options{Seed: 3})
	keys := []string{"j/00/1", "j/01/1", "j/02/1", "j/03/1", "i/00", "i/01", "c/00/a/session", "c/01/b/session"}
	dones := map[string]<-chan error{}
	for _, k := range keys {
		dones[k] = put(s, t.Context(), k)
	}
	dmDone := make(chan error, 1)
	go func() { dmDone <- s.DeleteMany(t.Context(), []string{"j/09/x", "j/09/y"}) }()
	waitHeld(t, s, len(keys)+1)
	landings := s.Crash()
	landed := 0
	for _, l := range landings {
		if l.Request.Op != simstore.OpPut {
			continue
		}
		if got := exists(t, mem, l.Request.Key); got != l.Landed {
			t.Errorf("%s: in the store %t, landed %t", l.Request.Key, got, l.Landed)
		}
		if l.Landed {
			landed++
		}
		if err := <-dones[l.Request.Key]; !errors.Is(err, simstore.ErrCrashed) || !errors.Is(err, s3store.ErrInjected) {
			t.Errorf("%s: the caller got %v, want an error wrapping ErrCrashed and s3store.ErrInjected", l.Request.Key, err)
		}
	}
	if landed == 0 || landed == len(keys) {
		t.Errorf("%d of %d held puts landed: the seed should decide each", landed, len(keys))
	}
	var dm *s3store.DeleteManyError
	if err := <-dmDone; !errors.As(err, &dm) || len(dm.Remaining) != 2 {
		t.Errorf("a DeleteMany cut by the crash returned %v, want a *DeleteManyError naming both keys", err)
	}
	before := mem.Keys()
	if _, err := s.Put(t.Context(), "j/00/late", nil, s3store.PutOptions{}); !errors.Is(err, simstore.ErrCrashed) {
		t.Errorf("a put after the crash returned %v", err)
	}
	if _, _, err := s.Get(t.Context(), "j/00/1"); !errors.Is(err, simstore.ErrCrashed) {
		t.Errorf("a get after the crash returned %v", err)
	}
	if after := mem.Keys(); !slices.Equal(before, after) {
		t.Errorf("the store changed after the crash: %q, then %q", before, after)
	}
	if s.Crash() != nil || !s.Dead() {
		t.Error("a second Crash did something")
	}
	if _, ok := s.ReleaseAny(); ok {
		t.Error("ReleaseAny on a crashed view reported true")
	}
}

func TestAHeldRequestWhoseContextEndsNeverLands(t *testing.T) {
	mem := s3store.NewMemory()
	s := newStore(t, mem, simstore.Options{})
	ctx, cancel := context.WithCancel(t.Context())
	done := put(s, ctx, "j/00/1")
	waitHeld(t, s, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if len(s.Held()) != 0 || exists(t, mem, "j/00/1") {
		t.Fatal("a withdrawn request is still held or landed")
	}
	if s.Stats().Withdrawn != 1 {
		t.Fatalf("stats %+v", s.Stats())
	}
}

func TestBadInputIsAnErrorNotAPanic(t *testing.T) {
	if _, err := simstore.New(nil, simstore.Options{}); err == nil {
		t.Error("New(nil) succeeded")
	}
	if _, err := simstore.New(s3store.NewMemory(), simstore.Options{MaxLatency: -1}); err == nil {
		t.Error("a negative MaxLatency was accepted")
	}
	s := newStore(t, s3store.NewMemory(), simstore.Options{})
	if s.Release(42) {
		t.Error("Release of an unknown request reported true")
	}
	if _, ok := s.ReleaseAny(); ok {
		t.Error("ReleaseAny with nothing held reported true")
	}
	if _, err := s.Put(t.Context(), "j//x", nil, s3store.PutOptions{}); !errors.Is(err, s3store.ErrInvalidKey) {
		t.Errorf("an invalid key gave %v", err)
	}
	if len(s.Held()) != 0 {
		t.Error("an invalid request was held")
	}
}

// A GetRange is an OpGet with its range: the hold policy sees it as such, a held one
// answers only when released, and held ones of one key are ordered by range.
func TestAGetRangeIsHeldAndReleasedLikeAGet(t *testing.T) {
	mem := s3store.NewMemory()
	if _, err := mem.Put(t.Context(), "c/00/x/session", []byte("0123456789"), s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// DefaultHold passes reads, ranged or not.
	pass := newStore(t, mem, simstore.Options{})
	if data, info, err := pass.GetRange(t.Context(), "c/00/x/session", 2, 3); err != nil || string(data) != "234" || info.Size != 10 {
		t.Fatalf("GetRange through DefaultHold = %q, %+v, %v", data, info, err)
	}

	s := newStore(t, mem, simstore.Options{Hold: func(r simstore.Request) bool { return r.Op == simstore.OpGet && r.Length > 0 }})
	type answer struct {
		data []byte
		err  error
	}
	get := func(offset, length int64) <-chan answer {
		done := make(chan answer, 1)
		go func() {
			data, _, err := s.GetRange(t.Context(), "c/00/x/session", offset, length)
			done <- answer{data, err}
		}()
		return done
	}
	later, first := get(5, 5), get(0, 2)
	waitHeld(t, s, 2)
	held := s.Held()
	if held[0].Offset != 0 || held[0].Length != 2 || held[1].Offset != 5 || held[1].Length != 5 {
		t.Fatalf("held %+v: want the two ranges, in range order", held)
	}
	if got := held[1].String(); got != `get "c/00/x/session" bytes 5-9` {
		t.Fatalf("String() = %s", got)
	}
	// A whole Get and a bad range are not held: the policy holds ranges, and a bad range
	// is refused before any request.
	if _, _, err := s.Get(t.Context(), "c/00/x/session"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GetRange(t.Context(), "c/00/x/session", 0, 0); !errors.Is(err, s3store.ErrInvalidArgument) {
		t.Fatalf("GetRange of length 0: %v", err)
	}
	select {
	case a := <-first:
		t.Fatalf("a held GetRange answered before its release: %q, %v", a.data, a.err)
	default:
	}
	if !s.Release(held[0].ID) {
		t.Fatal("Release reported false")
	}
	if a := <-first; a.err != nil || string(a.data) != "01" {
		t.Fatalf("released GetRange = %q, %v", a.data, a.err)
	}
	if l := s.Crash(); len(l) != 1 || l[0].Request.Offset != 5 {
		t.Fatalf("Crash = %+v, want the other range", l)
	}
	if a := <-later; !errors.Is(a.err, simstore.ErrCrashed) || a.data != nil || !strings.HasPrefix(a.err.Error(), `s3store: get range "c/00/x/session": `) {
		t.Fatalf("a GetRange cut by the crash = %q, %v", a.data, a.err)
	}
	if _, _, err := s.GetRange(t.Context(), "c/00/x/session", 0, 1); !errors.Is(err, simstore.ErrCrashed) {
		t.Fatalf("a GetRange after the crash: %v", err)
	}
}
