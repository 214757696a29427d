package s3store_test

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/s3persist/s3persist/s3store"
	"github.com/s3persist/s3persist/s3store/storetest"
)

// rangeObject is the one object the fake servers below hold.
const rangeObject = "0123456789"

// objectHeader is the header of a GET answer: minio-go refuses one without ETag and
// Last-Modified. contentRange is left out when empty.
func objectHeader(contentRange string) http.Header {
	h := http.Header{"Etag": {`"etag"`}, "Last-Modified": {"Mon, 02 Jan 2006 15:04:05 GMT"}}
	if contentRange != "" {
		h.Set("Content-Range", contentRange)
	}
	return h
}

// parseRange parses the "bytes=first-last" header minio-go sends for GetRange.
func parseRange(t *testing.T, h string) (first, last int64) {
	t.Helper()
	a, b, ok := strings.Cut(strings.TrimPrefix(h, "bytes="), "-")
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if !strings.HasPrefix(h, "bytes=") || !ok || err1 != nil || err2 != nil {
		t.Errorf("Range header %q is not bytes=first-last", h)
	}
	return first, last
}

// Minio's GetRange against the answers an S3 server may give: S3's own (416 InvalidRange
// for a range starting at or past the end, 206 cut at the end of the object for one that
// ends past it), a 416 without a body, and a server that ignores Range and sends the
// whole object. Each answer gives the same outcome.
func TestMinioGetRangeMapsEveryAnswerToTheContract(t *testing.T) {
	storetest.CheckGoroutines(t)
	size := int64(len(rangeObject))
	servers := map[string]func(first, last int64) (int, http.Header, string){
		"S3": func(first, last int64) (int, http.Header, string) {
			if first >= size {
				return s3Error(416, "InvalidRange")
			}
			last = min(last, size-1)
			return 206, objectHeader(fmt.Sprintf("bytes %d-%d/%d", first, last, size)), rangeObject[first : last+1]
		},
		"a 416 without a body": func(first, last int64) (int, http.Header, string) {
			if first >= size {
				return 416, nil, ""
			}
			last = min(last, size-1)
			return 206, objectHeader(fmt.Sprintf("bytes %d-%d/%d", first, last, size)), rangeObject[first : last+1]
		},
		"one that ignores Range": func(int64, int64) (int, http.Header, string) {
			return 200, objectHeader(""), rangeObject
		},
	}
	for name, answer := range servers {
		t.Run(name, func(t *testing.T) {
			f := newFakeS3(t, func(r *http.Request) (int, http.Header, string) {
				if bucketOK(r) {
					return 200, nil, ""
				}
				if r.Method != http.MethodGet || r.URL.Path != "/bucket/k" {
					return s3Error(400, "Unexpected")
				}
				return answer(parseRange(t, r.Header.Get("Range")))
			})
			s, err := s3store.NewMinio(t.Context(), f.config())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for _, c := range []struct{ offset, length int64 }{{0, 1}, {3, 4}, {9, 1}, {0, 10}} {
				data, info, err := s.GetRange(t.Context(), "k", c.offset, c.length)
				want := rangeObject[c.offset : c.offset+c.length]
				if err != nil || string(data) != want || info != (s3store.ObjectInfo{Key: "k", Size: size, ETag: "etag"}) {
					t.Errorf("GetRange(%d, %d) = %q, %+v, %v; want %q and the whole object's info", c.offset, c.length, data, info, err, want)
				}
			}
			for _, c := range []struct{ offset, length int64 }{{5, 6}, {0, 11}, {10, 1}, {11, 5}, {1 << 40, 1}} {
				data, _, err := s.GetRange(t.Context(), "k", c.offset, c.length)
				if !errors.Is(err, s3store.ErrRangeNotSatisfiable) || data != nil || !strings.HasPrefix(err.Error(), `s3store: get range "k": `) {
					t.Errorf("GetRange(%d, %d) = %q, %v; want no data and ErrRangeNotSatisfiable", c.offset, c.length, data, err)
				}
			}
		})
	}
}

// An answer that is not the range asked for is an error that names no outcome.
func TestMinioGetRangeRefusesAnAnswerForAnotherRange(t *testing.T) {
	storetest.CheckGoroutines(t)
	for name, cr := range map[string]string{
		"another start":            "bytes 1-4/10",
		"more than asked for":      "bytes 0-4/10",
		"a length unlike the body": "bytes 0-2/10",
		"an unknown size":          "bytes 0-3/*",
		"garbage":                  "bytes zero-three/10",
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeS3(t, func(r *http.Request) (int, http.Header, string) {
				if bucketOK(r) {
					return 200, nil, ""
				}
				body := "0123"
				if name == "more than asked for" {
					body = "01234"
				}
				return 206, objectHeader(cr), body
			})
			s, err := s3store.NewMinio(t.Context(), f.config())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			data, _, err := s.GetRange(t.Context(), "k", 0, 4)
			if err == nil || data != nil || !strings.Contains(err.Error(), "Content-Range") {
				t.Fatalf("GetRange = %q, %v; want an error about the Content-Range", data, err)
			}
			for _, sentinel := range []error{s3store.ErrNotFound, s3store.ErrRangeNotSatisfiable, s3store.ErrInvalidArgument} {
				if errors.Is(err, sentinel) {
					t.Fatalf("GetRange error %v is %v; want no outcome", err, sentinel)
				}
			}
		})
	}
}

// A bad range makes no request.
func TestMinioGetRangeRefusesABadRangeWithoutARequest(t *testing.T) {
	storetest.CheckGoroutines(t)
	f := newFakeS3(t, func(r *http.Request) (int, http.Header, string) {
		if bucketOK(r) {
			return 200, nil, ""
		}
		return s3Error(400, "Unexpected")
	})
	s, err := s3store.NewMinio(t.Context(), f.config())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before := f.requests.Load()
	for _, c := range []struct{ offset, length int64 }{{-1, 1}, {0, 0}, {1, -1}, {1 << 62, 1 << 62}} {
		if _, _, err := s.GetRange(t.Context(), "k", c.offset, c.length); !errors.Is(err, s3store.ErrInvalidArgument) {
			t.Errorf("GetRange(%d, %d): %v, want ErrInvalidArgument", c.offset, c.length, err)
		}
	}
	if n := f.requests.Load() - before; n != 0 {
		t.Fatalf("%d requests for bad ranges, want none", n)
	}
}
