package s3store

import (
	"context"
	"errors"
	"sync"
)

// ErrInjected is the error a Faulty store returns while it fails requests. It is no
// other sentinel of this package: to its callers it looks like a network failure.
var ErrInjected = errors.New("s3store: injected fault")

// Faulty is a Store that passes every call to the Store it wraps until it is told to
// fail, and then fails every request with ErrInjected (wrapped with the operation and
// key, as a real failure would be) without passing it on. Tests use it to check what
// callers do when storage is unreachable; while healthy it is a transparent wrapper
// that passes the conformance suite.
type Faulty struct {
	closer
	s Store

	mu sync.Mutex
	// failing is set while every request fails. Guarded by mu.
	failing bool
}

var _ Store = (*Faulty)(nil)

// NewFaulty returns s behind a switch that can make every request fail. Closing the
// Faulty store does not close s.
func NewFaulty(s Store) *Faulty { return &Faulty{s: s} }

// SetFailing makes every later request fail (true) or pass (false).
func (f *Faulty) SetFailing(failing bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing = failing
}

func (f *Faulty) isFailing() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failing
}

// Put implements Store.
func (f *Faulty) Put(ctx context.Context, key string, data []byte, opts PutOptions) (ObjectInfo, error) {
	if _, err := f.admitPut(ctx, key, opts); err != nil {
		return ObjectInfo{}, err
	}
	if f.isFailing() {
		return ObjectInfo{}, opError("put", key, ErrInjected)
	}
	return f.s.Put(ctx, key, data, opts)
}

// Get implements Store.
func (f *Faulty) Get(ctx context.Context, key string) ([]byte, ObjectInfo, error) {
	if err := f.admit(ctx, "get", key); err != nil {
		return nil, ObjectInfo{}, err
	}
	if f.isFailing() {
		return nil, ObjectInfo{}, opError("get", key, ErrInjected)
	}
	return f.s.Get(ctx, key)
}

// List implements Store.
func (f *Faulty) List(ctx context.Context, prefix, startAfter string, limit int) (ListPage, error) {
	if err := f.admitList(ctx, prefix); err != nil {
		return ListPage{}, err
	}
	if f.isFailing() {
		return ListPage{}, opError("list", prefix, ErrInjected)
	}
	return f.s.List(ctx, prefix, startAfter, limit)
}

// Delete implements Store.
func (f *Faulty) Delete(ctx context.Context, key string) error {
	if err := f.admit(ctx, "delete", key); err != nil {
		return err
	}
	if f.isFailing() {
		return opError("delete", key, ErrInjected)
	}
	return f.s.Delete(ctx, key)
}

// DeleteMany implements Store.
func (f *Faulty) DeleteMany(ctx context.Context, keys []string) error {
	unique, err := f.admitMany(ctx, keys)
	if err != nil {
		return err
	}
	if len(unique) > 0 && f.isFailing() {
		return &DeleteManyError{Remaining: unique, Total: len(unique), Err: ErrInjected}
	}
	return f.s.DeleteMany(ctx, unique)
}

// Close implements Store. Calls made after it fail with ErrClosed.
func (f *Faulty) Close() error {
	f.close()
	return nil
}

// Unwrap returns the wrapped store.
func (f *Faulty) Unwrap() Store { return f.s }
