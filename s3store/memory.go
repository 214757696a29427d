package s3store

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
)

// Memory is a Store that keeps its objects in memory.
//
// Everything above this package is unit-tested on Memory, so it is strict rather than
// convenient: it applies the key rules, refuses keys that nest (see the package
// documentation), caps pages at MaxListPage like S3, evaluates conditional puts
// atomically, and copies data in and out, so that code that works on it works on MinIO. Its ETags are the hex MD5 of the content, unquoted, as MinIO
// returns for a single-part put; callers must still treat ETags as opaque.
//
// The zero value is not usable; call NewMemory.
type Memory struct {
	closer

	// mu guards objects, below, sorted and dirty. One mutex, not a RWMutex: List may
	// rebuild sorted, and the store is for tests, where simplicity beats read
	// parallelism.
	mu sync.Mutex
	// objects holds every object by key.
	objects map[string]memObject
	// below counts, for every "directory" prefix ending in "/" of a key in objects, the
	// objects under it, so that a Put can refuse nesting in O(segments).
	below map[string]int
	// sorted holds the keys of objects in byte order when dirty is false. Keeping it
	// sorted on every Put would cost O(n) per new key, so it is rebuilt lazily by List;
	// keys that arrive in order, as most layouts write them, are appended instead.
	sorted []string
	dirty  bool
}

type memObject struct {
	data []byte // owned by the store, never handed out
	etag string
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return &Memory{objects: make(map[string]memObject), below: make(map[string]int)}
}

// Put implements Store.
func (m *Memory) Put(ctx context.Context, key string, data []byte, opts PutOptions) (ObjectInfo, error) {
	ifMatch, err := m.admitPut(ctx, key, opts)
	if err != nil {
		return ObjectInfo{}, err
	}
	obj := memObject{data: bytes.Clone(data), etag: md5Hex(data)}
	if obj.data == nil {
		obj.data = []byte{}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	cur, exists := m.objects[key]
	switch {
	case opts.IfNoneMatch && exists:
		return ObjectInfo{}, opError("put", key, ErrPreconditionFailed)
	case ifMatch != "" && !exists:
		return ObjectInfo{}, opError("put", key, ErrPreconditionFailed)
	case ifMatch != "" && cur.etag != ifMatch:
		return ObjectInfo{}, opError("put", key, ErrPreconditionFailed)
	}
	if !exists {
		if err := m.checkNesting(key); err != nil {
			return ObjectInfo{}, opError("put", key, err)
		}
		m.add(key)
	}
	m.objects[key] = obj
	return ObjectInfo{Key: key, Size: int64(len(obj.data)), ETag: obj.etag}, nil
}

// checkNesting refuses a new key that would nest with an existing one; m.mu must be held.
func (m *Memory) checkNesting(key string) error {
	if m.below[key+"/"] > 0 {
		return fmt.Errorf("%w: objects exist below %q, which MinIO would hide from listings",
			ErrInvalidKey, key+"/")
	}
	for i := range len(key) {
		if key[i] != '/' {
			continue
		}
		if _, ok := m.objects[key[:i]]; ok {
			return fmt.Errorf("%w: object %q exists, and MinIO would hide %q below it from listings",
				ErrInvalidKey, key[:i], key)
		}
	}
	return nil
}

// add indexes a new key; m.mu must be held.
func (m *Memory) add(key string) {
	for i := range len(key) {
		if key[i] == '/' {
			m.below[key[:i+1]]++
		}
	}
	if !m.dirty {
		if n := len(m.sorted); n == 0 || m.sorted[n-1] < key {
			m.sorted = append(m.sorted, key)
		} else {
			m.dirty = true
		}
	}
}

// Get implements Store.
func (m *Memory) Get(ctx context.Context, key string) ([]byte, ObjectInfo, error) {
	if err := m.admit(ctx, "get", key); err != nil {
		return nil, ObjectInfo{}, err
	}
	m.mu.Lock()
	obj, ok := m.objects[key]
	m.mu.Unlock()
	if !ok {
		return nil, ObjectInfo{}, opError("get", key, ErrNotFound)
	}
	// obj.data is never modified in place (Put stores a new slice), so copying it
	// outside the lock is safe.
	return bytes.Clone(obj.data), ObjectInfo{Key: key, Size: int64(len(obj.data)), ETag: obj.etag}, nil
}

// GetRange implements Store.
func (m *Memory) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, ObjectInfo, error) {
	if err := m.admitRange(ctx, key, offset, length); err != nil {
		return nil, ObjectInfo{}, err
	}
	m.mu.Lock()
	obj, ok := m.objects[key]
	m.mu.Unlock()
	if !ok {
		return nil, ObjectInfo{}, opError(opGetRange, key, ErrNotFound)
	}
	size := int64(len(obj.data))
	if offset+length > size { // admitRange ruled out an overflow
		return nil, ObjectInfo{}, opError(opGetRange, key, rangeError(offset, length, size))
	}
	// As in Get, obj.data is immutable: the copy needs no lock.
	return bytes.Clone(obj.data[offset : offset+length]), ObjectInfo{Key: key, Size: size, ETag: obj.etag}, nil
}

// List implements Store.
func (m *Memory) List(ctx context.Context, prefix, startAfter string, limit int) (ListPage, error) {
	if err := m.admitList(ctx, prefix); err != nil {
		return ListPage{}, err
	}
	startAfter, done := normStartAfter(prefix, startAfter)
	if done {
		return ListPage{}, nil
	}
	limit = pageLimit(limit)

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dirty {
		m.sorted = m.sorted[:0]
		for k := range m.objects {
			m.sorted = append(m.sorted, k)
		}
		slices.Sort(m.sorted)
		m.dirty = false
	}
	i, _ := slices.BinarySearch(m.sorted, prefix)
	if startAfter != "" {
		j, found := slices.BinarySearch(m.sorted, startAfter)
		if found {
			j++
		}
		i = max(i, j)
	}
	var page ListPage
	for ; i < len(m.sorted) && strings.HasPrefix(m.sorted[i], prefix); i++ {
		if len(page.Objects) == limit {
			page.NextStartAfter = page.Objects[limit-1].Key
			break
		}
		k := m.sorted[i]
		obj := m.objects[k]
		page.Objects = append(page.Objects, ObjectInfo{Key: k, Size: int64(len(obj.data)), ETag: obj.etag})
	}
	return page, nil
}

// Delete implements Store.
func (m *Memory) Delete(ctx context.Context, key string) error {
	if err := m.admit(ctx, "delete", key); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.remove(key)
	return nil
}

// DeleteMany implements Store. It never fails part-way: every key goes at once.
func (m *Memory) DeleteMany(ctx context.Context, keys []string) error {
	keys, err := m.admitMany(ctx, keys)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		m.remove(k)
	}
	return nil
}

// remove deletes key; m.mu must be held.
func (m *Memory) remove(key string) {
	if _, ok := m.objects[key]; !ok {
		return
	}
	delete(m.objects, key)
	m.dirty = true
	for i := range len(key) {
		if key[i] != '/' {
			continue
		}
		if m.below[key[:i+1]]--; m.below[key[:i+1]] == 0 {
			delete(m.below, key[:i+1])
		}
	}
}

// Close implements Store. The objects stay, so that Len and Keys can still tell a
// test what a closed component left behind.
func (m *Memory) Close() error {
	m.close()
	return nil
}

// Len returns the number of objects, also after Close.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.objects)
}

// Keys returns every key in byte order, also after Close.
func (m *Memory) Keys() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	keys := make([]string, 0, len(m.objects))
	for k := range m.objects {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func md5Hex(data []byte) string {
	sum := md5.Sum(data)
	return hex.EncodeToString(sum[:])
}

// Clone returns a new, open store holding the same objects with the same ETags: a copy
// of a bucket at one moment, for tests that start many runs from one state. Object data
// is immutable inside a store, so the copy shares it.
func (m *Memory) Clone() *Memory {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &Memory{
		objects: maps.Clone(m.objects),
		below:   maps.Clone(m.below),
		sorted:  slices.Clone(m.sorted),
		dirty:   m.dirty,
	}
}
