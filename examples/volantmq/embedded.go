package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	faker := gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog()))
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
