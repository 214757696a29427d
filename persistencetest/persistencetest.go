// Package persistencetest is the conformance suite for vlpersistence.IFace backends: the
// executable form of the VolantMQ persistence contract (docs/volantmq-contract.md in the
// shared docs; rule ids G1..Y1). Every backend runs the same suite: s3persist on the
// in-memory store and on MinIO, and the VolantMQ reference plugins (mem, bbolt), which skip
// the cases where they are known to fall short, each with the reason.
//
// # Running it against a backend
//
// A backend's test calls Run with a Backend that knows how to open instances over fresh
// storage, and, when the storage outlives an instance, how to reopen it:
//
//	func TestConformance(t *testing.T) {
//		persistencetest.Run(t, persistencetest.Backend{
//			Open: func(t testing.TB) vlpersistence.IFace {
//				p, err := mybackend.Open(mybackend.Config{Dir: t.TempDir()})
//				if err != nil {
//					t.Fatal(err)
//				}
//				return p
//			},
//			Reopen: func(t testing.TB, old vlpersistence.IFace) vlpersistence.IFace {
//				dir := old.(*mybackend.Store).Dir()
//				if err := old.Shutdown(); err != nil {
//					t.Fatal(err)
//				}
//				p, err := mybackend.Open(mybackend.Config{Dir: dir})
//				if err != nil {
//					t.Fatal(err)
//				}
//				return p
//			},
//			Skip: map[string]string{
//				"P8/large_Data_round_trips_byte_exact": "objects over 5 MiB are rejected (issue #12)",
//			},
//		})
//	}
//
// Run it with the race detector: several cases exist to make races visible.
//
//	go test -race -run TestConformance ./...
//
// # Cases
//
// Each top-level test is named after a rule of the contract (G1, G2, ..., R3, Y1) and holds
// cases whose names are sentences ("S4/no_resurrection_after_Delete_then_Create"). Two more
// groups exist: Broker holds the scenarios of section 1 of the contract (how VolantMQ
// really calls the API), and Restart holds what must survive Reopen. CaseNames lists every
// name. Every case opens its own instance (or instances) and uses nothing but the
// vlpersistence API, so it runs on any backend.
//
// A case that runs a callback which may call back into the backend (G4, G5, Broker start-up)
// does so in a goroutine with a time limit (Backend.DeadlockTimeout): a deadlocking backend
// fails that case instead of hanging the run. A panic in the backend fails the case that
// caused it; the suite also turns memory faults into panics (debug.SetPanicOnFault), so a
// backend that hands out slices of read-only mapped memory fails a case rather than
// killing the test binary.
//
// # Skips
//
// Backend.Skip maps case names to the reason the backend is known to fail them; a name may
// also be a group ("G5" skips all of G5). Run fails if a key names no case, so a skip list
// cannot silently rot when cases are renamed. Cases that need a Backend hook which is nil
// (Reopen, Crash, Break) skip themselves, saying which hook is missing.
//
// # What the suite cannot check
//
// It cannot see requests, so "without a request" (P2, section 1) and "cheap" (P8) are left
// to benchmarks. It cannot corrupt stored metadata through the API, so the Errors field of
// S5 and the corrupt-session part of S3 are only checked for readable sessions. It never
// asserts on wall time; the only clock it uses is the deadlock limit.
package persistencetest

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"
)

// Backend tells the suite how to open instances of the backend under test.
type Backend struct {
	// Open returns a new instance over new, empty storage, for one test. The suite calls
	// Shutdown on it when the test ends (an error wrapping ErrNotOpen is fine there);
	// Open registers any other cleanup with t.Cleanup.
	Open func(t testing.TB) vlpersistence.IFace

	// Reopen shuts old down (returning an error fails the test) and opens a new instance
	// over the same storage, sharing nothing in memory with old: a broker replaced by a
	// new process. Nil means the backend keeps nothing across instances; the restart
	// cases are then skipped.
	Reopen func(t testing.TB, old vlpersistence.IFace) vlpersistence.IFace

	// Crash opens a new instance over the storage of old as a crash of the process
	// running old would leave it: old is neither shut down nor flushed, and the suite
	// does not use it again except for the Shutdown at the end of the test, whose result
	// is ignored. Set it only for a durability mode in which a nil return promises that
	// the effect survives a crash (G3). Nil skips G3.
	Crash func(t testing.TB, old vlpersistence.IFace) vlpersistence.IFace

	// Break makes every later storage request of inst fail, as an unreachable or broken
	// store would (for example by switching a fault-injecting wrapper of the object store
	// to fail every call). The instance is not used after the G2 case ends, except for its
	// Shutdown, whose result is ignored. Nil skips G2.
	Break func(t testing.TB, inst vlpersistence.IFace)

	// Skip maps a case's name, as printed by go test below the suite's root (for example
	// "S4/no_resurrection_after_Delete_then_Create"), or the name of a group of cases
	// ("G5"), to why this backend is known to fail it. Run fails if a key names no case
	// (see CaseNames).
	Skip map[string]string

	// Scale multiplies the size of the large restart case (1,000 sessions and 10,000
	// packets at 1). The default, used when Scale is 0, is 1.
	Scale float64

	// LargePacket is the Data size, in bytes, of the P8 case. The contract asks for up to
	// 268,435,455 bytes (the MQTT maximum), but the suite holds several copies of the
	// packet and compares them byte by byte, which under -race takes a gigabyte of memory
	// and minutes; 8 MiB already crosses every buffering threshold the backends we know
	// have (bbolt's inline and overflow pages, S3 multipart part sizes). Set it to
	// 268435455 to check the full size. The default, used when LargePacket is 0, is 8 MiB.
	LargePacket int

	// DeadlockTimeout is how long a call that may deadlock (a callback calling back into
	// the backend, or the Shutdown at the end of a case) may take before the case fails
	// with "deadlock?". The goroutine of such a call is left blocked. The default, used
	// when DeadlockTimeout is 0, is 10 s.
	DeadlockTimeout time.Duration
}

// Defaults of the Backend fields whose zero value means "default".
const (
	defaultScale           = 1
	defaultLargePacket     = 8 << 20
	defaultDeadlockTimeout = 10 * time.Second
)

// Run runs every case of the suite against b, as subtests of t.
func Run(t *testing.T, b Backend) {
	if b.Open == nil {
		t.Fatal("persistencetest: Backend.Open is nil")
	}
	roots := suiteTree()
	known := make(map[string]bool)
	walk(roots, "", func(name string, _ node) { known[name] = true })
	walk(roots, "", func(name string, n node) {
		if !validName(n.name) {
			t.Errorf("persistencetest: case name %q would be rewritten by go test; use [A-Za-z0-9_-] only", name)
		}
	})
	var unknown []string
	for name := range b.Skip {
		if !known[name] {
			unknown = append(unknown, name)
		}
	}
	sort.Strings(unknown)
	for _, name := range unknown {
		t.Errorf("persistencetest: Backend.Skip[%q] names no case of the suite (see persistencetest.CaseNames)", name)
	}

	s := &suite{
		b:       b,
		scale:   b.Scale,
		large:   b.LargePacket,
		timeout: b.DeadlockTimeout,
	}
	if s.scale == 0 {
		s.scale = defaultScale
	}
	if s.large == 0 {
		s.large = defaultLargePacket
	}
	if s.timeout == 0 {
		s.timeout = defaultDeadlockTimeout
	}
	for _, n := range roots {
		s.run(t, n, "")
	}
}

// CaseNames returns the name of every group and case of the suite, as Backend.Skip and
// go test -run spell them below the suite's root ("G5", "G5/Delete_of_the_visited_id_from_LoadSession"),
// groups before their cases.
func CaseNames() []string {
	var names []string
	walk(suiteTree(), "", func(name string, _ node) { names = append(names, name) })
	return names
}

// node is a group of cases (kids) or a case (run).
type node struct {
	name  string
	needs hook
	run   caseFunc
	kids  []node
}

// caseFunc is the body of one case.
type caseFunc func(t *testing.T, h *harness)

// hook names an optional Backend function a case needs.
type hook int

const (
	needsNothing hook = iota
	needsReopen
	needsCrash
	needsBreak
)

func group(name string, kids ...node) node { return node{name: name, kids: kids} }

func leaf(name string, run caseFunc) node { return node{name: name, run: run} }

// needing returns n marked as needing hook h.
func needing(h hook, n node) node {
	n.needs = h
	return n
}

func walk(nodes []node, parent string, f func(name string, n node)) {
	for _, n := range nodes {
		name := n.name
		if parent != "" {
			name = parent + "/" + n.name
		}
		f(name, n)
		walk(n.kids, name, f)
	}
}

// suite is one run of the suite against one Backend, with the defaults applied.
type suite struct {
	b       Backend
	scale   float64
	large   int
	timeout time.Duration
}

func (s *suite) run(t *testing.T, n node, parent string) {
	name := n.name
	if parent != "" {
		name = parent + "/" + n.name
	}
	t.Run(n.name, func(t *testing.T) {
		if reason, ok := s.b.Skip[name]; ok {
			t.Skip(reason)
		}
		switch {
		case n.needs == needsReopen && s.b.Reopen == nil:
			t.Skip("Backend.Reopen is nil: the backend keeps nothing across instances")
		case n.needs == needsCrash && s.b.Crash == nil:
			t.Skip("Backend.Crash is nil: no durability mode promising that a nil return survives a crash")
		case n.needs == needsBreak && s.b.Break == nil:
			t.Skip("Backend.Break is nil: storage failures cannot be injected")
		}
		if n.run != nil {
			s.runCase(t, n.run)
			return
		}
		for _, k := range n.kids {
			s.run(t, k, name)
		}
	})
}

// scaled returns n multiplied by the Scale of the run, at least 1.
func (s *suite) scaled(n int) int {
	m := int(float64(n) * s.scale)
	if m < 1 {
		m = 1
	}
	return m
}

// validName reports whether name survives go test's rewriting of subtest names unchanged,
// so that Skip keys and -run patterns can be copied from its output.
func validName(name string) bool {
	return name != "" && strings.IndexFunc(name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-')
	}) < 0
}
