// Package cache holds values in memory within a byte budget and evicts the least
// recently used ones when the budget is exceeded. It knows nothing of what it caches: the
// caller says how many bytes each value stands for.
//
// # Use
//
//	c, err := cache.New[uint64, []byte](cache.Config{MaxBytes: 64 << 20})
//	...
//	c.Add(seq, payload, int64(len(payload)))
//	if p, ok := c.Get(seq); ok { ... } // a hit; a miss means: read it from its object
//
// # Guarantees
//
// The sum of the sizes of the values held never exceeds MaxBytes: Add evicts first, and
// a value larger than MaxBytes on its own is not kept at all. Get, Add and Remove cost
// O(1) and do not allocate beyond the entry Add creates. Safe for concurrent use; one
// mutex guards the whole cache and is never held while calling out.
package cache

import (
	"errors"
	"fmt"
	"sync"
)

// DefaultMaxBytes is the budget of a zero Config.
const DefaultMaxBytes = 64 << 20

// Config configures New.
type Config struct {
	// MaxBytes bounds the sum of the sizes of the values held. Default 64 MiB.
	MaxBytes int64
}

// Validate names the first invalid field. Zero means the default.
func (c Config) Validate() error {
	if c.MaxBytes < 0 {
		return fmt.Errorf("cache: Config.MaxBytes %d is negative", c.MaxBytes)
	}
	return nil
}

// Stats are the counters of a cache.
type Stats struct {
	Hits, Misses int64 // Get calls that found, or did not find, their key
	Evictions    int64 // values dropped to make room (not those removed by Remove)
	Items        int   // values held now
	Bytes        int64 // sum of their sizes
}

// HitRatio is Hits/(Hits+Misses), or 0 before any Get.
func (s Stats) HitRatio() float64 {
	if s.Hits+s.Misses == 0 {
		return 0
	}
	return float64(s.Hits) / float64(s.Hits+s.Misses)
}

// LRU is a byte-bounded least-recently-used cache. Create it with New.
type LRU[K comparable, V any] struct {
	max int64

	mu sync.Mutex
	// Guarded by mu: items indexes the entries of the ring; root.next is the most
	// recently used entry, root.prev the least; bytes is the sum of their sizes.
	items map[K]*entry[K, V]
	root  entry[K, V]
	bytes int64
	stats Stats
}

type entry[K comparable, V any] struct {
	key        K
	value      V
	size       int64
	prev, next *entry[K, V]
}

// New returns an empty cache.
func New[K comparable, V any](cfg Config) (*LRU[K, V], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	c := &LRU[K, V]{max: cfg.MaxBytes, items: make(map[K]*entry[K, V])}
	c.root.prev, c.root.next = &c.root, &c.root
	return c, nil
}

// errNegativeSize is a caller's bug: refusing the value silently would hide it.
var errNegativeSize = errors.New("cache: negative size")

// Get returns the value of k and marks it most recently used.
func (c *LRU[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		c.stats.Misses++
		var zero V
		return zero, false
	}
	c.stats.Hits++
	c.unlink(e)
	c.pushFront(e)
	return e.value, true
}

// Contains reports whether k is held, without counting a hit or a miss or changing the
// order of eviction.
func (c *LRU[K, V]) Contains(k K) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[k]
	return ok
}

// Add holds v under k, replacing any value k had, as the most recently used value, and
// evicts least recently used values until the budget holds. size is what v stands for
// in bytes. A value larger than the whole budget is not held (and an older value of k is
// dropped, so that Get never returns a stale one). Add returns an error only for a
// negative size.
func (c *LRU[K, V]) Add(k K, v V, size int64) error {
	if size < 0 {
		return fmt.Errorf("%w: %d", errNegativeSize, size)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.items[k]; ok {
		c.drop(old)
	}
	if size > c.max {
		return nil
	}
	var e *entry[K, V]
	for c.bytes+size > c.max {
		victim := c.root.prev
		c.drop(victim)
		c.stats.Evictions++
		if e == nil {
			e = victim // a full cache adds without allocating: nothing else holds a dropped entry
		}
	}
	if e == nil {
		e = new(entry[K, V])
	}
	*e = entry[K, V]{key: k, value: v, size: size}
	c.items[k] = e
	c.bytes += size
	c.pushFront(e)
	return nil
}

// Remove drops the value of k, if any.
func (c *LRU[K, V]) Remove(k K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[k]; ok {
		c.drop(e)
	}
}

// Stats returns the counters.
func (c *LRU[K, V]) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Items, s.Bytes = len(c.items), c.bytes
	return s
}

// drop removes e from the ring and the index; mu held.
func (c *LRU[K, V]) drop(e *entry[K, V]) {
	c.unlink(e)
	delete(c.items, e.key)
	c.bytes -= e.size
}

func (c *LRU[K, V]) unlink(e *entry[K, V]) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *LRU[K, V]) pushFront(e *entry[K, V]) {
	e.prev, e.next = &c.root, c.root.next
	c.root.next.prev = e
	c.root.next = e
}
