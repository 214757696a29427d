package cache_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/s3persist/s3persist/cache"
)

func newLRU(t *testing.T, max int64) *cache.LRU[string, string] {
	t.Helper()
	c, err := cache.New[string, string](cache.Config{MaxBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestGetReturnsWhatAddHeld(t *testing.T) {
	c := newLRU(t, 100)
	if err := c.Add("a", "A", 10); err != nil {
		t.Fatal(err)
	}
	if v, ok := c.Get("a"); !ok || v != "A" {
		t.Fatalf("Get(a) = %q, %v", v, ok)
	}
	if _, ok := c.Get("b"); ok {
		t.Fatal("Get(b) found a value never added")
	}
	if s := c.Stats(); s.Hits != 1 || s.Misses != 1 || s.Items != 1 || s.Bytes != 10 || s.HitRatio() != 0.5 {
		t.Fatalf("stats %+v", s)
	}
}

func TestTheLeastRecentlyUsedValueIsEvictedFirst(t *testing.T) {
	c := newLRU(t, 30)
	for _, k := range []string{"a", "b", "c"} {
		c.Add(k, k, 10)
	}
	c.Get("a") // b is now the least recently used
	c.Add("d", "d", 10)
	if c.Contains("b") || !c.Contains("a") || !c.Contains("c") || !c.Contains("d") {
		t.Fatalf("after evicting one value: a=%v b=%v c=%v d=%v, want b gone", c.Contains("a"), c.Contains("b"), c.Contains("c"), c.Contains("d"))
	}
	if s := c.Stats(); s.Evictions != 1 || s.Bytes != 30 {
		t.Fatalf("stats %+v", s)
	}
}

func TestReplacingAValueCountsItsNewSize(t *testing.T) {
	c := newLRU(t, 30)
	c.Add("a", "1", 10)
	c.Add("a", "2", 25)
	if v, _ := c.Get("a"); v != "2" {
		t.Fatalf("Get(a) = %q after a replace", v)
	}
	if s := c.Stats(); s.Items != 1 || s.Bytes != 25 || s.Evictions != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestAValueLargerThanTheBudgetIsNotHeldAndDropsTheOldOne(t *testing.T) {
	c := newLRU(t, 30)
	c.Add("a", "small", 5)
	c.Add("b", "kept", 5)
	c.Add("a", "huge", 31)
	if c.Contains("a") {
		t.Fatal("a value larger than the budget is held, or the stale one survived")
	}
	if !c.Contains("b") {
		t.Fatal("an oversize value evicted others")
	}
}

func TestRemoveAndNegativeSize(t *testing.T) {
	c := newLRU(t, 30)
	c.Add("a", "a", 10)
	c.Remove("a")
	c.Remove("missing")
	if s := c.Stats(); s.Items != 0 || s.Bytes != 0 || s.Evictions != 0 {
		t.Fatalf("stats after Remove %+v", s)
	}
	if err := c.Add("a", "a", -1); err == nil {
		t.Fatal("a negative size was accepted")
	}
}

func TestConfigValidateAndDefault(t *testing.T) {
	if _, err := cache.New[int, int](cache.Config{MaxBytes: -1}); err == nil {
		t.Fatal("negative MaxBytes accepted")
	}
	c, err := cache.New[int, int](cache.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c.Add(1, 1, cache.DefaultMaxBytes)
	if !c.Contains(1) {
		t.Fatal("the default budget is not DefaultMaxBytes")
	}
}

// Under concurrent use the budget holds at every moment a reader looks.
func TestTheBudgetHoldsUnderConcurrentUse(t *testing.T) {
	const max = 1000
	c := newLRU(t, max)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range 5000 {
				k := fmt.Sprint(r.IntN(200))
				switch i % 3 {
				case 0:
					c.Add(k, k, int64(r.IntN(120)))
				case 1:
					c.Get(k)
				default:
					c.Remove(k)
				}
				if s := c.Stats(); s.Bytes > max || s.Bytes < 0 {
					t.Errorf("bytes %d outside [0, %d]", s.Bytes, max)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkGetHit(b *testing.B) {
	c, _ := cache.New[uint64, []byte](cache.Config{MaxBytes: 1 << 30})
	for i := range uint64(100000) {
		c.Add(i, make([]byte, 8), 200)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c.Get(uint64(i % 100000))
	}
}

func BenchmarkAddEvicting(b *testing.B) {
	c, _ := cache.New[uint64, []byte](cache.Config{MaxBytes: 200 * 10000})
	v := make([]byte, 8)
	for i := 0; b.Loop(); i++ {
		c.Add(uint64(i), v, 200)
	}
}

func ExampleLRU() {
	c, _ := cache.New[uint64, string](cache.Config{MaxBytes: 10})
	c.Add(1, "first", 5)
	c.Add(2, "second", 5)
	c.Add(3, "third", 5) // evicts 1, the least recently used
	_, ok := c.Get(1)
	fmt.Println(ok, c.Stats().Items)
	// Output: false 2
}
