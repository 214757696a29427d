// Package miniotest gives integration tests a real S3 endpoint: an existing S3-compatible
// service named by environment variables, a MinIO container (when a Docker engine is
// reachable), or a MinIO server process started from the local binary.
//
// # Choosing the server
//
// [Start] takes the first of these that applies:
//
//  1. External ("external"): S3PERSIST_TEST_S3_ENDPOINT is set. Nothing is started; the
//     tests use that service with the credentials below.
//  2. Binary, requested ("binary"): S3PERSIST_MINIO_BIN is set. That MinIO binary is
//     started. scripts/test.sh sets it, so the project's test command always runs this
//     way, whether or not Docker is available.
//  3. Docker ("docker"): a Docker engine answers a ping within a few seconds. A minio/minio
//     container is started with testcontainers-go.
//  4. Binary, found ("binary"): the binary that scripts/install-minio.sh installs
//     (${S3PERSIST_TOOLS_DIR:-$HOME/.cache/s3persist/tools}/minio-<MinioVersion>/minio),
//     else "minio" on PATH.
//
// If none applies, Start fails with an error telling how to get MinIO: run
// `bash scripts/test.sh` (which installs it) or `bash scripts/install-minio.sh` and set
// S3PERSIST_MINIO_BIN.
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
//	S3PERSIST_MINIO_BIN                path of the minio server binary to run
//	S3PERSIST_TOOLS_DIR                tools dir of scripts/install-minio.sh
//	S3PERSIST_MINIO_IMAGE              image for the Docker mode (default DefaultImage)
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
// [StartBinary] starts a binary server of a test's own with [Options]: TLS serves HTTPS
// only, with a certificate for 127.0.0.1 signed by a CA made for that server alone
// ([Server].RootCAs; [Server.Client] trusts it, nothing else does); KMS gives it a
// built-in KMS key named [KMSKeyName] for SSE-S3 and SSE-KMS. Without a binary its error
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
