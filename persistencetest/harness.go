package persistencetest

import (
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VolantMQ/vlapi/vlpersistence"
)

// harness is what a case gets: its testing.T and the instances it opens.
type harness struct {
	t *testing.T
	s *suite
}

// instance is one open backend instance and its handles.
type instance struct {
	iface vlpersistence.IFace
	ses   vlpersistence.Sessions
	ret   vlpersistence.Retained
	sys   vlpersistence.System

	// abandoned is set when the instance was crashed or broken by the case: its final
	// Shutdown may fail and is not checked.
	abandoned bool
}

// runCase runs one case body on the test goroutine. A panic becomes a failure of the case
// (after the deferred cleanups of the case, so its instances are still shut down), and a
// memory fault becomes a panic instead of killing the binary.
func (s *suite) runCase(t *testing.T, run caseFunc) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("panic (in the backend, unless the stack says otherwise): %v\n%s", r, debug.Stack())
		}
	}()
	run(t, &harness{t: t, s: s})
}

// open opens a new instance over new storage.
func (h *harness) open() *instance {
	h.t.Helper()
	iface := h.s.b.Open(h.t)
	if iface == nil {
		h.t.Fatal("Backend.Open returned nil")
	}
	return h.adopt(iface)
}

// reopen replaces in by a new instance over the same storage (Backend.Reopen).
func (h *harness) reopen(in *instance) *instance {
	h.t.Helper()
	iface := h.s.b.Reopen(h.t, in.iface)
	if iface == nil {
		h.t.Fatal("Backend.Reopen returned nil")
	}
	return h.adopt(iface)
}

// crash abandons in and opens what a crash of its process would leave (Backend.Crash).
func (h *harness) crash(in *instance) *instance {
	h.t.Helper()
	in.abandoned = true
	iface := h.s.b.Crash(h.t, in.iface)
	if iface == nil {
		h.t.Fatal("Backend.Crash returned nil")
	}
	return h.adopt(iface)
}

// adopt gets the handles of a freshly opened instance and arranges for its Shutdown when
// the case ends.
func (h *harness) adopt(iface vlpersistence.IFace) *instance {
	h.t.Helper()
	in := &instance{iface: iface}
	h.t.Cleanup(func() { h.shutdownAtEnd(in) })
	var err error
	if in.ses, err = iface.Sessions(); err != nil || in.ses == nil {
		h.t.Fatalf("Sessions() of an open instance: (%v, %v), want a handle (I1)", in.ses, err)
	}
	if in.ret, err = iface.Retained(); err != nil || in.ret == nil {
		h.t.Fatalf("Retained() of an open instance: (%v, %v), want a handle (I2)", in.ret, err)
	}
	if in.sys, err = iface.System(); err != nil || in.sys == nil {
		h.t.Fatalf("System() of an open instance: (%v, %v), want a handle (I3)", in.sys, err)
	}
	return in
}

func (h *harness) shutdownAtEnd(in *instance) {
	var err error
	if !h.guard("Shutdown at the end of the case", func() { err = in.iface.Shutdown() }) {
		return
	}
	if err != nil && !in.abandoned && !errors.Is(err, vlpersistence.ErrNotOpen) {
		h.t.Errorf("Shutdown at the end of the case: %v (I4)", err)
	}
}

// guard runs f in a new goroutine and waits for it at most the deadlock timeout. It
// reports false, after failing the case with the reason, if f panicked or did not return
// in time; the goroutine of a call that did not return stays blocked. f must not call
// t.FailNow (t.Fatal) nor, because it may outlive the case, any method of t: it records
// problems in a recorder, which the case reports after guard returned true.
func (h *harness) guard(what string, f func()) bool {
	h.t.Helper()
	return h.guardFor(h.s.timeout, what, f)
}

// guardFor is guard with the time limit d.
func (h *harness) guardFor(d time.Duration, what string, f func()) bool {
	h.t.Helper()
	done := make(chan string, 1)
	go func() {
		finished := false
		defer func() {
			switch r := recover(); {
			case finished:
				done <- ""
			case r != nil:
				done <- fmt.Sprintf("panicked: %v\n%s", r, debug.Stack())
			default:
				done <- "exited through runtime.Goexit (t.FailNow outside the test goroutine?)"
			}
		}()
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		f()
		finished = true
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case msg := <-done:
		if msg != "" {
			h.t.Errorf("%s %s", what, msg)
			return false
		}
		return true
	case <-timer.C:
		h.t.Errorf("%s did not return within %v: deadlock? (G4/G5: no lock may be held while a callback runs; the call is left blocked)", what, d)
		return false
	}
}

// must is guard that ends the case when f did not complete.
func (h *harness) must(what string, f func()) {
	h.t.Helper()
	if !h.guard(what, f) {
		h.t.FailNow()
	}
}

// safe wraps f for an errgroup: a panic (or a memory fault) in f becomes its error
// instead of killing the test binary.
func safe(what string, f func() error) func() error {
	return func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%s panicked: %v\n%s", what, r, debug.Stack())
			}
		}()
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		return f()
	}
}

// recorder collects failures found on goroutines that may outlive the case (callbacks run
// by the backend, guarded calls), to be reported from the test goroutine.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}

func (r *recorder) report(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs {
		t.Error(m)
	}
	r.msgs = nil
}

// --- Checks on the test goroutine ---

// noErr fails the case if err is not nil.
func (h *harness) noErr(err error, format string, args ...any) {
	h.t.Helper()
	if err != nil {
		h.t.Fatalf("%s: unexpected error %s", fmt.Sprintf(format, args...), fmtErr(err))
	}
}

// wantErr fails the case unless errors.Is(got, want) (nil want: got must be nil).
func (h *harness) wantErr(got, want error, format string, args ...any) {
	h.t.Helper()
	if msg := checkErr(got, want); msg != "" {
		h.t.Errorf("%s: %s", fmt.Sprintf(format, args...), msg)
	}
}

// checkErr describes how got differs from the outcome want (errors.Is; nil means nil).
func checkErr(got, want error) string {
	switch {
	case want == nil && got == nil:
		return ""
	case want == nil:
		return fmt.Sprintf("got %s, want nil", fmtErr(got))
	case errors.Is(got, want):
		return ""
	default:
		return fmt.Sprintf("got %s, want %v", fmtErr(got), want)
	}
}

// checkBare describes how got differs from the bare sentinel want (G1: ==).
func checkBare(got, want error) string {
	switch {
	case got == want:
		return ""
	case errors.Is(got, want):
		return fmt.Sprintf("got %s: a wrapped %q, want the bare sentinel (VolantMQ v0.3.2 compares with ==)", fmtErr(got), want)
	default:
		return fmt.Sprintf("got %s, want the bare sentinel %q", fmtErr(got), want)
	}
}

func fmtErr(err error) string {
	if err == nil {
		return "nil"
	}
	return fmt.Sprintf("%q (%T)", err.Error(), err)
}

// sentinels are every error value vlpersistence defines.
var sentinels = []error{
	vlpersistence.ErrInvalidArgs,
	vlpersistence.ErrUnknownProvider,
	vlpersistence.ErrInvalidConfig,
	vlpersistence.ErrAlreadyExists,
	vlpersistence.ErrNotInitialized,
	vlpersistence.ErrNotFound,
	vlpersistence.ErrNotOpen,
	vlpersistence.ErrBrokenEntry,
}

// sentinelIn returns the sentinel err is or wraps, or nil.
func sentinelIn(err error) error {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return s
		}
	}
	return nil
}

// list formats items one per line, for failure messages about many things.
func list(items []string) string {
	if len(items) == 0 {
		return " (none)"
	}
	return "\n\t" + strings.Join(items, "\n\t")
}
