package s3persist_test

import (
	"testing"

	"github.com/s3persist/s3persist/internal/fencetest"
	"github.com/s3persist/s3persist/s3store"
)

func TestFencingOnMemory(t *testing.T) {
	fencetest.Run(t, func(t *testing.T) s3store.Store { return s3store.NewMemory() })
}
