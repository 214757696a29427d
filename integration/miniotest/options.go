package miniotest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// KMSKeyName is the name of the built-in KMS key of a server started with
// [Options].KMS: the key id for SSE-KMS.
const KMSKeyName = "s3persist-test-key"

// certsDirName is the --certs-dir of a TLS server, in its temporary directory.
const certsDirName = "certs"

// Options ask for server features that only the binary server provides. The zero value
// asks for none.
type Options struct {
	// TLS serves HTTPS only, with a certificate for 127.0.0.1 and localhost signed by a
	// CA made for this server alone; [Server].RootCAs holds that CA and Secure is true.
	TLS bool
	// KMS gives the server a built-in KMS key named KMSKeyName (MINIO_KMS_SECRET_KEY,
	// random for each server), so that SSE-S3 and SSE-KMS work.
	KMS bool
}

// StartBinary starts a MinIO server process with opts, whatever the environment says
// about the other kinds of server: the binary named by S3PERSIST_MINIO_BIN, else the one
// scripts/install-minio.sh installs, else "minio" on PATH. With no binary, the error
// wraps errors.ErrUnsupported, so that a test can skip. Stop it like any Server.
func StartBinary(ctx context.Context, opts Options) (*Server, error) {
	bin := os.Getenv(EnvMinioBin)
	if bin == "" {
		var err error
		if bin, err = findBinary(); err != nil {
			return nil, fmt.Errorf("miniotest: StartBinary needs a MinIO binary: %v (set %s): %w",
				err, EnvMinioBin, errors.ErrUnsupported)
		}
	}
	return startBinaryWith(ctx, bin, opts)
}

// kmsSecretKeyEnv returns MINIO_KMS_SECRET_KEY with a fresh random key.
func kmsSecretKeyEnv() (string, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("miniotest: KMS key: %w", err)
	}
	return "MINIO_KMS_SECRET_KEY=" + KMSKeyName + ":" + base64.StdEncoding.EncodeToString(key), nil
}

// writeServerCerts makes a CA and a server certificate for 127.0.0.1 and localhost,
// signed by it, writes the certificate and key to dir as MinIO's --certs-dir expects
// (public.crt, private.key), and returns a pool holding the CA.
func writeServerCerts(dir string) (*x509.CertPool, error) {
	fail := func(err error) (*x509.CertPool, error) {
		return nil, fmt.Errorf("miniotest: TLS certificates: %w", err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fail(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "s3persist miniotest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fail(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fail(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fail(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fail(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fail(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fail(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := os.WriteFile(filepath.Join(dir, "public.crt"), certPEM, 0o600); err != nil {
		return fail(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "private.key"), keyPEM, 0o600); err != nil {
		return fail(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, nil
}

// tlsConfig is the client TLS configuration for a server whose CA is in roots; nil
// roots (a plain HTTP server) give nil.
func tlsConfig(roots *x509.CertPool) *tls.Config {
	if roots == nil {
		return nil
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
}
