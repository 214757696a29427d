#!/usr/bin/env bash
# Installs the MinIO server used by the integration tests and prints the path of the binary.
#
# The server is built from source with `go install` at a pinned version (MinIO no longer
# ships community binaries we could pin reliably), into
#   ${S3PERSIST_TOOLS_DIR:-$HOME/.cache/s3persist/tools}/minio-<version>/minio
# unless that file is already there. The first build takes several minutes; later builds
# are fast thanks to Go's build cache, and an existing binary is reused without building.
#
# Output: progress goes to stderr; stdout is only the absolute path of the binary, so
#   S3PERSIST_MINIO_BIN="$(bash scripts/install-minio.sh)"
# works. Keep MINIO_VERSION in sync with miniotest.MinioVersion (a test checks it).
set -euo pipefail

MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c

tools_dir="${S3PERSIST_TOOLS_DIR:-$HOME/.cache/s3persist/tools}"
mkdir -p "$tools_dir/minio-$MINIO_VERSION"
bin_dir="$(cd "$tools_dir/minio-$MINIO_VERSION" && pwd)" # absolute, as GOBIN must be
bin="$bin_dir/minio"

log() { printf 'install-minio: %s\n' "$*" >&2; }

if [[ -x "$bin" ]]; then
	log "already installed: $bin"
	printf '%s\n' "$bin"
	exit 0
fi

if ! command -v go >/dev/null 2>&1; then
	log "error: the go command is not on PATH (Go is required to build MinIO)"
	exit 1
fi

# Build into a temporary GOBIN in the same directory, then rename: an interrupted build
# never leaves a partial binary at $bin that a later run would take as installed.
tmp_bin_dir="$(mktemp -d "$bin_dir/.build.XXXXXX")"
trap 'rm -rf "$tmp_bin_dir"' EXIT

log "building $MINIO_MODULE@$MINIO_VERSION into $bin (the first build takes several minutes)"
start=$SECONDS
# GOFLAGS is cleared so that a caller's flags (e.g. -mod=vendor) cannot break the build of
# a module outside the project; CGO is not needed by MinIO.
GOBIN="$tmp_bin_dir" GOFLAGS='' CGO_ENABLED=0 go install "$MINIO_MODULE@$MINIO_VERSION"
mv -f "$tmp_bin_dir/minio" "$bin"
log "built in $((SECONDS - start))s: $bin"
printf '%s\n' "$bin"
