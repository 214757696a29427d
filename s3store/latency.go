package s3store

import (
	"context"
	"net/http"
	"time"
)

// LatencyTransport is an http.RoundTripper that holds every request for Delay before
// passing it to Base (http.DefaultTransport when nil), as a distant or slow object store
// would: set it as MinioConfig.Transport to measure the whole client path (signing,
// retries, error mapping) at a given latency. A request whose context ends during the
// wait fails with the context's error and is not sent.
type LatencyTransport struct {
	Base  http.RoundTripper
	Delay time.Duration
}

// RoundTrip implements http.RoundTripper.
func (t *LatencyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.Delay > 0 {
		timer := time.NewTimer(t.Delay)
		select {
		case <-timer.C:
		case <-r.Context().Done():
			timer.Stop()
			if r.Body != nil {
				_ = r.Body.Close()
			}
			return nil, r.Context().Err()
		}
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r)
}

// Delayed is a Store that holds every call for a fixed latency before passing it to the
// Store it wraps: the in-memory store made to answer like a remote one, for benchmarks
// and tests of code above the Store interface. Closing it does not close the wrapped
// store.
type Delayed struct {
	closer
	s     Store
	delay time.Duration
}

var _ Store = (*Delayed)(nil)

// NewDelayed returns s behind a latency of d per call.
func NewDelayed(s Store, d time.Duration) *Delayed { return &Delayed{s: s, delay: d} }

func (d *Delayed) wait(ctx context.Context) error {
	if d.delay <= 0 {
		return nil
	}
	t := time.NewTimer(d.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Put implements Store.
func (d *Delayed) Put(ctx context.Context, key string, data []byte, opts PutOptions) (ObjectInfo, error) {
	if _, err := d.admitPut(ctx, key, opts); err != nil {
		return ObjectInfo{}, err
	}
	if err := d.wait(ctx); err != nil {
		return ObjectInfo{}, opError("put", key, err)
	}
	return d.s.Put(ctx, key, data, opts)
}

// Get implements Store.
func (d *Delayed) Get(ctx context.Context, key string) ([]byte, ObjectInfo, error) {
	if err := d.admit(ctx, "get", key); err != nil {
		return nil, ObjectInfo{}, err
	}
	if err := d.wait(ctx); err != nil {
		return nil, ObjectInfo{}, opError("get", key, err)
	}
	return d.s.Get(ctx, key)
}

// GetRange implements Store, with the delay of a Get.
func (d *Delayed) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, ObjectInfo, error) {
	if err := d.admitRange(ctx, key, offset, length); err != nil {
		return nil, ObjectInfo{}, err
	}
	if err := d.wait(ctx); err != nil {
		return nil, ObjectInfo{}, opError(opGetRange, key, err)
	}
	return d.s.GetRange(ctx, key, offset, length)
}

// List implements Store.
func (d *Delayed) List(ctx context.Context, prefix, startAfter string, limit int) (ListPage, error) {
	if err := d.admitList(ctx, prefix); err != nil {
		return ListPage{}, err
	}
	if err := d.wait(ctx); err != nil {
		return ListPage{}, opError("list", prefix, err)
	}
	return d.s.List(ctx, prefix, startAfter, limit)
}

// Delete implements Store.
func (d *Delayed) Delete(ctx context.Context, key string) error {
	if err := d.admit(ctx, "delete", key); err != nil {
		return err
	}
	if err := d.wait(ctx); err != nil {
		return opError("delete", key, err)
	}
	return d.s.Delete(ctx, key)
}

// DeleteMany implements Store.
func (d *Delayed) DeleteMany(ctx context.Context, keys []string) error {
	unique, err := d.admitMany(ctx, keys)
	if err != nil {
		return err
	}
	if len(unique) > 0 {
		if err := d.wait(ctx); err != nil {
			return manyError(len(unique), err)
		}
	}
	return d.s.DeleteMany(ctx, unique)
}

// Close implements Store. Calls made after it fail with ErrClosed.
func (d *Delayed) Close() error {
	d.close()
	return nil
}
