package policy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Sigstore bundles, as cosign v3 attaches them to an image: a DSSE
// envelope holding an in-toto statement whose subject is the image's
// manifest digest and whose predicate type is cosign's signature type,
// or a message signature over the manifest digest. The signature is by a
// public key, or by a short-lived certificate from a Fulcio CA whose
// issuance time a Rekor entry proves. sigstore-go checks all of it; this
// file turns a requirement into sigstore-go's trusted material and its
// answer into an admission or a reason.

// CosignSignPredicate is the in-toto predicate type of cosign v3's image
// signatures (`cosign sign`); attestations of other predicate types
// attached by the same key do not sign the image.
const CosignSignPredicate = "https://sigstore.dev/cosign/sign/v1"

// verifyBundle checks Sigstore bundle raw against r for img: the part of
// an admission it earns, or the rank and text of why not (the ranks of
// verify: 1 another key, 2 malformed, 3 another digest, 4 identity).
func (r Requirement) verifyBundle(img Image, raw []byte) (part string, rank int, reason string) {
	// A bundle is hostile input from a registry; a library's panic on
	// one is a malformed bundle, never a crash.
	defer func() {
		if p := recover(); p != nil {
			part, rank, reason = "", 2, fmt.Sprintf("a Sigstore bundle is malformed: its check failed (%v)", p)
		}
	}()
	var b bundle.Bundle
	if err := b.UnmarshalJSON(raw); err != nil {
		return "", 2, "a Sigstore bundle is malformed: " + err.Error()
	}
	claimed, reason := bundleDigests(&b)
	if reason != "" {
		return "", 2, reason
	}
	if r.Identity.Type == "exactReference" || r.Identity.Type == "exactRepository" {
		return "", 4, fmt.Sprintf("identity mismatch: a Sigstore bundle signs the manifest digest alone, no docker reference that %s could match", r.Identity.Type)
	}
	// Verify the signature over the digest the bundle claims, then compare
	// that with the manifest pulled: a bundle for another image (a replay)
	// is then told apart from one nobody trusted signed.
	d := claimed[0]
	if slices.Contains(claimed, img.Manifest.String()) {
		d = img.Manifest.String()
	}
	alg, hexd, _ := strings.Cut(d, ":")
	sum, err := hex.DecodeString(hexd)
	if err != nil {
		return "", 2, fmt.Sprintf("a Sigstore bundle names digest %q", d)
	}
	art := verify.WithArtifactDigest(alg, sum)
	part, reason = r.sigstore(&b, art)
	switch {
	case reason != "":
		return "", 1, reason
	case d != img.Manifest.String():
		return "", 3, fmt.Sprintf("the signature is for manifest %s, not %s", d, img.Manifest)
	}
	return SigstoreSigned + " bundle " + part, 0, ""
}

// sigstore verifies entity b with sigstore-go, by r's keys or its Fulcio
// CA, for the artifact art: how (the middle of an admission's part: "key
// FP [rekor FP]", "certificate CA issuer I subject S rekor FP"), or why
// not.
func (r Requirement) sigstore(b verify.SignedEntity, art verify.ArtifactPolicyOption) (string, string) {
	if r.Fulcio == nil {
		return r.bundleByKey(b, art)
	}
	return r.bundleByCert(b, art)
}

// bundleDigests returns the digests ("sha256:…") bundle b claims to sign:
// a cosign signature statement's subjects, or a message signature's
// digest; or why it signs no image.
func bundleDigests(b *bundle.Bundle) ([]string, string) {
	if ms := b.GetMessageSignature(); ms != nil {
		md := ms.GetMessageDigest()
		if md == nil {
			return nil, "a Sigstore bundle's message signature names no digest"
		}
		if md.GetAlgorithm() != protocommon.HashAlgorithm_SHA2_256 {
			return nil, fmt.Sprintf("a Sigstore bundle's message digest is %s, not SHA-256", md.GetAlgorithm())
		}
		return []string{"sha256:" + hex.EncodeToString(md.GetDigest())}, ""
	}
	env, err := b.Envelope()
	if err != nil {
		return nil, "a Sigstore bundle holds no signature: " + err.Error()
	}
	st, err := env.Statement()
	if err != nil {
		return nil, "a Sigstore bundle's envelope holds no in-toto statement: " + err.Error()
	}
	if st.GetPredicateType() != CosignSignPredicate {
		return nil, fmt.Sprintf("a Sigstore bundle attests %q, not an image signature (%s)", st.GetPredicateType(), CosignSignPredicate)
	}
	var out []string
	for _, s := range st.GetSubject() {
		if h, ok := s.GetDigest()["sha256"]; ok {
			out = append(out, "sha256:"+strings.ToLower(h))
		}
	}
	if len(out) == 0 {
		return nil, "a Sigstore bundle's statement names no sha256 subject"
	}
	return out, ""
}

// bundleByKey verifies b with each of r's keys in turn; with a Rekor key,
// b must also carry an entry that key logged.
func (r Requirement) bundleByKey(b verify.SignedEntity, art verify.ArtifactPolicyOption) (string, string) {
	logs, err := r.rekorLogs()
	if err != nil {
		return "", err.Error()
	}
	var last error
	for _, k := range r.Keys {
		sv, err := signature.LoadVerifier(k.Public, keyHash(k.Public))
		if err != nil {
			return "", fmt.Sprintf("key %s: %v", k.Fingerprint, err)
		}
		ek := root.NewExpiringKey(sv, time.Time{}, time.Time{})
		keys := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) { return ek, nil })
		var tm root.TrustedMaterial = keys
		opts := []verify.VerifierOption{verify.WithNoObserverTimestamps()}
		if logs != nil {
			tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, nil, nil, nil, logs)
			if err != nil {
				return "", err.Error()
			}
			tm = root.TrustedMaterialCollection{keys, tr}
			opts = []verify.VerifierOption{verify.WithTransparencyLog(1), verify.WithIntegratedTimestamps(1)}
		}
		v, err := verify.NewVerifier(tm, opts...)
		if err != nil {
			return "", err.Error()
		}
		if _, last = v.Verify(b, verify.NewPolicy(art, verify.WithKey())); last == nil {
			return "key " + k.Fingerprint + r.rekorPart(), ""
		}
	}
	if logs != nil {
		return "", fmt.Sprintf("signed by another key, or not logged by the scope's Rekor key: no signature verifies with the scope's key%s (%v)", plural(len(r.Keys)), last)
	}
	return "", fmt.Sprintf("signed by another key: no signature verifies with the scope's key%s (%v)", plural(len(r.Keys)), last)
}

// bundleByCert verifies b against r's Fulcio CA and Rekor key, offline:
// the certificate chains to the CA at the time the Rekor entry's signed
// promise says it was logged; then its issuer and subject must be r's.
func (r Requirement) bundleByCert(b verify.SignedEntity, art verify.ArtifactPolicyOption) (string, string) {
	logs, err := r.rekorLogs()
	if err != nil {
		return "", err.Error()
	}
	var cas []root.CertificateAuthority
	for _, c := range r.Fulcio.Roots {
		cas = append(cas, &root.FulcioCertificateAuthority{Root: c, Intermediates: r.Fulcio.Intermediates})
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, cas, nil, nil, logs)
	if err != nil {
		return "", err.Error()
	}
	v, err := verify.NewVerifier(tr, verify.WithTransparencyLog(1), verify.WithIntegratedTimestamps(1))
	if err != nil {
		return "", err.Error()
	}
	res, err := v.Verify(b, verify.NewPolicy(art, verify.WithoutIdentitiesUnsafe()))
	if err != nil {
		return "", fmt.Sprintf("signed by another CA, or not logged by the scope's Rekor key: no signature verifies with a certificate of the scope's CA logged by its Rekor key (%v)", err)
	}
	cert := res.Signature.Certificate
	if cert == nil {
		return "", "a Sigstore bundle verified without a certificate"
	}
	if cert.Issuer != r.Fulcio.Issuer || cert.SubjectAlternativeName != r.Fulcio.Subject {
		return "", fmt.Sprintf("identity mismatch: signed by %s (issuer %s), the scope wants %s (issuer %s)", cert.SubjectAlternativeName, cert.Issuer, r.Fulcio.Subject, r.Fulcio.Issuer)
	}
	return fmt.Sprintf("certificate %s issuer %s subject %s%s", r.Fulcio.Fingerprint, r.Fulcio.Issuer, r.Fulcio.Subject, r.rekorPart()), ""
}

// rekorPart is what an admission says of the Rekor key that had to log
// the signature.
func (r Requirement) rekorPart() string {
	if len(r.Rekor) == 0 {
		return ""
	}
	return " rekor " + r.Rekor[0].Fingerprint
}

// rekorLogs is r's Rekor keys as sigstore-go's transparency logs, keyed
// by log ID (the hex sha256 of the key's DER, as Rekor names itself); nil
// without one. The keys have no validity period in a policy: each is
// trusted from the epoch on.
func (r Requirement) rekorLogs() (map[string]*root.TransparencyLog, error) {
	if len(r.Rekor) == 0 {
		return nil, nil
	}
	logs := map[string]*root.TransparencyLog{}
	for _, k := range r.Rekor {
		id, err := hex.DecodeString(strings.TrimPrefix(k.Fingerprint, "sha256:"))
		if err != nil {
			return nil, fmt.Errorf("rekor key %s: %w", k.Fingerprint, err)
		}
		logs[hex.EncodeToString(id)] = &root.TransparencyLog{
			ID:                  id,
			ValidityPeriodStart: time.Unix(0, 0),
			HashFunc:            crypto.SHA256,
			PublicKey:           k.Public,
			SignatureHashFunc:   keyHash(k.Public),
		}
	}
	return logs, nil
}

// keyHash is the hash a signature by pub is made over, as Sigstore's
// clients pick it: SHA-256 but for the larger ECDSA curves.
func keyHash(pub crypto.PublicKey) crypto.Hash {
	if k, ok := pub.(*ecdsa.PublicKey); ok {
		switch k.Curve {
		case elliptic.P384():
			return crypto.SHA384
		case elliptic.P521():
			return crypto.SHA512
		}
	}
	return crypto.SHA256
}
