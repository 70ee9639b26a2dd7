package policy

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/internal/sigstoretest"
)

// pubPEM writes pub as a PEM file in dir and returns its path and bytes.
func pubPEM(t *testing.T, dir, name string, pub crypto.PublicKey) (string, []byte) {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func TestParse(t *testing.T) {
	dir := t.TempDir()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key, keyPEM := pubPEM(t, dir, "k.pub", k.Public())
	keyData := base64.StdEncoding.EncodeToString(keyPEM)
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	edKey, _ := pubPEM(t, dir, "ed.pub", edPriv.Public())
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, sigstoretest.NewCA(t).PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, doc, err string
	}{
		{"accept all", `{"default":[{"type":"insecureAcceptAnything"}]}`, ""},
		{"podman's default", `{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker-daemon":{"":[{"type":"insecureAcceptAnything"}]}}}`, ""},
		{"key path", `{"default":[{"type":"reject"}],"transports":{"docker":{"r.example/app":[{"type":"sigstoreSigned","keyPath":"` + key + `"}]}}}`, ""},
		{"key paths", `{"default":[{"type":"reject"}],"transports":{"docker":{"r.example":[{"type":"sigstoreSigned","keyPaths":["` + key + `","` + key + `"],"signedIdentity":{"type":"matchRepository"}}]}}}`, ""},
		{"key data", `{"default":[{"type":"sigstoreSigned","keyData":"` + keyData + `","signedIdentity":{"type":"exactRepository","dockerRepository":"r.example/app"}}]}`, ""},
		{"exact reference", `{"default":[{"type":"sigstoreSigned","keyData":"` + keyData + `","signedIdentity":{"type":"exactReference","dockerReference":"r.example/app:1"}}]}`, ""},
		{"wildcard", `{"default":[{"type":"reject"}],"transports":{"docker":{"*.example.com":[{"type":"insecureAcceptAnything"}]}}}`, ""},
		{"other transport", `{"default":[{"type":"reject"}],"transports":{"containers-storage":{"":[{"type":"insecureAcceptAnything"}]}}}`, ""},
		{"no default", `{"transports":{}}`, `no "default"`},
		{"empty list", `{"default":[]}`, "no requirements"},
		{"unknown field", `{"default":[{"type":"reject"}],"extra":1}`, `unknown field "extra"`},
		{"unknown requirement field", `{"default":[{"type":"reject","keyPath":"/k"}]}`, `unknown field "keyPath"`},
		{"trailing data", `{"default":[{"type":"reject"}]} {}`, "after the JSON"},
		{"signedBy", `{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k"}]}`, `"signedBy" (GPG signatures) is not supported`},
		{"fulcio", `{"default":[{"type":"sigstoreSigned","fulcio":{"caPath":"` + ca + `","oidcIssuer":"https://i.example","subjectEmail":"a@example.com"},"rekorPublicKeyPath":"` + key + `"}]}`, ""},
		{"fulcio without Rekor", `{"default":[{"type":"sigstoreSigned","fulcio":{"caPath":"` + ca + `","oidcIssuer":"https://i.example","subjectEmail":"a@example.com"}}]}`, `"fulcio" needs "rekorPublicKeyPath"`},
		{"fulcio without subject", `{"default":[{"type":"sigstoreSigned","fulcio":{"caPath":"` + ca + `","oidcIssuer":"https://i.example"},"rekorPublicKeyPath":"` + key + `"}]}`, `"oidcIssuer" and "subjectEmail" are required`},
		{"fulcio and a key", `{"default":[{"type":"sigstoreSigned","keyPath":"` + key + `","fulcio":{"caPath":"` + ca + `","oidcIssuer":"https://i.example","subjectEmail":"a@example.com"},"rekorPublicKeyPath":"` + key + `"}]}`, "exactly one of"},
		{"fulcio CA not a certificate", `{"default":[{"type":"sigstoreSigned","fulcio":{"caPath":"` + key + `","oidcIssuer":"https://i.example","subjectEmail":"a@example.com"},"rekorPublicKeyPath":"` + key + `"}]}`, `is not a CERTIFICATE`},
		{"fulcio unknown field", `{"default":[{"type":"sigstoreSigned","fulcio":{"caPath":"` + ca + `","oidcIssuer":"https://i.example","subjectEmail":"a@example.com","subjectRegExp":"x"},"rekorPublicKeyPath":"` + key + `"}]}`, `unknown field "subjectRegExp"`},
		{"Rekor key with a key", `{"default":[{"type":"sigstoreSigned","keyPath":"` + key + `","rekorPublicKeyPath":"` + key + `"}]}`, ""},
		{"Rekor key not ECDSA", `{"default":[{"type":"sigstoreSigned","keyPath":"` + key + `","rekorPublicKeyPath":"` + edKey + `"}]}`, "an ECDSA key is required"},
		{"unknown type", `{"default":[{"type":"trustMe"}]}`, `type "trustMe" is not supported`},
		{"no type", `{"default":[{}]}`, `no "type"`},
		{"two key sources", `{"default":[{"type":"sigstoreSigned","keyPath":"` + key + `","keyData":"` + keyData + `"}]}`, "exactly one of"},
		{"no key", `{"default":[{"type":"sigstoreSigned"}]}`, "exactly one of"},
		{"relative key", `{"default":[{"type":"sigstoreSigned","keyPath":"k.pub"}]}`, "not an absolute path"},
		{"missing key", `{"default":[{"type":"sigstoreSigned","keyPath":"/nonexistent/k.pub"}]}`, "no such file"},
		{"not a key", `{"default":[{"type":"sigstoreSigned","keyData":"bm90IGEga2V5"}]}`, "no PEM block"},
		{"remapIdentity", `{"default":[{"type":"sigstoreSigned","keyPath":"` + key + `","signedIdentity":{"type":"remapIdentity","prefix":"a","signedPrefix":"b"}}]}`, `type "remapIdentity" is not supported`},
		{"identity field for another type", `{"default":[{"type":"sigstoreSigned","keyPath":"` + key + `","signedIdentity":{"type":"matchRepository","dockerReference":"a/b:1"}}]}`, "takes no dockerReference"},
		{"exactReference untagged", `{"default":[{"type":"sigstoreSigned","keyPath":"` + key + `","signedIdentity":{"type":"exactReference","dockerReference":"r.example/app"}}]}`, "not a tagged or digested"},
		{"unknown transport", `{"default":[{"type":"reject"}],"transports":{"ftp":{"":[{"type":"reject"}]}}}`, `transport "ftp"`},
		{"daemon signed", `{"default":[{"type":"reject"}],"transports":{"docker-daemon":{"":[{"type":"sigstoreSigned","keyPath":"` + key + `"}]}}}`, "carry no signatures"},
		{"oci path scope", `{"default":[{"type":"reject"}],"transports":{"oci":{"/srv/app":[{"type":"insecureAcceptAnything"}]}}}`, `only the "" scope`},
		{"digest scope", `{"default":[{"type":"reject"}],"transports":{"docker":{"r.example/app@sha256:` + strings.Repeat("a", 64) + `":[{"type":"reject"}]}}}`, "naming a digest"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), "p.json")
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("Parse: %v, want an error with %q", err, tc.err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none.json")
	if p, err := Load(missing, false); p != nil || err != nil {
		t.Fatalf("a missing default policy: %v, %v; want none", p, err)
	}
	if _, err := Load(missing, true); err == nil {
		t.Fatal("a missing policy named explicitly: no error")
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"default":[{"type":"reject"}],"x":1}`), 0o644)
	if _, err := Load(bad, false); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("a malformed policy: %v, want an error naming %s", err, bad)
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alpine", "docker.io/library/alpine"},
		{"alpine:3", "docker.io/library/alpine:3"},
		{"user/app", "docker.io/user/app"},
		{"index.docker.io/library/alpine:3", "docker.io/library/alpine:3"},
		{"localhost/app", "localhost/app"},
		{"127.0.0.1:5000/app:v1", "127.0.0.1:5000/app:v1"},
		{"r.example/ns/app@sha256:" + strings.Repeat("b", 64), "r.example/ns/app@sha256:" + strings.Repeat("b", 64)},
		{"r.example/App", "error"},
		{"r.example/app:", "error"},
		{"", "error"},
	}
	for _, tc := range tests {
		n, err := normalize(tc.in)
		got := n.String()
		if err != nil {
			got = "error"
		}
		if got != tc.want {
			t.Errorf("normalize(%q) = %q (%v), want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestScope(t *testing.T) {
	doc := `{"default":[{"type":"reject"}],"transports":{
		"docker":{
			"":[{"type":"insecureAcceptAnything"}],
			"r.example.com":[{"type":"insecureAcceptAnything"}],
			"r.example.com/ns":[{"type":"insecureAcceptAnything"}],
			"r.example.com/ns/app":[{"type":"insecureAcceptAnything"}],
			"r.example.com/ns/app:v1":[{"type":"insecureAcceptAnything"}],
			"127.0.0.1:5000":[{"type":"insecureAcceptAnything"}],
			"*.example.com":[{"type":"insecureAcceptAnything"}],
			"*.com":[{"type":"insecureAcceptAnything"}],
			"docker.io/library":[{"type":"insecureAcceptAnything"}]},
		"oci":{"":[{"type":"insecureAcceptAnything"}]}}}`
	p, err := Parse([]byte(doc), "p.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ transport, name, want string }{
		{"docker", "r.example.com/ns/app:v1", `docker:r.example.com/ns/app:v1`},
		{"docker", "r.example.com/ns/app:v2", `docker:r.example.com/ns/app`},
		{"docker", "r.example.com/ns/app@sha256:" + strings.Repeat("c", 64), `docker:r.example.com/ns/app`},
		{"docker", "r.example.com/ns/other:1", `docker:r.example.com/ns`},
		{"docker", "r.example.com/ns2/app:1", `docker:r.example.com`},
		{"docker", "a.b.example.com/app:1", `docker:*.example.com`},
		{"docker", "x.com/app:1", `docker:*.com`},
		{"docker", "127.0.0.1:5000/app:1", `docker:127.0.0.1:5000`},
		{"docker", "127.0.0.1:5001/app:1", `docker:""`},
		{"docker", "alpine:3", `docker:docker.io/library`},
		{"oci", "", `oci:""`},
		{"docker-archive", "", "default"},
		{"docker-daemon", "", "default"},
	}
	for _, tc := range tests {
		got, _, err := p.scope(Image{Transport: tc.transport, Name: tc.name})
		if err != nil || got != tc.want {
			t.Errorf("scope of %s:%s = %q, %v; want %q", tc.transport, tc.name, got, err, tc.want)
		}
	}
}

func TestIdentity(t *testing.T) {
	n := func(s string) named {
		v, err := normalize(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	dg := "@sha256:" + strings.Repeat("d", 64)
	tests := []struct {
		id          Identity
		img, signed string
		want        bool
	}{
		{Identity{Type: "matchRepoDigestOrExact"}, "r.example/app:1", "r.example/app:1", true},
		{Identity{Type: "matchRepoDigestOrExact"}, "r.example/app:1", "r.example/app:2", false},
		{Identity{Type: "matchRepoDigestOrExact"}, "r.example/app" + dg, "r.example/app:2", true},
		{Identity{Type: "matchRepoDigestOrExact"}, "r.example/app" + dg, "r.example/other:2", false},
		{Identity{Type: "matchExact"}, "r.example/app:1", "r.example/app:1", true},
		{Identity{Type: "matchExact"}, "r.example/app" + dg, "r.example/app" + dg, false},
		{Identity{Type: "matchRepository"}, "r.example/app:1", "r.example/app:7", true},
		{Identity{Type: "matchRepository"}, "r.example/app:1", "r.example/evil:1", false},
		{Identity{Type: "exactReference", Reference: "r.example/app:1"}, "mirror.example/app:9", "r.example/app:1", true},
		{Identity{Type: "exactReference", Reference: "r.example/app:1"}, "mirror.example/app:9", "r.example/app:2", false},
		{Identity{Type: "exactRepository", Repository: "r.example/app"}, "mirror.example/app:9", "r.example/app:2", true},
		{Identity{Type: "exactRepository", Repository: "r.example/app"}, "mirror.example/app:9", "mirror.example/app:9", false},
	}
	for _, tc := range tests {
		if got := tc.id.match(n(tc.img), n(tc.signed)); got != tc.want {
			t.Errorf("%s: image %s signed as %s: %v, want %v", tc.id.Type, tc.img, tc.signed, got, tc.want)
		}
	}
}

// sign makes a cosign simple-signing payload for manifest m and
// reference ref, and its base64 signature with signer.
func sign(t *testing.T, signer crypto.Signer, ref string, m digest.Digest) Signature {
	t.Helper()
	pl := fmt.Sprintf(`{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, ref, m)
	var sig []byte
	var err error
	if _, ok := signer.(ed25519.PrivateKey); ok {
		sig, err = signer.Sign(rand.Reader, []byte(pl), crypto.Hash(0))
	} else {
		sum := sha256.Sum256([]byte(pl))
		sig, err = signer.Sign(rand.Reader, sum[:], crypto.SHA256)
	}
	if err != nil {
		t.Fatal(err)
	}
	return Signature{Payload: []byte(pl), Base64: base64.StdEncoding.EncodeToString(sig)}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rs, _ := rsa.GenerateKey(rand.Reader, 2048)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecPath, _ := pubPEM(t, dir, "ec.pub", ec.Public())
	edPath, _ := pubPEM(t, dir, "ed.pub", ed.Public())
	rsPath, _ := pubPEM(t, dir, "rs.pub", rs.Public())
	doc := fmt.Sprintf(`{"default":[{"type":"reject"}],"transports":{"docker":{
		"r.example/ec":[{"type":"sigstoreSigned","keyPath":%q}],
		"r.example/many":[{"type":"sigstoreSigned","keyPaths":[%q,%q,%q],"signedIdentity":{"type":"matchRepository"}}],
		"r.example/open":[{"type":"insecureAcceptAnything"}],
		"r.example/both":[{"type":"insecureAcceptAnything"},{"type":"sigstoreSigned","keyPath":%q}]},
		"oci":{"":[{"type":"sigstoreSigned","keyPath":%q}]}}}`, ecPath, ecPath, edPath, rsPath, ecPath, ecPath)
	p, err := Parse([]byte(doc), "p.json")
	if err != nil {
		t.Fatal(err)
	}
	m := digest.FromString("manifest")
	tampered := sign(t, ec, "r.example/ec:1", m)
	tampered.Payload = []byte(strings.Replace(string(tampered.Payload), "r.example/ec:1", "r.example/ec:2", 1))
	tests := []struct {
		name      string
		transport string
		ref       string
		sigs      []Signature
		how, err  string
	}{
		{"ecdsa", "docker", "r.example/ec:1", []Signature{sign(t, ec, "r.example/ec:1", m)}, "sigstoreSigned key sha256:", ""},
		{"ed25519", "docker", "r.example/many:1", []Signature{sign(t, ed, "r.example/many:5", m)}, "sigstoreSigned key", ""},
		{"rsa", "docker", "r.example/many:1", []Signature{sign(t, rs, "r.example/many:1", m)}, "sigstoreSigned key", ""},
		{"one of several signatures", "docker", "r.example/ec:1", []Signature{sign(t, other, "r.example/ec:1", m), sign(t, ec, "r.example/ec:1", m)}, "sigstoreSigned", ""},
		{"unsigned", "docker", "r.example/ec:1", nil, "", "no signature"},
		{"wrong key", "docker", "r.example/ec:1", []Signature{sign(t, other, "r.example/ec:1", m)}, "", "no signature verifies with the scope's key"},
		{"tampered payload", "docker", "r.example/ec:1", []Signature{tampered}, "", "no signature verifies"},
		{"replay", "docker", "r.example/ec:1", []Signature{sign(t, ec, "r.example/ec:1", digest.FromString("other"))}, "", "the signature is for manifest"},
		{"identity mismatch", "docker", "r.example/ec:1", []Signature{sign(t, ec, "r.example/ec:2", m)}, "", "identity mismatch"},
		{"matchRepository other repo", "docker", "r.example/many:1", []Signature{sign(t, ec, "r.example/ec:1", m)}, "", "identity mismatch"},
		{"reject default", "docker", "r.example/else:1", nil, "", "rejects every image"},
		{"accept", "docker", "r.example/open:1", nil, "insecureAcceptAnything", ""},
		{"every requirement", "docker", "r.example/both:1", nil, "", "no signature"},
		{"file transport signed", "oci", "", nil, "", "read only from registries"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			asked := 0
			a, err := p.Check(context.Background(), Image{Transport: tc.transport, Name: tc.ref, Ref: tc.transport + "://" + tc.ref, Manifest: m},
				func(context.Context) ([]Signature, error) { asked++; return tc.sigs, nil })
			if tc.err != "" {
				var rj *Rejection
				if !errors.As(err, &rj) || !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Check: %v, want a rejection with %q", err, tc.err)
				}
				return
			}
			if err != nil || !strings.Contains(a.How, tc.how) {
				t.Fatalf("Check: %+v, %v; want admitted by %q", a, err, tc.how)
			}
			if asked > 1 {
				t.Errorf("signatures asked for %d times", asked)
			}
		})
	}
	// An error fetching signatures is no rejection: it is the error.
	boom := errors.New("registry down")
	_, err = p.Check(context.Background(), Image{Transport: "docker", Name: "r.example/ec:1", Ref: "docker://r.example/ec:1", Manifest: m},
		func(context.Context) ([]Signature, error) { return nil, boom })
	if !errors.Is(err, boom) || errors.Is(err, ErrRejected) {
		t.Fatalf("a failed fetch: %v, want it returned as is", err)
	}
}

func TestRecheck(t *testing.T) {
	dir := t.TempDir()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecPath, _ := pubPEM(t, dir, "ec.pub", ec.Public())
	otherPath, _ := pubPEM(t, dir, "other.pub", other.Public())
	doc := fmt.Sprintf(`{"default":[{"type":"reject"}],"transports":{"docker":{
		"r.example/app":[{"type":"sigstoreSigned","keyPath":%q,"signedIdentity":{"type":"matchRepository"}}],
		"r.example/rotated":[{"type":"sigstoreSigned","keyPath":%q,"signedIdentity":{"type":"matchRepository"}}],
		"r.example/open":[{"type":"insecureAcceptAnything"}]}}}`, ecPath, otherPath)
	p, err := Parse([]byte(doc), "p.json")
	if err != nil {
		t.Fatal(err)
	}
	m := digest.FromString("manifest")
	a, err := p.Check(context.Background(), Image{Transport: "docker", Name: "r.example/app:1", Ref: "docker://r.example/app:1", Manifest: m},
		func(context.Context) ([]Signature, error) { return []Signature{sign(t, ec, "r.example/app", m)}, nil })
	if err != nil {
		t.Fatal(err)
	}
	rec := a.String()
	tests := []struct {
		name, ref, admitted, err string
	}{
		{"same scope and key", "r.example/app:1", rec, ""},
		{"another tag of the repository", "r.example/app:2", rec, ""},
		{"open scope", "r.example/open:1", "", ""},
		{"never checked", "r.example/app:1", "", "imported with no signature check"},
		{"only accepted", "r.example/app:1", "insecureAcceptAnything (scope default)", "with no key of this scope"},
		{"key rotated away", "r.example/rotated:1", rec, "with no key of this scope"},
		{"another repository, same key", "r.example/app2:1", rec, "rejects every image"},
		{"rejected now", "r.example/else:1", rec, "rejects every image"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := p.Recheck(Image{Transport: "docker", Name: tc.ref, Ref: "docker://" + tc.ref}, tc.admitted)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Recheck of %q: %v", tc.admitted, err)
			case tc.err != "" && (!errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("Recheck of %q: %v, want a rejection with %q", tc.admitted, err, tc.err)
			}
		})
	}
	// The identity is checked offline too: a tree signed for one
	// repository is not admitted for another under the same key.
	p2, err := Parse([]byte(fmt.Sprintf(`{"default":[{"type":"sigstoreSigned","keyPath":%q,"signedIdentity":{"type":"matchRepository"}}]}`, ecPath)), "p2.json")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p2.Recheck(Image{Transport: "docker", Name: "r.example/evil:1", Ref: "docker://r.example/evil:1"}, rec); err == nil || !strings.Contains(err.Error(), "identity mismatch") {
		t.Fatalf("a tree signed for r.example/app rechecked for r.example/evil: %v", err)
	}
}
