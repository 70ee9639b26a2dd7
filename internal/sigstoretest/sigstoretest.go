// Package sigstoretest makes Sigstore bundles for tests, with sigstore-go's
// signing API and keys generated in the test: by a public key (as
// `cosign sign --key` writes them), or keyless, by a short-lived
// certificate from a test Fulcio CA, logged by a test Rekor that answers
// in-process with a signed entry timestamp and an inclusion proof. No
// network is used.
//
// The image signature is cosign v3's (cosign's specs/BUNDLE_SPEC.md and
// its sign command): a DSSE envelope of payload type
// application/vnd.in-toto+json holding an in-toto v1 statement whose one
// subject is the manifest digest, with predicate type
// https://sigstore.dev/cosign/sign/v1 and an empty predicate. The bundle
// is protobuf-JSON, media type application/vnd.dev.sigstore.bundle.v0.3+json.
package sigstoretest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
	"github.com/opencontainers/go-digest"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	"github.com/sigstore/rekor/pkg/generated/client/entries"
	"github.com/sigstore/rekor/pkg/generated/models"
	"github.com/sigstore/rekor/pkg/types"
	"github.com/sigstore/rekor/pkg/util"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/signature"
	"google.golang.org/protobuf/encoding/protojson"
)

// BundleType is the media type (and OCI artifactType) of the bundles made.
const BundleType = "application/vnd.dev.sigstore.bundle.v0.3+json"

// SignPredicate is the predicate type of cosign v3's image signatures.
const SignPredicate = "https://sigstore.dev/cosign/sign/v1"

// Statement is cosign v3's in-toto statement for an image signature of
// manifest m, with predicate type predicate.
func Statement(m digest.Digest, predicate string) []byte {
	return fmt.Appendf(nil, `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{%q:%q}}],"predicateType":%q,"predicate":{}}`, m.Algorithm().String(), m.Encoded(), predicate)
}

// Key is a signing key pair.
type Key struct {
	kp *sign.EphemeralKeypair
}

// NewKey generates an ECDSA P-256 key, the kind `cosign generate-key-pair`
// makes.
func NewKey(t testing.TB) *Key {
	t.Helper()
	kp, err := sign.NewEphemeralKeypair(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &Key{kp}
}

// PublicPEM is the public key, PEM, as a policy's keyPath holds it.
func (k *Key) PublicPEM(t testing.TB) []byte {
	t.Helper()
	p, err := k.kp.GetPublicKeyPem()
	if err != nil {
		t.Fatal(err)
	}
	return []byte(p)
}

// Fingerprint is "sha256:" and the hex sha256 of the public key's DER.
func (k *Key) Fingerprint(t testing.TB) string {
	t.Helper()
	return fingerprint(t, k.kp.GetPublicKey())
}

func fingerprint(t testing.TB, pub crypto.PublicKey) string {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Options change what a bundle holds.
type Options struct {
	// Predicate replaces cosign's signature predicate type (an attestation).
	Predicate string
	// Message signs these bytes as a message signature (their sha256 is
	// the digest signed) instead of a DSSE statement.
	Message []byte
	// Rekor logs the signature there.
	Rekor *Rekor
	// IssuedAt is when a keyless certificate's 10 minutes of validity
	// begin; zero is a minute ago.
	IssuedAt time.Time
}

// Sign returns a bundle signing manifest m with k, as cosign v3's
// `cosign sign --key` makes it (without a Rekor entry unless o.Rekor).
func (k *Key) Sign(t testing.TB, m digest.Digest, o Options) []byte {
	t.Helper()
	return bundle(t, k.kp, nil, m, o)
}

func bundle(t testing.TB, kp sign.Keypair, cp sign.CertificateProvider, m digest.Digest, o Options) []byte {
	t.Helper()
	out, err := protojson.Marshal(protoBundle(t, kp, cp, m, o))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func protoBundle(t testing.TB, kp sign.Keypair, cp sign.CertificateProvider, m digest.Digest, o Options) *protobundle.Bundle {
	t.Helper()
	var content sign.Content = &sign.PlainData{Data: o.Message}
	if o.Message == nil {
		content = &sign.DSSEData{Data: Statement(m, cmp(o.Predicate, SignPredicate)), PayloadType: "application/vnd.in-toto+json"}
	}
	opts := sign.BundleOptions{CertificateProvider: cp, Context: context.Background()}
	if o.Rekor != nil {
		opts.TransparencyLogs = []sign.Transparency{sign.NewRekor(&sign.RekorOptions{Client: o.Rekor, Timeout: -1})}
	}
	b, err := sign.Bundle(content, kp, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Legacy is a legacy signature as cosign v2 writes it (cosign's
// specs/SIGNATURE_SPEC.md): the base64 signature of the simple-signing
// payload, and the annotations of the payload's layer in the manifest
// tagged sha256-HEX.sig: dev.cosignproject.cosign/signature; for a keyless
// one dev.sigstore.cosign/certificate and dev.sigstore.cosign/chain (PEM);
// for a logged one dev.sigstore.cosign/bundle, Rekor's signed entry
// timestamp and what it signs: {"SignedEntryTimestamp": base64,
// "Payload": {"body": base64 of the entry, "integratedTime", "logIndex",
// "logID": hex}}.
type Legacy struct {
	Base64      string
	Annotations map[string]string
}

// SignLegacy signs simple-signing payload pl as `cosign sign --key` (v2)
// does, logged in o.Rekor if set.
func (k *Key) SignLegacy(t testing.TB, pl []byte, o Options) Legacy {
	t.Helper()
	o.Message = pl
	return legacy(t, protoBundle(t, k.kp, nil, "", o), nil)
}

// SignLegacy signs simple-signing payload pl keyless as cosign v2's
// `cosign sign` does: an ephemeral key, a certificate from ca for subject
// by issuer, logged in o.Rekor if set.
func (ca *CA) SignLegacy(t testing.TB, pl []byte, issuer, subject string, o Options) Legacy {
	t.Helper()
	kp, err := sign.NewEphemeralKeypair(nil)
	if err != nil {
		t.Fatal(err)
	}
	at := o.IssuedAt
	if at.IsZero() {
		at = time.Now().Add(-time.Minute)
	}
	o.Message = pl
	return legacy(t, protoBundle(t, kp, provider{ca, issuer, subject, at}, "", o), ca)
}

// legacy takes a legacy signature's parts out of bundle b (a message
// signature over the payload).
func legacy(t testing.TB, b *protobundle.Bundle, ca *CA) Legacy {
	t.Helper()
	l := Legacy{
		Base64:      base64.StdEncoding.EncodeToString(b.GetMessageSignature().GetSignature()),
		Annotations: map[string]string{},
	}
	l.Annotations["dev.cosignproject.cosign/signature"] = l.Base64
	if c := b.GetVerificationMaterial().GetCertificate(); c != nil {
		l.Annotations["dev.sigstore.cosign/certificate"] = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.GetRawBytes()}))
		var chain bytes.Buffer
		pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: ca.inter.Raw})
		pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw})
		l.Annotations["dev.sigstore.cosign/chain"] = chain.String()
	}
	if es := b.GetVerificationMaterial().GetTlogEntries(); len(es) > 0 {
		e := es[0]
		var ra struct {
			SignedEntryTimestamp []byte `json:"SignedEntryTimestamp"`
			Payload              struct {
				Body           string `json:"body"`
				IntegratedTime int64  `json:"integratedTime"`
				LogIndex       int64  `json:"logIndex"`
				LogID          string `json:"logID"`
			} `json:"Payload"`
		}
		ra.SignedEntryTimestamp = e.GetInclusionPromise().GetSignedEntryTimestamp()
		ra.Payload.Body = base64.StdEncoding.EncodeToString(e.GetCanonicalizedBody())
		ra.Payload.IntegratedTime, ra.Payload.LogIndex = e.GetIntegratedTime(), e.GetLogIndex()
		ra.Payload.LogID = hex.EncodeToString(e.GetLogId().GetKeyId())
		j, err := json.Marshal(ra)
		if err != nil {
			t.Fatal(err)
		}
		l.Annotations["dev.sigstore.cosign/bundle"] = string(j)
	}
	return l
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// CA is a test Fulcio: a root and an intermediate that issue short-lived
// code-signing certificates naming an OIDC identity.
type CA struct {
	root, inter       *x509.Certificate
	rootKey, interKey *ecdsa.PrivateKey
}

// NewCA makes a root and an intermediate CA.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca := &CA{}
	ca.rootKey, ca.root = cert(t, &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sigstoretest root"},
		NotBefore: time.Now().Add(-24 * time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, nil)
	ca.interKey, ca.inter = cert(t, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "sigstoretest intermediate"},
		NotBefore: time.Now().Add(-24 * time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}, ca.root, ca.rootKey)
	return ca
}

// cert makes a certificate from template with a new key, signed by
// parent's key (self-signed when parent is nil).
func cert(t testing.TB, template, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = template, k
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, k.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return k, c
}

// PEM is the root and the intermediate, PEM, as a policy's fulcio caPath
// holds Fulcio's.
func (ca *CA) PEM() []byte {
	var b bytes.Buffer
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw})
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: ca.inter.Raw})
	return b.Bytes()
}

// OIDC issuer extension of Fulcio certificates (1.3.6.1.4.1.57264.1.8, a
// DER UTF8String).
var oidIssuerV2 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}

// provider is a sign.CertificateProvider: the CA issuing a certificate to
// the key being signed with, for an identity.
type provider struct {
	ca              *CA
	issuer, subject string
	at              time.Time
}

// GetCertificate issues a 10-minute certificate for the keypair's public
// key naming the identity: an email SAN, or a URI SAN when the subject
// is a URL (as Fulcio does for CI workflows).
func (p provider) GetCertificate(_ context.Context, kp sign.Keypair, _ *sign.CertificateProviderOptions) ([]byte, error) {
	iss, err := asn1.MarshalWithParams(p.issuer, "utf8")
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    p.at, NotAfter: p.at.Add(10 * time.Minute),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		ExtraExtensions: []pkix.Extension{{Id: oidIssuerV2, Value: iss}},
	}
	if strings.Contains(p.subject, "://") {
		u, err := url.Parse(p.subject)
		if err != nil {
			return nil, err
		}
		tmpl.URIs = []*url.URL{u}
	} else {
		tmpl.EmailAddresses = []string{p.subject}
	}
	return x509.CreateCertificate(rand.Reader, tmpl, p.ca.inter, kp.GetPublicKey(), p.ca.interKey)
}

// Sign returns a keyless bundle signing manifest m: an ephemeral key, a
// certificate from ca for subject (an email, or a URI) by OIDC issuer,
// and the entry rekor logged (rekor is required: a keyless signature
// without a log entry proves no time at which the certificate was valid).
func (ca *CA) Sign(t testing.TB, m digest.Digest, issuer, subject string, o Options) []byte {
	t.Helper()
	kp, err := sign.NewEphemeralKeypair(nil)
	if err != nil {
		t.Fatal(err)
	}
	at := o.IssuedAt
	if at.IsZero() {
		at = time.Now().Add(-time.Minute)
	}
	return bundle(t, kp, provider{ca, issuer, subject, at}, m, o)
}

// Rekor is a test transparency log: a sign.RekorClient that logs each
// entry alone in a one-leaf tree, answering with a signed entry timestamp
// and an inclusion proof whose checkpoint it signs.
type Rekor struct {
	key *ecdsa.PrivateKey
	// At is the time the log says it integrated each entry; zero is now.
	At time.Time
}

// NewRekor generates the log's key.
func NewRekor(t testing.TB) *Rekor {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &Rekor{key: k}
}

// PublicPEM is the log's public key, as a policy's rekorPublicKeyPath
// holds it.
func (r *Rekor) PublicPEM(t testing.TB) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(r.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Fingerprint is "sha256:" and the hex sha256 of the log key's DER (its log ID).
func (r *Rekor) Fingerprint(t testing.TB) string {
	t.Helper()
	return fingerprint(t, r.key.Public())
}

// CreateLogEntry logs the proposed entry, as Rekor's API answers it.
func (r *Rekor) CreateLogEntry(params *entries.CreateLogEntryParams, _ ...entries.ClientOption) (*entries.CreateLogEntryCreated, error) {
	ctx := context.Background()
	ei, err := types.CreateVersionedEntry(params.ProposedEntry)
	if err != nil {
		return nil, err
	}
	body, err := types.CanonicalizeEntry(ctx, ei)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(r.key.Public())
	if err != nil {
		return nil, err
	}
	id := sha256.Sum256(der)
	logID := hex.EncodeToString(id[:])
	now, index, size := time.Now().Unix(), int64(0), int64(1)
	if !r.At.IsZero() {
		now = r.At.Unix()
	}
	b64 := base64.StdEncoding.EncodeToString(body)
	// The signed entry timestamp: Rekor's signature over the canonical JSON
	// of the entry's body, time, index and log ID.
	pl, err := json.Marshal(tlog.RekorPayload{Body: b64, IntegratedTime: now, LogIndex: index, LogID: logID})
	if err != nil {
		return nil, err
	}
	canon, err := jsoncanonicalizer.Transform(pl)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(canon)
	set, err := ecdsa.SignASN1(rand.Reader, r.key, h[:])
	if err != nil {
		return nil, err
	}
	// A one-leaf tree: the root is the leaf's hash (RFC 6962).
	leaf := sha256.Sum256(append([]byte{0}, body...))
	signer, err := signature.LoadECDSASigner(r.key, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	cp, err := util.CreateAndSignCheckpoint(ctx, "rekor.sigstoretest", 1, uint64(size), leaf[:], signer)
	if err != nil {
		return nil, err
	}
	root, cps := hex.EncodeToString(leaf[:]), string(cp)
	anon := models.LogEntryAnon{
		Body: b64, IntegratedTime: &now, LogID: &logID, LogIndex: &index,
		Verification: &models.LogEntryAnonVerification{
			SignedEntryTimestamp: set,
			InclusionProof:       &models.InclusionProof{Checkpoint: &cps, Hashes: []string{}, LogIndex: &index, RootHash: &root, TreeSize: &size},
		},
	}
	uuid := hex.EncodeToString(leaf[:])
	return &entries.CreateLogEntryCreated{ETag: uuid, Payload: models.LogEntry{uuid: anon}}, nil
}

// Fingerprint is "sha256:" and the hex sha256 of the root's DER, as a
// policy names the CA.
func (ca *CA) Fingerprint(t testing.TB) string {
	t.Helper()
	sum := sha256.Sum256(ca.root.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}
