package policy

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// DefaultFile is the policy read unless --policy or ROOTSWAP_POLICY name
// another: the one Podman and CRI-O read.
const DefaultFile = "/etc/containers/policy.json"

// maxFile bounds a policy file's size: policies are kilobytes.
const maxFile = 4 << 20

// Policy is a loaded policy file: requirements per transport and scope,
// keys read.
type Policy struct {
	File       string
	Default    []Requirement
	Transports map[string]map[string][]Requirement // transport → scope → requirements
}

// Kinds of requirement rootswap supports.
const (
	InsecureAcceptAnything = "insecureAcceptAnything"
	Reject                 = "reject"
	SigstoreSigned         = "sigstoreSigned"
)

// Requirement is one requirement of a scope.
type Requirement struct {
	Type     string
	Keys     []Key    // sigstoreSigned with keys: any one of them verifies a signature
	Fulcio   *Fulcio  // sigstoreSigned keyless: the CA and identity a certificate must have
	Rekor    []Key    // sigstoreSigned: Rekor's keys, one of which must have logged the signature (required with Fulcio)
	Identity Identity // sigstoreSigned: signedIdentity
}

// Fulcio is a keyless requirement's certificate authority and the
// identity the signing certificate must name.
type Fulcio struct {
	Roots         []*x509.Certificate // self-signed certificates of caPath/caData
	Intermediates []*x509.Certificate // the others
	Fingerprint   string              // "sha256:" and the hex sha256 of the roots' DER, concatenated in file order
	Issuer        string              // oidcIssuer: the certificate's OIDC issuer extension
	Subject       string              // subjectEmail: the certificate's subject alternative name (email, or URI for CI identities)
}

// Key is a public key a sigstoreSigned requirement trusts.
type Key struct {
	Public      crypto.PublicKey
	Fingerprint string // "sha256:" and the hex sha256 of its DER SubjectPublicKeyInfo
}

// Identity is a signedIdentity rule: what the docker reference a
// signature names must be, given the image's reference.
type Identity struct {
	Type       string // matchRepoDigestOrExact (the default), matchExact, matchRepository, exactReference, exactRepository
	Reference  string // exactReference's dockerReference, normalized
	Repository string // exactRepository's dockerRepository, normalized
}

// Transports rootswap reads images through, and the other transports a
// containers-policy.json may name (their scopes are read, checked and
// not used).
var (
	ours   = []string{"docker", "docker-daemon", "oci", "oci-archive", "docker-archive"}
	others = []string{"dir", "containers-storage", "atomic", "sif", "tarball", "ostree"}
)

// Load reads policy file. A missing file is (nil, nil) when it is the
// default one and not named explicitly: no policy, everything is admitted
// as before. Any other problem is an error naming the file.
func Load(file string, explicit bool) (*Policy, error) {
	if file == "" {
		file = DefaultFile
	}
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", file, err)
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("policy %s: larger than %d bytes", file, maxFile)
	}
	p, err := Parse(b, file)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", file, err)
	}
	return p, nil
}

// strict decodes JSON b into v, refusing unknown fields and trailing data.
func strict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON document")
	}
	return nil
}

// Parse reads a policy document; file names it in the policy and
// resolves nothing (key paths must be absolute).
func Parse(b []byte, file string) (*Policy, error) {
	var raw struct {
		Default    []json.RawMessage                       `json:"default"`
		Transports map[string]map[string][]json.RawMessage `json:"transports"`
	}
	if err := strict(b, &raw); err != nil {
		return nil, err
	}
	p := &Policy{File: file, Transports: map[string]map[string][]Requirement{}}
	if raw.Default == nil {
		return nil, errors.New(`no "default" requirements`)
	}
	var err error
	if p.Default, err = requirements(raw.Default, "default", false); err != nil {
		return nil, err
	}
	for t, scopes := range raw.Transports {
		if !slices.Contains(ours, t) && !slices.Contains(others, t) {
			return nil, fmt.Errorf("transport %q is not one containers-policy.json(5) knows", t)
		}
		p.Transports[t] = map[string][]Requirement{}
		for scope, reqs := range scopes {
			where := fmt.Sprintf("transport %s scope %q", t, scope)
			if err := checkScope(t, scope); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			rs, err := requirements(reqs, where, t == "docker-daemon")
			if err != nil {
				return nil, err
			}
			p.Transports[t][scope] = rs
		}
	}
	return p, nil
}

// checkScope refuses a scope rootswap would not apply as its writer
// means: a file transport's scopes other than "" (they name paths;
// rootswap applies only the transport's "" scope and the default to
// them), and malformed docker scopes.
func checkScope(t, scope string) error {
	switch {
	case scope == "" || !slices.Contains(ours, t):
		return nil
	case t == "docker":
		if strings.HasPrefix(scope, "*.") {
			if strings.ContainsAny(scope[2:], "/*@:") || scope == "*." {
				return errors.New("a wildcard scope is *.DOMAIN")
			}
			return nil
		}
		if strings.Contains(scope, "@") {
			return errors.New("a scope naming a digest is not supported")
		}
		if _, err := normalize(scope); err != nil && strings.Contains(scope, "/") {
			return err
		}
		return nil
	}
	return errors.New(`only the "" scope is supported for this transport (rootswap applies it and the default)`)
}

// requirements reads a scope's list of requirements; daemon limits them
// to those an unsigned daemon image can meet or fail.
func requirements(raws []json.RawMessage, where string, daemon bool) ([]Requirement, error) {
	if len(raws) == 0 {
		return nil, fmt.Errorf("%s: no requirements (write [{\"type\": \"reject\"}] to reject)", where)
	}
	var rs []Requirement
	for i, raw := range raws {
		r, err := requirement(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: requirement %d: %w", where, i+1, err)
		}
		if daemon && r.Type == SigstoreSigned {
			return nil, fmt.Errorf("%s: requirement %d: %s: images from the Docker daemon carry no signatures; only %s or %s apply", where, i+1, r.Type, InsecureAcceptAnything, Reject)
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// requirement reads one requirement, strictly for its type.
func requirement(raw json.RawMessage) (Requirement, error) {
	var probe struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return Requirement{}, err
	}
	switch probe.Type {
	case InsecureAcceptAnything, Reject:
		var v struct {
			Type string `json:"type"`
		}
		if err := strict(raw, &v); err != nil {
			return Requirement{}, fmt.Errorf("%s: %w", probe.Type, err)
		}
		return Requirement{Type: probe.Type}, nil
	case SigstoreSigned:
		r, err := sigstoreSigned(raw)
		if err != nil {
			return Requirement{}, fmt.Errorf("%s: %w", probe.Type, err)
		}
		return r, nil
	case "":
		return Requirement{}, errors.New(`no "type"`)
	case "signedBy":
		return Requirement{}, errors.New(`type "signedBy" (GPG signatures) is not supported; use sigstoreSigned with a public key`)
	}
	return Requirement{}, fmt.Errorf("type %q is not supported", probe.Type)
}

// sigstoreSigned reads a sigstoreSigned requirement: public keys, or a
// Fulcio CA with a Rekor key (keyless).
func sigstoreSigned(raw json.RawMessage) (Requirement, error) {
	var v struct {
		Type               string          `json:"type"`
		KeyPath            string          `json:"keyPath"`
		KeyPaths           []string        `json:"keyPaths"`
		KeyData            []byte          `json:"keyData"`
		KeyDatas           [][]byte        `json:"keyDatas"`
		Fulcio             json.RawMessage `json:"fulcio"`
		PKI                json.RawMessage `json:"pki"`
		RekorPublicKeyPath string          `json:"rekorPublicKeyPath"`
		RekorPublicKeyData []byte          `json:"rekorPublicKeyData"`
		SignedIdentity     json.RawMessage `json:"signedIdentity"`
	}
	if err := strict(raw, &v); err != nil {
		return Requirement{}, err
	}
	switch {
	case v.PKI != nil:
		return Requirement{}, errors.New(`"pki" is not supported; use a public key or "fulcio"`)
	case v.KeyDatas != nil:
		return Requirement{}, errors.New(`"keyDatas" is not supported; use keyData, keyPath or keyPaths`)
	}
	n := 0
	for _, set := range []bool{v.KeyPath != "", v.KeyPaths != nil, v.KeyData != nil, v.Fulcio != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return Requirement{}, errors.New(`exactly one of "keyPath", "keyPaths", "keyData" and "fulcio" is required`)
	}
	r := Requirement{Type: SigstoreSigned}
	paths := v.KeyPaths
	if v.KeyPath != "" {
		paths = []string{v.KeyPath}
	}
	if v.KeyPaths != nil && len(v.KeyPaths) == 0 {
		return Requirement{}, errors.New(`"keyPaths" is empty`)
	}
	for _, p := range paths {
		k, err := keyFile(p)
		if err != nil {
			return Requirement{}, fmt.Errorf("key %w", err)
		}
		r.Keys = append(r.Keys, k)
	}
	if v.KeyData != nil {
		k, err := ParseKey(v.KeyData)
		if err != nil {
			return Requirement{}, fmt.Errorf("keyData: %w", err)
		}
		r.Keys = append(r.Keys, k)
	}
	switch {
	case v.RekorPublicKeyPath != "" && v.RekorPublicKeyData != nil:
		return Requirement{}, errors.New(`at most one of "rekorPublicKeyPath" and "rekorPublicKeyData"`)
	case v.RekorPublicKeyPath != "":
		k, err := keyFile(v.RekorPublicKeyPath)
		if err != nil {
			return Requirement{}, fmt.Errorf("rekorPublicKeyPath: %w", err)
		}
		r.Rekor = []Key{k}
	case v.RekorPublicKeyData != nil:
		k, err := ParseKey(v.RekorPublicKeyData)
		if err != nil {
			return Requirement{}, fmt.Errorf("rekorPublicKeyData: %w", err)
		}
		r.Rekor = []Key{k}
	}
	for _, k := range r.Rekor {
		if _, ok := k.Public.(*ecdsa.PublicKey); !ok {
			return Requirement{}, fmt.Errorf("Rekor key %s: an ECDSA key is required (Rekor signs its entries with ECDSA)", k.Fingerprint)
		}
	}
	if v.Fulcio != nil {
		f, err := fulcio(v.Fulcio)
		if err != nil {
			return Requirement{}, fmt.Errorf("fulcio: %w", err)
		}
		if r.Rekor == nil {
			return Requirement{}, errors.New(`"fulcio" needs "rekorPublicKeyPath" or "rekorPublicKeyData": a short-lived certificate is checked at the time Rekor logged the signature`)
		}
		r.Fulcio = f
	}
	id, err := identity(v.SignedIdentity)
	if err != nil {
		return Requirement{}, fmt.Errorf("signedIdentity: %w", err)
	}
	r.Identity = id
	return r, nil
}

// identity reads a signedIdentity; absent, it is matchRepoDigestOrExact.
func identity(raw json.RawMessage) (Identity, error) {
	if raw == nil {
		return Identity{Type: "matchRepoDigestOrExact"}, nil
	}
	var v struct {
		Type             string          `json:"type"`
		DockerReference  string          `json:"dockerReference"`
		DockerRepository string          `json:"dockerRepository"`
		Prefix           json.RawMessage `json:"prefix"`
		SignedPrefix     json.RawMessage `json:"signedPrefix"`
	}
	if err := strict(raw, &v); err != nil {
		return Identity{}, err
	}
	id := Identity{Type: v.Type}
	if v.Type != "exactReference" && v.DockerReference != "" || v.Type != "exactRepository" && v.DockerRepository != "" {
		return Identity{}, fmt.Errorf("%s takes no dockerReference or dockerRepository", v.Type)
	}
	switch v.Type {
	case "matchRepoDigestOrExact", "matchExact", "matchRepository":
	case "exactReference":
		n, err := normalize(v.DockerReference)
		if err != nil || n.tag == "" && n.digest == "" {
			return Identity{}, fmt.Errorf("exactReference: dockerReference %q is not a tagged or digested reference", v.DockerReference)
		}
		id.Reference = n.String()
	case "exactRepository":
		n, err := normalize(v.DockerRepository)
		if err != nil || n.tag != "" || n.digest != "" {
			return Identity{}, fmt.Errorf("exactRepository: dockerRepository %q is not a repository", v.DockerRepository)
		}
		id.Repository = n.repo
	case "":
		return Identity{}, errors.New(`no "type"`)
	default:
		return Identity{}, fmt.Errorf("type %q is not supported", v.Type)
	}
	if v.Prefix != nil || v.SignedPrefix != nil {
		return Identity{}, fmt.Errorf("%s takes no prefix or signedPrefix", v.Type)
	}
	return id, nil
}

// keyFile reads the PEM public key at absolute path p.
func keyFile(p string) (Key, error) {
	if !filepath.IsAbs(p) {
		return Key{}, fmt.Errorf("%q: not an absolute path", p)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return Key{}, err
	}
	k, err := ParseKey(b)
	if err != nil {
		return Key{}, fmt.Errorf("%s: %w", p, err)
	}
	return k, nil
}

// fulcio reads a sigstoreSigned requirement's "fulcio" object.
func fulcio(raw json.RawMessage) (*Fulcio, error) {
	var v struct {
		CAPath       string `json:"caPath"`
		CAData       []byte `json:"caData"`
		OIDCIssuer   string `json:"oidcIssuer"`
		SubjectEmail string `json:"subjectEmail"`
	}
	if err := strict(raw, &v); err != nil {
		return nil, err
	}
	var pemData []byte
	switch {
	case (v.CAPath != "") == (v.CAData != nil):
		return nil, errors.New(`exactly one of "caPath" and "caData" is required`)
	case v.CAPath != "":
		if !filepath.IsAbs(v.CAPath) {
			return nil, fmt.Errorf("caPath %q: not an absolute path", v.CAPath)
		}
		b, err := os.ReadFile(v.CAPath)
		if err != nil {
			return nil, fmt.Errorf("caPath: %w", err)
		}
		pemData = b
	default:
		pemData = v.CAData
	}
	if v.OIDCIssuer == "" || v.SubjectEmail == "" {
		return nil, errors.New(`"oidcIssuer" and "subjectEmail" are required`)
	}
	if strings.ContainsAny(v.OIDCIssuer+v.SubjectEmail, " \t\n") {
		return nil, errors.New(`"oidcIssuer" and "subjectEmail" contain no white space`)
	}
	f := &Fulcio{Issuer: v.OIDCIssuer, Subject: v.SubjectEmail}
	sum := sha256.New()
	for rest := pemData; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("CA: PEM block %q is not a CERTIFICATE", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA: %w", err)
		}
		if !c.IsCA {
			return nil, fmt.Errorf("CA: certificate %q is not a CA", c.Subject)
		}
		if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
			f.Roots = append(f.Roots, c)
			sum.Write(c.Raw)
		} else {
			f.Intermediates = append(f.Intermediates, c)
		}
	}
	if len(f.Roots) == 0 {
		return nil, errors.New("CA: no self-signed root certificate")
	}
	f.Fingerprint = "sha256:" + hex.EncodeToString(sum.Sum(nil))
	return f, nil
}

// ParseKey reads a PEM public key (PKIX: ECDSA, Ed25519 or RSA).
func ParseKey(b []byte) (Key, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return Key{}, errors.New("no PEM block")
	}
	if blk.Type != "PUBLIC KEY" {
		return Key{}, fmt.Errorf("PEM block %q is not a PUBLIC KEY", blk.Type)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return Key{}, err
	}
	if err := checkKeyType(pub); err != nil {
		return Key{}, err
	}
	sum := sha256.Sum256(blk.Bytes)
	return Key{Public: pub, Fingerprint: "sha256:" + hex.EncodeToString(sum[:])}, nil
}
