// Package batchingtest helps test code that uses package batching: Clock is a manual
// time source to pass as batching.Config.Clock, so that tests of flush intervals and
// retry backoff run without sleeping and give the same result every time.
package batchingtest

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/s3persist/s3persist/batching"
)

// Clock is a batching.Clock whose time moves only when Advance is called. The zero
// value is not usable; call NewClock. It is safe for concurrent use.
//
// A test that needs a timer to fire first waits until the code under test has created
// it (WaitForTimer), then advances past it. Waiting first matters: a timer created after
// Advance counts from the new time.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	timers  []*timer      // pending: neither fired nor stopped
	changed chan struct{} // closed and replaced when a timer is created
}

var _ batching.Clock = (*Clock)(nil)

// NewClock returns a Clock that reads start until advanced.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start, changed: make(chan struct{})}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires when the clock has been advanced by d. A timer
// with d ≤ 0 fires at once.
func (c *Clock) NewTimer(d time.Duration) batching.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{c: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		return t
	}
	c.timers = append(c.timers, t)
	close(c.changed)
	c.changed = make(chan struct{})
	return t
}

// Advance moves the clock forward by d and fires, in order, every pending timer that is
// due. It does not wait for the code that receives from them.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	slices.SortStableFunc(c.timers, func(a, b *timer) int { return a.at.Compare(b.at) })
	n := 0
	for n < len(c.timers) && !c.timers[n].at.After(c.now) {
		c.timers[n].ch <- c.now // capacity 1, and a timer fires once
		n++
	}
	c.timers = slices.Delete(c.timers, 0, n)
}

// Pending returns how many timers are waiting to fire.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// WaitForTimer blocks until a pending timer is due within the next `within` of clock
// time, and returns how long until the earliest such timer fires (pass it to Advance).
// It returns ctx's error if ctx ends first.
func (c *Clock) WaitForTimer(ctx context.Context, within time.Duration) (time.Duration, error) {
	for {
		c.mu.Lock()
		best := time.Duration(-1)
		for _, t := range c.timers {
			if d := t.at.Sub(c.now); d <= within && (best < 0 || d < best) {
				best = d
			}
		}
		changed := c.changed
		c.mu.Unlock()
		if best >= 0 {
			return best, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

type timer struct {
	c  *Clock
	at time.Time
	ch chan time.Time
}

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	i := slices.Index(t.c.timers, t)
	if i < 0 {
		return false
	}
	t.c.timers = slices.Delete(t.c.timers, i, i+1)
	return true
}
