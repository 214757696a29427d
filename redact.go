package s3persist

import (
	"fmt"
	"log/slog"
)

// plainConfig is Config without its methods, so that String can print every field
// without calling itself; the S3 field keeps its own redacting String.
type plainConfig Config

// String describes c with every field; S3 prints through s3store.MinioConfig.String,
// which redacts the credentials and the SSE-C key, and Store and Logger print as
// pointers, never as their content.
func (c Config) String() string { return fmt.Sprintf("s3persist.Config%+v", plainConfig(c)) }

// GoString is String, so that %#v redacts too.
func (c Config) GoString() string { return c.String() }

// LogValue is String, so that slog handlers (JSON included) redact too: a JSON handler
// would otherwise encode S3 field by field, credentials included.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }
