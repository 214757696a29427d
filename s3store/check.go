package s3store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
)

// The helpers in this file are shared by every implementation and wrapper so that the
// checks that need no request run in the same order everywhere (closed, ctx, arguments)
// and fail with the same errors: a difference between backends would otherwise only
// show up against the backend that is not in the unit tests.

// opError wraps err with the operation and the key, the one place where that context
// is added. err is already classified (a sentinel is reachable through it) or is a
// failure that equals no sentinel.
func opError(op, key string, err error) error {
	return fmt.Errorf("s3store: %s %q: %w", op, key, err)
}

// closer is the closed state every Store keeps. It is an atomic flag, not a lock,
// because Close must not wait for calls in flight.
type closer struct{ closed atomic.Bool }

// close marks the store closed and reports whether this call did it.
func (c *closer) close() bool { return c.closed.CompareAndSwap(false, true) }

// admit runs the checks due before any request for an operation on one key.
func (c *closer) admit(ctx context.Context, op, key string) error {
	if c.closed.Load() {
		return opError(op, key, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return opError(op, key, err)
	}
	if err := ValidateKey(key); err != nil {
		return opError(op, key, err)
	}
	return nil
}

// opGetRange names GetRange in errors. A ranged read is still a GET: wrappers that
// number or schedule requests by operation (Injector) file it under "get".
const opGetRange = "get range"

// admitRange is admit plus the GetRange rules for offset and length.
func (c *closer) admitRange(ctx context.Context, key string, offset, length int64) error {
	if err := c.admit(ctx, opGetRange, key); err != nil {
		return err
	}
	if err := ValidateRange(offset, length); err != nil {
		return opError(opGetRange, key, err)
	}
	return nil
}

// rangeError is the ErrRangeNotSatisfiable of a range that ends past an object of size
// bytes.
func rangeError(offset, length, size int64) error {
	return fmt.Errorf("%w: %d bytes at offset %d of a %d-byte object", ErrRangeNotSatisfiable, length, offset, size)
}

// admitPut is admit plus the PutOptions rules; it returns the IfMatch ETag to send.
func (c *closer) admitPut(ctx context.Context, key string, opts PutOptions) (string, error) {
	if err := c.admit(ctx, "put", key); err != nil {
		return "", err
	}
	etag := opts.IfMatch
	switch {
	case opts.IfNoneMatch && etag != "":
		return "", opError("put", key, errors.New("both IfNoneMatch and IfMatch are set"))
	case etag == "*":
		return "", opError("put", key, errors.New(`IfMatch "*" is not an ETag`))
	}
	return etag, nil
}

// admitList runs the checks due before a List request.
func (c *closer) admitList(ctx context.Context, prefix string) error {
	if c.closed.Load() {
		return opError("list", prefix, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return opError("list", prefix, err)
	}
	if err := ValidatePrefix(prefix); err != nil {
		return opError("list", prefix, err)
	}
	return nil
}

// admitMany runs the checks due before a DeleteMany request and returns the keys
// without duplicates, in their first order: a duplicate would cost a slot in a batch
// and, on some servers, an error for the second delete.
func (c *closer) admitMany(ctx context.Context, keys []string) ([]string, error) {
	if c.closed.Load() {
		return nil, manyError(len(keys), ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, manyError(len(keys), err)
	}
	seen := make(map[string]struct{}, len(keys))
	unique := make([]string, 0, len(keys))
	for _, k := range keys {
		if err := ValidateKey(k); err != nil {
			return nil, opError("delete many", k, err)
		}
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		unique = append(unique, k)
	}
	return unique, nil
}

// manyError wraps an error about a DeleteMany call as a whole, before any key was
// deleted, so that it names no key.
func manyError(n int, err error) error {
	return fmt.Errorf("s3store: delete many (%d keys): %w", n, err)
}

// normStartAfter reduces a startAfter outside prefix to its meaning inside it. Every
// key with the prefix sorts after a startAfter that sorts before the prefix, and before
// one that sorts after it without starting with it; MinIO refuses such a marker, so the
// backends agree on this instead. done reports that no key can follow.
func normStartAfter(prefix, startAfter string) (_ string, done bool) {
	if startAfter == "" || strings.HasPrefix(startAfter, prefix) {
		return startAfter, false
	}
	if startAfter < prefix {
		return "", false
	}
	return "", true
}

// pageLimit applies the List rules for limit.
func pageLimit(limit int) int {
	if limit <= 0 || limit > MaxListPage {
		return MaxListPage
	}
	return limit
}
