// Package miniotest gives integration tests a real S3 endpoint: an existing S3-compatible
// service named by environment variables, a MinIO container run with testcontainers-go
// (when a Docker engine is reachable), or a MinIO server process started from the local
// binary.
//
// # Choosing the server
//
// [Start] takes the first of these that applies:
//
//  1. External ("external"): S3PERSIST_TEST_S3_ENDPOINT is set. Nothing is started; the
//     tests use that service with the credentials below.
//  2. Binary, forced ("binary"): S3PERSIST_MINIO_MODE=binary. The MinIO binary is run
//     (for debugging: its log is a file, and no engine is involved).
//  3. Docker ("docker"): a Docker engine answers a ping within a few seconds (or
//     S3PERSIST_MINIO_MODE=docker, and then it must). A container of the local image
//     s3persist-minio:<hash> is started with testcontainers-go. The image is built by
//     package [github.com/s3persist/s3persist/integration/images] FROM scratch from the
//     MinIO binary (the one of S3PERSIST_MINIO_BIN, else the installed one, see 4), only
//     when no image of that binary's hash exists; nothing is pulled (the project's
//     machines have no registry). If the engine answers but the image cannot be built or
//     the container does not become healthy, Start fails: it does not fall back to the
//     binary, so that a broken container path fails CI instead of going unnoticed.
//  4. Binary ("binary"): no engine answers. Start says so once per test process on
//     stderr ("miniotest: no Docker engine reachable (...); running MinIO from the
//     binary ...") and runs S3PERSIST_MINIO_BIN, else the binary that
//     scripts/install-minio.sh installs
//     (${S3PERSIST_TOOLS_DIR:-$HOME/.cache/s3persist/tools}/minio-<MinioVersion>/minio),
//     else "minio" on PATH.
//
// If none applies, Start fails with an error telling how to get MinIO: run
// `bash scripts/test.sh` (which installs it) or `bash scripts/install-minio.sh` and set
// S3PERSIST_MINIO_BIN.
//
// [Main] prints the server it uses, one line per test binary ("miniotest: <binary>:
// using docker S3 at ..., image ..., container ..."), to stderr and, if
// S3PERSIST_MINIOTEST_REPORT names a file, to the end of that file; scripts/test.sh
// prints that file after the integration tests, because go test hides the output of a
// passing package.
//
// # Environment variables
//
//	S3PERSIST_TEST_S3_ENDPOINT         host:port of an existing S3 service (selects "external")
//	S3PERSIST_TEST_S3_ACCESS_KEY       its access key (required with the endpoint)
//	S3PERSIST_TEST_S3_SECRET_KEY       its secret key (required with the endpoint)
//	S3PERSIST_TEST_S3_SECURE           "1"/"true" for HTTPS (default false)
//	S3PERSIST_TEST_S3_REGION           region (default us-east-1)
//	S3PERSIST_TEST_S3_BUCKET           an existing bucket to use instead of creating
//	                                   buckets; each test then gets its own key prefix
//	S3PERSIST_TEST_S3_ALLOW_NONEMPTY   "1" to accept a non-empty S3PERSIST_TEST_S3_BUCKET
//	S3PERSIST_MINIO_MODE               auto (default), docker or binary
//	S3PERSIST_MINIO_BIN                path of the minio server binary (run, or put in the image)
//	S3PERSIST_TOOLS_DIR                tools dir of scripts/install-minio.sh
//	S3PERSIST_MINIO_IMAGE              an existing image to run instead of building one
//	S3PERSIST_MINIOTEST_REPORT         a file to which Main appends the server it uses
//	TESTCONTAINERS_RYUK_DISABLED       set to true if unset (package images): the reaper
//	                                   image cannot be pulled
//	TESTCONTAINERS_HOST_OVERRIDE       set to 127.0.0.1 if unset (package images)
//
// # Docker server
//
// The container runs `/minio server /data` with random root credentials, on a Docker
// network created for it, with its port 9000 published on 127.0.0.1 only, at a host port
// chosen at start; the network alias of MinIO there is "minio". testcontainers-go waits
// for GET /minio/health/live, then Start waits until S3 requests are served. Its data is
// in an anonymous volume at /data (on the engine's disk, not in the layered file system;
// removed with the container). [Server.Pause] kills the container (`docker kill`,
// SIGKILL), which keeps its volume and port binding;
// [Server.Resume] starts the same container again, so the endpoint and the data survive;
// [Server.Restart] stops it (SIGTERM, SIGKILL after StopGrace) and starts it.
// [Server.Stop] removes the container and the network. Both are labelled
// org.s3persist.miniotest=1 and org.s3persist.owner=<host>:<pid of the test process>;
// testcontainers-go's reaper is disabled, so the next Start removes those left by test
// processes of this host that died without Stop.
//
// # Binary server
//
// The binary server listens on 127.0.0.1 only, on ports chosen at start, with random root
// credentials, over a fresh temporary directory. Its output goes to a log file in that
// directory; when it fails to start, the error includes the end of that log. It can be
// taken down and brought back on the same port and data ([Server.Pause],
// [Server.Resume], [Server.Restart]), to test behaviour during outages. [Server.Stop]
// stops it (SIGTERM, then SIGKILL after a grace period) and removes the directory. On
// Linux the process also gets SIGKILL if the test binary dies without calling Stop, and
// directories left by such test binaries are removed by the next Start.
//
// # TLS and KMS
//
// [StartBinary] starts a binary server of a test's own with [Options], whatever
// S3PERSIST_MINIO_MODE says: TLS serves HTTPS only, with a certificate for 127.0.0.1
// signed by a CA made for that server alone ([Server].RootCAs; [Server.Client] trusts
// it, nothing else does); KMS gives it a built-in KMS key named [KMSKeyName] for SSE-S3
// and SSE-KMS. Without a binary its error
// wraps errors.ErrUnsupported, so the test can skip (as with an external S3 service).
//
// # Use in a test package
//
// One server per test binary, started in TestMain:
//
//	var srv *miniotest.Server
//
//	func TestMain(m *testing.M) { miniotest.Main(m, &srv) }
//
//	func TestSomething(t *testing.T) {
//		tgt := srv.NewTarget(t) // a fresh bucket (or prefix), emptied and removed after t
//		client, err := srv.Client()
//		...
//	}
//
// Tests must put every key under tgt.Prefix (empty unless S3PERSIST_TEST_S3_BUCKET is
// set), so that the same tests run unchanged against a shared bucket.
package miniotest
