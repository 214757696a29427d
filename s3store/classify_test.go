package s3store

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/minio/minio-go/v7"
)

func TestClassifyMapsMinioErrorCodes(t *testing.T) {
	for _, c := range []struct {
		code   string
		status int
		want   error
	}{
		{"NoSuchKey", 404, ErrNotFound},
		{"NoSuchBucket", 404, ErrNoSuchBucket},
		{"AccessDenied", 403, ErrAccessDenied},
		{"InvalidAccessKeyId", 403, ErrAccessDenied},
		{"SignatureDoesNotMatch", 403, ErrAccessDenied},
		{"ExpiredToken", 400, ErrAccessDenied},
		{"InvalidToken", 400, ErrAccessDenied},
		{"InvalidTokenId", 403, ErrAccessDenied}, // MinIO: a session token it does not know
		{"AllAccessDisabled", 403, ErrAccessDenied},
		{"PreconditionFailed", 412, ErrPreconditionFailed},
		{"ConditionalRequestConflict", 409, ErrPreconditionFailed},
		{"412 Precondition Failed", 412, ErrPreconditionFailed}, // no body: minio-go puts the status in Code
		{"InvalidRange", 416, ErrRangeNotSatisfiable},           // a ranged GET starting at or past the end
		{"416 Requested Range Not Satisfiable", 416, ErrRangeNotSatisfiable},
		// Outcomes that name no sentinel.
		{"RequestTimeTooSkewed", 403, nil}, // a clock problem, not a credentials one
		{"SlowDown", 503, nil},
		{"InternalError", 500, nil},
		{"XMinioInvalidObjectName", 400, nil},
		{"BucketAlreadyOwnedByYou", 409, nil},
		{"", 0, nil},
	} {
		resp := minio.ErrorResponse{Code: c.code, StatusCode: c.status, Message: "message"}
		if got := classify(resp); got != c.want {
			t.Errorf("classify(%s, %d) = %v, want %v", c.code, c.status, got, c.want)
		}
		// minio-go hands out ErrorResponse by value and ToErrorResponse does not unwrap;
		// classify must see through wrapping anyway.
		if got := classify(fmt.Errorf("context: %w", resp)); got != c.want {
			t.Errorf("classify(wrapped %s) = %v, want %v", c.code, got, c.want)
		}
	}
	for _, err := range []error{
		nil,
		errors.New("dial tcp 127.0.0.1:1: connect: connection refused"),
		context.DeadlineExceeded,
		ErrNotFound, // already classified: never classified twice
	} {
		if got := classify(err); got != nil {
			t.Errorf("classify(%v) = %v, want nil", err, got)
		}
	}
}

func TestFailWrapsOnceWithOpKeyAndSentinel(t *testing.T) {
	m := &Minio{timeout: DefaultMinioRequestTimeout}
	resp := minio.ErrorResponse{Code: "NoSuchKey", StatusCode: http.StatusNotFound, Message: "The specified key does not exist."}
	err := m.fail(context.Background(), "get", "a/b", resp)
	want := `s3store: get "a/b": s3store: not found: The specified key does not exist.`
	if err.Error() != want {
		t.Fatalf("error\n got %s\nwant %s", err, want)
	}
	if !errors.Is(err, ErrNotFound) {
		t.Fatal("errors.Is(ErrNotFound) = false")
	}
	if got, ok := errors.AsType[minio.ErrorResponse](err); !ok || got.Code != "NoSuchKey" {
		t.Fatalf("the minio-go error is not reachable with errors.As: %v", got)
	}

	resp = minio.ErrorResponse{Code: "InvalidRange", StatusCode: http.StatusRequestedRangeNotSatisfiable, Message: "The requested range is not satisfiable"}
	err = m.fail(context.Background(), "get range", "a/b", resp)
	want = `s3store: get range "a/b": s3store: range not satisfiable: The requested range is not satisfiable`
	if err.Error() != want || !errors.Is(err, ErrRangeNotSatisfiable) || errors.Is(err, ErrNotFound) {
		t.Fatalf("error\n got %s\nwant %s, wrapping only ErrRangeNotSatisfiable", err, want)
	}

	// RequestTimeout is told apart from the caller's own deadline.
	rctx, cancel := context.WithTimeoutCause(context.Background(), 0, errRequestTimeout)
	defer cancel()
	<-rctx.Done()
	err = m.fail(rctx, "put", "k", rctx.Err())
	if !errors.Is(err, context.DeadlineExceeded) || err.Error() != `s3store: put "k": request timed out after 30s (RequestTimeout): context deadline exceeded` {
		t.Fatalf("timeout error = %v", err)
	}
}

func TestParseContentRange(t *testing.T) {
	for _, c := range []struct {
		in                string
		first, last, size int64
	}{
		{"bytes 0-0/1", 0, 0, 1},
		{"bytes 10-19/1000", 10, 19, 1000},
		{"bytes 990-999/1000", 990, 999, 1000},
		{"bytes 5-9/10", 5, 9, 10},
		{"bytes 9223372036854775805-9223372036854775806/9223372036854775807", 1<<63 - 3, 1<<63 - 2, 1<<63 - 1},
	} {
		first, last, size, err := parseContentRange(c.in)
		if err != nil || first != c.first || last != c.last || size != c.size {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v; want %d, %d, %d", c.in, first, last, size, err, c.first, c.last, c.size)
		}
	}
	for _, in := range []string{
		"", "bytes", "bytes */10", "bytes 0-9/*", "bytes 0-9", "items 0-9/10", "bytes=0-9/10",
		"bytes 9-0/10", "bytes 0-10/10", "bytes -1-9/10", "bytes 0--9/10", "bytes 0-9/-10",
		"bytes 0-9/10 ", "bytes 0x1-9/10", "bytes 0-9/99999999999999999999",
	} {
		if _, _, _, err := parseContentRange(in); err == nil {
			t.Errorf("parseContentRange(%q) accepted", in)
		}
	}
}
