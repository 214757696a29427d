// Package miniotest gives tests a Minio store on a bucket of their own, on the server
// the environment names, and removes the bucket afterwards. Tests that need a real
// server call Config, which skips them when none is configured, so `go test ./...`
// stays green without one.
//
// The environment:
//
//	S3STORE_TEST_MINIO_ENDPOINT    host:port of the server, for example 127.0.0.1:9000
//	S3STORE_TEST_MINIO_ACCESS_KEY  access key (MinIO: MINIO_ROOT_USER)
//	S3STORE_TEST_MINIO_SECRET_KEY  secret key (MINIO_ROOT_PASSWORD)
//	S3STORE_TEST_MINIO_SECURE      "true" for https; default plain http
package miniotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/s3persist/s3persist/s3store"
)

// The names of the environment variables Config reads.
const (
	EnvEndpoint  = "S3STORE_TEST_MINIO_ENDPOINT"
	EnvAccessKey = "S3STORE_TEST_MINIO_ACCESS_KEY"
	EnvSecretKey = "S3STORE_TEST_MINIO_SECRET_KEY"
	EnvSecure    = "S3STORE_TEST_MINIO_SECURE"
)

// Config returns the server configuration the environment names, without a bucket,
// or skips t when EnvEndpoint is unset.
func Config(t testing.TB) s3store.MinioConfig {
	t.Helper()
	endpoint := os.Getenv(EnvEndpoint)
	if endpoint == "" {
		t.Skipf("%s is not set: no MinIO server to test against", EnvEndpoint)
	}
	return s3store.MinioConfig{
		Endpoint:  endpoint,
		Secure:    os.Getenv(EnvSecure) == "true",
		AccessKey: os.Getenv(EnvAccessKey),
		SecretKey: os.Getenv(EnvSecretKey),
	}
}

// BucketName returns a new random bucket name.
func BucketName() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "s3store-test-" + hex.EncodeToString(b)
}

// NewStore opens a store on a new bucket with a random name, created through cfg
// (whose Bucket and CreateBucket it sets), and registers a cleanup that empties and
// removes the bucket even if the test closed the store.
func NewStore(t testing.TB, cfg s3store.MinioConfig) *s3store.Minio {
	t.Helper()
	cfg.Bucket = BucketName()
	cfg.CreateBucket = true
	s, err := s3store.NewMinio(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewMinio: %v", err)
	}
	t.Cleanup(func() {
		s.Close()
		if err := RemoveBucket(cfg); err != nil {
			t.Errorf("removing test bucket %s: %v", cfg.Bucket, err)
		}
	})
	return s
}

// RemoveBucket deletes every object in cfg.Bucket, then the bucket.
func RemoveBucket(cfg s3store.MinioConfig) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg.CreateBucket = false
	s, err := s3store.NewMinio(ctx, cfg)
	if errors.Is(err, s3store.ErrNoSuchBucket) {
		return nil
	}
	if err != nil {
		return err
	}
	defer s.Close()
	var keys []string
	if err := s3store.ListAll(ctx, s, "", func(o s3store.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		return err
	}
	if err := s.DeleteMany(ctx, keys); err != nil {
		return err
	}
	// The store does not manage buckets, so the bucket goes through minio-go directly.
	region := cfg.Region
	if region == "" {
		region = s3store.DefaultMinioRegion
	}
	rt := cfg.Transport
	if rt == nil {
		tr, err := minio.DefaultTransport(cfg.Secure)
		if err != nil {
			return err
		}
		defer tr.CloseIdleConnections() // no connection outlives the test
		rt = tr
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken),
		Secure:    cfg.Secure,
		Region:    region,
		Transport: rt,
	})
	if err != nil {
		return err
	}
	err = client.RemoveBucket(ctx, cfg.Bucket)
	if minio.ToErrorResponse(err).Code == "BucketNotEmpty" {
		// Objects that a listing does not show are left, which happens on MinIO when a
		// test wrote keys that nest. MinIO can force the removal; the error of the
		// first attempt is the one to report, as the store saw an empty bucket.
		if client.RemoveBucketWithOptions(ctx, cfg.Bucket, minio.RemoveBucketOptions{ForceDelete: true}) == nil {
			return fmt.Errorf("bucket held objects that List did not show (nested keys?); forced removal: %w", err)
		}
	}
	return err
}
