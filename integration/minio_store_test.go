package integration

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/s3persist/s3persist/s3store"
	"github.com/s3persist/s3persist/s3store/storetest"
)

// The conformance suite on stores that are each closed when their case ends leaves no
// goroutine behind.
func TestMinioStoreLeaksNoGoroutines(t *testing.T) {
	storetest.CheckGoroutines(t)
	t.Run("suite", func(t *testing.T) {
		storetest.Run(t, newMinioStore, minioSkip, storetest.PrefixLen(srv.TargetPrefixLen()))
	})
}

// NewMinio tells a missing bucket, wrong credentials and an unreachable endpoint apart,
// and never puts a credential in its error.
func TestNewMinioErrorsAgainstServer(t *testing.T) {
	tgt := srv.NewTarget(t)
	if tgt.Prefix != "" {
		t.Skip("the external S3 mode shares one bucket: no bucket can be missing")
	}
	ctx := context.Background()
	missing := minioConfig(tgt.Bucket + "-missing")
	if _, err := s3store.NewMinio(ctx, missing); !errors.Is(err, s3store.ErrNoSuchBucket) {
		t.Fatalf("missing bucket: %v, want ErrNoSuchBucket", err)
	}
	const wrongAccess, wrongSecret = "AKID-must-not-leak", "secret-must-not-leak"
	for _, c := range []struct{ name, access, secret string }{
		{"wrong_secret", srv.AccessKey, wrongSecret},
		{"unknown_access_key", wrongAccess, wrongSecret},
	} {
		bad := minioConfig(tgt.Bucket)
		bad.AccessKey, bad.SecretKey = c.access, c.secret
		_, err := s3store.NewMinio(ctx, bad)
		if !errors.Is(err, s3store.ErrAccessDenied) {
			t.Fatalf("%s: %v, want ErrAccessDenied", c.name, err)
		}
		for _, secret := range []string{wrongAccess, wrongSecret, srv.SecretKey} {
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("%s: error %q holds a credential", c.name, err)
			}
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	unreachable := minioConfig(tgt.Bucket)
	unreachable.Endpoint = l.Addr().String()
	_ = l.Close()
	if _, err := s3store.NewMinio(ctx, unreachable); !errors.Is(err, s3store.ErrUnreachable) {
		t.Fatalf("unreachable endpoint: %v, want ErrUnreachable", err)
	}
}
