package persistencetest

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/VolantMQ/vlapi/vlpersistence"
)

// singleQueues are the queues with a single-packet store method.
var singleQueues = []queue{q0, q12}

// --- P1: PacketStoreQoS0 / PacketStoreQoS12 ---

func p1NilPacket(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	for _, q := range singleQueues {
		h.wantErr(q.store(s, a, nil), vlpersistence.ErrInvalidArgs, "PacketStore%s with a nil packet", q)
		h.wantQueue(s, a, q, nil, "after a rejected nil packet")
	}
}

func p1EmptyData(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	for _, q := range singleQueues {
		for _, p := range []*packet{{ExpireAt: ts}, {Data: []byte{}}} {
			h.wantErr(q.store(s, a, p), vlpersistence.ErrInvalidArgs, "PacketStore%s with Data %#v", q, p.Data)
		}
		h.wantQueue(s, a, q, nil, "after rejected packets with empty Data")
	}
}

func p1Missing(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	for _, q := range singleQueues {
		sid := id("missing-" + q.String())
		h.wantErr(q.store(s, sid, pk("x")), vlpersistence.ErrNotFound, "PacketStore%s to a missing id", q)
		h.wantNothingCreated(s, sid, 0, fmt.Sprintf("after PacketStore%s to a missing id", q))
	}
}

func p1AppendsAtTheTail(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	for _, q := range singleQueues {
		h.store(s, a, q, pks(q.String(), 10)...)
	}
	h.wantQueues(s, a, [3][]*packet{pks("QoS0", 10), pks("QoS12", 10), nil}, "10 packets stored one by one")
}

// parseTag splits a tag made by concurrent writers, "w<writer>-<seq>", into its numbers.
func parseTag(p *packet) (writer, seq int, ok bool) {
	tag, found := strings.CutPrefix(string(p.Data), "data:w")
	if !found || p.ExpireAt != "expire:w"+tag {
		return 0, 0, false // not made by pk, or Data and ExpireAt of different writes
	}
	w, n, found := strings.Cut(tag, "-")
	if !found {
		return 0, 0, false
	}
	writer, err1 := strconv.Atoi(w)
	seq, err2 := strconv.Atoi(n)
	return writer, seq, err1 == nil && err2 == nil
}

// checkWriters checks that visited holds every packet of every writer exactly once, each
// intact and in the order its writer stored it. want[w] is how many packets writer w
// stored in this queue; which reports which packets of writer w went here.
func checkWriters(t *testing.T, context string, visited []*packet, want map[int][]int) {
	t.Helper()
	next := make(map[int]int)
	for _, p := range visited {
		w, seq, ok := parseTag(p)
		if !ok {
			t.Errorf("%s: visited %s, which no writer stored (or mixed from two writes)", context, describe(p))
			continue
		}
		seqs := want[w]
		if next[w] >= len(seqs) || seqs[next[w]] != seq {
			exp := "none"
			if next[w] < len(seqs) {
				exp = strconv.Itoa(seqs[next[w]])
			}
			t.Errorf("%s: writer %d: visited packet %d, want packet %s next (lost, duplicated or reordered)", context, w, seq, exp)
			continue
		}
		next[w]++
	}
	for w, seqs := range want {
		if next[w] != len(seqs) {
			t.Errorf("%s: writer %d: %d of its %d packets visited", context, w, next[w], len(seqs))
		}
	}
}

func p1Concurrent(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	const writers, each = 8, 50
	var g errgroup.Group
	for w := 0; w < writers; w++ {
		g.Go(safe(fmt.Sprint("writer ", w), func() error {
			for i := 0; i < each; i++ {
				q := singleQueues[(w+i)%2]
				if err := q.store(s, a, pk(fmt.Sprintf("w%d-%d", w, i))); err != nil {
					return fmt.Errorf("writer %d: PacketStore%s: %v", w, q, err)
				}
			}
			return nil
		}))
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, q := range singleQueues {
		want := make(map[int][]int)
		for w := 0; w < writers; w++ {
			for i := 0; i < each; i++ {
				if singleQueues[(w+i)%2] == q {
					want[w] = append(want[w], i)
				}
			}
		}
		checkWriters(t, fmt.Sprintf("queue %s after %d writers stored %d packets each", q, writers, each), h.drain(s, a, q), want)
	}
}

// --- P2: PacketsStore ---

func p2NilElements(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	h.noErr(s.PacketsStore(a, vlpersistence.PersistedPackets{
		QoS0:  []*packet{nil, pk("a"), nil, pk("b")},
		QoS12: []*packet{pk("c"), nil},
		UnAck: []*packet{nil, nil, pk("d"), nil, pk("e"), nil},
	}), "PacketsStore with nil elements")
	h.wantQueues(s, a, [3][]*packet{{pk("a"), pk("b")}, {pk("c")}, {pk("d"), pk("e")}}, "after PacketsStore with nil elements")
}

func p2EmptyListsMissingID(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	for i, pp := range []vlpersistence.PersistedPackets{{}, {QoS0: []*packet{}, QoS12: []*packet{}, UnAck: []*packet{}}} {
		h.wantErr(s.PacketsStore(missing, pp), nil, "PacketsStore of empty lists (%d) for a missing id", i)
	}
	h.wantNothingCreated(s, missing, 0, "after PacketsStore of empty lists")
}

func p2AllNilMissingID(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	pp := vlpersistence.PersistedPackets{QoS0: []*packet{nil}, UnAck: []*packet{nil, nil}}
	h.wantErr(s.PacketsStore(missing, pp), nil, "PacketsStore of nil elements only for a missing id")
	h.wantNothingCreated(s, missing, 0, "after PacketsStore of nil elements only")
}

func p2AllNilExistingID(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	pp := vlpersistence.PersistedPackets{QoS0: []*packet{nil}, QoS12: []*packet{nil, nil}, UnAck: []*packet{nil}}
	h.wantErr(s.PacketsStore(a, pp), nil, "PacketsStore of nil elements only")
	h.wantQueues(s, a, [3][]*packet{}, "after PacketsStore of nil elements only")
}

func p2Missing(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	h.wantErr(s.PacketsStore(missing, vlpersistence.PersistedPackets{QoS12: []*packet{pk("a")}, UnAck: []*packet{nil, pk("b")}}),
		vlpersistence.ErrNotFound, "PacketsStore of packets for a missing id")
	h.wantNothingCreated(s, missing, 0, "after PacketsStore for a missing id")
}

func p2Order(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	h.store(s, a, q0, pk("single-0"))
	h.store(s, a, q12, pk("single-12"))
	h.noErr(s.PacketsStore(a, vlpersistence.PersistedPackets{QoS0: pks("l0", 4), QoS12: pks("l12", 3), UnAck: pks("lua", 5)}), "PacketsStore")
	h.noErr(s.PacketsStore(a, vlpersistence.PersistedPackets{QoS0: pks("m0", 2), UnAck: pks("mua", 1)}), "PacketsStore")
	h.store(s, a, q0, pk("single-0b"))
	want := [3][]*packet{
		append(append(append([]*packet{pk("single-0")}, pks("l0", 4)...), pks("m0", 2)...), pk("single-0b")),
		append([]*packet{pk("single-12")}, pks("l12", 3)...),
		append(pks("lua", 5), pks("mua", 1)...),
	}
	h.wantQueues(s, a, want, "after PacketStore and PacketsStore calls")
}

func p2Concurrent(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	const writers, calls, per = 4, 10, 5
	var g errgroup.Group
	for w := 0; w < writers; w++ {
		g.Go(safe(fmt.Sprint("writer ", w), func() error {
			for c := 0; c < calls; c++ {
				var pp vlpersistence.PersistedPackets
				for i := 0; i < per; i++ {
					n := c*per + i
					pp.QoS0 = append(pp.QoS0, pk(fmt.Sprintf("w%d-%d", w, n)))
					pp.UnAck = append(pp.UnAck, pk(fmt.Sprintf("w%d-%d", w, n)))
				}
				if err := s.PacketsStore(a, pp); err != nil {
					return fmt.Errorf("writer %d: PacketsStore: %v", w, err)
				}
			}
			return nil
		}))
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	want := make(map[int][]int)
	for w := 0; w < writers; w++ {
		for n := 0; n < calls*per; n++ {
			want[w] = append(want[w], n)
		}
	}
	for _, q := range []queue{q0, qUA} {
		checkWriters(t, fmt.Sprintf("queue %s after concurrent PacketsStore calls", q), h.drain(s, a, q), want)
	}
}

// --- P3: PacketsForEach ---

func p3NilLoader(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	for _, q := range queues {
		h.store(s, a, q, pk(q.String()))
	}
	for _, q := range queues {
		h.wantErr(q.forEach(s, a, nil, nil), vlpersistence.ErrInvalidArgs, "PacketsForEach%s with a nil loader", q)
	}
	h.wantQueues(s, a, fullQueuesOf(func(q queue) []*packet { return []*packet{pk(q.String())} }), "after calls with a nil loader")
}

func fullQueuesOf(f func(q queue) []*packet) [3][]*packet {
	var out [3][]*packet
	for _, q := range queues {
		out[q] = f(q)
	}
	return out
}

func p3Missing(t *testing.T, h *harness) {
	in := h.open()
	for _, q := range queues {
		called := false
		err := q.forEach(in.ses, missing, nil, func(any, *packet) (bool, error) { called = true; return true, nil })
		if err != nil || called {
			t.Errorf("PacketsForEach%s of a missing id: err %s, loader called %v; want nil and no call", q, fmtErr(err), called)
		}
	}
	h.wantNothingCreated(in.ses, missing, 0, "after PacketsForEach of a missing id")
}

func p3EmptyQueue(t *testing.T, h *harness) {
	in := h.open()
	a := id("a")
	h.create(in.ses, a, base(ts, 4))
	for _, q := range queues {
		called := false
		err := q.forEach(in.ses, a, nil, func(any, *packet) (bool, error) { called = true; return true, nil })
		if err != nil || called {
			t.Errorf("PacketsForEach%s of an empty queue: err %s, loader called %v; want nil and no call", q, fmtErr(err), called)
		}
	}
}

func p3FIFO(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	var want [3][]*packet
	for i := 0; i < 30; i++ {
		q := queues[i%3]
		if i%4 == 0 {
			ps := pks(fmt.Sprintf("batch%02d", i), 3)
			h.noErr(s.PacketsStore(a, q.in(ps...)), "PacketsStore")
			want[q] = append(want[q], ps...)
		} else {
			p := pk(fmt.Sprintf("single%02d", i))
			h.store(s, a, q, p)
			want[q] = append(want[q], p)
		}
	}
	h.wantQueues(s, a, want, "stored in known order")
}

func p3TrueNil(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	for _, q := range queues {
		h.store(s, a, q, pks(q.String(), 5)...)
		got, err := visit(s, a, q, func(int, *packet) (bool, error) { return true, nil })
		h.noErr(err, "PacketsForEach%s", q)
		if d := diffPackets(got, pks(q.String(), 5)); d != "" {
			t.Errorf("queue %s: visited: %s", q, d)
		}
		h.wantQueue(s, a, q, nil, "after a loader removed every packet")
	}
}

func p3FalseNil(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	for _, q := range queues {
		all := pks(q.String(), 5)
		h.store(s, a, q, all...)
		// keep packets 1 and 3, remove the others
		got, err := visit(s, a, q, func(i int, _ *packet) (bool, error) { return i%2 == 0, nil })
		h.noErr(err, "PacketsForEach%s", q)
		if d := diffPackets(got, all); d != "" {
			t.Errorf("queue %s: visited: %s", q, d)
		}
		h.store(s, a, q, pk("after"))
		h.wantQueue(s, a, q, []*packet{all[1], all[3], pk("after")}, "after a loader kept packets 1 and 3 with (false, nil) and a new store")
	}
}

func p3TrueErr(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	for _, q := range queues {
		all := pks(q.String(), 5)
		h.store(s, a, q, all...)
		got, err := visit(s, a, q, func(i int, _ *packet) (bool, error) {
			if i == 2 {
				return true, errStop
			}
			return true, nil
		})
		if err != nil {
			t.Errorf("queue %s: PacketsForEach stopped by its loader with (true, err) returned %s, want nil", q, fmtErr(err))
		}
		if d := diffPackets(got, all[:3]); d != "" {
			t.Errorf("queue %s: visited: %s", q, d)
		}
		h.wantQueue(s, a, q, all[3:], "after a loader removed 3 packets, the third with (true, err)")
	}
}

func p3FalseErr(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	for _, q := range queues {
		all := pks(q.String(), 5)
		h.store(s, a, q, all...)
		got, err := visit(s, a, q, func(i int, _ *packet) (bool, error) {
			if i == 2 {
				return false, errStop
			}
			return true, nil
		})
		if err != nil {
			t.Errorf("queue %s: PacketsForEach stopped by its loader with (false, err) returned %s, want nil", q, fmtErr(err))
		}
		if d := diffPackets(got, all[:3]); d != "" {
			t.Errorf("queue %s: visited: %s", q, d)
		}
		h.wantQueue(s, a, q, all[2:], "after a loader removed 2 packets and stopped at the third with (false, err)")
	}
}

func p3FreshCopies(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	for _, q := range queues {
		all := pks(q.String(), 3)
		h.store(s, a, q, all...)
		var kept []*packet
		h.noErr(q.forEach(s, a, nil, func(_ any, p *packet) (bool, error) {
			kept = append(kept, p)
			return false, nil
		}), "PacketsForEach%s", q)
		for i, p := range kept {
			for _, other := range kept[:i] {
				if p == other {
					t.Errorf("queue %s: two visits got the same *PersistedPacket", q)
				}
			}
			scribble(p.Data)
			p.ExpireAt = "changed"
		}
		h.wantQueue(s, a, q, all, "after the loader overwrote the packets it was given")
	}
}

func p3Ctx(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	ctx := &struct{ name string }{"ctx"}
	for _, q := range queues {
		h.store(s, a, q, pk("x"))
		var got any
		h.noErr(q.forEach(s, a, ctx, func(c any, _ *packet) (bool, error) { got = c; return true, nil }), "PacketsForEach%s", q)
		if got != any(ctx) {
			t.Errorf("queue %s: the loader got ctx %v, want the one passed to PacketsForEach", q, got)
		}
	}
}

// --- P4: stores during an iteration ---

func p4Before(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	for _, q := range queues {
		h.store(s, a, q, pks(q.String(), 100)...)
		h.wantQueue(s, a, q, pks(q.String(), 100), "100 packets stored before the iteration")
	}
}

// concurrentWithIteration iterates q of a fresh session holding 100 packets of writer 0
// with decide, while writer 1 stores 100 more; then it drains q and checks that the
// packets of both writers were each seen once, in order, except those decide kept, which
// must come back from the drain.
func concurrentWithIteration(t *testing.T, h *harness, q queue, remove func(seq int) bool) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	for i := 0; i < 100; i++ {
		h.store(s, a, q, pk(fmt.Sprintf("w0-%d", i)))
	}
	var first []*packet
	var g errgroup.Group
	g.Go(safe("writer", func() error {
		for i := 0; i < 100; i++ {
			if err := q.store(s, a, pk(fmt.Sprintf("w1-%d", i))); err != nil {
				return fmt.Errorf("storing during the iteration: %v", err)
			}
		}
		return nil
	}))
	g.Go(safe("iteration", func() error {
		var err error
		first, err = visit(s, a, q, func(_ int, p *packet) (bool, error) {
			_, seq, _ := parseTag(p)
			return remove(seq), nil
		})
		return err
	}))
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	second := h.drain(s, a, q)
	context := fmt.Sprintf("queue %s, iterated while a writer stored", q)
	checkOrder(t, context+": the iteration", first)
	checkOrder(t, context+": the drain after it", second)
	// Each packet is removed by the iteration or found by the drain, never both, never
	// neither; a packet the iteration kept must be found by the drain.
	where := make(map[string]string)
	for _, p := range first {
		if _, seq, ok := parseTag(p); ok && remove(seq) {
			where[string(p.Data)] = "removed"
		} else {
			where[string(p.Data)] = "kept"
		}
	}
	for _, p := range second {
		switch where[string(p.Data)] {
		case "removed":
			t.Errorf("%s: %s was removed by the iteration but is still stored", context, describe(p))
		case "found":
			t.Errorf("%s: the drain visited %s twice", context, describe(p))
		}
		where[string(p.Data)] = "found"
	}
	for w := 0; w < 2; w++ {
		for i := 0; i < 100; i++ {
			data := fmt.Sprintf("data:w%d-%d", w, i)
			switch where[data] {
			case "":
				t.Errorf("%s: %q was neither visited by the iteration nor left stored", context, data)
			case "kept":
				t.Errorf("%s: %q was kept by the iteration but is gone", context, data)
			}
		}
	}
	writer0 := 0
	for _, p := range first {
		if w, _, _ := parseTag(p); w == 0 {
			writer0++
		}
	}
	if writer0 != 100 {
		t.Errorf("%s: the iteration visited %d of the 100 packets stored before it began", context, writer0)
	}
}

// checkOrder fails the case unless the packets of each writer appear in ps at most once
// and in the order the writer stored them.
func checkOrder(t *testing.T, context string, ps []*packet) {
	t.Helper()
	last := make(map[int]int)
	for _, p := range ps {
		w, seq, ok := parseTag(p)
		if !ok {
			t.Errorf("%s: visited %s, which no writer stored (or mixed from two writes)", context, describe(p))
			continue
		}
		if prev, seen := last[w]; seen && seq <= prev {
			t.Errorf("%s: writer %d's packet %d visited after its packet %d (P3: FIFO)", context, w, seq, prev)
		}
		last[w] = seq
	}
}

func p4During(t *testing.T, h *harness) {
	for _, q := range queues {
		concurrentWithIteration(t, h, q, func(int) bool { return true })
	}
}

func p4Identity(t *testing.T, h *harness) {
	for _, q := range queues {
		concurrentWithIteration(t, h, q, func(seq int) bool { return seq%2 == 1 })
	}
}

// --- P5: PacketCount ---

func p5Missing(t *testing.T, h *harness) {
	in := h.open()
	for _, q := range queues {
		n, err := q.count(in.ses, missing)
		if n != 0 || !errors.Is(err, vlpersistence.ErrNotFound) {
			t.Errorf("PacketCount%s of a missing id: (%d, %s), want (0, ErrNotFound)", q, n, fmtErr(err))
		}
	}
	h.wantNothingCreated(in.ses, missing, 0, "after PacketCount of a missing id")
}

// wantCounts fails the case unless the three counts of sid are want.
func (h *harness) wantCounts(s vlpersistence.Sessions, sid []byte, want [3]uint64, context string) {
	h.t.Helper()
	for _, q := range queues {
		n, err := q.count(s, sid)
		if err != nil || n != want[q] {
			h.t.Errorf("%s: PacketCount%s(%q) = (%d, %s), want (%d, nil)", context, q, sid, n, fmtErr(err), want[q])
		}
	}
}

func p5Exact(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	h.wantCounts(s, a, [3]uint64{}, "a new session")
	// Small and large packets: a store may keep them differently.
	for i := 0; i < 3; i++ {
		h.store(s, a, q0, pk(fmt.Sprint(i)))
	}
	for i := 0; i < 2; i++ {
		h.store(s, a, q12, &packet{Data: pattern(5000, byte(i))})
	}
	h.noErr(s.PacketsStore(a, vlpersistence.PersistedPackets{UnAck: []*packet{pk("u"), {Data: pattern(70000, 1)}, pk("v"), pk("w")}}), "PacketsStore")
	h.wantCounts(s, a, [3]uint64{3, 2, 4}, "after storing")
	h.drain(s, a, q0)
	h.wantCounts(s, a, [3]uint64{0, 2, 4}, "after draining QoS0")
	h.store(s, a, q0, pk("again"))
	h.wantCounts(s, a, [3]uint64{1, 2, 4}, "after storing into the drained QoS0")
	h.noErr(s.PacketsDelete(a), "PacketsDelete")
	h.wantCounts(s, a, [3]uint64{}, "after PacketsDelete")
}

// --- P6: PacketsDelete ---

func p6Missing(t *testing.T, h *harness) {
	in := h.open()
	h.wantErr(in.ses.PacketsDelete(missing), vlpersistence.ErrNotFound, "PacketsDelete of a missing id")
	h.wantNothingCreated(in.ses, missing, 0, "after PacketsDelete of a missing id")
}

func p6EmptiesQueuesKeepsSession(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a, b := id("a"), id("b")
	h.full(s, a)
	h.full(s, b)
	h.store(s, a, q12, pks("more", 5)...)
	before := h.stateOf(s, a)
	h.noErr(s.PacketsDelete(a), "PacketsDelete")
	h.wantExists(s, a, true, "after PacketsDelete")
	h.wantCount(s, 2, "after PacketsDelete")
	h.wantChanged(s, a, before, unchanged, "after PacketsDelete")
	h.wantQueues(s, a, [3][]*packet{}, "after PacketsDelete")
	h.wantQueues(s, b, fullQueues(b), "the other session after PacketsDelete")
	h.store(s, a, q0, pk("new-1"), pk("new-2"))
	h.wantQueue(s, a, q0, []*packet{pk("new-1"), pk("new-2")}, "stored after PacketsDelete")
}

// --- P7: the queues are independent ---

func p7Independent(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	same := pk("same")
	// One session per queue drained first; the same packet is in all three queues.
	for _, drained := range queues {
		sid := id("drain-" + drained.String())
		h.create(s, sid, base(ts, 4))
		for _, q := range queues {
			h.store(s, sid, q, same, pk("only-"+q.String()))
		}
		h.wantQueue(s, sid, drained, []*packet{same, pk("only-" + drained.String())}, "the queue drained first")
		for _, q := range queues {
			if q != drained {
				h.wantQueue(s, sid, q, []*packet{same, pk("only-" + q.String())}, "after draining queue "+drained.String())
			}
		}
	}
	// Storing into one queue adds nothing to the others.
	a := id("a")
	h.create(s, a, base(ts, 4))
	h.store(s, a, q12, pk("x"))
	h.wantQueue(s, a, q0, nil, "after storing into QoS12 only")
	h.wantQueue(s, a, qUA, nil, "after storing into QoS12 only")
	h.wantQueue(s, a, q12, []*packet{pk("x")}, "after storing into QoS12 only")
}

// --- P8: large packets ---

func p8Large(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	big1 := &packet{Data: pattern(h.s.large, 1), ExpireAt: ts}
	big2 := &packet{Data: pattern(h.s.large, 2)}
	h.noErr(s.PacketStoreQoS12(a, big1), "PacketStoreQoS12 of %d bytes", h.s.large)
	h.store(s, a, q12, pk("small"))
	h.noErr(s.PacketsStore(a, vlpersistence.PersistedPackets{UnAck: []*packet{pk("small"), big2}}), "PacketsStore of %d bytes", h.s.large)
	for _, c := range []struct {
		q    queue
		want []*packet
	}{{q12, []*packet{big1, pk("small")}}, {qUA, []*packet{pk("small"), big2}}} {
		var got []*packet
		// Compare inside the loader: a copy of every large packet is enough.
		h.noErr(c.q.forEach(s, a, nil, func(_ any, p *packet) (bool, error) {
			got = append(got, clonePacket(p))
			return true, nil
		}), "PacketsForEach%s", c.q)
		if d := diffPackets(got, c.want); d != "" {
			t.Errorf("queue %s: %s", c.q, d)
		}
	}
	if !bytes.Equal(big1.Data, pattern(h.s.large, 1)) {
		t.Errorf("the stored packet's buffer was changed")
	}
}
