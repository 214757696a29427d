package s3persist

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7/pkg/encrypt"

	"github.com/s3persist/s3persist/s3store"
)

// A Config printed or logged in any way shows no credential and no SSE-C key: a JSON
// handler would otherwise encode its S3 field field by field.
func TestConfigRedactsSecretsWhereverItIsPrinted(t *testing.T) {
	key := []byte("sse-c-key-must-not-leak-32-bytes")
	sse, err := encrypt.NewSSEC(key)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		S3: s3store.MinioConfig{Endpoint: "s3.example.com", Secure: true, Bucket: "bucket",
			AccessKey: "AKID-must-not-leak", SecretKey: "secret-must-not-leak", SessionToken: "token-must-not-leak", SSE: sse},
		Prefix: "broker/",
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "cfg", cfg)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "cfg", cfg)
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "cfg", &cfg)
	out := fmt.Sprintf("%v %+v %#v %s %v", cfg, cfg, cfg, cfg, &cfg) + buf.String()
	for _, secret := range []string{"AKID-must-not-leak", "secret-must-not-leak", "token-must-not-leak",
		string(key), base64.StdEncoding.EncodeToString(key), fmt.Sprint(key)} {
		if strings.Contains(out, secret) {
			t.Fatalf("the printed config holds %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{`Endpoint:"s3.example.com"`, "Prefix:broker/", "SSE:SSE-C"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the printed config lost %s:\n%s", want, out)
		}
	}
}
