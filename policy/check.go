package policy

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Image is what the policy is asked about: an image as its source
// resolved it, before any layer is fetched.
type Image struct {
	// Transport is the reference's transport: docker, docker-daemon, oci,
	// oci-archive, docker-archive.
	Transport string
	// Name is the docker reference for the docker transport
	// (HOST/REPO:TAG or …@sha256:…), "" otherwise.
	Name string
	// Ref is the reference as rootswap writes it, for messages.
	Ref string
	// Manifest is the digest of the manifest pulled (docker).
	Manifest digest.Digest
}

// Signature is one cosign signature of an image, as fetched (its digest
// verified): either a legacy one, the simple-signing payload and the
// base64 signature over it that the signature manifest's layer
// annotation holds; or a Sigstore bundle (JSON) attached to the image as
// an OCI 1.1 referrer.
type Signature struct {
	Payload []byte
	Base64  string
	// A keyless or logged legacy signature's annotations: the signing
	// certificate and its chain (PEM), and Rekor's signed entry timestamp
	// with the entry (cosign's "bundle" annotation, JSON).
	Cert, Chain string
	Rekor       []byte
	Bundle      []byte
}

// Signatures fetches an image's signatures, each bounded and verified
// against the digest that named it; none is (nil, nil).
type Signatures func(ctx context.Context) ([]Signature, error)

// Admission is how an image was admitted: the scope that applied
// ("docker:HOST/REPO", "default") and each requirement met, with the
// key that verified a signature.
type Admission struct {
	Scope string
	How   string // "insecureAcceptAnything", "sigstoreSigned key sha256:… for HOST/REPO", joined by "; "
}

// String is the admission as `images` shows it.
func (a Admission) String() string {
	return a.How + " (scope " + a.Scope + ")"
}

// ErrRejected is what every rejection wraps.
var ErrRejected = errors.New("rejected by policy")

// Rejection says why the policy rejected an image: which requirement
// of which scope failed, and why.
type Rejection struct {
	Image, File, Scope string
	Requirement        string // its number in the scope and what it asks, "1 (sigstoreSigned by key)"
	Reason             string
}

func (r *Rejection) Error() string {
	return fmt.Sprintf("image %s: %s %s, scope %s, requirement %s: %s", r.Image, ErrRejected, r.File, r.Scope, r.Requirement, r.Reason)
}

// String names requirement r as a rejection does: its type, and for
// sigstoreSigned what it trusts.
func (r Requirement) String() string {
	switch {
	case r.Type != SigstoreSigned:
		return r.Type
	case r.Fulcio != nil:
		return r.Type + " keyless"
	case r.Rekor != nil:
		return r.Type + " by key, logged in Rekor"
	}
	return r.Type + " by key"
}

func (r *Rejection) Unwrap() error { return ErrRejected }

// scope returns the requirements that apply to img, and the scope's name.
func (p *Policy) scope(img Image) (string, []Requirement, error) {
	scopes := p.Transports[img.Transport]
	if img.Transport == "docker" {
		n, err := normalize(img.Name)
		if err != nil {
			return "", nil, err
		}
		for _, s := range dockerScopes(n) {
			if rs, ok := scopes[s]; ok {
				return "docker:" + s, rs, nil
			}
		}
	}
	if rs, ok := scopes[""]; ok {
		return img.Transport + ":\"\"", rs, nil
	}
	return "default", p.Default, nil
}

// Check decides whether img may be imported: every requirement of the
// scope that applies must hold. sigs is asked only if a requirement needs
// signatures. A rejection is a *Rejection (wrapping ErrRejected); an
// error fetching signatures is returned as it is.
func (p *Policy) Check(ctx context.Context, img Image, sigs Signatures) (Admission, error) {
	scope, rs, err := p.scope(img)
	if err != nil {
		return Admission{}, fmt.Errorf("image %s: policy %s: %w", img.Ref, p.File, err)
	}
	var i int
	reject := func(reason string) (Admission, error) {
		what := "none"
		if i < len(rs) {
			what = fmt.Sprintf("%d (%s)", i+1, rs[i])
		}
		return Admission{}, &Rejection{Image: img.Ref, File: p.File, Scope: scope, Requirement: what, Reason: reason}
	}
	var how []string
	var fetched []Signature
	asked := false
	for i = range rs {
		r := rs[i]
		switch r.Type {
		case InsecureAcceptAnything:
			how = append(how, r.Type)
		case Reject:
			return reject("the scope rejects every image")
		case SigstoreSigned:
			if img.Transport != "docker" {
				return reject(fmt.Sprintf("%s: signatures are read only from registries (docker://); %s images carry none rootswap can check", r.Type, img.Transport))
			}
			if img.Manifest == "" {
				return reject(r.Type + ": no manifest digest to check signatures against")
			}
			if !asked {
				if fetched, err = sigs(ctx); err != nil {
					return Admission{}, fmt.Errorf("image %s: signatures: %w", img.Ref, err)
				}
				asked = true
			}
			part, reason := r.verify(img, fetched)
			if reason != "" {
				return reject(reason)
			}
			how = append(how, part)
		default:
			return reject(fmt.Sprintf("requirement %q is not supported", r.Type))
		}
	}
	return Admission{Scope: scope, How: strings.Join(how, "; ")}, nil
}

// payload is cosign's simple-signing payload, as much as is checked.
type payload struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
}

// The simple-signing payload type cosign writes.
const payloadType = "cosign container image signature"

// Recheck decides offline whether a tree may be activated for img under
// the current policy, from how it was admitted when it was imported
// (admitted, an Admission's String; "" for a tree imported with no
// policy): every requirement of the scope that applies now must hold,
// a sigstoreSigned one by a signature that one of its keys verified for
// an identity it accepts for img. Nothing is fetched. A rejection is a
// *Rejection.
func (p *Policy) Recheck(img Image, admitted string) (Admission, error) {
	scope, rs, err := p.scope(img)
	if err != nil {
		return Admission{}, fmt.Errorf("image %s: policy %s: %w", img.Ref, p.File, err)
	}
	var i int
	reject := func(reason string) (Admission, error) {
		what := "none"
		if i < len(rs) {
			what = fmt.Sprintf("%d (%s)", i+1, rs[i])
		}
		return Admission{}, &Rejection{Image: img.Ref, File: p.File, Scope: scope, Requirement: what, Reason: reason}
	}
	how, _, _ := strings.Cut(admitted, " (scope ")
	var parts []string
	if how != "" {
		parts = strings.Split(how, "; ")
	}
	var out []string
	for i = range rs {
		r := rs[i]
		switch r.Type {
		case InsecureAcceptAnything:
			out = append(out, r.Type)
		case Reject:
			return reject("the scope rejects every image")
		case SigstoreSigned:
			if img.Transport != "docker" {
				return reject(fmt.Sprintf("%s: signatures are read only from registries (docker://); %s images carry none rootswap can check", r.Type, img.Transport))
			}
			part, reason := r.recorded(img, parts)
			if reason != "" {
				return reject(reason)
			}
			out = append(out, part)
		default:
			return reject(fmt.Sprintf("requirement %q is not supported", r.Type))
		}
	}
	return Admission{Scope: scope, How: strings.Join(out, "; ")}, nil
}

// recorded returns the part of a tree's admission record that meets
// sigstoreSigned requirement r for img, or why none does. A part reads
// "sigstoreSigned [bundle] HOW [for REF]": "bundle" for a Sigstore
// bundle (which signs no reference), "for REF" for a legacy signature's
// signed reference, and HOW one of
//
//	key FP [rekor FP]                             by key FP [logged by Rekor key FP]
//	certificate CA issuer I subject S rekor FP    by a certificate of CA for S by I, logged by FP
func (r Requirement) recorded(img Image, parts []string) (string, string) {
	want, err := normalize(img.Name)
	if err != nil {
		return "", err.Error()
	}
	if len(parts) == 0 {
		return "", "the stored tree was imported with no signature check; remove it (rootswap gc once no machine uses it) to import and check it again"
	}
	reason := "the stored tree was admitted by " + strings.Join(parts, "; ") + ", with no key of this scope"
	if r.Fulcio != nil {
		reason = "the stored tree was admitted by " + strings.Join(parts, "; ") + ", with no certificate of this scope's CA logged by its Rekor key"
	}
	for _, part := range parts {
		f := strings.Fields(part)
		if len(f) < 3 || f[0] != SigstoreSigned {
			continue
		}
		f = f[1:]
		isBundle := f[0] == "bundle"
		if isBundle {
			f = f[1:]
		}
		var ref string
		if n := len(f); n >= 2 && f[n-2] == "for" {
			ref, f = f[n-1], f[:n-2]
		}
		if isBundle == (ref != "") {
			continue // a bundle names no reference, a legacy signature one
		}
		var rekor string
		switch {
		case len(f) == 2 && f[0] == "key", len(f) == 4 && f[0] == "key" && f[2] == "rekor":
			if r.Fulcio != nil || !hasKey(r.Keys, f[1]) {
				continue
			}
			if len(f) == 4 {
				rekor = f[3]
			}
		case len(f) == 8 && f[0] == "certificate" && f[2] == "issuer" && f[4] == "subject" && f[6] == "rekor":
			if r.Fulcio == nil || f[1] != r.Fulcio.Fingerprint {
				continue
			}
			if f[3] != r.Fulcio.Issuer || f[5] != r.Fulcio.Subject {
				reason = fmt.Sprintf("identity mismatch: the stored tree was signed by %s (issuer %s), the scope wants %s (issuer %s)", f[5], f[3], r.Fulcio.Subject, r.Fulcio.Issuer)
				continue
			}
			rekor = f[7]
		default:
			continue
		}
		if r.Rekor != nil && !hasKey(r.Rekor, rekor) {
			reason = "the stored tree's signature was not checked against this scope's Rekor key"
			continue
		}
		if isBundle {
			if r.Identity.Type == "exactReference" || r.Identity.Type == "exactRepository" {
				reason = fmt.Sprintf("identity mismatch: the stored tree was signed by a Sigstore bundle, which names no docker reference that %s could match", r.Identity.Type)
				continue
			}
			return part, ""
		}
		signed, err := normalize(ref)
		if err != nil {
			continue
		}
		if !r.Identity.match(want, signed) {
			reason = fmt.Sprintf("identity mismatch: the stored tree was signed for %s, which %s does not accept for %s", signed, r.Identity.Type, want)
			continue
		}
		return part, ""
	}
	return "", reason
}

// hasKey reports whether one of keys has fingerprint fp.
func hasKey(keys []Key, fp string) bool {
	for _, k := range keys {
		if k.Fingerprint == fp {
			return true
		}
	}
	return false
}

// verify returns how one of sigs admits img (an admission's part), or
// why none does: the most telling reason among the signatures tried.
func (r Requirement) verify(img Image, sigs []Signature) (string, string) {
	if len(sigs) == 0 {
		return "", "no signature found"
	}
	want, err := normalize(img.Name)
	if err != nil {
		return "", err.Error()
	}
	reason, rank := "", 0
	worse := func(n int, s string) {
		if n >= rank {
			reason, rank = s, n
		}
	}
	for _, s := range sigs {
		if s.Bundle != nil {
			part, n, why := r.verifyBundle(img, s.Bundle)
			if why == "" {
				return part, ""
			}
			worse(n, why)
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(s.Base64)
		if err != nil {
			worse(2, "a signature is not base64")
			continue
		}
		var how string
		if r.Fulcio != nil || r.Rekor != nil {
			h, n, why := r.verifyLegacySigstore(s, raw)
			if why != "" {
				worse(n, why)
				continue
			}
			how = h
		} else {
			var key *Key
			for i := range r.Keys {
				if verifySig(r.Keys[i].Public, s.Payload, raw) {
					key = &r.Keys[i]
					break
				}
			}
			if key == nil {
				worse(1, fmt.Sprintf("signed by another key: no signature verifies with the scope's key%s (%d signature%s)", plural(len(r.Keys)), len(sigs), plural(len(sigs))))
				continue
			}
			how = "key " + key.Fingerprint
		}
		var pl payload
		if err := json.Unmarshal(s.Payload, &pl); err != nil {
			worse(2, "a signed payload is not JSON: "+err.Error())
			continue
		}
		if pl.Critical.Type != payloadType {
			worse(2, fmt.Sprintf("a signed payload's type is %q, not %q", pl.Critical.Type, payloadType))
			continue
		}
		if pl.Critical.Image.DockerManifestDigest != img.Manifest.String() {
			worse(3, fmt.Sprintf("the signature is for manifest %q, not %s", pl.Critical.Image.DockerManifestDigest, img.Manifest))
			continue
		}
		signed, err := normalize(pl.Critical.Identity.DockerReference)
		if err != nil {
			worse(4, "the signed identity: "+err.Error())
			continue
		}
		if !r.Identity.match(want, signed) {
			worse(4, fmt.Sprintf("identity mismatch: signed for %s, which %s does not accept for %s", signed, r.Identity.Type, want))
			continue
		}
		return r.Type + " " + how + " for " + signed.String(), ""
	}
	return "", reason
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// checkKeyType refuses a public key of a kind verifySig cannot use.
func checkKeyType(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits (2048 at least)", k.N.BitLen())
		}
		return nil
	}
	return fmt.Errorf("public key of type %T is not supported (ECDSA, Ed25519, RSA)", pub)
}

// verifySig reports whether sig is pub's signature of msg, as cosign
// signs: ECDSA (ASN.1) and RSA (PKCS #1 v1.5) over its SHA-256, Ed25519
// over msg itself.
func verifySig(pub crypto.PublicKey, msg, sig []byte) bool {
	sum := sha256.Sum256(msg)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, sum[:], sig)
	case ed25519.PublicKey:
		return ed25519.Verify(k, msg, sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, sum[:], sig) == nil
	}
	return false
}
