package miniotest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// externalCheckTimeout bounds the checks of an external service.
const externalCheckTimeout = time.Minute

// startExternal checks the S3 service given by the environment: it must answer with the
// credentials, and a shared bucket must exist and be empty unless EnvAllowNonEmpty.
func startExternal(ctx context.Context) (*Server, error) {
	ctx, cancel := context.WithTimeout(ctx, externalCheckTimeout)
	defer cancel()
	s := &Server{
		Endpoint:     strings.TrimSpace(os.Getenv(EnvEndpoint)),
		AccessKey:    os.Getenv(EnvAccessKey),
		SecretKey:    os.Getenv(EnvSecretKey),
		Region:       strings.TrimSpace(os.Getenv(EnvRegion)),
		Kind:         KindExternal,
		sharedBucket: strings.TrimSpace(os.Getenv(EnvBucket)),
	}
	if strings.Contains(s.Endpoint, "://") || strings.Contains(s.Endpoint, "/") {
		return nil, fmt.Errorf("miniotest: %s=%q must be host:port, without scheme or path (use %s for HTTPS)",
			EnvEndpoint, s.Endpoint, EnvSecure)
	}
	if s.AccessKey == "" || s.SecretKey == "" {
		return nil, fmt.Errorf("miniotest: %s is set, so %s and %s must be set too", EnvEndpoint, EnvAccessKey, EnvSecretKey)
	}
	if s.Region == "" {
		s.Region = DefaultRegion
	}
	var err error
	if s.Secure, err = envBool(EnvSecure); err != nil {
		return nil, err
	}
	allowNonEmpty, err := envBool(EnvAllowNonEmpty)
	if err != nil {
		return nil, err
	}
	client, err := s.Client()
	if err != nil {
		return nil, err
	}
	if s.sharedBucket == "" {
		// Tests will create buckets; check that the service answers and accepts the keys.
		if _, err := client.ListBuckets(ctx); err != nil {
			return nil, fmt.Errorf("miniotest: external S3 %s: list buckets: %w", s, err)
		}
		return s, nil
	}
	ok, err := client.BucketExists(ctx, s.sharedBucket)
	if err != nil {
		return nil, fmt.Errorf("miniotest: external S3 %s: check bucket: %w", s, err)
	}
	if !ok {
		return nil, fmt.Errorf("miniotest: external S3 %s: bucket %q (%s) does not exist", s, s.sharedBucket, EnvBucket)
	}
	if !allowNonEmpty {
		lctx, cancel := context.WithCancel(ctx)
		defer cancel() // stops the listing, as ListObjectsIter asks
		for obj := range client.ListObjectsIter(lctx, s.sharedBucket, minio.ListObjectsOptions{Recursive: true, MaxKeys: 1}) {
			if obj.Err != nil {
				return nil, fmt.Errorf("miniotest: external S3 %s: list bucket: %w", s, obj.Err)
			}
			return nil, fmt.Errorf("miniotest: external S3 %s: bucket %q is not empty (it holds %q); "+
				"the tests write to it and remove what they wrote. Use an empty bucket, or set %s=1",
				s, s.sharedBucket, obj.Key, EnvAllowNonEmpty)
		}
	}
	return s, nil
}
