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

	// RequestTimeout is told apart from the caller's own deadline.
	rctx, cancel := context.WithTimeoutCause(context.Background(), 0, errRequestTimeout)
	defer cancel()
	<-rctx.Done()
	err = m.fail(rctx, "put", "k", rctx.Err())
	if !errors.Is(err, context.DeadlineExceeded) || err.Error() != `s3store: put "k": request timed out after 30s (RequestTimeout): context deadline exceeded` {
		t.Fatalf("timeout error = %v", err)
	}
}
