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

	// gate is held shared by every call for as long as it runs in the wrapped store, and
	// exclusively by SetFailing, so that SetFailing returns only once no call that passed
	// the switch before it is still running: a test that "crashes" an instance by cutting
	// its storage knows that nothing of it lands afterwards. failing is guarded by gate.
	gate    sync.RWMutex
	failing bool
}

var _ Store = (*Faulty)(nil)

// NewFaulty returns s behind a switch that can make every request fail. Closing the
// Faulty store does not close s.
func NewFaulty(s Store) *Faulty { return &Faulty{s: s} }

// SetFailing makes every later request fail (true) or pass (false). It returns once
// every call that started before it has finished in the wrapped store.
func (f *Faulty) SetFailing(failing bool) {
	f.gate.Lock()
	defer f.gate.Unlock()
	f.failing = failing
}

// enter holds the gate for one call and reports whether the call must fail; the caller
// runs f.gate.RUnlock when the call is done.
func (f *Faulty) enter() bool {
	f.gate.RLock()
	return f.failing
}

// Put implements Store.
func (f *Faulty) Put(ctx context.Context, key string, data []byte, opts PutOptions) (ObjectInfo, error) {
	if _, err := f.admitPut(ctx, key, opts); err != nil {
		return ObjectInfo{}, err
	}
	defer f.gate.RUnlock()
	if f.enter() {
		return ObjectInfo{}, opError("put", key, ErrInjected)
	}
	return f.s.Put(ctx, key, data, opts)
}

// Get implements Store.
func (f *Faulty) Get(ctx context.Context, key string) ([]byte, ObjectInfo, error) {
	if err := f.admit(ctx, "get", key); err != nil {
		return nil, ObjectInfo{}, err
	}
	defer f.gate.RUnlock()
	if f.enter() {
		return nil, ObjectInfo{}, opError("get", key, ErrInjected)
	}
	return f.s.Get(ctx, key)
}

// GetRange implements Store.
func (f *Faulty) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, ObjectInfo, error) {
	if err := f.admitRange(ctx, key, offset, length); err != nil {
		return nil, ObjectInfo{}, err
	}
	defer f.gate.RUnlock()
	if f.enter() {
		return nil, ObjectInfo{}, opError(opGetRange, key, ErrInjected)
	}
	return f.s.GetRange(ctx, key, offset, length)
}

// List implements Store.
func (f *Faulty) List(ctx context.Context, prefix, startAfter string, limit int) (ListPage, error) {
	if err := f.admitList(ctx, prefix); err != nil {
		return ListPage{}, err
	}
	defer f.gate.RUnlock()
	if f.enter() {
		return ListPage{}, opError("list", prefix, ErrInjected)
	}
	return f.s.List(ctx, prefix, startAfter, limit)
}

// Delete implements Store.
func (f *Faulty) Delete(ctx context.Context, key string) error {
	if err := f.admit(ctx, "delete", key); err != nil {
		return err
	}
	defer f.gate.RUnlock()
	if f.enter() {
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
	defer f.gate.RUnlock()
	if f.enter() && len(unique) > 0 {
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
