package s3store

import (
	"context"
	"sync/atomic"
)

// Counting is a Store that counts the requests and bytes going to the Store it wraps.
// Tests use it to assert that a call made no request (a cache hit, a batched write),
// and benchmarks to report requests and bytes per 1,000 packets, which is what S3
// bills.
//
// A call counts as one request (a DeleteMany as one per MaxDeleteBatch distinct keys,
// rounded up, and none for no keys) when it passes the checks that need no request:
// the store is open, ctx has not ended, the arguments are valid. It counts whether or
// not the wrapped store then fails, because the request was made. The count is what a
// Minio store sends, retries aside; for Memory it is the number of calls.
type Counting struct {
	closer
	s Store

	puts, gets, lists, deletes, deleteManyRequests atomic.Int64
	bytesPut, bytesGot                             atomic.Int64
}

// CountingStats is a snapshot of a Counting store's counters.
type CountingStats struct {
	// Gets counts Get and GetRange calls alike: each is one GET request.
	Puts, Gets, Lists, Deletes int64
	// DeleteManyRequests counts ceil(distinct keys / MaxDeleteBatch) per DeleteMany.
	DeleteManyRequests int64
	// BytesPut is the size of every Put's data, sent whether the put succeeded or not.
	BytesPut int64
	// BytesGot is the size of every object a successful Get returned, and of every
	// range a successful GetRange returned.
	BytesGot int64
}

// Requests is the total number of requests.
func (s CountingStats) Requests() int64 {
	return s.Puts + s.Gets + s.Lists + s.Deletes + s.DeleteManyRequests
}

var _ Store = (*Counting)(nil)

// NewCounting returns s counted. Closing the Counting store does not close s, which
// belongs to whoever opened it.
func NewCounting(s Store) *Counting {
	return &Counting{s: s}
}

// Stats returns the counters. Each counter is read atomically, the set is not: take
// it when no call is in flight for an exact picture.
func (c *Counting) Stats() CountingStats {
	return CountingStats{
		Puts:               c.puts.Load(),
		Gets:               c.gets.Load(),
		Lists:              c.lists.Load(),
		Deletes:            c.deletes.Load(),
		DeleteManyRequests: c.deleteManyRequests.Load(),
		BytesPut:           c.bytesPut.Load(),
		BytesGot:           c.bytesGot.Load(),
	}
}

// Reset sets every counter to zero.
func (c *Counting) Reset() {
	for _, v := range []*atomic.Int64{&c.puts, &c.gets, &c.lists, &c.deletes, &c.deleteManyRequests, &c.bytesPut, &c.bytesGot} {
		v.Store(0)
	}
}

// Put implements Store.
func (c *Counting) Put(ctx context.Context, key string, data []byte, opts PutOptions) (ObjectInfo, error) {
	if _, err := c.admitPut(ctx, key, opts); err != nil {
		return ObjectInfo{}, err
	}
	c.puts.Add(1)
	c.bytesPut.Add(int64(len(data)))
	return c.s.Put(ctx, key, data, opts)
}

// Get implements Store.
func (c *Counting) Get(ctx context.Context, key string) ([]byte, ObjectInfo, error) {
	if err := c.admit(ctx, "get", key); err != nil {
		return nil, ObjectInfo{}, err
	}
	c.gets.Add(1)
	data, info, err := c.s.Get(ctx, key)
	if err == nil {
		c.bytesGot.Add(int64(len(data)))
	}
	return data, info, err
}

// GetRange implements Store. It counts as a Get.
func (c *Counting) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, ObjectInfo, error) {
	if err := c.admitRange(ctx, key, offset, length); err != nil {
		return nil, ObjectInfo{}, err
	}
	c.gets.Add(1)
	data, info, err := c.s.GetRange(ctx, key, offset, length)
	if err == nil {
		c.bytesGot.Add(int64(len(data)))
	}
	return data, info, err
}

// List implements Store.
func (c *Counting) List(ctx context.Context, prefix, startAfter string, limit int) (ListPage, error) {
	if err := c.admitList(ctx, prefix); err != nil {
		return ListPage{}, err
	}
	c.lists.Add(1)
	return c.s.List(ctx, prefix, startAfter, limit)
}

// Delete implements Store.
func (c *Counting) Delete(ctx context.Context, key string) error {
	if err := c.admit(ctx, "delete", key); err != nil {
		return err
	}
	c.deletes.Add(1)
	return c.s.Delete(ctx, key)
}

// DeleteMany implements Store.
func (c *Counting) DeleteMany(ctx context.Context, keys []string) error {
	unique, err := c.admitMany(ctx, keys)
	if err != nil {
		return err
	}
	c.deleteManyRequests.Add(int64((len(unique) + MaxDeleteBatch - 1) / MaxDeleteBatch))
	return c.s.DeleteMany(ctx, unique)
}

// Close implements Store. Calls made after it fail with ErrClosed and are not counted.
func (c *Counting) Close() error {
	c.close()
	return nil
}
