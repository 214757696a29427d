// Package logtest holds a slog.Handler that records what is logged, for tests that check
// what an instance said (no Error at recovery, one rate-limited line per outage).
package logtest

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
)

// Recorder is a slog.Handler that keeps every record at or above Min. Attributes added
// with WithAttrs and groups are not kept (the code under test logs none). Safe for
// concurrent use.
type Recorder struct {
	// Min is the lowest level kept. Default: slog.LevelInfo.
	Min slog.Level

	mu      sync.Mutex
	records []slog.Record // guarded by mu
}

// Enabled implements slog.Handler.
func (h *Recorder) Enabled(_ context.Context, lvl slog.Level) bool { return lvl >= h.Min }

// Handle implements slog.Handler.
func (h *Recorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}

// WithAttrs implements slog.Handler; the attributes are dropped.
func (h *Recorder) WithAttrs([]slog.Attr) slog.Handler { return h }

// WithGroup implements slog.Handler; the group is dropped.
func (h *Recorder) WithGroup(string) slog.Handler { return h }

// Records returns the records kept at level lvl or above, in the order logged.
func (h *Recorder) Records(lvl slog.Level) []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []slog.Record
	for _, r := range h.records {
		if r.Level >= lvl {
			out = append(out, r)
		}
	}
	return out
}

// ErrorsLogged returns nil if nothing was logged at level Error or above, and otherwise
// an error that quotes each such line with its attributes.
func (h *Recorder) ErrorsLogged() error {
	var lines []string
	for _, r := range h.Records(slog.LevelError) {
		var b strings.Builder
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
		lines = append(lines, b.String())
	}
	if len(lines) > 0 {
		return fmt.Errorf("errors logged: %q", lines)
	}
	return nil
}

// Attrs returns the attributes of r by key, resolved.
func Attrs(r slog.Record) map[string]slog.Value {
	m := map[string]slog.Value{}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.Resolve()
		return true
	})
	return m
}
