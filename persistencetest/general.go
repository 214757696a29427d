package persistencetest

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/VolantMQ/vlapi/vlpersistence"
)

// --- G1: API-level outcomes are the bare sentinels ---

// bareCase is one API-level outcome: the call, on a fresh instance, and its sentinel.
type bareCase struct {
	name string
	want error
	call func(h *harness, in *instance) error
}

var missing = id("missing")

func g1Cases() []node {
	v := vlpersistence.ErrNotFound
	inv := vlpersistence.ErrInvalidArgs
	delays := &vlpersistence.SessionDelays{Since: ts, ExpireIn: "60", Will: []byte("will")}
	state := &vlpersistence.SessionState{Subscriptions: []byte("subs"), Expire: delays}
	existing := func(h *harness, in *instance) []byte {
		sid := id("existing")
		h.create(in.ses, sid, base(ts, 4))
		return sid
	}
	withPackets := func(h *harness, in *instance) []byte {
		sid := existing(h, in)
		for _, q := range queues {
			h.store(in.ses, sid, q, pk(q.String()))
		}
		return sid
	}
	afterShutdown := func(h *harness, in *instance) {
		h.noErr(in.iface.Shutdown(), "Shutdown")
	}
	cases := []bareCase{
		{"Delete_of_a_missing_id", v, func(h *harness, in *instance) error { return in.ses.Delete(missing) }},
		{"PacketsDelete_of_a_missing_id", v, func(h *harness, in *instance) error { return in.ses.PacketsDelete(missing) }},
		{"PacketStoreQoS0_to_a_missing_id", v, func(h *harness, in *instance) error { return in.ses.PacketStoreQoS0(missing, pk("a")) }},
		{"PacketStoreQoS12_to_a_missing_id", v, func(h *harness, in *instance) error { return in.ses.PacketStoreQoS12(missing, pk("a")) }},
		{"PacketsStore_of_packets_to_a_missing_id", v, func(h *harness, in *instance) error {
			return in.ses.PacketsStore(missing, vlpersistence.PersistedPackets{QoS0: []*packet{pk("a")}})
		}},
		{"SubscriptionsDelete_of_a_missing_id", v, func(h *harness, in *instance) error { return in.ses.SubscriptionsDelete(missing) }},
		{"StateStore_to_a_missing_id", v, func(h *harness, in *instance) error { return in.ses.StateStore(missing, state) }},
		{"StateDelete_of_a_missing_id", v, func(h *harness, in *instance) error { return in.ses.StateDelete(missing) }},
		{"ExpiryStore_to_a_missing_id", v, func(h *harness, in *instance) error { return in.ses.ExpiryStore(missing, delays) }},
		{"ExpiryDelete_of_a_missing_id", v, func(h *harness, in *instance) error { return in.ses.ExpiryDelete(missing) }},
		{"PacketCountQoS0_of_a_missing_id", v, func(h *harness, in *instance) error { _, err := in.ses.PacketCountQoS0(missing); return err }},
		{"PacketCountQoS12_of_a_missing_id", v, func(h *harness, in *instance) error { _, err := in.ses.PacketCountQoS12(missing); return err }},
		{"PacketCountUnAck_of_a_missing_id", v, func(h *harness, in *instance) error { _, err := in.ses.PacketCountUnAck(missing); return err }},

		{"Create_with_an_empty_id", inv, func(h *harness, in *instance) error { return in.ses.Create(id(""), base(ts, 4)) }},
		{"SubscriptionsStore_with_an_empty_id", inv, func(h *harness, in *instance) error { return in.ses.SubscriptionsStore(id(""), []byte("subs")) }},
		{"PacketStoreQoS0_with_an_empty_id", inv, func(h *harness, in *instance) error { return in.ses.PacketStoreQoS0(id(""), pk("a")) }},
		{"PacketStoreQoS12_with_an_empty_id", inv, func(h *harness, in *instance) error { return in.ses.PacketStoreQoS12(id(""), pk("a")) }},
		{"PacketsStore_with_an_empty_id", inv, func(h *harness, in *instance) error {
			return in.ses.PacketsStore(id(""), vlpersistence.PersistedPackets{UnAck: []*packet{pk("a")}})
		}},
		{"ExpiryStore_with_an_empty_id", inv, func(h *harness, in *instance) error { return in.ses.ExpiryStore(id(""), delays) }},
		{"StateStore_with_an_empty_id", inv, func(h *harness, in *instance) error { return in.ses.StateStore(id(""), state) }},
		{"PacketStoreQoS0_with_a_nil_packet", inv, func(h *harness, in *instance) error { return in.ses.PacketStoreQoS0(existing(h, in), nil) }},
		{"PacketStoreQoS12_with_a_nil_packet", inv, func(h *harness, in *instance) error { return in.ses.PacketStoreQoS12(existing(h, in), nil) }},
		{"PacketStoreQoS0_with_empty_Data", inv, func(h *harness, in *instance) error {
			return in.ses.PacketStoreQoS0(existing(h, in), &packet{Data: []byte{}, ExpireAt: ts})
		}},
		{"PacketStoreQoS12_with_empty_Data", inv, func(h *harness, in *instance) error {
			return in.ses.PacketStoreQoS12(existing(h, in), &packet{ExpireAt: ts})
		}},
		{"LoadForEach_with_a_nil_loader", inv, func(h *harness, in *instance) error { existing(h, in); return in.ses.LoadForEach(nil, nil) }},
		{"PacketsForEachQoS0_with_a_nil_loader", inv, func(h *harness, in *instance) error { return in.ses.PacketsForEachQoS0(withPackets(h, in), nil, nil) }},
		{"PacketsForEachQoS12_with_a_nil_loader", inv, func(h *harness, in *instance) error { return in.ses.PacketsForEachQoS12(withPackets(h, in), nil, nil) }},
		{"PacketsForEachUnAck_with_a_nil_loader", inv, func(h *harness, in *instance) error { return in.ses.PacketsForEachUnAck(withPackets(h, in), nil, nil) }},
		{"StateStore_with_a_nil_state", inv, func(h *harness, in *instance) error { return in.ses.StateStore(existing(h, in), nil) }},
		{"ExpiryStore_with_nil_delays", inv, func(h *harness, in *instance) error { return in.ses.ExpiryStore(existing(h, in), nil) }},

		{"Create_of_an_existing_id", vlpersistence.ErrAlreadyExists, func(h *harness, in *instance) error { return in.ses.Create(existing(h, in), base(ts, 5)) }},

		{"Sessions_after_Shutdown", vlpersistence.ErrNotOpen, func(h *harness, in *instance) error {
			afterShutdown(h, in)
			_, err := in.iface.Sessions()
			return err
		}},
		{"Retained_after_Shutdown", vlpersistence.ErrNotOpen, func(h *harness, in *instance) error {
			afterShutdown(h, in)
			_, err := in.iface.Retained()
			return err
		}},
		{"System_after_Shutdown", vlpersistence.ErrNotOpen, func(h *harness, in *instance) error {
			afterShutdown(h, in)
			_, err := in.iface.System()
			return err
		}},
		{"a_second_Shutdown", vlpersistence.ErrNotOpen, func(h *harness, in *instance) error {
			afterShutdown(h, in)
			return in.iface.Shutdown()
		}},
		{"a_Sessions_handle_after_Shutdown", vlpersistence.ErrNotOpen, func(h *harness, in *instance) error {
			afterShutdown(h, in)
			return in.ses.Create(id("after-shutdown"), base(ts, 4))
		}},
		{"a_Retained_handle_after_Shutdown", vlpersistence.ErrNotOpen, func(h *harness, in *instance) error {
			afterShutdown(h, in)
			_, err := in.ret.Load()
			return err
		}},
		{"a_System_handle_after_Shutdown", vlpersistence.ErrNotOpen, func(h *harness, in *instance) error {
			afterShutdown(h, in)
			_, err := in.sys.GetInfo()
			return err
		}},
	}
	nodes := make([]node, len(cases))
	for i, c := range cases {
		nodes[i] = leaf(fmt.Sprintf("%s_returns_bare_%s", c.name, sentinelName(c.want)), func(t *testing.T, h *harness) {
			in := h.open()
			if msg := checkBare(c.call(h, in), c.want); msg != "" {
				t.Error(msg)
			}
		})
	}
	return nodes
}

func sentinelName(err error) string {
	switch err {
	case vlpersistence.ErrNotFound:
		return "ErrNotFound"
	case vlpersistence.ErrInvalidArgs:
		return "ErrInvalidArgs"
	case vlpersistence.ErrAlreadyExists:
		return "ErrAlreadyExists"
	case vlpersistence.ErrNotOpen:
		return "ErrNotOpen"
	}
	return "unknown"
}

// --- G2: storage failures are errors, never sentinels ---

// victim returns a session id with a base, subscriptions, an expiry and one packet in
// each queue, for one operation of G2.
func (h *harness) victim(in *instance, op string) []byte {
	h.t.Helper()
	sid := id("victim-" + op)
	h.create(in.ses, sid, base(ts, 4))
	h.noErr(in.ses.SubscriptionsStore(sid, []byte("subs")), "SubscriptionsStore(%q)", sid)
	h.noErr(in.ses.ExpiryStore(sid, &vlpersistence.SessionDelays{Since: ts, ExpireIn: "60", Will: []byte("will")}), "ExpiryStore(%q)", sid)
	for _, q := range queues {
		h.store(in.ses, sid, q, pk(op+"-"+q.String()))
	}
	return sid
}

func g2StorageFailuresAreNotSentinels(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	ops := []string{"Create", "PacketStoreQoS0", "PacketStoreQoS12", "PacketsStore", "SubscriptionsStore",
		"SubscriptionsDelete", "ExpiryStore", "ExpiryDelete", "StateStore", "StateDelete", "Delete",
		"PacketsDelete", "PacketsForEachQoS0", "PacketsForEachQoS12", "PacketsForEachUnAck"}
	victims := make(map[string][]byte)
	for _, op := range ops {
		victims[op] = h.victim(in, op)
	}
	h.noErr(in.ret.Store([]*packet{pk("retained")}), "Retained.Store")
	h.s.b.Break(t, in.iface)
	in.abandoned = true

	remove := func(any, *packet) (bool, error) { return true, nil }
	calls := []struct {
		op   string
		call func() error
	}{
		{"Create", func() error { return s.Create(id("new-after-break"), base(ts, 4)) }},
		{"PacketStoreQoS0", func() error { return s.PacketStoreQoS0(victims["PacketStoreQoS0"], pk("x")) }},
		{"PacketStoreQoS12", func() error { return s.PacketStoreQoS12(victims["PacketStoreQoS12"], pk("x")) }},
		{"PacketsStore", func() error { return s.PacketsStore(victims["PacketsStore"], q12.in(pk("x"))) }},
		{"SubscriptionsStore", func() error { return s.SubscriptionsStore(victims["SubscriptionsStore"], []byte("new")) }},
		{"SubscriptionsDelete", func() error { return s.SubscriptionsDelete(victims["SubscriptionsDelete"]) }},
		{"ExpiryStore", func() error {
			return s.ExpiryStore(victims["ExpiryStore"], &vlpersistence.SessionDelays{Since: ts, ExpireIn: "1"})
		}},
		{"ExpiryDelete", func() error { return s.ExpiryDelete(victims["ExpiryDelete"]) }},
		{"StateStore", func() error {
			return s.StateStore(victims["StateStore"], &vlpersistence.SessionState{Subscriptions: []byte("new")})
		}},
		{"StateDelete", func() error { return s.StateDelete(victims["StateDelete"]) }},
		{"Delete", func() error { return s.Delete(victims["Delete"]) }},
		{"PacketsDelete", func() error { return s.PacketsDelete(victims["PacketsDelete"]) }},
		{"PacketsForEachQoS0", func() error { return s.PacketsForEachQoS0(victims["PacketsForEachQoS0"], nil, remove) }},
		{"PacketsForEachQoS12", func() error { return s.PacketsForEachQoS12(victims["PacketsForEachQoS12"], nil, remove) }},
		{"PacketsForEachUnAck", func() error { return s.PacketsForEachUnAck(victims["PacketsForEachUnAck"], nil, remove) }},
		{"LoadForEach", func() error {
			return s.LoadForEach(sessionLoader(func(any, []byte, *vlpersistence.SessionState) error { return nil }), nil)
		}},
		{"Retained.Store", func() error { return in.ret.Store([]*packet{pk("other")}) }},
		{"Retained.Load", func() error { _, err := in.ret.Load(); return err }},
		{"Retained.Wipe", func() error { return in.ret.Wipe() }},
		{"Shutdown", func() error { return in.iface.Shutdown() }},
	}
	var reported, sentinel []string
	for _, c := range calls {
		err := c.call()
		if err == nil {
			continue
		}
		reported = append(reported, fmt.Sprintf("%s: %v", c.op, err))
		if s := sentinelIn(err); s != nil {
			sentinel = append(sentinel, fmt.Sprintf("%s returned %s, which is %q", c.op, fmtErr(err), s))
		}
	}
	if len(sentinel) > 0 {
		t.Errorf("storage failures reported as API-level outcomes (the broker reads ErrNotFound as success):%s", list(sentinel))
	}
	if len(reported) == 0 {
		t.Errorf("with broken storage, no write, read or Shutdown reported an error")
	}
}

func g2AFailedReadIsNeverMissing(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	sid := h.victim(in, "read")
	h.noErr(in.ret.Store([]*packet{pk("retained")}), "Retained.Store")
	h.s.b.Break(t, in.iface)
	in.abandoned = true

	// Counts first: a drain that works (a backend serving reads from memory) removes the
	// packet, after which 0 is the right count.
	for _, q := range queues {
		n, err := q.count(s, sid)
		switch {
		case err != nil && sentinelIn(err) != nil:
			t.Errorf("PacketCount%s: a storage failure was reported as %s", q, fmtErr(err))
		case err == nil && n != 1:
			t.Errorf("PacketCount%s(%q) = (%d, nil) with broken storage, want 1 or an error", q, sid, n)
		}
	}
	for _, q := range queues {
		got, err := drainE(s, sid, q)
		switch {
		case err != nil && sentinelIn(err) != nil:
			t.Errorf("queue %s: a storage failure was reported as %s", q, fmtErr(err))
		case err == nil && len(got) == 0:
			t.Errorf("queue %s of %q: nil and no packet with broken storage: the stored packet was silently reported missing", q, sid)
		}
	}
	got, err := loadE(s)
	switch {
	case err != nil && sentinelIn(err) != nil:
		t.Errorf("LoadForEach: a storage failure was reported as %s", fmtErr(err))
	case err == nil && got[string(sid)] == nil:
		t.Errorf("LoadForEach returned nil without visiting %q with broken storage", sid)
	}
	ret, err := in.ret.Load()
	switch {
	case err != nil && sentinelIn(err) != nil:
		t.Errorf("Retained.Load: a storage failure was reported as %s", fmtErr(err))
	case err == nil && len(ret) != 1:
		t.Errorf("Retained.Load returned %d packets and nil with broken storage, want the stored one or an error (R2)", len(ret))
	}
}

// --- G4: concurrency ---

func g4ConcurrentLifecycles(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	const n = 16
	var g errgroup.Group
	var stop atomic.Bool
	for i := 0; i < n; i++ {
		g.Go(safe(fmt.Sprintf("lifecycle %d", i), func() error {
			sid := id(fmt.Sprintf("client-%02d", i))
			if err := s.Create(sid, base(ts, 5)); err != nil {
				return fmt.Errorf("Create(%q): %v", sid, err)
			}
			if !s.Exists(sid) {
				return fmt.Errorf("Exists(%q) = false after Create", sid)
			}
			var want [3][]*packet
			for j := 0; j < 5; j++ {
				for _, q := range queues {
					p := pk(fmt.Sprintf("%s-%s-%d", sid, q, j))
					if err := q.store(s, sid, p); err != nil {
						return fmt.Errorf("storing in %s of %q: %v", q, sid, err)
					}
					want[q] = append(want[q], p)
				}
			}
			if err := s.SubscriptionsStore(sid, sid); err != nil {
				return fmt.Errorf("SubscriptionsStore(%q): %v", sid, err)
			}
			if err := s.ExpiryStore(sid, &vlpersistence.SessionDelays{Since: ts, ExpireIn: "30"}); err != nil {
				return fmt.Errorf("ExpiryStore(%q): %v", sid, err)
			}
			for _, q := range queues {
				got, err := drainE(s, sid, q)
				if err != nil {
					return err
				}
				if d := diffPackets(got, want[q]); d != "" {
					return fmt.Errorf("queue %s of %q: %s", q, sid, d)
				}
			}
			if i%2 == 1 {
				if err := s.Delete(sid); err != nil {
					return fmt.Errorf("Delete(%q): %v", sid, err)
				}
				if s.Exists(sid) {
					return fmt.Errorf("Exists(%q) = true after Delete", sid)
				}
			}
			return nil
		}))
	}
	var readers errgroup.Group
	readers.Go(safe("reader", func() error {
		for !stop.Load() {
			if c := s.Count(); c > n {
				return fmt.Errorf("Count() = %d with at most %d sessions", c, n)
			}
			err := s.LoadForEach(sessionLoader(func(_ any, sid []byte, _ *vlpersistence.SessionState) error {
				if !bytes.HasPrefix(sid, []byte("client-")) {
					return fmt.Errorf("LoadForEach visited an unknown id %q", sid)
				}
				return nil
			}), nil)
			if err != nil {
				return err
			}
		}
		return nil
	}))
	err := g.Wait()
	stop.Store(true)
	if rerr := readers.Wait(); rerr != nil {
		t.Error(rerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	h.wantCount(s, n/2, "after every odd session was deleted")
	var want [][]byte
	for i := 0; i < n; i += 2 {
		want = append(want, id(fmt.Sprintf("client-%02d", i)))
	}
	h.wantIDs(s, want, "after the concurrent lifecycles")
}

// otherIDServed checks that calls for id "b" complete while a callback for id "a" is
// running: the callback (started by run, which must call enter once it is inside the
// callback and then wait) waits for them, up to the deadlock timeout.
func otherIDServed(t *testing.T, h *harness, what string, run func(in *instance, inCallback func())) {
	in := h.open()
	s := in.ses
	a, b := id("a"), id("b")
	h.create(s, a, base(ts, 4))
	h.create(s, b, base(ts, 4))
	h.store(s, a, q0, pk("a0"))
	h.store(s, b, q12, pk("b0"))

	var rec recorder
	var current atomic.Value
	current.Store("nothing yet")
	otherDone := make(chan struct{})
	entered := make(chan struct{})
	var once sync.Once
	calls := func() {
		defer close(otherDone)
		step := func(name string, f func() error) bool {
			current.Store(name)
			if err := f(); err != nil {
				rec.errorf("%s while the %s of %q was running: %v", name, what, a, err)
				return false
			}
			return true
		}
		_ = step(`PacketStoreQoS0("b")`, func() error { return s.PacketStoreQoS0(b, pk("b1")) }) &&
			step(`Exists("b")`, func() error {
				if !s.Exists(b) {
					return errors.New("false")
				}
				return nil
			}) &&
			step(`PacketsForEachQoS12("b")`, func() error {
				got, err := drainE(s, b, q12)
				if err == nil && len(got) != 1 {
					err = fmt.Errorf("visited %s, want [b0]", describeAll(got))
				}
				return err
			}) &&
			step(`Create("c")`, func() error { return s.Create(id("c"), base(ts, 4)) }) &&
			step(`SubscriptionsStore("b")`, func() error { return s.SubscriptionsStore(b, []byte("subs")) }) &&
			step(`Count()`, func() error { s.Count(); return nil })
		current.Store("done")
	}
	inCallback := func() {
		once.Do(func() {
			close(entered)
			timer := time.NewTimer(h.s.timeout)
			defer timer.Stop()
			select {
			case <-otherDone:
			case <-timer.C:
				rec.errorf("calls for %q did not complete within %v while the %s of %q was running: blocked in %s (G4: calls for different ids never wait on each other; no process-wide lock is held while a callback runs)", b, h.s.timeout, what, a, current.Load())
			}
		})
	}
	// Twice the timeout: the callback itself waits up to one timeout for the other calls.
	ok := h.guardFor(2*h.s.timeout+time.Second, what+" with calls for another id running meanwhile", func() {
		go func() {
			<-entered
			calls()
		}()
		run(in, inCallback)
		select {
		case <-entered:
			<-otherDone
		default:
			rec.errorf("the %s of %q was never called", what, a)
		}
	})
	if !ok {
		return
	}
	rec.report(t)
}

func g4PacketLoader(t *testing.T, h *harness) {
	otherIDServed(t, h, "PacketLoader", func(in *instance, inCallback func()) {
		_ = in.ses.PacketsForEachQoS0(id("a"), nil, func(any, *packet) (bool, error) {
			inCallback()
			return false, errStop
		})
	})
}

func g4SessionLoader(t *testing.T, h *harness) {
	otherIDServed(t, h, "LoadSession", func(in *instance, inCallback func()) {
		_ = in.ses.LoadForEach(sessionLoader(func(any, []byte, *vlpersistence.SessionState) error {
			inCallback()
			return errStop
		}), nil)
	})
}

// --- G5: re-entrancy ---

// reentrant runs LoadForEach, calling inside(visited id) in LoadSession of the first
// session visited whose id is in targets, under the deadlock guard; it returns the ids in
// visit order.
func (h *harness) reentrantLoad(s vlpersistence.Sessions, targets [][]byte, rec *recorder, inside func(sid []byte)) []string {
	h.t.Helper()
	var mu sync.Mutex
	var order []string
	done := false
	var err error
	h.must("LoadForEach calling back into the backend from LoadSession", func() {
		err = s.LoadForEach(sessionLoader(func(_ any, sid []byte, st *vlpersistence.SessionState) error {
			mu.Lock()
			order = append(order, string(sid))
			act := !done && containsID(targets, sid)
			if act {
				done = true
			}
			mu.Unlock()
			if act {
				inside(bytes.Clone(sid))
			}
			return nil
		}), nil)
	})
	h.noErr(err, "LoadForEach")
	if !done {
		h.t.Fatalf("LoadForEach visited none of %q (visited %q)", targets, order)
	}
	return order
}

func containsID(ids [][]byte, sid []byte) bool {
	for _, x := range ids {
		if bytes.Equal(x, sid) {
			return true
		}
	}
	return false
}

// step records a failure unless err is want (errors.Is; nil means nil).
func step(rec *recorder, want error, err error, format string, args ...any) {
	if msg := checkErr(err, want); msg != "" {
		rec.errorf("%s: %s", fmt.Sprintf(format, args...), msg)
	}
}

func g5DeleteFromLoadSession(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a, b := id("a"), id("b")
	h.create(s, a, base(ts, 4))
	h.create(s, b, base(ts, 4))
	h.store(s, a, q12, pk("a"))
	var rec recorder
	h.reentrantLoad(s, [][]byte{a}, &rec, func(sid []byte) {
		step(&rec, nil, s.Delete(sid), "Delete(%q) from its own LoadSession", sid)
	})
	rec.report(t)
	h.wantExists(s, a, false, "after Delete from LoadSession")
	h.wantIDs(s, [][]byte{b}, "after Delete from LoadSession")
	h.wantCount(s, 1, "after Delete from LoadSession")
}

func g5SubscriptionsDeleteFromLoadSession(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	h.noErr(s.SubscriptionsStore(a, []byte("subs")), "SubscriptionsStore")
	var rec recorder
	h.reentrantLoad(s, [][]byte{a}, &rec, func(sid []byte) {
		step(&rec, nil, s.SubscriptionsDelete(sid), "SubscriptionsDelete(%q) from its own LoadSession", sid)
	})
	rec.report(t)
	h.wantExists(s, a, true, "after SubscriptionsDelete from LoadSession")
	if v := h.stateOf(s, a); len(v.Subscriptions) != 0 {
		t.Errorf("after SubscriptionsDelete from LoadSession: Subscriptions %s, want none", describeBytes(v.Subscriptions))
	}
}

func g5ReadsOfTheVisitedIDFromLoadSession(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	h.store(s, a, q0, pk("a"))
	var rec recorder
	h.reentrantLoad(s, [][]byte{a}, &rec, func(sid []byte) {
		if !s.Exists(sid) {
			rec.errorf("Exists(%q) from its own LoadSession = false", sid)
		}
		if c := s.Count(); c != 1 {
			rec.errorf("Count() from LoadSession = %d, want 1", c)
		}
		for _, q := range queues {
			_, err := q.count(s, sid)
			step(&rec, nil, err, "PacketCount%s(%q) from its own LoadSession", q, sid)
		}
	})
	rec.report(t)
}

func g5WritesOfTheVisitedIDFromLoadSession(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	h.store(s, a, q0, pk("before"))
	var rec recorder
	h.reentrantLoad(s, [][]byte{a}, &rec, func(sid []byte) {
		where := fmt.Sprintf("from the LoadSession of %q", sid)
		step(&rec, nil, s.PacketStoreQoS0(sid, pk("q0")), "PacketStoreQoS0 %s", where)
		got, err := drainE(s, sid, q0)
		step(&rec, nil, err, "draining QoS0 %s", where)
		if d := diffPackets(got, []*packet{pk("before"), pk("q0")}); err == nil && d != "" {
			rec.errorf("QoS0 drained %s: %s", where, d)
		}
		step(&rec, nil, s.PacketStoreQoS12(sid, pk("q12")), "PacketStoreQoS12 %s", where)
		step(&rec, nil, s.PacketsStore(sid, qUA.in(pk("ua"))), "PacketsStore %s", where)
		step(&rec, nil, s.SubscriptionsStore(sid, []byte("subs")), "SubscriptionsStore %s", where)
		step(&rec, nil, s.SubscriptionsDelete(sid), "SubscriptionsDelete %s", where)
		step(&rec, nil, s.ExpiryStore(sid, &vlpersistence.SessionDelays{Since: ts, ExpireIn: "1"}), "ExpiryStore %s", where)
		step(&rec, nil, s.ExpiryDelete(sid), "ExpiryDelete %s", where)
		step(&rec, nil, s.StateStore(sid, &vlpersistence.SessionState{Subscriptions: []byte("s2")}), "StateStore %s", where)
		step(&rec, nil, s.StateDelete(sid), "StateDelete %s", where)
		step(&rec, vlpersistence.ErrAlreadyExists, s.Create(sid, base(ts, 5)), "Create %s", where)
		step(&rec, nil, s.PacketsDelete(sid), "PacketsDelete %s", where)
		step(&rec, nil, s.Delete(sid), "Delete %s", where)
	})
	rec.report(t)
	h.wantExists(s, a, false, "after Delete from LoadSession")
	h.wantCount(s, 0, "after Delete from LoadSession")
}

func g5OtherIDsFromLoadSession(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	all := [][]byte{id("a"), id("b"), id("d")}
	for _, sid := range all {
		h.create(s, sid, base(ts, 4))
		h.store(s, sid, q12, pk(string(sid)))
	}
	var rec recorder
	var visiting, other, deleted []byte
	order := h.reentrantLoad(s, all, &rec, func(sid []byte) {
		visiting = sid
		// other and deleted are the two sessions that are not being visited.
		for _, x := range all {
			switch {
			case bytes.Equal(x, visiting):
			case other == nil:
				other = x
			default:
				deleted = x
			}
		}
		where := fmt.Sprintf("from the LoadSession of %q", visiting)
		step(&rec, nil, s.PacketStoreQoS0(other, pk("new")), "PacketStoreQoS0(%q) %s", other, where)
		got, err := drainE(s, other, q12)
		step(&rec, nil, err, "draining QoS12 of %q %s", other, where)
		if d := diffPackets(got, []*packet{pk(string(other))}); err == nil && d != "" {
			rec.errorf("QoS12 of %q drained %s: %s", other, where, d)
		}
		step(&rec, nil, s.SubscriptionsStore(other, []byte("subs")), "SubscriptionsStore(%q) %s", other, where)
		step(&rec, nil, s.Create(id("c"), base(ts, 4)), "Create(%q) %s", "c", where)
		step(&rec, nil, s.Delete(deleted), "Delete(%q) %s", deleted, where)
		if s.Exists(deleted) {
			rec.errorf("Exists(%q) = true after its Delete %s", deleted, where)
		}
	})
	rec.report(t)
	// S5: a session deleted during the iteration is not visited after its deletion.
	after := false
	for _, sid := range order {
		if after && sid == string(deleted) {
			t.Errorf("LoadForEach visited %q after it was deleted from the LoadSession of %q (S5: only sessions that still exist at their turn; order %q)", deleted, visiting, order)
		}
		if sid == string(visiting) {
			after = true
		}
	}
	h.wantQueue(s, other, q0, []*packet{pk("new")}, "after the calls from LoadSession")
	h.wantExists(s, deleted, false, "after Delete from LoadSession")
}

// reentrantForEach runs PacketsForEach on q of sid under the deadlock guard, calling
// inside on the first visit and deciding every visit with decide.
func (h *harness) reentrantForEach(s vlpersistence.Sessions, sid []byte, q queue, inside func(), decide func(p *packet) (bool, error)) ([]*packet, error) {
	h.t.Helper()
	var seen []*packet
	var err error
	h.must(fmt.Sprintf("PacketsForEach%s(%q) calling back into the backend from its PacketLoader", q, sid), func() {
		err = q.forEach(s, sid, nil, func(_ any, p *packet) (bool, error) {
			seen = append(seen, clonePacket(p))
			if len(seen) == 1 {
				inside()
			}
			return decide(p)
		})
	})
	return seen, err
}

func g5VisitedIDFromPacketLoader(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	h.store(s, a, q0, pk("p0"), pk("p1"))
	var rec recorder
	seen, err := h.reentrantForEach(s, a, q0, func() {
		where := fmt.Sprintf("from the PacketLoader of %q", a)
		if !s.Exists(a) {
			rec.errorf("Exists(%q) = false %s", a, where)
		}
		if c := s.Count(); c != 1 {
			rec.errorf("Count() = %d %s, want 1", c, where)
		}
		_, err := s.PacketCountQoS12(a)
		step(&rec, nil, err, "PacketCountQoS12 %s", where)
		step(&rec, nil, s.PacketStoreQoS12(a, pk("q12")), "PacketStoreQoS12 %s", where)
		step(&rec, nil, s.PacketsStore(a, qUA.in(pk("ua"))), "PacketsStore %s", where)
		got, err := drainE(s, a, q12)
		step(&rec, nil, err, "draining QoS12 %s", where)
		if d := diffPackets(got, []*packet{pk("q12")}); err == nil && d != "" {
			rec.errorf("QoS12 drained %s: %s", where, d)
		}
		step(&rec, nil, s.PacketStoreQoS0(a, pk("p2")), "PacketStoreQoS0 into the queue being visited %s", where)
		step(&rec, nil, s.SubscriptionsStore(a, []byte("subs")), "SubscriptionsStore %s", where)
		step(&rec, nil, s.ExpiryStore(a, &vlpersistence.SessionDelays{Since: ts, ExpireIn: "1"}), "ExpiryStore %s", where)
		step(&rec, vlpersistence.ErrAlreadyExists, s.Create(a, base(ts, 5)), "Create %s", where)
		_, lerr := loadE(s)
		step(&rec, nil, lerr, "LoadForEach %s", where)
	}, func(*packet) (bool, error) { return true, nil })
	h.noErr(err, "PacketsForEachQoS0")
	rec.report(t)
	// p2 was stored during the iteration: visited then, or still stored after p1 (P4).
	all := append(seen, h.drain(s, a, q0)...)
	if d := diffPackets(all, []*packet{pk("p0"), pk("p1"), pk("p2")}); d != "" {
		t.Errorf("QoS0 visited during and after the iteration: %s", d)
	}
	h.wantQueue(s, a, qUA, []*packet{pk("ua")}, "after PacketsStore from the PacketLoader")
}

func g5OtherIDFromPacketLoader(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a, b := id("a"), id("b")
	h.create(s, a, base(ts, 4))
	h.create(s, b, base(ts, 4))
	h.store(s, a, q12, pk("a0"), pk("a1"))
	h.store(s, b, q12, pk("b0"))
	var rec recorder
	seen, err := h.reentrantForEach(s, a, q12, func() {
		where := fmt.Sprintf("from the PacketLoader of %q", a)
		step(&rec, nil, s.PacketStoreQoS0(b, pk("b1")), "PacketStoreQoS0(%q) %s", b, where)
		got, err := drainE(s, b, q12)
		step(&rec, nil, err, "draining QoS12 of %q %s", b, where)
		if d := diffPackets(got, []*packet{pk("b0")}); err == nil && d != "" {
			rec.errorf("QoS12 of %q drained %s: %s", b, where, d)
		}
		step(&rec, nil, s.Create(id("c"), base(ts, 4)), "Create(%q) %s", "c", where)
		step(&rec, nil, s.SubscriptionsStore(b, []byte("subs")), "SubscriptionsStore(%q) %s", b, where)
		step(&rec, nil, s.PacketsDelete(b), "PacketsDelete(%q) %s", b, where)
		step(&rec, nil, s.Delete(b), "Delete(%q) %s", b, where)
		if s.Exists(b) {
			rec.errorf("Exists(%q) = true after Delete %s", b, where)
		}
	}, func(*packet) (bool, error) { return true, nil })
	h.noErr(err, "PacketsForEachQoS12")
	rec.report(t)
	if d := diffPackets(seen, []*packet{pk("a0"), pk("a1")}); d != "" {
		t.Errorf("QoS12 of %q visited: %s", a, d)
	}
	h.wantCount(s, 2, "after Create(c) and Delete(b) from the PacketLoader")
}

func g5DeleteFromPacketLoader(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	h.store(s, a, q0, pk("p0"), pk("p1"), pk("p2"))
	var rec recorder
	_, err := h.reentrantForEach(s, a, q0, func() {
		step(&rec, nil, s.Delete(a), "Delete(%q) from its own PacketLoader", a)
	}, func(*packet) (bool, error) { return true, nil })
	rec.report(t)
	// What the iteration returns once its session is gone is not specified; it must not
	// be a storage failure.
	if err != nil && !errors.Is(err, vlpersistence.ErrNotFound) {
		t.Errorf("PacketsForEachQoS0 whose session was deleted by its loader: %s, want nil or ErrNotFound", fmtErr(err))
	}
	h.wantExists(s, a, false, "after Delete from the PacketLoader")
	h.create(s, a, base(ts, 5))
	h.wantQueue(s, a, q0, nil, "after Delete from the PacketLoader and a new Create (S4: no resurrection)")
}

// --- G6: inputs are not mutated, results are fresh copies ---

func g6InputsAreNotMutated(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	aCopy := bytes.Clone(a)

	b := base(ts, 4)
	h.create(s, a, b)
	if *b != *base(ts, 4) {
		t.Errorf("Create changed its base to %+v", *b)
	}

	p := pk("single")
	h.noErr(s.PacketStoreQoS0(a, p), "PacketStoreQoS0")
	if !equalPacket(p, pk("single")) {
		t.Errorf("PacketStoreQoS0 changed its packet to %s", describe(p))
	}

	lists := vlpersistence.PersistedPackets{QoS0: pks("l0", 3), QoS12: pks("l12", 2), UnAck: pks("lua", 2)}
	ptrs := [][]*packet{append([]*packet(nil), lists.QoS0...), append([]*packet(nil), lists.QoS12...), append([]*packet(nil), lists.UnAck...)}
	h.noErr(s.PacketsStore(a, lists), "PacketsStore")
	for _, q := range queues {
		l := [][]*packet{lists.QoS0, lists.QoS12, lists.UnAck}[q]
		for i := range l {
			if l[i] != ptrs[q][i] {
				t.Errorf("PacketsStore replaced element %d of its %s list", i, q)
			}
		}
		want := [][]*packet{pks("l0", 3), pks("l12", 2), pks("lua", 2)}[q]
		if d := diffPackets(l, want); d != "" {
			t.Errorf("PacketsStore changed its %s list: %s", q, d)
		}
	}

	subs := []byte("subscriptions")
	h.noErr(s.SubscriptionsStore(a, subs), "SubscriptionsStore")
	if string(subs) != "subscriptions" {
		t.Errorf("SubscriptionsStore changed its data to %q", subs)
	}

	d := &vlpersistence.SessionDelays{Since: ts, ExpireIn: "30", Will: []byte("will")}
	h.noErr(s.ExpiryStore(a, d), "ExpiryStore")
	if !equalDelays(d, &vlpersistence.SessionDelays{Since: ts, ExpireIn: "30", Will: []byte("will")}) {
		t.Errorf("ExpiryStore changed its delays to %s", describeDelays(d))
	}

	// A state with empty fields: a backend merging into it (T1) must merge into its own copy.
	st := &vlpersistence.SessionState{}
	h.noErr(s.StateStore(a, st), "StateStore")
	if st.Subscriptions != nil || st.Expire != nil || st.Timestamp != "" || st.Version != 0 || st.Errors != nil {
		t.Errorf("StateStore changed its state to %+v", *st)
	}

	ret := pks("r", 3)
	retPtrs := append([]*packet(nil), ret...)
	h.noErr(in.ret.Store(ret), "Retained.Store")
	for i := range ret {
		if ret[i] != retPtrs[i] {
			t.Errorf("Retained.Store replaced element %d of its list", i)
		}
	}
	if d := diffPackets(ret, pks("r", 3)); d != "" {
		t.Errorf("Retained.Store changed its list: %s", d)
	}
	if !bytes.Equal(a, aCopy) {
		t.Errorf("the id was changed to %q", a)
	}
}

// scribble overwrites b in place.
func scribble(b []byte) {
	for i := range b {
		b[i] = 'X'
	}
}

func g6PacketBuffersAreCopied(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	single := pk("single")
	h.noErr(s.PacketStoreQoS0(a, single), "PacketStoreQoS0")
	scribble(single.Data)
	single.ExpireAt = "changed"
	single.Data = append(single.Data, "more"...)

	lists := vlpersistence.PersistedPackets{QoS12: pks("l12", 2), UnAck: pks("lua", 2)}
	h.noErr(s.PacketsStore(a, lists), "PacketsStore")
	for _, l := range [][]*packet{lists.QoS12, lists.UnAck} {
		for _, p := range l {
			scribble(p.Data)
		}
		l[0] = pk("replaced")
	}
	h.wantQueues(s, a, [3][]*packet{{pk("single")}, pks("l12", 2), pks("lua", 2)}, "after the caller overwrote the buffers it passed")
}

func g6SubscriptionBufferIsCopied(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	subs := []byte("subscriptions")
	h.noErr(s.SubscriptionsStore(a, subs), "SubscriptionsStore")
	scribble(subs)
	if got := h.stateOf(s, a).Subscriptions; string(got) != "subscriptions" {
		t.Errorf("after the caller overwrote the buffer it passed to SubscriptionsStore: Subscriptions %s, want %q", describeBytes(got), "subscriptions")
	}
}

func g6WillBufferIsCopied(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	d := &vlpersistence.SessionDelays{Since: ts, ExpireIn: "30", Will: []byte("will message")}
	h.noErr(s.ExpiryStore(a, d), "ExpiryStore")
	scribble(d.Will)
	d.Since = "changed"
	want := &vlpersistence.SessionDelays{Since: ts, ExpireIn: "30", Will: []byte("will message")}
	if got := h.stateOf(s, a).Expire; !equalDelays(got, want) {
		t.Errorf("after the caller overwrote the delays it passed to ExpiryStore: Expire %s, want %s", describeDelays(got), describeDelays(want))
	}
}

func g6RetainedBuffersAreCopied(t *testing.T, h *harness) {
	in := h.open()
	set := pks("r", 3)
	h.noErr(in.ret.Store(set), "Retained.Store")
	for _, p := range set {
		scribble(p.Data)
		p.ExpireAt = "changed"
	}
	set[1] = pk("replaced")
	got, err := in.ret.Load()
	h.noErr(err, "Retained.Load")
	if d := diffPackets(clonePackets(got), pks("r", 3)); d != "" {
		t.Errorf("after the caller overwrote the list it passed to Retained.Store: %s", d)
	}
}

func g6VisitedPacketsCanBeKept(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	first := pks("first", 4)
	h.store(s, a, q12, first...)
	var kept []*packet
	h.noErr(q12.forEach(s, a, nil, func(_ any, p *packet) (bool, error) {
		kept = append(kept, p)
		return true, nil
	}), "PacketsForEachQoS12")
	// Same sizes, so a backend reusing buffers would reuse them for these.
	second := pks("secnd", 4)
	h.store(s, a, q12, second...)
	got := h.drain(s, a, q12)
	if d := diffPackets(clonePackets(kept), first); d != "" {
		t.Errorf("packets kept from an earlier PacketsForEach changed after further stores and visits: %s", d)
	}
	if d := diffPackets(got, second); d != "" {
		t.Errorf("second drain: %s", d)
	}
	for _, p := range kept {
		scribble(p.Data)
		p.ExpireAt = "changed"
	}
	third := pks("third", 2)
	h.store(s, a, q12, third...)
	h.wantQueue(s, a, q12, third, "after the caller overwrote the packets it kept")
}

func g6LoadedExpiryCanBeKept(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	first := &vlpersistence.SessionDelays{Since: ts, ExpireIn: "10", Will: []byte("first will")}
	h.noErr(s.ExpiryStore(a, first), "ExpiryStore")
	var kept *vlpersistence.SessionState
	h.noErr(s.LoadForEach(sessionLoader(func(_ any, _ []byte, st *vlpersistence.SessionState) error {
		kept = st
		return nil
	}), nil), "LoadForEach")
	if kept == nil {
		t.Fatal("LoadSession got a nil state (S5)")
	}
	second := &vlpersistence.SessionDelays{Since: "2030-01-01T00:00:00Z", ExpireIn: "20", Will: []byte("other will")}
	h.noErr(s.ExpiryStore(a, second), "ExpiryStore")
	h.stateOf(s, a)
	if !equalDelays(kept.Expire, first) {
		t.Errorf("a state kept from an earlier LoadForEach changed after a later ExpiryStore and LoadForEach: Expire %s, want %s", describeDelays(kept.Expire), describeDelays(first))
	}
	if kept.Expire != nil {
		scribble(kept.Expire.Will)
		kept.Expire.Since = "changed"
	}
	kept.Timestamp = "changed"
	if got := h.stateOf(s, a).Expire; !equalDelays(got, second) {
		t.Errorf("after the caller modified a state it kept: Expire %s, want %s", describeDelays(got), describeDelays(second))
	}
}

func g6LoadedRetainedCanBeKept(t *testing.T, h *harness) {
	in := h.open()
	first := pks("first", 3)
	h.noErr(in.ret.Store(first), "Retained.Store")
	kept, err := in.ret.Load()
	h.noErr(err, "Retained.Load")
	second := pks("secnd", 3)
	h.noErr(in.ret.Store(second), "Retained.Store")
	_, err = in.ret.Load()
	h.noErr(err, "Retained.Load")
	if d := diffPackets(clonePackets(kept), first); d != "" {
		t.Errorf("a retained set kept from an earlier Load changed after a later Store and Load: %s", d)
	}
	for _, p := range kept {
		if p != nil {
			scribble(p.Data)
		}
	}
	got, err := in.ret.Load()
	h.noErr(err, "Retained.Load")
	if d := diffPackets(clonePackets(got), second); d != "" {
		t.Errorf("after the caller overwrote a set it kept: %s", d)
	}
}

// --- G7: byte-exact round trips ---

// odd are opaque values that break naive text handling.
var odd = []string{"", "\x00", "\xff\xfe\xfd", "line\nbreak\r\n", "  padded  ", "ünïcödé", string(allBytes())}

func g7Packets(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	var want [3][]*packet
	for _, q := range queues {
		for i, e := range odd {
			p := &packet{Data: allBytes(), ExpireAt: e}
			if i%2 == 1 {
				p.Data = []byte{0}
			}
			if i == len(odd)-1 {
				p.Data = []byte(odd[i])
			}
			h.store(s, a, q, p)
			want[q] = append(want[q], clonePacket(p))
		}
	}
	h.wantQueues(s, a, want, "odd Data and ExpireAt")
}

func g7Retained(t *testing.T, h *harness) {
	in := h.open()
	var set []*packet
	for i, e := range odd {
		set = append(set, &packet{Data: append([]byte{byte(i)}, allBytes()...), ExpireAt: e})
	}
	h.noErr(in.ret.Store(set), "Retained.Store")
	got, err := in.ret.Load()
	h.noErr(err, "Retained.Load")
	if d := diffPackets(clonePackets(got), set); d != "" {
		t.Errorf("retained set: %s", d)
	}
}

func g7Base(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	want := make(map[string]*view)
	for i, e := range odd {
		for _, v := range []byte{0, 3, 4, 5, 255} {
			sid := id(fmt.Sprintf("s-%d-%d", i, v))
			h.create(s, sid, base(e, v))
			want[string(sid)] = &view{Timestamp: e, Version: v}
		}
	}
	got := h.load(s)
	for sid, w := range want {
		g, ok := got[sid]
		if !ok {
			t.Errorf("LoadForEach did not visit %q", sid)
			continue
		}
		if d := g.diff(w); d != "" {
			t.Errorf("session %q: %s", sid, d)
		}
	}
}

func g7Subscriptions(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	want := make(map[string][]byte)
	for i, e := range odd[1:] { // "" is "no subscriptions" (B1)
		sid := id(fmt.Sprintf("s-%d", i))
		h.create(s, sid, base(ts, 4))
		h.noErr(s.SubscriptionsStore(sid, []byte(e)), "SubscriptionsStore(%q)", sid)
		want[string(sid)] = []byte(e)
	}
	got := h.load(s)
	for sid, w := range want {
		if g, ok := got[sid]; !ok {
			t.Errorf("LoadForEach did not visit %q", sid)
		} else if !bytes.Equal(g.Subscriptions, w) {
			t.Errorf("session %q: Subscriptions %s, want %s", sid, describeBytes(g.Subscriptions), describeBytes(w))
		}
	}
}

func g7Expiry(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	want := make(map[string]*vlpersistence.SessionDelays)
	for i, e := range odd {
		sid := id(fmt.Sprintf("s-%d", i))
		h.create(s, sid, base(ts, 4))
		// ExpireIn "" is E1's case; here it is never empty.
		d := &vlpersistence.SessionDelays{Since: e, ExpireIn: "x" + e, Will: []byte(odd[len(odd)-1-i])}
		h.noErr(s.ExpiryStore(sid, d), "ExpiryStore(%q)", sid)
		want[string(sid)] = cloneDelays(d)
	}
	got := h.load(s)
	for sid, w := range want {
		if g, ok := got[sid]; !ok {
			t.Errorf("LoadForEach did not visit %q", sid)
		} else if !equalDelays(g.Expire, w) {
			t.Errorf("session %q: Expire %s, want %s", sid, describeDelays(g.Expire), describeDelays(w))
		}
	}
}

// --- G8: ids are arbitrary bytes ---

// hostileIDs are ids that break naive key layouts, by case name.
var hostileIDs = []struct{ name, id string }{
	{"slash", "/"},
	{"dot", "."},
	{"dot_dot", ".."},
	{"space", " "},
	{"pipe", "|"},
	{"NUL", "\x00"},
	{"invalid_UTF-8", "\xff\xfe\xc0\x80"},
	{"count", "count"},
	{"retained", "retained"},
	{"sessions", "sessions"},
	{"system", "system"},
	{"path_traversal", "../../etc/passwd"},
	{"percent_encoded_slash", "a%2Fb"},
	{"trailing_slash", "client/"},
	{"backslash", `a\b`},
}

// longID returns a 65,535-byte id (the MQTT maximum) whose last byte is last.
func longID(last byte) []byte {
	b := pattern(65535, 7)
	b[len(b)-1] = last
	return b
}

// validID checks that sid works as a session id on its own.
func validID(t *testing.T, h *harness, sid []byte) {
	in := h.open()
	s := in.ses
	h.noErr(s.Create(sid, base(ts, 4)), "Create(%q)", short(string(sid)))
	h.wantExists(s, sid, true, "after Create")
	h.wantCount(s, 1, "after Create")
	h.wantIDs(s, [][]byte{sid}, "after Create")
	h.noErr(s.PacketStoreQoS0(sid, pk("q0")), "PacketStoreQoS0")
	h.noErr(s.PacketsStore(sid, qUA.in(pk("ua"))), "PacketsStore")
	h.wantQueue(s, sid, q0, []*packet{pk("q0")}, "stored under this id")
	h.wantQueue(s, sid, qUA, []*packet{pk("ua")}, "stored under this id")
	h.noErr(s.Delete(sid), "Delete")
	h.wantExists(s, sid, false, "after Delete")
	h.wantCount(s, 0, "after Delete")
}

func g8Cases() []node {
	var nodes []node
	for _, c := range hostileIDs {
		nodes = append(nodes, leaf("id_"+c.name+"_is_a_valid_id", func(t *testing.T, h *harness) { validID(t, h, id(c.id)) }))
	}
	return append(nodes,
		leaf("a_65535_byte_id_is_a_valid_id", func(t *testing.T, h *harness) { validID(t, h, longID('a')) }),
		leaf("two_65535_byte_ids_differing_only_in_the_last_byte_are_distinct", g8LongIDsAreDistinct),
		leaf("hostile_ids_coexist_as_distinct_sessions", g8Coexist),
		leaf("an_empty_id_is_rejected_by_writers", g8EmptyIDWriters),
		leaf("an_empty_id_is_missing_for_readers", g8EmptyIDReaders),
	)
}

// distinctIDs checks that ids are distinct sessions: each one's packet stays its own,
// and deleting one leaves the others.
func distinctIDs(t *testing.T, h *harness, ids [][]byte) {
	in := h.open()
	s := in.ses
	for i, sid := range ids {
		h.noErr(s.Create(sid, base(ts, byte(i))), "Create(%q)", short(string(sid)))
		h.noErr(s.PacketStoreQoS12(sid, pk(fmt.Sprint(i))), "PacketStoreQoS12(%q)", short(string(sid)))
	}
	h.wantCount(s, uint64(len(ids)), "after creating every id")
	got := h.load(s)
	if d := diffIDs(got, ids); d != "" {
		t.Errorf("LoadForEach %s", d)
	}
	for i, sid := range ids {
		if v, ok := got[string(sid)]; ok && !v.nilState && v.Version != byte(i) {
			t.Errorf("session %q has Version %d, which belongs to %q", short(string(sid)), v.Version, short(string(ids[v.Version%byte(len(ids))])))
		}
	}
	// Delete every other id; the rest keep their packets.
	for i, sid := range ids {
		if i%2 == 0 {
			h.noErr(s.Delete(sid), "Delete(%q)", short(string(sid)))
		}
	}
	for i, sid := range ids {
		h.wantExists(s, sid, i%2 == 1, "after deleting every other id")
		if i%2 == 1 {
			h.wantQueue(s, sid, q12, []*packet{pk(fmt.Sprint(i))}, "after deleting every other id")
		}
	}
	h.wantCount(s, uint64(len(ids)/2), "after deleting every other id")
}

func g8LongIDsAreDistinct(t *testing.T, h *harness) {
	distinctIDs(t, h, [][]byte{longID('a'), longID('b')})
}

func g8Coexist(t *testing.T, h *harness) {
	ids := [][]byte{id("a"), id("A"), id("p"), id("p/"), id("p/q"), id("p\x00"), id("p "), id("p."), id("p/.."), longID('x')}
	for _, c := range hostileIDs {
		ids = append(ids, id(c.id))
	}
	distinctIDs(t, h, ids)
}

func g8EmptyIDWriters(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	e := id("")
	d := &vlpersistence.SessionDelays{Since: ts, ExpireIn: "1"}
	writers := []struct {
		name string
		err  error
	}{
		{"Create", s.Create(e, base(ts, 4))},
		{"SubscriptionsStore", s.SubscriptionsStore(e, []byte("subs"))},
		{"PacketStoreQoS0", s.PacketStoreQoS0(e, pk("a"))},
		{"PacketStoreQoS12", s.PacketStoreQoS12(e, pk("a"))},
		{"PacketsStore", s.PacketsStore(e, q0.in(pk("a")))},
		{"ExpiryStore", s.ExpiryStore(e, d)},
		{"StateStore", s.StateStore(e, &vlpersistence.SessionState{Subscriptions: []byte("subs")})},
	}
	for _, w := range writers {
		if msg := checkErr(w.err, vlpersistence.ErrInvalidArgs); msg != "" {
			t.Errorf("%s with an empty id: %s", w.name, msg)
		}
	}
	// Deleting a session that cannot exist: ErrInvalidArgs (a writer given an empty id)
	// or ErrNotFound (a missing id) are both read from the contract.
	deleters := []struct {
		name string
		err  error
	}{
		{"Delete", s.Delete(e)},
		{"PacketsDelete", s.PacketsDelete(e)},
		{"SubscriptionsDelete", s.SubscriptionsDelete(e)},
		{"ExpiryDelete", s.ExpiryDelete(e)},
		{"StateDelete", s.StateDelete(e)},
	}
	for _, w := range deleters {
		if !errors.Is(w.err, vlpersistence.ErrInvalidArgs) && !errors.Is(w.err, vlpersistence.ErrNotFound) {
			t.Errorf("%s with an empty id: got %s, want ErrInvalidArgs or ErrNotFound", w.name, fmtErr(w.err))
		}
	}
	h.wantExists(s, e, false, "after the writes with an empty id")
	h.wantCount(s, 0, "after the writes with an empty id")
	h.wantIDs(s, nil, "after the writes with an empty id")
}

func g8EmptyIDReaders(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	e := id("")
	h.create(s, id("a"), base(ts, 4))
	h.store(s, id("a"), q0, pk("a"))
	h.wantExists(s, e, false, "an empty id")
	for _, q := range queues {
		called := false
		err := q.forEach(s, e, nil, func(any, *packet) (bool, error) { called = true; return true, nil })
		if err != nil || called {
			t.Errorf("PacketsForEach%s with an empty id: err %s, loader called %v; want nil and no call", q, fmtErr(err), called)
		}
		n, err := q.count(s, e)
		if n != 0 || !errors.Is(err, vlpersistence.ErrNotFound) {
			t.Errorf("PacketCount%s with an empty id: (%d, %s), want (0, ErrNotFound)", q, n, fmtErr(err))
		}
	}
}

// --- G9: after Shutdown ---

func g9Getters(t *testing.T, h *harness) {
	in := h.open()
	h.noErr(in.iface.Shutdown(), "Shutdown")
	if x, err := in.iface.Sessions(); x != nil || err != vlpersistence.ErrNotOpen {
		t.Errorf("Sessions() after Shutdown = (%v, %s), want (nil, ErrNotOpen)", x, fmtErr(err))
	}
	if x, err := in.iface.Retained(); x != nil || err != vlpersistence.ErrNotOpen {
		t.Errorf("Retained() after Shutdown = (%v, %s), want (nil, ErrNotOpen)", x, fmtErr(err))
	}
	if x, err := in.iface.System(); x != nil || err != vlpersistence.ErrNotOpen {
		t.Errorf("System() after Shutdown = (%v, %s), want (nil, ErrNotOpen)", x, fmtErr(err))
	}
}

func g9SessionsHandle(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	h.store(s, a, q0, pk("a"))
	h.noErr(in.iface.Shutdown(), "Shutdown")

	loader := func(any, *packet) (bool, error) { return true, nil }
	var bad []string
	check := func(name string, err error) {
		if err != vlpersistence.ErrNotOpen {
			bad = append(bad, fmt.Sprintf("%s: %s", name, fmtErr(err)))
		}
	}
	if s.Exists(a) {
		bad = append(bad, "Exists: true")
	}
	if c := s.Count(); c != 0 {
		bad = append(bad, fmt.Sprintf("Count: %d", c))
	}
	check("Create", s.Create(id("b"), base(ts, 4)))
	check("Delete", s.Delete(a))
	check("PacketStoreQoS0", s.PacketStoreQoS0(a, pk("x")))
	check("PacketStoreQoS12", s.PacketStoreQoS12(a, pk("x")))
	check("PacketsStore", s.PacketsStore(a, q0.in(pk("x"))))
	check("PacketsDelete", s.PacketsDelete(a))
	check("PacketsForEachQoS0", s.PacketsForEachQoS0(a, nil, loader))
	check("PacketsForEachQoS12", s.PacketsForEachQoS12(a, nil, loader))
	check("PacketsForEachUnAck", s.PacketsForEachUnAck(a, nil, loader))
	for _, q := range queues {
		n, err := q.count(s, a)
		check(fmt.Sprintf("PacketCount%s (count %d)", q, n), err)
	}
	check("SubscriptionsStore", s.SubscriptionsStore(a, []byte("x")))
	check("SubscriptionsDelete", s.SubscriptionsDelete(a))
	check("ExpiryStore", s.ExpiryStore(a, &vlpersistence.SessionDelays{Since: ts, ExpireIn: "1"}))
	check("ExpiryDelete", s.ExpiryDelete(a))
	check("StateStore", s.StateStore(a, &vlpersistence.SessionState{Subscriptions: []byte("x")}))
	check("StateDelete", s.StateDelete(a))
	check("LoadForEach", s.LoadForEach(sessionLoader(func(any, []byte, *vlpersistence.SessionState) error { return nil }), nil))
	if len(bad) > 0 {
		t.Errorf("Sessions handle after Shutdown, want ErrNotOpen (Count 0, Exists false):%s", list(bad))
	}
}

func g9RetainedHandle(t *testing.T, h *harness) {
	in := h.open()
	h.noErr(in.ret.Store(pks("r", 2)), "Retained.Store")
	h.noErr(in.iface.Shutdown(), "Shutdown")
	got, err := in.ret.Load()
	if got != nil || err != vlpersistence.ErrNotOpen {
		t.Errorf("Retained.Load after Shutdown = (%d packets, %s), want (nil, ErrNotOpen)", len(got), fmtErr(err))
	}
	if err := in.ret.Store(pks("x", 1)); err != vlpersistence.ErrNotOpen {
		t.Errorf("Retained.Store after Shutdown: %s, want ErrNotOpen", fmtErr(err))
	}
	if err := in.ret.Wipe(); err != vlpersistence.ErrNotOpen {
		t.Errorf("Retained.Wipe after Shutdown: %s, want ErrNotOpen", fmtErr(err))
	}
}

func g9SystemHandle(t *testing.T, h *harness) {
	in := h.open()
	h.noErr(in.iface.Shutdown(), "Shutdown")
	if info, err := in.sys.GetInfo(); info != nil || err != vlpersistence.ErrNotOpen {
		t.Errorf("GetInfo after Shutdown = (%+v, %s), want (nil, ErrNotOpen)", info, fmtErr(err))
	}
}

func g9SecondShutdown(t *testing.T, h *harness) {
	in := h.open()
	h.noErr(in.iface.Shutdown(), "Shutdown")
	if err := in.iface.Shutdown(); err != vlpersistence.ErrNotOpen {
		t.Errorf("second Shutdown: %s, want ErrNotOpen", fmtErr(err))
	}
}

// --- I1..I4: IFace ---

func iHandle(name string, get func(vlpersistence.IFace) (any, error)) caseFunc {
	return func(t *testing.T, h *harness) {
		in := h.open()
		h.create(in.ses, id("a"), base(ts, 4))
		for i := 0; i < 3; i++ {
			x, err := get(in.iface)
			if err != nil || x == nil {
				t.Errorf("%s() call %d on an open instance = (%v, %s), want a handle and nil", name, i+1, x, fmtErr(err))
			}
		}
	}
}

func i4ShutdownReturnsNil(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	for _, q := range queues {
		h.store(s, a, q, pk(q.String()))
	}
	h.noErr(s.SubscriptionsStore(a, []byte("subs")), "SubscriptionsStore")
	h.noErr(in.ret.Store(pks("r", 2)), "Retained.Store")
	if err := in.iface.Shutdown(); err != nil {
		t.Errorf("Shutdown after writes: %s, want nil", fmtErr(err))
	}
}

func i4WritesSurviveReopen(t *testing.T, h *harness) {
	in := h.open()
	s := in.ses
	a := id("a")
	h.create(s, a, base(ts, 4))
	want := [3][]*packet{pks("q0", 2), pks("q12", 3), pks("ua", 1)}
	for _, q := range queues {
		h.store(s, a, q, want[q]...)
	}
	h.noErr(in.ret.Store(pks("r", 2)), "Retained.Store")
	in = h.reopen(in)
	h.wantIDs(in.ses, [][]byte{a}, "after Reopen")
	h.wantQueues(in.ses, a, want, "after Reopen")
	got, err := in.ret.Load()
	h.noErr(err, "Retained.Load after Reopen")
	if d := diffPackets(clonePackets(got), pks("r", 2)); d != "" {
		t.Errorf("retained set after Reopen: %s", d)
	}
}
