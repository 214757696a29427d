// Package integration runs s3persist against real S3-compatible servers (MinIO) and
// compares it with the VolantMQ reference persistence plugins. It is a separate module so
// that its dependencies (testcontainers-go, the reference plugins) never reach a user's build.
package integration
