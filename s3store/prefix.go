package s3store

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// WithPrefix returns a Store whose keys live under prefix in s: Put(k) writes
// prefix+k, and List returns keys with prefix removed. It lets several brokers, or
// several tests, share one bucket without seeing each other's objects.
//
// prefix is taken literally, never normalised: it must be empty or a valid key
// followed by "/", so "tenant-a/" is accepted and "tenant-a" is refused (it would also
// match "tenant-ab/..."). With an empty prefix WithPrefix returns s itself.
//
// Closing the view closes only the view: s stays open for the other views that share
// it and is closed by whoever opened it. Keys are checked against the key rules both
// as given and with the prefix, so the full key must also fit in MaxKeyLen. Errors
// name the full key, which is the object's real name in the bucket.
func WithPrefix(s Store, prefix string) (Store, error) {
	if prefix == "" {
		return s, nil
	}
	if !strings.HasSuffix(prefix, "/") {
		return nil, fmt.Errorf("s3store: prefix %q must end with \"/\"", prefix)
	}
	if err := ValidateKey(strings.TrimSuffix(prefix, "/")); err != nil {
		return nil, fmt.Errorf("s3store: prefix %q: %w", prefix, err)
	}
	return &prefixed{s: s, prefix: prefix}, nil
}

type prefixed struct {
	closer
	s      Store
	prefix string
}

func (p *prefixed) Put(ctx context.Context, key string, data []byte, opts PutOptions) (ObjectInfo, error) {
	if _, err := p.admitPut(ctx, key, opts); err != nil {
		return ObjectInfo{}, err
	}
	info, err := p.s.Put(ctx, p.prefix+key, data, opts)
	if err != nil {
		return ObjectInfo{}, err
	}
	info.Key = key
	return info, nil
}

func (p *prefixed) Get(ctx context.Context, key string) ([]byte, ObjectInfo, error) {
	if err := p.admit(ctx, "get", key); err != nil {
		return nil, ObjectInfo{}, err
	}
	data, info, err := p.s.Get(ctx, p.prefix+key)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	info.Key = key
	return data, info, nil
}

func (p *prefixed) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, ObjectInfo, error) {
	if err := p.admitRange(ctx, key, offset, length); err != nil {
		return nil, ObjectInfo{}, err
	}
	data, info, err := p.s.GetRange(ctx, p.prefix+key, offset, length)
	if err != nil {
		return nil, ObjectInfo{}, err
	}
	info.Key = key
	return data, info, nil
}

func (p *prefixed) List(ctx context.Context, prefix, startAfter string, limit int) (ListPage, error) {
	if err := p.admitList(ctx, prefix); err != nil {
		return ListPage{}, err
	}
	if startAfter != "" {
		startAfter = p.prefix + startAfter
	}
	page, err := p.s.List(ctx, p.prefix+prefix, startAfter, limit)
	if err != nil {
		return ListPage{}, err
	}
	for i := range page.Objects {
		page.Objects[i].Key = strings.TrimPrefix(page.Objects[i].Key, p.prefix)
	}
	page.NextStartAfter = strings.TrimPrefix(page.NextStartAfter, p.prefix)
	return page, nil
}

func (p *prefixed) Delete(ctx context.Context, key string) error {
	if err := p.admit(ctx, "delete", key); err != nil {
		return err
	}
	return p.s.Delete(ctx, p.prefix+key)
}

func (p *prefixed) DeleteMany(ctx context.Context, keys []string) error {
	keys, err := p.admitMany(ctx, keys)
	if err != nil {
		return err
	}
	full := make([]string, len(keys))
	for i, k := range keys {
		full[i] = p.prefix + k
	}
	err = p.s.DeleteMany(ctx, full)
	if dm, ok := errors.AsType[*DeleteManyError](err); ok {
		rel := &DeleteManyError{Remaining: make([]string, len(dm.Remaining)), Total: dm.Total, Err: dm.Err}
		for i, k := range dm.Remaining {
			rel.Remaining[i] = strings.TrimPrefix(k, p.prefix)
		}
		return rel
	}
	return err
}

// Close closes the view, not the store under it.
func (p *prefixed) Close() error {
	p.close()
	return nil
}
