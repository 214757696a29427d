package persistencetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/VolantMQ/vlapi/vlpersistence"
)

// full creates sid with a base, subscriptions, an expiry and one packet in each queue,
// and returns the state LoadForEach should show.
func (h *harness) full(s vlpersistence.Sessions, sid []byte) *view {
	h.t.Helper()
	h.create(s, sid, base(ts, 5))
	h.noErr(s.SubscriptionsStore(sid, []byte("subs:"+string(sid))), "SubscriptionsStore(%q)", sid)
	d := &vlpersistence.SessionDelays{Since: ts, ExpireIn: "3600", Will: []byte("will:" + string(sid))}
	h.noErr(s.ExpiryStore(sid, d), "ExpiryStore(%q)", sid)
	for _, q := range queues {
		h.store(s, sid, q, pk(string(sid)+"-"+q.String()))
	}
	return &view{Timestamp: ts, Version: 5, Subscriptions: []byte("subs:" + string(sid)), Expire: d}
}

// fullQueues is what full stored in the queues of sid.
func fullQueues(sid []byte) [3][]*packet {
	var out [3][]*packet
	for _, q := range queues {
		out[q] = []*packet{pk(string(sid) + "-" + q.String())}
	}
	return out
}

// wantNothingCreated fails the case unless sid does not exist and Count is n.
func (h *harness) wantNothingCreated(s vlpersistence.Sessions, sid []byte, n uint64, context string) {
	h.t.Helper()
	h.wantExists(s, sid, false, context)
	h.wantCount(s, n, context)
	if got := h.load(s); got[string(sid)] != nil {
		h.t.Errorf("%s: LoadForEach visited %q, which must not exist", context, sid)
	}
}

// wantChanged fails the case unless LoadForEach now shows sid as before with change
// applied: the check of a method that must change one part of a state and nothing else,
// independent of whether the rest was stored right in the first place.
func (h *harness) wantChanged(s vlpersistence.Sessions, sid []byte, before *view, change func(v *view), context string) {
	h.t.Helper()
	want := before.clone()
	change(want)
	if d := h.stateOf(s, sid).diff(want); d != "" {
		h.t.Errorf("%s: session %q: %s (compared with its state before)", context, sid, d)
	}
}

func unchanged(*view) {}

// --- S1: Create ---

func s1NilBase(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.noErr(s.Create(a, nil), "Create with a nil base")
	h.wantExists(s, a, true, "after Create with a nil base")
	h.wantCount(s, 1, "after Create with a nil base")
	h.wantState(s, a, &view{}, "after Create with a nil base")
}

func s1EmptyID(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	h.wantErr(s.Create(id(""), base(ts, 4)), vlpersistence.ErrInvalidArgs, "Create with an empty id")
	h.wantNothingCreated(s, id(""), 0, "after Create with an empty id")
}

func s1Existing(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.full(s, a)
	before := h.stateOf(s, a)
	h.wantErr(s.Create(a, base("2030-01-01T00:00:00Z", 3)), vlpersistence.ErrAlreadyExists, "Create of an existing id")
	h.wantCount(s, 1, "after Create of an existing id")
	if d := h.stateOf(s, a).diff(before); d != "" {
		t.Errorf("Create of an existing id changed its state: %s", d)
	}
	h.wantQueues(s, a, fullQueues(a), "after Create of an existing id")
}

func s1ExistsAndCounted(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	for i := 1; i <= 3; i++ {
		sid := id(fmt.Sprint("s", i))
		h.wantExists(s, sid, false, "before Create")
		h.create(s, sid, base(ts, 4))
		h.wantExists(s, sid, true, "after Create")
		h.wantCount(s, uint64(i), fmt.Sprintf("after %d Creates", i))
	}
}

func s1LoadsWithBaseOnly(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 5))
	h.wantState(s, a, &view{Timestamp: ts, Version: 5}, "after Create")
	h.wantQueues(s, a, [3][]*packet{}, "after Create")
}

// --- S2: Exists ---

func s2Lifecycle(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.wantExists(s, a, false, "never created")
	h.create(s, a, base(ts, 4))
	h.wantExists(s, a, true, "after Create")
	h.noErr(s.Delete(a), "Delete")
	h.wantExists(s, a, false, "after Delete")
	h.create(s, a, base(ts, 4))
	h.wantExists(s, a, true, "after a second Create")
	b := id("b")
	h.noErr(s.SubscriptionsStore(b, []byte("subs")), "SubscriptionsStore of a missing id (B1)")
	h.wantExists(s, b, true, "after SubscriptionsStore created it")
}

func s2NotCreatedByOtherWrites(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	d := &vlpersistence.SessionDelays{Since: ts, ExpireIn: "1"}
	writes := []struct {
		name string
		call func(sid []byte) error
	}{
		{"PacketStoreQoS0", func(sid []byte) error { return s.PacketStoreQoS0(sid, pk("x")) }},
		{"PacketStoreQoS12", func(sid []byte) error { return s.PacketStoreQoS12(sid, pk("x")) }},
		{"PacketsStore", func(sid []byte) error { return s.PacketsStore(sid, qUA.in(pk("x"))) }},
		{"ExpiryStore", func(sid []byte) error { return s.ExpiryStore(sid, d) }},
		{"ExpiryDelete", func(sid []byte) error { return s.ExpiryDelete(sid) }},
		{"StateStore", func(sid []byte) error {
			return s.StateStore(sid, &vlpersistence.SessionState{Subscriptions: []byte("x")})
		}},
		{"StateDelete", func(sid []byte) error { return s.StateDelete(sid) }},
		{"SubscriptionsDelete", func(sid []byte) error { return s.SubscriptionsDelete(sid) }},
		{"PacketsDelete", func(sid []byte) error { return s.PacketsDelete(sid) }},
		{"Delete", func(sid []byte) error { return s.Delete(sid) }},
		{"PacketCountQoS0", func(sid []byte) error { _, err := s.PacketCountQoS0(sid); return err }},
		{"PacketsForEachQoS12", func(sid []byte) error {
			return s.PacketsForEachQoS12(sid, nil, func(any, *packet) (bool, error) { return true, nil })
		}},
	}
	for _, w := range writes {
		sid := id("missing-" + w.name)
		_ = w.call(sid) // the outcome is checked by the rule of each method
		if s.Exists(sid) {
			t.Errorf("%s on a missing id made Exists true", w.name)
		}
	}
	h.wantCount(s, 0, "after writes on missing ids")
}

// --- S3: Count ---

func s3Exact(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	var known [][]byte
	// check compares Count with the number of known ids for which Exists is true: Count
	// must agree with Exists whatever else the backend did.
	check := func(context string) {
		t.Helper()
		var n uint64
		for _, sid := range known {
			if s.Exists(sid) {
				n++
			}
		}
		if c := s.Count(); c != n {
			t.Errorf("%s: Count() = %d, but Exists is true for %d ids", context, c, n)
		}
	}
	check("new store")
	h.wantCount(s, 0, "new store")
	for i := 0; i < 5; i++ {
		sid := id(fmt.Sprint("s", i))
		known = append(known, sid)
		h.create(s, sid, base(ts, 4))
	}
	check("after 5 Creates")
	_ = s.Create(known[0], base(ts, 4))
	check("after Create of an existing id")
	h.noErr(s.Delete(known[1]), "Delete")
	_ = s.Delete(known[1])
	check("after Delete twice")
	implicit := id("implicit")
	known = append(known, implicit)
	_ = s.SubscriptionsStore(implicit, []byte("subs"))
	check("after SubscriptionsStore of a missing id")
	for _, name := range []string{"m1", "m2", "m3"} {
		sid := id(name)
		known = append(known, sid)
	}
	_ = s.PacketStoreQoS0(id("m1"), pk("x"))
	_ = s.PacketsStore(id("m2"), q12.in(pk("x")))
	_ = s.ExpiryStore(id("m3"), &vlpersistence.SessionDelays{Since: ts, ExpireIn: "1"})
	check("after writes on missing ids")
	h.noErr(s.PacketsDelete(known[2]), "PacketsDelete")
	check("after PacketsDelete")
	if got := uint64(len(h.load(s))); got != s.Count() {
		t.Errorf("LoadForEach visited %d sessions, Count() = %d", got, s.Count())
	}
}

func s3Concurrent(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	const workers, ids = 8, 20
	var created, deleted atomic.Int64
	var g errgroup.Group
	for w := 0; w < workers; w++ {
		g.Go(safe(fmt.Sprint("worker ", w), func() error {
			for i := 0; i < ids; i++ {
				sid := id(fmt.Sprint("s", (i+w)%ids))
				switch err := s.Create(sid, base(ts, 4)); {
				case err == nil:
					created.Add(1)
				case !errors.Is(err, vlpersistence.ErrAlreadyExists):
					return fmt.Errorf("Create(%q): %v", sid, err)
				}
				if (i+w)%3 == 0 {
					switch err := s.Delete(sid); {
					case err == nil:
						deleted.Add(1)
					case !errors.Is(err, vlpersistence.ErrNotFound):
						return fmt.Errorf("Delete(%q): %v", sid, err)
					}
				}
			}
			return nil
		}))
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	var exist uint64
	for i := 0; i < ids; i++ {
		if s.Exists(id(fmt.Sprint("s", i))) {
			exist++
		}
	}
	want := uint64(created.Load() - deleted.Load())
	if c := s.Count(); c != exist || c != want {
		t.Errorf("after concurrent Creates and Deletes: Count() = %d, Exists true for %d ids, successful Creates - Deletes = %d", c, exist, want)
	}
}

// --- S4: Delete ---

func s4Missing(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	h.create(s, id("a"), base(ts, 4))
	h.wantErr(s.Delete(id("b")), vlpersistence.ErrNotFound, "Delete of a missing id")
	h.wantErr(s.Delete(id("a")), nil, "Delete")
	h.wantErr(s.Delete(id("a")), vlpersistence.ErrNotFound, "Delete of a deleted id")
	h.wantCount(s, 0, "after Delete")
}

func s4RemovesEverything(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a, b := id("a"), id("b")
	h.full(s, a)
	h.full(s, b)
	beforeB := h.stateOf(s, b)
	h.noErr(s.Delete(a), "Delete")
	h.wantExists(s, a, false, "after Delete")
	h.wantCount(s, 1, "after Delete")
	h.wantIDs(s, [][]byte{b}, "after Delete")
	for _, q := range queues {
		h.wantQueue(s, a, q, nil, "after Delete")
	}
	h.create(s, a, base("2030-01-01T00:00:00Z", 3))
	got := h.stateOf(s, a)
	if len(got.Subscriptions) != 0 || got.Expire != nil {
		t.Errorf("after Delete and Create: Subscriptions %s and Expire %s survived, want none", describeBytes(got.Subscriptions), describeDelays(got.Expire))
	}
	h.wantQueues(s, a, [3][]*packet{}, "after Delete and Create")
	h.wantChanged(s, b, beforeB, unchanged, "the other session after Delete")
	h.wantQueues(s, b, fullQueues(b), "the other session after Delete")
}

func s4NoResurrection(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	for _, q := range queues {
		h.store(s, a, q, pks("old-"+q.String(), 3)...)
	}
	h.noErr(s.Delete(a), "Delete")
	h.create(s, a, base(ts, 4))
	h.store(s, a, q12, pk("new"))
	h.wantQueues(s, a, [3][]*packet{nil, {pk("new")}, nil}, "after Delete then Create")
}

// s4RacingStore races publishers storing into a session with a Delete followed by a
// Create of the same id, several rounds. Phases order what the main goroutine did; a
// store whose call ended before the Create began was ordered before it, so its packet
// belongs to the deleted session (or it got ErrNotFound) and must never be visited.
func s4RacingStore(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	const (
		beforeDelete = iota
		deleting
		betweenDeleteAndCreate
		creating
		afterCreate
	)
	type record struct {
		q               queue
		p               *packet
		start, end      int32
		err             error
		round, sequence int
	}
	var phase atomic.Int32
	for round := 0; round < 10; round++ {
		phase.Store(beforeDelete)
		var mu sync.Mutex
		var records []record
		stored := make(chan int32, 1000) // the start phase of each completed store
		stop := make(chan struct{})
		var g errgroup.Group
		for _, q := range []queue{q0, q12} {
			g.Go(safe("publisher "+q.String(), func() error {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return nil
					default:
					}
					p := pk(fmt.Sprintf("r%d-%s-%04d", round, q, i))
					start := phase.Load()
					err := q.store(s, a, p)
					end := phase.Load()
					if err != nil && !errors.Is(err, vlpersistence.ErrNotFound) {
						return fmt.Errorf("storing %s in %s: %v", describe(p), q, err)
					}
					mu.Lock()
					records = append(records, record{q: q, p: p, start: start, end: end, err: err, round: round, sequence: i})
					mu.Unlock()
					select {
					case stored <- start:
					default: // the main goroutine is not waiting for stores now
					}
				}
			}))
		}
		// wait returns once n stores that started in phase p or later have completed.
		wait := func(p int32, n int) {
			for n > 0 {
				if <-stored >= p {
					n--
				}
			}
		}
		wait(beforeDelete, 10)
		phase.Store(deleting)
		if err := s.Delete(a); err != nil {
			close(stop)
			_ = g.Wait()
			t.Fatalf("round %d: Delete: %v", round, err)
		}
		phase.Store(betweenDeleteAndCreate)
		wait(betweenDeleteAndCreate, 2)
		phase.Store(creating)
		if err := s.Create(a, base(ts, 4)); err != nil && !errors.Is(err, vlpersistence.ErrAlreadyExists) {
			close(stop)
			_ = g.Wait()
			t.Fatalf("round %d: Create: %v", round, err)
		}
		phase.Store(afterCreate)
		wait(afterCreate, 10)
		close(stop)
		if err := g.Wait(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		byData := make(map[string]record)
		for _, r := range records {
			byData[string(r.p.Data)] = r
		}
		for _, q := range []queue{q0, q12} {
			visited := make(map[string]bool)
			last := -1
			for _, p := range h.drain(s, a, q) {
				r, ok := byData[string(p.Data)]
				if !ok {
					t.Errorf("round %d: queue %s visited %s, which was never stored", round, q, describe(p))
					continue
				}
				visited[string(p.Data)] = true
				if r.sequence < last {
					t.Errorf("round %d: queue %s visited %s after a packet its publisher stored later (P3: FIFO)", round, q, describe(p))
				}
				last = r.sequence
				switch {
				case r.end < creating:
					t.Errorf("round %d: %s was visited after Delete and Create, but its PacketStore%s returned %s before Create began (S4: no resurrection)", round, describe(r.p), q, fmtErr(r.err))
				case r.err != nil:
					t.Errorf("round %d: %s was visited, but its PacketStore%s returned %s", round, describe(r.p), q, fmtErr(r.err))
				}
			}
			for _, r := range records {
				if r.q == q && r.start == afterCreate && !visited[string(r.p.Data)] {
					t.Errorf("round %d: PacketStore%s of %s after Create returned %s, and the packet was never visited", round, q, describe(r.p), fmtErr(r.err))
				}
			}
		}
	}
}

// --- S5: LoadForEach ---

func s5NilLoader(t *testing.T, h *harness) {
	in := h.open()
	h.create(in.ses, id("a"), base(ts, 4))
	h.wantErr(in.ses.LoadForEach(nil, nil), vlpersistence.ErrInvalidArgs, "LoadForEach with a nil loader")
}

func s5ExactlyOnce(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	var want [][]byte
	for i := 0; i < 40; i++ {
		sid := id(fmt.Sprintf("s%02d", i))
		want = append(want, sid)
		h.create(s, sid, base(ts, 4))
		if i%4 == 0 {
			h.store(s, sid, q0, pk("x"))
		}
	}
	for i := 0; i < 10; i++ {
		h.noErr(s.Delete(want[i*4+1]), "Delete")
	}
	var kept [][]byte
	for i, sid := range want {
		if i%4 != 1 {
			kept = append(kept, sid)
		}
	}
	h.wantIDs(s, kept, "40 sessions, 10 deleted") // loadE fails on a second visit
	h.wantIDs(s, kept, "a second LoadForEach")
}

func s5StateNeverNil(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	h.create(s, id("created"), base(ts, 4))
	h.noErr(s.SubscriptionsStore(id("implicit"), []byte("subs")), "SubscriptionsStore")
	h.create(s, id("state-deleted"), base(ts, 4))
	h.noErr(s.StateDelete(id("state-deleted")), "StateDelete")
	for sid, v := range h.load(s) {
		if v.nilState {
			t.Errorf("LoadSession of %q got a nil state", sid)
		}
	}
}

func s5StateContents(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	want := map[string]*view{}
	for _, sid := range []string{"a", "b", "c"} {
		want[sid] = h.full(s, id(sid))
	}
	h.create(s, id("plain"), base("", 3))
	want["plain"] = &view{Version: 3}
	got := h.load(s)
	for sid, w := range want {
		if g, ok := got[sid]; !ok {
			t.Errorf("LoadForEach did not visit %q", sid)
		} else if d := g.diff(w); d != "" {
			t.Errorf("session %q: %s", sid, d)
		}
	}
}

func s5LastSubscriptions(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	steps := []struct {
		what string
		call func() error
		want string
	}{
		{"SubscriptionsStore(A)", func() error { return s.SubscriptionsStore(a, []byte("A")) }, "A"},
		{"StateStore with Subscriptions B", func() error {
			return s.StateStore(a, &vlpersistence.SessionState{Subscriptions: []byte("B")})
		}, "B"},
		{"StateStore with empty Subscriptions", func() error { return s.StateStore(a, &vlpersistence.SessionState{}) }, "B"},
		{"SubscriptionsStore(C)", func() error { return s.SubscriptionsStore(a, []byte("C")) }, "C"},
	}
	for _, st := range steps {
		h.noErr(st.call(), "%s", st.what)
		if got := h.stateOf(s, a).Subscriptions; string(got) != st.want {
			t.Errorf("after %s: Subscriptions %s, want %q", st.what, describeBytes(got), st.want)
		}
	}
}

func s5LastExpiry(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	if got := h.stateOf(s, a); got.nilState || got.Expire != nil {
		t.Errorf("after Create: Expire %s (nil state %v), want nil", describeDelays(got.Expire), got.nilState)
	}
	e1 := &vlpersistence.SessionDelays{Since: ts, ExpireIn: "1", Will: []byte("w1")}
	e2 := &vlpersistence.SessionDelays{Since: ts, ExpireIn: "2", Will: []byte("w2")}
	h.noErr(s.ExpiryStore(a, e1), "ExpiryStore")
	if got := h.stateOf(s, a).Expire; !equalDelays(got, e1) {
		t.Errorf("after ExpiryStore: Expire %s, want %s", describeDelays(got), describeDelays(e1))
	}
	h.noErr(s.StateStore(a, &vlpersistence.SessionState{Expire: e2}), "StateStore")
	if got := h.stateOf(s, a).Expire; !equalDelays(got, e2) {
		t.Errorf("after StateStore with an Expire: Expire %s, want %s", describeDelays(got), describeDelays(e2))
	}
	h.noErr(s.StateStore(a, &vlpersistence.SessionState{Subscriptions: []byte("x")}), "StateStore")
	if got := h.stateOf(s, a).Expire; !equalDelays(got, e2) {
		t.Errorf("after StateStore with a nil Expire: Expire %s, want %s", describeDelays(got), describeDelays(e2))
	}
}

func s5LoaderErrorStops(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	for i := 0; i < 5; i++ {
		h.create(s, id(fmt.Sprint("s", i)), base(ts, 4))
	}
	calls := 0
	err := s.LoadForEach(sessionLoader(func(any, []byte, *vlpersistence.SessionState) error {
		calls++
		return errStop
	}), nil)
	if !errors.Is(err, errStop) {
		t.Errorf("LoadForEach whose loader failed: %s, want the loader's error %q", fmtErr(err), errStop)
	}
	if calls != 1 {
		t.Errorf("the loader failed on its first call but was called %d times", calls)
	}
	h.wantCount(s, 5, "after a failed LoadForEach")
}

func s5Ctx(t *testing.T, h *harness) {
	in := h.open()
	h.create(in.ses, id("a"), base(ts, 4))
	ctx := &struct{ name string }{"ctx"}
	var got any
	h.noErr(in.ses.LoadForEach(sessionLoader(func(c any, _ []byte, _ *vlpersistence.SessionState) error {
		got = c
		return nil
	}), ctx), "LoadForEach")
	if got != any(ctx) {
		t.Errorf("LoadSession got ctx %v, want the one passed to LoadForEach", got)
	}
}

func s5DeletedDuringLoad(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	all := [][]byte{id("a"), id("b"), id("c"), id("d")}
	for _, sid := range all {
		h.create(s, sid, base(ts, 4))
	}
	var rec recorder
	var first []byte
	order := h.reentrantLoad(s, all, &rec, func(sid []byte) {
		first = sid
		for _, x := range all {
			if !bytes.Equal(x, sid) {
				step(&rec, nil, s.Delete(x), "Delete(%q) from the LoadSession of %q", x, sid)
			}
		}
	})
	rec.report(t)
	if len(order) != 1 {
		t.Errorf("LoadForEach visited %q, but every session other than %q was deleted during the visit of the first", order, first)
	}
}

// --- B1, B2: subscriptions ---

func b1EmptyID(t *testing.T, h *harness) {
	in := h.open()
	h.wantErr(in.ses.SubscriptionsStore(id(""), []byte("subs")), vlpersistence.ErrInvalidArgs, "SubscriptionsStore with an empty id")
	h.wantNothingCreated(in.ses, id(""), 0, "after SubscriptionsStore with an empty id")
}

func b1Implicit(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	h.create(s, id("other"), base(ts, 4))
	a := id("a")
	h.noErr(s.SubscriptionsStore(a, []byte("subs")), "SubscriptionsStore of a missing id")
	h.wantExists(s, a, true, "after SubscriptionsStore of a missing id")
	h.wantCount(s, 2, "after SubscriptionsStore of a missing id")
	h.wantState(s, a, &view{Subscriptions: []byte("subs")}, "after SubscriptionsStore of a missing id")
	h.wantQueues(s, a, [3][]*packet{}, "after SubscriptionsStore of a missing id")
}

func b1Replaces(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.full(s, a)
	for _, v := range [][]byte{[]byte("first"), {0, 1, 2}, []byte("a much longer value than before"), []byte("x")} {
		before := h.stateOf(s, a)
		h.noErr(s.SubscriptionsStore(a, v), "SubscriptionsStore(%q)", v)
		h.wantChanged(s, a, before, func(w *view) { w.Subscriptions = v }, fmt.Sprintf("after SubscriptionsStore(%q)", v))
	}
}

func b1Clears(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	for _, empty := range [][]byte{nil, {}} {
		h.noErr(s.SubscriptionsStore(a, []byte("subs")), "SubscriptionsStore")
		if got := h.stateOf(s, a).Subscriptions; string(got) != "subs" {
			t.Fatalf("after SubscriptionsStore: Subscriptions %s, want %q", describeBytes(got), "subs")
		}
		h.noErr(s.SubscriptionsStore(a, empty), "SubscriptionsStore(%#v)", empty)
		if got := h.stateOf(s, a).Subscriptions; len(got) != 0 {
			t.Errorf("after SubscriptionsStore(%#v): Subscriptions %s, want none", empty, describeBytes(got))
		}
	}
}

func b2Missing(t *testing.T, h *harness) {
	in := h.open()
	h.wantErr(in.ses.SubscriptionsDelete(missing), vlpersistence.ErrNotFound, "SubscriptionsDelete of a missing id")
	h.wantNothingCreated(in.ses, missing, 0, "after SubscriptionsDelete of a missing id")
}

func b2ClearsOnlySubscriptions(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.full(s, a)
	before := h.stateOf(s, a)
	if len(before.Subscriptions) == 0 {
		t.Fatalf("the subscriptions stored by SubscriptionsStore are not visible in LoadForEach (B1), nothing to delete")
	}
	h.noErr(s.SubscriptionsDelete(a), "SubscriptionsDelete")
	h.wantChanged(s, a, before, func(w *view) { w.Subscriptions = nil }, "after SubscriptionsDelete")
	h.wantExists(s, a, true, "after SubscriptionsDelete")
	h.wantQueues(s, a, fullQueues(a), "after SubscriptionsDelete")
}

func b2WithoutSubscriptions(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	h.wantErr(s.SubscriptionsDelete(a), nil, "SubscriptionsDelete of a session without subscriptions")
	h.wantErr(s.SubscriptionsDelete(a), nil, "a second SubscriptionsDelete")
	h.wantExists(s, a, true, "after SubscriptionsDelete")
}

func b2FromLoadSession(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	ids := [][]byte{id("a"), id("b")}
	for _, sid := range ids {
		h.create(s, sid, base(ts, 4))
		h.noErr(s.SubscriptionsStore(sid, []byte("subs")), "SubscriptionsStore")
	}
	// As the broker does: every visited session with subscriptions gets SubscriptionsDelete.
	// A backend that does not show the subscriptions would never reach the call under test.
	var rec recorder
	called := 0
	h.must("LoadForEach calling SubscriptionsDelete from LoadSession", func() {
		err := s.LoadForEach(sessionLoader(func(_ any, sid []byte, st *vlpersistence.SessionState) error {
			if st != nil && len(st.Subscriptions) > 0 {
				called++
				step(&rec, nil, s.SubscriptionsDelete(sid), "SubscriptionsDelete(%q) from its LoadSession", sid)
			}
			return nil
		}), nil)
		step(&rec, nil, err, "LoadForEach")
	})
	rec.report(t)
	if called != len(ids) {
		t.Fatalf("LoadForEach showed subscriptions for %d of %d sessions, so SubscriptionsDelete from LoadSession ran %d times (S5, B1)", called, len(ids), called)
	}
	for sid, v := range h.load(s) {
		if len(v.Subscriptions) != 0 {
			t.Errorf("session %q still has Subscriptions %s", sid, describeBytes(v.Subscriptions))
		}
	}
}

// --- T1, T2: state ---

// t1Setup creates a session whose state has every field set: base ts/4, subscriptions S0
// and expiry E0 (through StateStore, the method under test).
func (h *harness) t1Setup(s vlpersistence.Sessions) ([]byte, *view) {
	h.t.Helper()
	a := id("a")
	h.create(s, a, base(ts, 4))
	e0 := &vlpersistence.SessionDelays{Since: ts, ExpireIn: "60", Will: []byte("W0")}
	h.noErr(s.StateStore(a, &vlpersistence.SessionState{Subscriptions: []byte("S0"), Expire: e0}), "StateStore")
	want := &view{Timestamp: ts, Version: 4, Subscriptions: []byte("S0"), Expire: cloneDelays(e0)}
	h.wantState(s, a, want, "after Create and StateStore")
	return a, want
}

func t1NilState(t *testing.T, h *harness) {
	in := h.open()
	a, want := h.t1Setup(in.ses)
	h.wantErr(in.ses.StateStore(a, nil), vlpersistence.ErrInvalidArgs, "StateStore with a nil state")
	h.wantState(in.ses, a, want, "after StateStore with a nil state")
}

func t1Missing(t *testing.T, h *harness) {
	in := h.open()
	st := &vlpersistence.SessionState{Subscriptions: []byte("S"), Expire: &vlpersistence.SessionDelays{Since: ts, ExpireIn: "1"}}
	h.wantErr(in.ses.StateStore(missing, st), vlpersistence.ErrNotFound, "StateStore to a missing id")
	h.wantNothingCreated(in.ses, missing, 0, "after StateStore to a missing id")
}

// t1Merge stores st over the t1Setup state and expects change applied to the old state.
func t1Merge(st *vlpersistence.SessionState, change func(v *view)) caseFunc {
	return func(t *testing.T, h *harness) {
		in := h.open()
		a, want := h.t1Setup(in.ses)
		h.noErr(in.ses.StateStore(a, st), "StateStore(%+v)", *st)
		change(want)
		h.wantState(in.ses, a, want, "after StateStore")
	}
}

func t1EmptyExpireIn(t *testing.T, h *harness) {
	in := h.open()
	a, want := h.t1Setup(in.ses)
	e := &vlpersistence.SessionDelays{Since: ts, ExpireIn: "", Will: []byte("W1")}
	h.wantErr(in.ses.StateStore(a, &vlpersistence.SessionState{Expire: e}), nil, "StateStore with ExpireIn \"\"")
	want.Expire = cloneDelays(e)
	h.wantState(in.ses, a, want, "after StateStore with ExpireIn \"\"")
}

func t1NotMutated(t *testing.T, h *harness) {
	in := h.open()
	a, _ := h.t1Setup(in.ses)
	for _, st := range []*vlpersistence.SessionState{
		{},
		{Subscriptions: []byte("S1")},
		{SessionBase: vlpersistence.SessionBase{Timestamp: "T1"}},
		{Expire: &vlpersistence.SessionDelays{Since: "x", ExpireIn: "y"}},
	} {
		before := viewOf(st)
		h.noErr(in.ses.StateStore(a, st), "StateStore")
		if d := viewOf(st).diff(before); d != "" {
			t.Errorf("StateStore changed the state passed in: %s", d)
		}
	}
}

func t2Missing(t *testing.T, h *harness) {
	in := h.open()
	h.wantErr(in.ses.StateDelete(missing), vlpersistence.ErrNotFound, "StateDelete of a missing id")
	h.wantNothingCreated(in.ses, missing, 0, "after StateDelete of a missing id")
}

func t2Clears(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a, b := id("a"), id("b")
	h.full(s, a)
	h.full(s, b)
	beforeB := h.stateOf(s, b)
	h.noErr(s.StateDelete(a), "StateDelete")
	h.wantExists(s, a, true, "after StateDelete")
	h.wantCount(s, 2, "after StateDelete")
	h.wantState(s, a, &view{}, "after StateDelete")
	h.wantQueues(s, a, fullQueues(a), "after StateDelete")
	h.wantChanged(s, b, beforeB, unchanged, "the other session after StateDelete")
}

// --- E1, E2: expiry ---

func e1Nil(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.full(s, a)
	before := h.stateOf(s, a)
	h.wantErr(s.ExpiryStore(a, nil), vlpersistence.ErrInvalidArgs, "ExpiryStore with nil delays")
	h.wantChanged(s, a, before, unchanged, "after ExpiryStore with nil delays")
}

func e1Missing(t *testing.T, h *harness) {
	in := h.open()
	h.wantErr(in.ses.ExpiryStore(missing, &vlpersistence.SessionDelays{Since: ts, ExpireIn: "1"}), vlpersistence.ErrNotFound, "ExpiryStore to a missing id")
	h.wantNothingCreated(in.ses, missing, 0, "after ExpiryStore to a missing id")
}

func e1Replaces(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.full(s, a)
	before := h.stateOf(s, a)
	e := &vlpersistence.SessionDelays{Since: "2030-01-01T00:00:00Z", ExpireIn: "7", Will: []byte("another will")}
	h.noErr(s.ExpiryStore(a, e), "ExpiryStore")
	h.wantChanged(s, a, before, func(w *view) { w.Expire = cloneDelays(e) }, "after a second ExpiryStore")
	h.wantQueues(s, a, fullQueues(a), "after a second ExpiryStore")
}

func e1EmptyWill(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	h.noErr(s.ExpiryStore(a, &vlpersistence.SessionDelays{Since: ts, ExpireIn: "60", Will: []byte("will")}), "ExpiryStore with a Will")
	for _, will := range [][]byte{nil, {}} {
		e := &vlpersistence.SessionDelays{Since: ts, ExpireIn: "30", Will: will}
		h.noErr(s.ExpiryStore(a, e), "ExpiryStore with Will %#v", will)
		if got := h.stateOf(s, a).Expire; got == nil || len(got.Will) != 0 || got.ExpireIn != "30" {
			t.Errorf("after ExpiryStore with Will %#v over one with a Will: Expire %s, want {ExpireIn: \"30\", no Will}", will, describeDelays(got))
		}
		h.noErr(s.ExpiryStore(a, &vlpersistence.SessionDelays{Since: ts, ExpireIn: "60", Will: []byte("will")}), "ExpiryStore with a Will")
	}
}

func e1EmptyExpireIn(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	e := &vlpersistence.SessionDelays{Since: ts, ExpireIn: "", Will: []byte("will")}
	h.wantErr(s.ExpiryStore(a, e), nil, "ExpiryStore with ExpireIn \"\"")
	if got := h.stateOf(s, a).Expire; !equalDelays(got, e) {
		t.Errorf("after ExpiryStore with ExpireIn \"\": Expire %s, want %s", describeDelays(got), describeDelays(e))
	}
}

func e2Missing(t *testing.T, h *harness) {
	in := h.open()
	h.wantErr(in.ses.ExpiryDelete(missing), vlpersistence.ErrNotFound, "ExpiryDelete of a missing id")
	h.wantNothingCreated(in.ses, missing, 0, "after ExpiryDelete of a missing id")
}

func e2Clears(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.full(s, a)
	before := h.stateOf(s, a)
	h.noErr(s.ExpiryDelete(a), "ExpiryDelete")
	h.wantChanged(s, a, before, func(w *view) { w.Expire = nil }, "after ExpiryDelete")
	h.wantQueues(s, a, fullQueues(a), "after ExpiryDelete")
}

func e2WithoutExpiry(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	before := h.stateOf(s, a)
	h.wantErr(s.ExpiryDelete(a), nil, "ExpiryDelete of a session without expiry")
	h.wantChanged(s, a, before, unchanged, "after ExpiryDelete")
}
