package miniotest

import (
	"bytes"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/encrypt"
)

// A server started with TLS and KMS serves HTTPS only, under a CA that Client trusts
// and nothing else does, encrypts with its KMS key, and keeps both across a restart.
func TestBinaryServerWithTLSAndKMS(t *testing.T) {
	if _, err := binaryPath(); err != nil {
		t.Fatal(err)
	}
	s, err := StartBinary(t.Context(), Options{TLS: true, KMS: true})
	if err != nil {
		t.Fatal(err)
	}
	root := s.bin.root
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Stop left %s: %v", root, err)
		}
	})
	if !s.Secure || s.RootCAs == nil || !strings.Contains(s.String(), "https://") {
		t.Fatalf("server %v: Secure %t, RootCAs %v; want HTTPS with a CA", s, s.Secure, s.RootCAs)
	}

	// Neither the system roots nor plain HTTP reach it.
	if _, err := http.Get("https://" + s.Endpoint + "/minio/health/live"); err == nil || !errors.As(err, new(x509.UnknownAuthorityError)) {
		t.Fatalf("GET with the system roots: %v, want an unknown authority", err)
	}
	if resp, err := http.Get("http://" + s.Endpoint + "/minio/health/live"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("the TLS server answered plain HTTP")
		}
	}

	c := newClient(t, s)
	const bucket = "tls-kms"
	if err := c.MakeBucket(t.Context(), bucket, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		t.Fatal(err)
	}
	kms, err := encrypt.NewSSEKMS(KMSKeyName, nil)
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string) {
		t.Helper()
		_, err := c.PutObject(t.Context(), bucket, key, bytes.NewReader([]byte("v")), 1,
			minio.PutObjectOptions{ServerSideEncryption: kms})
		if err != nil {
			t.Fatalf("put with SSE-KMS: %v", err)
		}
		info, err := c.StatObject(t.Context(), bucket, key, minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Metadata.Get("X-Amz-Server-Side-Encryption"); got != "aws:kms" {
			t.Fatalf("object encrypted with %q, want aws:kms", got)
		}
	}
	put("before")
	if err := s.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	put("after")
	if _, err := c.StatObject(t.Context(), bucket, "before", minio.StatObjectOptions{}); err != nil {
		t.Fatalf("an object of the first run after a restart: %v", err)
	}
	if err := c.RemoveObject(t.Context(), bucket, "before", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveObject(t.Context(), bucket, "after", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
}
