package batching

import (
	"fmt"
	"time"
)

// Config tunes a Batcher. The zero value is usable: every zero field means its default.
type Config struct {
	// BatchSize is the most items one batch holds. Default: 10000.
	BatchSize int

	// BatchBytes is the most bytes (the sum of the sizes passed to Add) one batch holds.
	// An item that would take the key's pending batch past it starts a new batch; an item
	// larger than BatchBytes is a batch on its own. Default: 8 MiB.
	BatchBytes int

	// FlushInterval bounds how long items wait to be cut into a batch: a key's pending
	// items are cut at most this long after the first of them was added, whether or not
	// the batch is full, or when the key's upload in progress at that moment ends (until
	// then the batch could not start uploading anyway). Default: 200ms.
	FlushInterval time.Duration

	// MaxPendingBytes bounds the bytes accepted by Add but not yet durable (pending,
	// waiting for an upload, being uploaded, or kept after a permanent failure). Add
	// blocks while accepting its item would go past it. An item larger than the bound is
	// accepted when nothing else is pending, so it cannot wait for ever. At least
	// BatchBytes. Default: 64 MiB.
	MaxPendingBytes int64

	// FailWhenFull makes Add fail at once, with an error wrapping ErrFull, when accepting
	// its item would take the pending bytes past MaxPendingBytes, instead of blocking
	// until there is room: for callers that must not stall while the destination is
	// down. Default: false (Add blocks).
	FailWhenFull bool

	// MaxConcurrentUploads is the most uploads in flight at once, over all keys. One key
	// never has more than one. Default: 8.
	MaxConcurrentUploads int

	// RetryBackoff is the wait before the first retry of a failed upload; each later
	// retry of the same batch waits twice as long, up to MaxRetryBackoff. Each wait is
	// drawn at random from its upper half (jitter). Default: 50ms.
	RetryBackoff time.Duration

	// MaxRetryBackoff caps the wait between two attempts. At least RetryBackoff.
	// Default: 5s.
	MaxRetryBackoff time.Duration

	// UploadTimeout bounds one upload attempt: it is the deadline of the context passed
	// to the UploadFunc. That context derives from the Batcher's own, never from a
	// caller's. It runs on real time even when Clock is set, because network clients
	// read the context's deadline. Default: 30s.
	UploadTimeout time.Duration

	// Retryable tells which upload errors are worth another attempt. An error for which
	// it returns false fails the batch permanently (see the package documentation,
	// "Durability and retries"). It is called from the upload goroutines, concurrently.
	// Default: nil, every error is retried.
	Retryable func(error) bool

	// Clock is the time source for FlushInterval and the retry backoff. Tests inject a
	// manual clock (package batchingtest) to be deterministic. Default: nil, real time.
	Clock Clock
}

// Defaults, applied by withDefaults.
const (
	DefaultBatchSize            = 10000
	DefaultBatchBytes           = 8 << 20
	DefaultFlushInterval        = 200 * time.Millisecond
	DefaultMaxPendingBytes      = 64 << 20
	DefaultMaxConcurrentUploads = 8
	DefaultRetryBackoff         = 50 * time.Millisecond
	DefaultMaxRetryBackoff      = 5 * time.Second
	DefaultUploadTimeout        = 30 * time.Second
)

// Validate reports the first invalid field of c, by name. Zero values are valid: they
// mean the default. Negative values are not, nor bounds that contradict each other once
// defaults are applied (RetryBackoff above MaxRetryBackoff, MaxPendingBytes below
// BatchBytes).
func (c Config) Validate() error {
	switch {
	case c.BatchSize < 0:
		return fmt.Errorf("batching: Config.BatchSize %d is negative", c.BatchSize)
	case c.BatchBytes < 0:
		return fmt.Errorf("batching: Config.BatchBytes %d is negative", c.BatchBytes)
	case c.FlushInterval < 0:
		return fmt.Errorf("batching: Config.FlushInterval %v is negative", c.FlushInterval)
	case c.MaxPendingBytes < 0:
		return fmt.Errorf("batching: Config.MaxPendingBytes %d is negative", c.MaxPendingBytes)
	case c.MaxConcurrentUploads < 0:
		return fmt.Errorf("batching: Config.MaxConcurrentUploads %d is negative", c.MaxConcurrentUploads)
	case c.RetryBackoff < 0:
		return fmt.Errorf("batching: Config.RetryBackoff %v is negative", c.RetryBackoff)
	case c.MaxRetryBackoff < 0:
		return fmt.Errorf("batching: Config.MaxRetryBackoff %v is negative", c.MaxRetryBackoff)
	case c.UploadTimeout < 0:
		return fmt.Errorf("batching: Config.UploadTimeout %v is negative", c.UploadTimeout)
	}
	d := c.withDefaults()
	switch {
	case d.RetryBackoff > d.MaxRetryBackoff:
		return fmt.Errorf("batching: Config.RetryBackoff %v is above MaxRetryBackoff %v", d.RetryBackoff, d.MaxRetryBackoff)
	case d.MaxPendingBytes < int64(d.BatchBytes):
		// A bound below one batch would stop batches from filling: Add would block on
		// every key's first few items and only FlushInterval would cut them.
		return fmt.Errorf("batching: Config.MaxPendingBytes %d is below BatchBytes %d", d.MaxPendingBytes, d.BatchBytes)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = DefaultBatchBytes
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.MaxPendingBytes == 0 {
		c.MaxPendingBytes = DefaultMaxPendingBytes
	}
	if c.MaxConcurrentUploads == 0 {
		c.MaxConcurrentUploads = DefaultMaxConcurrentUploads
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	if c.MaxRetryBackoff == 0 {
		c.MaxRetryBackoff = DefaultMaxRetryBackoff
	}
	if c.UploadTimeout == 0 {
		c.UploadTimeout = DefaultUploadTimeout
	}
	if c.Retryable == nil {
		c.Retryable = func(error) bool { return true }
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	return c
}

// Clock is a time source. The Batcher reads it for FlushInterval and the retry backoff.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that sends the time on its channel once d has passed.
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer a Batcher uses.
type Timer interface {
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it stopped it. After Stop
	// the channel receives nothing (the semantics of time.Timer since Go 1.23).
	Stop() bool
}

type realClock struct{}

func (realClock) Now() time.Time                 { return time.Now() }
func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (t realTimer) C() <-chan time.Time { return t.t.C }
func (t realTimer) Stop() bool          { return t.t.Stop() }
