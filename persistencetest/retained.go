package persistencetest

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/VolantMQ/vlapi/vlpersistence"
)

// wantRetained fails the case unless Retained.Load returns want.
func (h *harness) wantRetained(r vlpersistence.Retained, want []*packet, context string) {
	h.t.Helper()
	got, err := r.Load()
	h.noErr(err, "%s: Retained.Load", context)
	if d := diffPackets(clonePackets(got), want); d != "" {
		h.t.Errorf("%s: retained set: %s", context, d)
	}
}

// --- R1: Store ---

func r1Replaces(t *testing.T, h *harness) {
	in := h.open()
	h.noErr(in.ret.Store(pks("first", 5)), "Retained.Store")
	h.wantRetained(in.ret, pks("first", 5), "after Store")
	h.noErr(in.ret.Store(pks("second", 2)), "Retained.Store")
	h.wantRetained(in.ret, pks("second", 2), "after a second, smaller Store")
}

func r1NilElements(t *testing.T, h *harness) {
	in := h.open()
	h.noErr(in.ret.Store([]*packet{nil, pk("a"), nil, pk("b"), nil}), "Retained.Store with nil elements")
	h.wantRetained(in.ret, []*packet{pk("a"), pk("b")}, "after Store with nil elements")
}

func r1OrderAndDuplicates(t *testing.T, h *harness) {
	in := h.open()
	set := []*packet{pk("z"), pk("a"), pk("m"), pk("a"), pk("z"), pk("a")}
	h.noErr(in.ret.Store(set), "Retained.Store")
	h.wantRetained(in.ret, set, "after Store of an unsorted set with duplicates")
}

func r1EmptyList(t *testing.T, h *harness) {
	in := h.open()
	for _, empty := range [][]*packet{nil, {}} {
		h.noErr(in.ret.Store(pks("r", 3)), "Retained.Store")
		h.noErr(in.ret.Store(empty), "Retained.Store(%#v)", empty)
		h.wantRetained(in.ret, nil, fmt.Sprintf("after Store(%#v)", empty))
	}
}

func r1Atomic(t *testing.T, h *harness) {
	in := h.open()
	setA, setB := pks("A", 20), pks("B", 7)
	h.noErr(in.ret.Store(setA), "Retained.Store")
	var g errgroup.Group
	done := make(chan struct{})
	g.Go(safe("writer", func() error {
		defer close(done)
		for i := 0; i < 50; i++ {
			set := setA
			if i%2 == 0 {
				set = setB
			}
			if err := in.ret.Store(set); err != nil {
				return fmt.Errorf("Retained.Store: %v", err)
			}
		}
		return nil
	}))
	for r := 0; r < 3; r++ {
		g.Go(safe(fmt.Sprint("reader ", r), func() error {
			for loads := 0; ; loads++ {
				select {
				case <-done:
					if loads > 0 {
						return nil
					}
				default:
				}
				got, err := in.ret.Load()
				if err != nil {
					return fmt.Errorf("Retained.Load: %v", err)
				}
				got = clonePackets(got)
				if diffPackets(got, setA) != "" && diffPackets(got, setB) != "" {
					return fmt.Errorf("Retained.Load during Stores returned %s, which is neither the old nor the new set", describeAll(got))
				}
			}
		}))
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	h.wantRetained(in.ret, setA, "after the last Store")
}

// --- R2: Load ---

func r2Empty(t *testing.T, h *harness) {
	in := h.open()
	got, err := in.ret.Load()
	if err != nil || len(got) != 0 {
		t.Errorf("Retained.Load of a new store: (%s, %s), want (empty, nil)", describeAll(got), fmtErr(err))
	}
}

func r2LastSet(t *testing.T, h *harness) {
	in := h.open()
	for i := 0; i < 4; i++ {
		h.noErr(in.ret.Store(pks(fmt.Sprint("set", i), 3+i)), "Retained.Store")
	}
	h.wantRetained(in.ret, pks("set3", 6), "after four Stores")
	h.wantRetained(in.ret, pks("set3", 6), "a second Load")
}

func r2FreshCopies(t *testing.T, h *harness) {
	in := h.open()
	h.noErr(in.ret.Store(pks("r", 3)), "Retained.Store")
	got, err := in.ret.Load()
	h.noErr(err, "Retained.Load")
	for i, p := range got {
		if p == nil {
			t.Fatalf("Retained.Load returned a nil element at %d", i)
		}
		scribble(p.Data)
		p.ExpireAt = "changed"
	}
	if len(got) > 0 {
		got[0] = pk("replaced")
	}
	h.wantRetained(in.ret, pks("r", 3), "after the caller overwrote a loaded set")
}

// --- R3: Wipe ---

func r3Wipe(t *testing.T, h *harness) {
	in := h.open()
	h.noErr(in.ret.Store(pks("r", 3)), "Retained.Store")
	h.noErr(in.ret.Wipe(), "Retained.Wipe")
	h.wantRetained(in.ret, nil, "after Wipe")
}

func r3Idempotent(t *testing.T, h *harness) {
	in := h.open()
	h.wantErr(in.ret.Wipe(), nil, "Wipe of a new store")
	h.noErr(in.ret.Store(pks("r", 3)), "Retained.Store")
	h.wantErr(in.ret.Wipe(), nil, "Wipe")
	h.wantErr(in.ret.Wipe(), nil, "a second Wipe")
	h.wantRetained(in.ret, nil, "after two Wipes")
}

func r3StoreAfterWipe(t *testing.T, h *harness) {
	in := h.open()
	h.noErr(in.ret.Store(pks("r", 3)), "Retained.Store")
	h.noErr(in.ret.Wipe(), "Retained.Wipe")
	h.noErr(in.ret.Store(pks("s", 2)), "Retained.Store after Wipe")
	h.wantRetained(in.ret, pks("s", 2), "after Store following Wipe")
}

// --- Y1: GetInfo ---

func getInfo(h *harness, in *instance) vlpersistence.SystemState {
	h.t.Helper()
	info, err := in.sys.GetInfo()
	h.noErr(err, "GetInfo")
	if info == nil {
		h.t.Fatal("GetInfo returned (nil, nil)")
	}
	return *info
}

func y1Version(t *testing.T, h *harness) {
	if info := getInfo(h, h.open()); info.Version == "" {
		t.Errorf("GetInfo().Version is empty, want the layout version")
	}
}

func y1CreatedAt(t *testing.T, h *harness) {
	info := getInfo(h, h.open())
	if _, err := time.Parse(time.RFC3339, info.CreatedAt); err != nil {
		t.Errorf("GetInfo().CreatedAt = %q, not an RFC3339 time: %v", info.CreatedAt, err)
	}
}

func y1StableOnOneInstance(t *testing.T, h *harness) {
	in := h.open()
	first := getInfo(h, in)
	h.create(in.ses, id("a"), base(ts, 4))
	h.noErr(in.ret.Store(pks("r", 1)), "Retained.Store")
	if again := getInfo(h, in); again != first {
		t.Errorf("GetInfo changed from %+v to %+v after writes", first, again)
	}
}

func y1StableAcrossReopen(t *testing.T, h *harness) {
	in := h.open()
	first := getInfo(h, in)
	h.create(in.ses, id("a"), base(ts, 4))
	in = h.reopen(in)
	if again := getInfo(h, in); again != first {
		t.Errorf("GetInfo changed from %+v to %+v across Reopen", first, again)
	}
}
