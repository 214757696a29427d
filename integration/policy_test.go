package integration

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/s3persist/s3persist/integration/miniotest"
	"github.com/s3persist/s3persist/s3store"
)

// readmePolicy returns the minimal IAM policy of the README ("### Minimal IAM policy"),
// for bucket and prefix, as a JSON document to edit.
func readmePolicy(t *testing.T, bucket, prefix string) map[string]any {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "### Minimal IAM policy")
	if !ok {
		t.Fatal(`README.md has no "### Minimal IAM policy" section`)
	}
	_, block, ok := strings.Cut(section, "```json\n")
	if !ok {
		t.Fatal("the README's IAM policy section has no JSON block")
	}
	block, _, _ = strings.Cut(block, "```")
	block = strings.ReplaceAll(block, "BUCKET", bucket)
	block = strings.ReplaceAll(block, "PREFIX", prefix)
	var policy map[string]any
	if err := json.Unmarshal([]byte(block), &policy); err != nil {
		t.Fatalf("the README's IAM policy is not JSON: %v\n%s", err, block)
	}
	return policy
}

// policyActions returns every action the policy allows.
func policyActions(policy map[string]any) []string {
	var out []string
	for _, st := range policy["Statement"].([]any) {
		for _, a := range st.(map[string]any)["Action"].([]any) {
			out = append(out, a.(string))
		}
	}
	return out
}

// withoutAction returns a copy of policy that does not allow action.
func withoutAction(t *testing.T, policy map[string]any, action string) map[string]any {
	data, err := json.Marshal(policy)
	if err != nil {
		t.Fatal(err)
	}
	var cp map[string]any
	if err := json.Unmarshal(data, &cp); err != nil {
		t.Fatal(err)
	}
	var kept []any
	for _, st := range cp["Statement"].([]any) {
		m := st.(map[string]any)
		actions := slices.DeleteFunc(m["Action"].([]any), func(a any) bool { return a == action })
		if len(actions) > 0 {
			m["Action"] = actions
			kept = append(kept, m)
		}
	}
	cp["Statement"] = kept
	return cp
}

// restrictedConfig returns a config whose credentials are temporary ones (STS
// AssumeRole) limited by policy: a MinIO session policy on the root user allows exactly
// what it names, as an IAM user or role with that policy would be allowed.
func restrictedConfig(t *testing.T, s *miniotest.Server, bucket string, policy map[string]any) s3store.MinioConfig {
	t.Helper()
	doc, err := json.Marshal(policy)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: secureConfigTLS(s)}
	t.Cleanup(tr.CloseIdleConnections)
	creds := credentials.New(&credentials.STSAssumeRole{
		Client:      &http.Client{Transport: tr},
		STSEndpoint: "https://" + s.Endpoint,
		Options: credentials.STSAssumeRoleOptions{
			AccessKey:       s.AccessKey,
			SecretKey:       s.SecretKey,
			Policy:          string(doc),
			Location:        s.Region,
			DurationSeconds: 900,
		},
	})
	v, err := creds.Get()
	if err != nil {
		t.Fatalf("AssumeRole: %v", err)
	}
	cfg := secureConfig(s, bucket)
	cfg.AccessKey, cfg.SecretKey, cfg.SessionToken = v.AccessKeyID, v.SecretAccessKey, v.SessionToken
	return cfg
}

// The README's minimal IAM policy is enough for a broker's whole life on its prefix, and
// every action in it is needed: without any one of them the broker fails with
// ErrAccessDenied. Another prefix of the same bucket is refused.
func TestMinimalIAMPolicyOnMinio(t *testing.T) {
	sec := startSecureMinio(t)
	ctx := context.Background()
	const prefix = "broker/"
	tgt := sec.NewTarget(t)
	if tgt.Prefix != "" {
		t.Skip("needs a bucket of its own")
	}
	policy := readmePolicy(t, tgt.Bucket, prefix)
	leaks := newLeakCheck(t, sec)

	cfg := restrictedConfig(t, sec, tgt.Bucket, policy)
	leaks.add(cfg.SecretKey, cfg.SessionToken)
	start := time.Now()
	if err := leaks.err(exercise(ctx, cfg, prefix, leaks.logger(), true)); err != nil {
		t.Fatalf("a broker with exactly the README's policy: %v", err)
	}
	t.Logf("a broker's life with the minimal policy took %v", time.Since(start))
	start = time.Now()
	err := leaks.err(exercise(ctx, cfg, "another/", leaks.logger(), true))
	t.Logf("refused on another prefix after %v", time.Since(start))
	if !errors.Is(err, s3store.ErrAccessDenied) {
		t.Fatalf("the policy of %q used on another prefix: %v, want ErrAccessDenied", prefix, err)
	}

	actions := policyActions(policy)
	if len(actions) == 0 {
		t.Fatal("the policy allows nothing")
	}
	for _, action := range actions {
		t.Run("without "+action, func(t *testing.T) {
			// A fresh prefix each, so that no state of an earlier run hides a refusal.
			pfx := "no-" + strings.ReplaceAll(strings.TrimPrefix(action, "s3:"), ":", "") + "/"
			less := restrictedConfig(t, sec, tgt.Bucket, withoutAction(t, readmePolicy(t, tgt.Bucket, pfx), action))
			leaks.add(less.SecretKey, less.SessionToken)
			start := time.Now()
			err := leaks.err(exercise(ctx, less, pfx, leaks.logger(), true))
			t.Logf("took %v", time.Since(start))
			if !errors.Is(err, s3store.ErrAccessDenied) {
				t.Fatalf("a broker without %s: %v, want an error wrapping ErrAccessDenied", action, err)
			}
			t.Logf("without %s: %v", action, err)
		})
	}
}
