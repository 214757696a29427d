package s3persist

import (
	"context"
	"testing"

	"github.com/s3persist/s3persist/s3store"
)

// A crash during New's conditional-write check leaves its probe object behind; the
// garbage collection of the next owner deletes it, so it does not accumulate.
func TestAProbeLeftByACrashIsDeletedByTheNextOwner(t *testing.T) {
	f := newFixture(t, Config{})
	if _, err := f.mem.Put(context.Background(), probeRoot+"0123456789abcdef", []byte("probe"), s3store.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	f.restart()
	<-f.p.gcDone
	if k := f.keys(probeRoot); len(k) != 0 {
		t.Fatalf("probe objects left after the garbage collection: %v", k)
	}
}
