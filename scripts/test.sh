#!/usr/bin/env bash
# The test command of s3persist: `bash scripts/test.sh` (CI runs it through .ci/run).
#
# It needs only Go (and, for the race detector, a C compiler; without one it runs the
# tests without -race and says so). In order, stopping at the first failure:
#   1. gofmt: no file may need formatting;
#   2. go vet in every module (the root, integration, and any other nested go.mod);
#   3. go test -race in the root module;
#   4. install the MinIO server (scripts/install-minio.sh; minutes the first time);
#   5. go test -race in the integration module, against real MinIO servers: MinIO
#      containers run with testcontainers-go when a Docker engine answers (images built
#      locally FROM scratch from the installed binary; nothing is pulled), else MinIO
#      processes of the binary (see integration/miniotest/doc.go); then the line of each
#      test binary saying which server it used;
#   6. go test -race in every other nested module.
# The output ends with go test's own summary lines.
#
# Written for bash 3.2 too (macOS): no mapfile, and arrays that may be empty are expanded
# as ${a[@]+"${a[@]}"}, which set -u accepts there.
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(pwd)"
start=$SECONDS

step() { printf '\n==> [%dm%02ds] %s\n' $(((SECONDS - start) / 60)) $(((SECONDS - start) % 60)) "$*"; }
die() {
	printf 'test.sh: error: %s\n' "$*" >&2
	exit 1
}

command -v go >/dev/null 2>&1 || die "the go command is not on PATH"

step "environment"
go version
printf 'repository: %s\n' "$root"

# The race detector needs cgo, which needs a C compiler; go env reports CGO_ENABLED=0
# when there is none (or when the caller disabled cgo).
race=(-race)
go_test="go test -race"
if [[ "$(go env CGO_ENABLED)" != 1 ]]; then
	race=()
	go_test="go test"
	cat >&2 <<'EOF'
test.sh: WARNING: cgo is unavailable (no C compiler, or CGO_ENABLED=0), so the tests run
test.sh: WARNING: WITHOUT the race detector. Install a C compiler (e.g. gcc) to run them with -race.
EOF
fi

# Nested modules other than the root and integration, e.g. examples/volantmq. go.mod files
# under testdata or under directories that the go command ignores (names starting with
# "." or "_") are fixtures, not modules of the project; they are listed, not tested.
other_modules=()
while IFS= read -r gomod; do
	dir="${gomod%/go.mod}"
	dir="${dir#./}"
	case "/$dir/" in
	*/testdata/* | */.* | */_*)
		printf 'not a project module (ignored by the go command): %s\n' "$gomod"
		continue
		;;
	esac
	other_modules+=("$dir")
done < <(find . -mindepth 2 -name go.mod -not -path './.git/*' -not -path './integration/go.mod' | LC_ALL=C sort)
printf 'modules: . integration %s\n' "${other_modules[*]-}"

step "gofmt -l (every .go file outside testdata)"
go_files=()
while IFS= read -r f; do
	go_files+=("$f")
done < <(find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' | LC_ALL=C sort)
((${#go_files[@]})) || die "no .go files found"
unformatted="$(gofmt -l "${go_files[@]}")"
if [[ -n "$unformatted" ]]; then
	printf '%s\n' "$unformatted"
	die "these files need gofmt (run: gofmt -w <file>)"
fi

for mod in . integration ${other_modules[@]+"${other_modules[@]}"}; do
	step "go vet ./...   (module: $mod)"
	(cd "$mod" && go vet ./...)
done

step "$go_test -count=1 ./...   (module: .)"
go test ${race[@]+"${race[@]}"} -count=1 ./...

step "install MinIO (scripts/install-minio.sh)"
S3PERSIST_MINIO_BIN="$(bash scripts/install-minio.sh)"
export S3PERSIST_MINIO_BIN
printf 'S3PERSIST_MINIO_BIN=%s\n' "$S3PERSIST_MINIO_BIN"
if [[ -n "${S3PERSIST_TEST_S3_ENDPOINT:-}" ]]; then
	printf 'note: S3PERSIST_TEST_S3_ENDPOINT is set: the integration tests use the S3 service at %s\n' "$S3PERSIST_TEST_S3_ENDPOINT"
fi

# The reference bbolt plugin's bbolt (coreos/bbolt v1.3.3) fails the compiler's checkptr
# instrumentation that -race turns on, with a fatal error that kills the whole test
# binary; checkptr is turned off for that one package, the race detector stays on.
bbolt_gcflags=-gcflags=github.com/coreos/bbolt=-d=checkptr=0

# No registry can be pulled from, so testcontainers-go's reaper (ryuk) cannot run; the
# tests remove their containers and networks themselves. Containers are reached only
# through ports published on 127.0.0.1.
export TESTCONTAINERS_RYUK_DISABLED="${TESTCONTAINERS_RYUK_DISABLED:-true}"
export TESTCONTAINERS_HOST_OVERRIDE="${TESTCONTAINERS_HOST_OVERRIDE:-127.0.0.1}"
printf 'TESTCONTAINERS_RYUK_DISABLED=%s TESTCONTAINERS_HOST_OVERRIDE=%s\n' "$TESTCONTAINERS_RYUK_DISABLED" "$TESTCONTAINERS_HOST_OVERRIDE"
printf 'MinIO for the integration tests: S3PERSIST_MINIO_MODE=%s (auto: a container through testcontainers-go if a Docker engine answers, else the binary; an engine that answers but cannot run the container fails the tests)\n' "${S3PERSIST_MINIO_MODE:-auto}"
# go test shows a passing package's output only with -v: each test binary's choice of
# server is appended to this file and printed after the run.
miniotest_report="$(mktemp "${TMPDIR:-/tmp}/s3persist-miniotest-report.XXXXXX")"
trap 'rm -f "$miniotest_report"' EXIT
export S3PERSIST_MINIOTEST_REPORT="$miniotest_report"
step "$go_test $bbolt_gcflags -count=1 -timeout 25m ./...   (module: integration)"
status=0
(cd integration && go test ${race[@]+"${race[@]}"} "$bbolt_gcflags" -count=1 -timeout 25m ./...) || status=$?
step "the MinIO server of each integration test binary (integration/miniotest)"
if [[ -s "$miniotest_report" ]]; then
	cat "$miniotest_report"
else
	printf '(no test binary started a server)\n'
fi
unset S3PERSIST_MINIOTEST_REPORT
((status == 0)) || die "the integration tests failed (go test exit status $status)"

for mod in ${other_modules[@]+"${other_modules[@]}"}; do
	step "$go_test -count=1 -timeout 10m ./...   (module: $mod)"
	(cd "$mod" && go test ${race[@]+"${race[@]}"} -count=1 -timeout 10m ./...)
done
