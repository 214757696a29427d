package persistencetest

import (
	"fmt"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/VolantMQ/vlapi/vlpersistence"
)

// --- G3: in the mode that promises it, a nil return survives a crash ---

// g3State writes a bit of everything and returns what a later instance must see.
func g3State(h *harness, in *instance) (map[string]*view, map[string][3][]*packet, []*packet) {
	h.t.Helper()
	s := in.ses
	views := map[string]*view{}
	qs := map[string][3][]*packet{}
	for _, sid := range []string{"a", "b"} {
		views[sid] = h.full(s, id(sid))
		qs[sid] = fullQueues(id(sid))
	}
	more := pks("a-more", 3)
	h.noErr(s.PacketsStore(id("a"), vlpersistence.PersistedPackets{QoS12: more}), "PacketsStore")
	a := qs["a"]
	a[q12] = append(a[q12], more...)
	qs["a"] = a
	h.noErr(s.SubscriptionsStore(id("implicit"), []byte("subs")), "SubscriptionsStore (implicit create)")
	views["implicit"] = &view{Subscriptions: []byte("subs")}
	qs["implicit"] = [3][]*packet{}
	ret := pks("retained", 2)
	h.noErr(in.ret.Store(ret), "Retained.Store")
	return views, qs, ret
}

func g3WritesSurviveACrash(t *testing.T, h *harness) {
	in := h.open()
	views, qs, ret := g3State(h, in)
	in = h.crash(in)
	h.wantRetained(in.ret, ret, "after a crash")
	h.wantCount(in.ses, uint64(len(views)), "after a crash")
	got := h.load(in.ses)
	for _, sid := range sortedIDs(views) {
		if d := got[sid].diffOrMissing(views[sid]); d != "" {
			t.Errorf("after a crash: session %q: %s", sid, d)
		}
		h.wantQueues(in.ses, id(sid), qs[sid], "after a crash")
	}
}

func g3RemovalsSurviveACrash(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	all := pks("m", 6)
	h.store(s, a, q12, all...)
	// Remove the first two, keep the third in place, remove the fourth, stop.
	_, err := visit(s, a, q12, func(i int, _ *packet) (bool, error) {
		switch i {
		case 2:
			return false, nil
		case 3:
			return true, errStop
		}
		return true, nil
	})
	h.noErr(err, "PacketsForEachQoS12")
	h.store(s, id("a"), q0, pk("q0"))
	h.drain(s, a, q0)
	in = h.crash(in)
	h.wantQueue(in.ses, a, q12, []*packet{all[2], all[4], all[5]}, "after a crash")
	h.wantQueue(in.ses, a, q0, nil, "after a crash")
}

func g3DeleteSurvivesACrash(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	h.full(s, id("gone"))
	h.full(s, id("emptied"))
	h.full(s, id("kept"))
	h.noErr(s.Delete(id("gone")), "Delete")
	h.noErr(s.PacketsDelete(id("emptied")), "PacketsDelete")
	in = h.crash(in)
	h.wantNothingCreated(in.ses, id("gone"), 2, "after a crash")
	h.wantQueues(in.ses, id("emptied"), [3][]*packet{}, "after a crash")
	h.wantQueues(in.ses, id("kept"), fullQueues(id("kept")), "after a crash")
}

// diffOrMissing is diff for a view that may be absent.
func (v *view) diffOrMissing(want *view) string {
	if v == nil {
		return "not loaded"
	}
	return v.diff(want)
}

// --- Restart: what a new process finds on the same storage ---

func restartAfterBrokerShutdown(t *testing.T, h *harness) {
	in := h.open()
	want := brokerShutdownWrite(h, in)
	in = h.reopen(in)
	brokerShutdownCheck(h, in, want)
}

func restartByteExact(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	ids := [][]byte{id("plain"), id("\x00/../\xff"), longID('r')}
	want := map[string]*view{}
	wantQ := map[string][3][]*packet{}
	for i, sid := range ids {
		odd0 := odd[i%len(odd)]
		odd1 := odd[(i+1)%len(odd)]
		h.create(s, sid, base(odd0, byte(i+3)))
		subs := append([]byte(odd1), pattern(300, byte(i))...)
		h.noErr(s.SubscriptionsStore(sid, subs), "SubscriptionsStore")
		d := &vlpersistence.SessionDelays{Since: odd1, ExpireIn: odd0, Will: pattern(1000, byte(i))}
		h.noErr(s.ExpiryStore(sid, d), "ExpiryStore")
		want[string(sid)] = &view{Timestamp: odd0, Version: byte(i + 3), Subscriptions: subs, Expire: cloneDelays(d)}
		var qs [3][]*packet
		for _, q := range queues {
			for j, o := range odd {
				p := &packet{Data: append([]byte(o), pattern(50+j, byte(q))...), ExpireAt: o}
				h.store(s, sid, q, p)
				qs[q] = append(qs[q], p)
			}
		}
		wantQ[string(sid)] = qs
	}
	in = h.reopen(in)
	got := h.load(in.ses)
	for _, sid := range ids {
		if d := got[string(sid)].diffOrMissing(want[string(sid)]); d != "" {
			t.Errorf("after Reopen: session %q: %s", short(string(sid)), d)
		}
		h.wantQueues(in.ses, sid, wantQ[string(sid)], "after Reopen")
	}
}

func restartFIFO(t *testing.T, h *harness) {
	in := h.open()
	a := id("a")
	h.create(in.ses, a, base(ts, 4))
	var want []*packet
	for round := range 3 {
		ps := pks(fmt.Sprint("round", round), 4)
		h.store(in.ses, a, q12, ps[:2]...)
		h.noErr(in.ses.PacketsStore(a, vlpersistence.PersistedPackets{QoS12: ps[2:]}), "PacketsStore")
		want = append(want, ps...)
		in = h.reopen(in)
	}
	h.wantQueue(in.ses, a, q12, want, "after three restarts, each followed by more stores")
}

func restartPartialDrain(t *testing.T, h *harness) {
	in := h.open()
	a := id("a")
	h.create(in.ses, a, base(ts, 4))
	all := pks("m", 8)
	h.noErr(in.ses.PacketsStore(a, vlpersistence.PersistedPackets{UnAck: all[:4]}), "PacketsStore")
	h.store(in.ses, a, qUA, all[4:]...)
	// Keep the odd ones in place, remove the even ones.
	_, err := visit(in.ses, a, qUA, func(i int, _ *packet) (bool, error) { return i%2 == 0, nil })
	h.noErr(err, "PacketsForEachUnAck")
	in = h.reopen(in)
	h.wantCounts(in.ses, a, [3]uint64{0, 0, 4}, "after Reopen")
	h.wantQueue(in.ses, a, qUA, []*packet{all[1], all[3], all[5], all[7]}, "after Reopen")
	in = h.reopen(in)
	h.wantQueue(in.ses, a, qUA, nil, "after draining and another Reopen")
}

func restartNoResurrection(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a, b := id("a"), id("b")
	h.full(s, a)
	h.full(s, b)
	h.noErr(s.Delete(a), "Delete(a)")
	h.noErr(s.Delete(b), "Delete(b)")
	h.create(s, b, base("new", 5))
	h.store(s, b, q0, pk("new"))
	in = h.reopen(in)
	h.wantNothingCreated(in.ses, a, 1, "after Reopen")
	h.wantState(in.ses, b, &view{Timestamp: "new", Version: 5}, "after Reopen")
	h.wantQueues(in.ses, b, [3][]*packet{{pk("new")}, nil, nil}, "after Reopen")
	// A new incarnation after the restart sees nothing of the old one either.
	h.create(in.ses, a, base(ts, 4))
	in = h.reopen(in)
	h.wantQueues(in.ses, a, [3][]*packet{}, "a new incarnation after two restarts")
}

func restartWipe(t *testing.T, h *harness) {
	in := h.open()
	h.noErr(in.ret.Store(pks("r", 3)), "Retained.Store")
	in = h.reopen(in)
	h.wantRetained(in.ret, pks("r", 3), "after Reopen")
	h.noErr(in.ret.Wipe(), "Retained.Wipe")
	in = h.reopen(in)
	h.wantRetained(in.ret, nil, "after Wipe and Reopen")
}

// restartLarge stores 1,000 sessions with 10 packets each (times Backend.Scale), spread
// over the three queues and over single and batch stores, reopens, and checks that every
// session and every packet comes back, in order.
func restartLarge(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	n := h.s.scaled(1000)
	sid := func(i int) []byte { return id(fmt.Sprintf("client-%05d", i)) }
	want := func(i int) [3][]*packet {
		p := pks(fmt.Sprintf("c%05d", i), 10)
		return [3][]*packet{p[0:3], p[3:8], p[8:10]}
	}
	var g errgroup.Group
	g.SetLimit(16)
	for i := range n {
		g.Go(safe(fmt.Sprint("writer of ", i), func() error {
			if err := s.Create(sid(i), base(ts, 4)); err != nil {
				return fmt.Errorf("Create(%q): %v", sid(i), err)
			}
			w := want(i)
			for _, p := range w[q0] {
				if err := s.PacketStoreQoS0(sid(i), p); err != nil {
					return fmt.Errorf("PacketStoreQoS0(%q): %v", sid(i), err)
				}
			}
			for _, p := range w[q12][:2] {
				if err := s.PacketStoreQoS12(sid(i), p); err != nil {
					return fmt.Errorf("PacketStoreQoS12(%q): %v", sid(i), err)
				}
			}
			if err := s.PacketsStore(sid(i), vlpersistence.PersistedPackets{QoS12: w[q12][2:], UnAck: w[qUA]}); err != nil {
				return fmt.Errorf("PacketsStore(%q): %v", sid(i), err)
			}
			return nil
		}))
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	in = h.reopen(in)
	h.wantCount(in.ses, uint64(n), "after Reopen")
	got := h.load(in.ses)
	if len(got) != n {
		t.Fatalf("after Reopen: LoadForEach visited %d sessions, want %d", len(got), n)
	}
	for i := range n {
		if _, ok := got[string(sid(i))]; !ok {
			t.Fatalf("after Reopen: session %q not loaded", sid(i))
		}
		w := want(i)
		h.wantCounts(in.ses, sid(i), [3]uint64{uint64(len(w[q0])), uint64(len(w[q12])), uint64(len(w[qUA]))}, "after Reopen")
		h.wantQueues(in.ses, sid(i), w, "after Reopen")
		if t.Failed() {
			return // one session's diff says enough
		}
	}
}
