package integration

import (
	"testing"

	"github.com/s3persist/s3persist/internal/fencetest"
)

// Fencing needs a server that really refuses conditional writes that do not hold:
// the same cases as on the in-memory store, against MinIO.
func TestFencingOnMinio(t *testing.T) { fencetest.Run(t, newMinioStore) }
