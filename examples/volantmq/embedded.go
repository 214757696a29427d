package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3bolt"
	bolt "go.etcd.io/bbolt"

	"github.com/s3persist/s3persist/s3store"
)

// embeddedFile is the bbolt file of the embedded S3 server, in the data directory.
const embeddedFile = "s3.db"

// embeddedS3 is an S3-compatible server inside the process: gofakes3 on its bbolt
// backend, serving HTTP on a free loopback port. It supports what s3persist needs:
// conditional puts (If-None-Match: * and If-Match, checked inside one bbolt
// transaction), ListObjectsV2 with start-after, and multi-object delete. Every bbolt
// transaction is fsynced, so what it acknowledged survives a crash of the process.
type embeddedS3 struct {
	db     *bolt.DB
	srv    *http.Server
	served chan error // the result of Serve, once it returned
	addr   string     // host:port it listens on
}

// Credentials of the embedded server. gofakes3 does not check signatures; minio-go
// signs with them so that no credential of the environment is ever sent.
const embeddedKey, embeddedSecret = "s3persist-embedded", "s3persist-embedded"

// startEmbedded opens (or creates) dir/s3.db, makes sure the bucket exists, and serves
// it on 127.0.0.1. A second broker on the same directory fails after lockWait instead
// of waiting forever for bbolt's file lock.
func startEmbedded(dir, bucket string, lockWait time.Duration) (*embeddedS3, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	file := filepath.Join(dir, embeddedFile)
	db, err := bolt.Open(file, 0o600, &bolt.Options{Timeout: lockWait})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("embedded S3: %s is locked: is another broker using -data %s?", file, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("embedded S3: open %s: %w", file, err)
	}
	backend := s3bolt.New(db)
	exists, err := backend.BucketExists(bucket)
	if err == nil && !exists {
		err = backend.CreateBucket(bucket)
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("embedded S3: bucket %q: %w", bucket, err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("embedded S3: listen: %w", err)
	}
	faker := gofakes3.New(&lockedBackend{Backend: backend}, gofakes3.WithLogger(gofakes3.DiscardLog()))
	e := &embeddedS3{
		db:     db,
		srv:    &http.Server{Handler: faker.Server(), ReadHeaderTimeout: 10 * time.Second},
		served: make(chan error, 1),
		addr:   l.Addr().String(),
	}
	go func() { e.served <- e.srv.Serve(l) }()
	return e, nil
}

// minioConfig is the connection to the embedded server.
func (e *embeddedS3) minioConfig(bucket string) s3store.MinioConfig {
	return s3store.MinioConfig{
		Endpoint:  e.addr,
		Bucket:    bucket,
		AccessKey: embeddedKey,
		SecretKey: embeddedSecret,
	}
}

// Close stops serving (requests in flight get until ctx ends) and closes the file.
// Close the s3persist instance that uses it first.
func (e *embeddedS3) Close(ctx context.Context) error {
	err := e.srv.Shutdown(ctx)
	if err != nil {
		_ = e.srv.Close()
	}
	if serr := <-e.served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return errors.Join(err, e.db.Close())
}

// lockedBackend works around gofakes3 v1.2.0's s3bolt backend, whose GetObject returns
// contents that still point into bbolt's memory map after its read transaction ended
// (its BSON decoding does not copy). A write that grows the file remaps it while a
// response still streams those bytes, which crashed this module's tests with SIGSEGV;
// a write that reuses the pages would serve changed bytes. lockedBackend holds a read
// lock from GetObject until the HTTP layer closes the contents, and every write takes
// the write lock, so no write transaction runs while such bytes are in use. Request
// bodies are read before the lock is taken.
type lockedBackend struct {
	gofakes3.Backend
	mu sync.RWMutex
}

// unlockOnClose releases the read lock of a GetObject when its contents are closed.
type unlockOnClose struct {
	io.ReadCloser
	unlock func()
}

func (u *unlockOnClose) Close() error {
	err := u.ReadCloser.Close()
	u.unlock()
	return err
}

func (b *lockedBackend) GetObject(bucket, key string, rng *gofakes3.ObjectRangeRequest) (*gofakes3.Object, error) {
	b.mu.RLock()
	obj, err := b.Backend.GetObject(bucket, key, rng)
	if err != nil || obj == nil || obj.Contents == nil {
		b.mu.RUnlock()
		return obj, err
	}
	obj.Contents = &unlockOnClose{ReadCloser: obj.Contents, unlock: sync.OnceFunc(b.mu.RUnlock)}
	return obj, nil
}

func (b *lockedBackend) HeadObject(bucket, key string) (*gofakes3.Object, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.Backend.HeadObject(bucket, key)
}

func (b *lockedBackend) PutObject(bucket, key string, meta map[string]string, input io.Reader, size int64, cond *gofakes3.PutConditions) (gofakes3.PutObjectResult, error) {
	body, err := gofakes3.ReadAll(input, size)
	if err != nil {
		return gofakes3.PutObjectResult{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Backend.PutObject(bucket, key, meta, bytes.NewReader(body), size, cond)
}

func (b *lockedBackend) DeleteObject(bucket, key string) (gofakes3.ObjectDeleteResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Backend.DeleteObject(bucket, key)
}

func (b *lockedBackend) DeleteMulti(bucket string, keys ...string) (gofakes3.MultiDeleteResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Backend.DeleteMulti(bucket, keys...)
}

func (b *lockedBackend) CopyObject(srcBucket, srcKey, dstBucket, dstKey string, meta map[string]string) (gofakes3.CopyObjectResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Backend.CopyObject(srcBucket, srcKey, dstBucket, dstKey, meta)
}

func (b *lockedBackend) CreateBucket(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Backend.CreateBucket(name)
}

func (b *lockedBackend) DeleteBucket(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Backend.DeleteBucket(name)
}

func (b *lockedBackend) ForceDeleteBucket(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Backend.ForceDeleteBucket(name)
}
