package images

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// engine skips the test when no Docker engine answers, saying so.
func engine(t *testing.T) {
	t.Helper()
	if err := DockerAvailable(t.Context()); err != nil {
		t.Skipf("no Docker engine reachable, the image builds are not tested: %v", err)
	}
}

// minioBin is the MinIO binary that miniotest would use.
func minioBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("S3PERSIST_MINIO_BIN"); p != "" {
		return p
	}
	t.Skip("S3PERSIST_MINIO_BIN is not set (scripts/test.sh sets it)")
	return ""
}

func TestRyukIsDisabledUnlessSet(t *testing.T) {
	if _, ok := os.LookupEnv(EnvRyukDisabled); !ok {
		t.Fatalf("%s is unset after the package's init", EnvRyukDisabled)
	}
}

// TestMinioImageIsBuiltOnceAndNamedByTheBinary: the tag is the binary's hash, a second
// call finds the image, and another binary gives another tag.
func TestMinioImageIsBuiltOnceAndNamedByTheBinary(t *testing.T) {
	engine(t)
	bin := minioBin(t)
	ref, err := Minio(t.Context(), bin)
	if err != nil {
		t.Fatal(err)
	}
	hash, err := fileHash(bin)
	if err != nil {
		t.Fatal(err)
	}
	if want := MinioRepository + ":" + hash; ref != want || len(hash) != 12 {
		t.Fatalf("ref %q, want %q (12 hex digits)", ref, want)
	}
	start := time.Now()
	again, err := Minio(t.Context(), bin)
	if err != nil || again != ref {
		t.Fatalf("second call: %q, %v", again, err)
	}
	t.Logf("%s; a second call took %v", ref, time.Since(start))

	cli, err := NewClient(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	img, err := cli.ImageInspect(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if img.Config == nil || strings.Join(img.Config.Entrypoint, " ") != "/minio" || img.Config.Labels[LabelImage] != "minio" {
		t.Fatalf("image config %+v", img.Config)
	}
}

func TestMinioImageOfAMissingBinaryFails(t *testing.T) {
	_, err := Minio(context.Background(), filepath.Join(t.TempDir(), "missing"))
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("Minio of a missing binary: %v", err)
	}
}

// TestBrokerImage: the broker image runs the broker, which answers -h (a scratch image
// has nothing else to run).
func TestBrokerImage(t *testing.T) {
	engine(t)
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command to build the broker")
	}
	ref, err := Broker(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ref, BrokerRepository+":") {
		t.Fatalf("ref %q", ref)
	}
	again, err := Broker(t.Context())
	if err != nil || again != ref {
		t.Fatalf("second call: %q, %v", again, err)
	}
	cli, err := NewClient(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	img, err := cli.ImageInspect(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if img.Config == nil || strings.Join(img.Config.Entrypoint, " ") != BrokerBinary ||
		strings.Join(img.Config.Cmd, " ") != "-listen 0.0.0.0:1883 -data /data" {
		t.Fatalf("image config %+v", img.Config)
	}
}
