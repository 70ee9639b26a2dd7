package policy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/internal/sigstoretest"
)

// GitHub Actions' OIDC issuer and a workflow identity, as Fulcio puts
// them in a keyless certificate (the identity a URI SAN).
const (
	ghIssuer   = "https://token.actions.githubusercontent.com"
	ghWorkflow = "https://github.com/org/app/.github/workflows/release.yml@refs/heads/main"
)

// bundleFixture is a policy over every kind of bundle requirement, and the
// keys, CA and logs behind it.
type bundleFixture struct {
	p                  *Policy
	key, other         *sigstoretest.Key
	ca, otherCA        *sigstoretest.CA
	rekor, otherRekor  *sigstoretest.Rekor
	keyPath, rekorPath string
	caPath             string
	manifest           []byte
	m                  digest.Digest
}

func newBundleFixture(t testing.TB) *bundleFixture {
	t.Helper()
	dir := t.TempDir()
	f := &bundleFixture{
		key: sigstoretest.NewKey(t), other: sigstoretest.NewKey(t),
		ca: sigstoretest.NewCA(t), otherCA: sigstoretest.NewCA(t),
		rekor: sigstoretest.NewRekor(t), otherRekor: sigstoretest.NewRekor(t),
		manifest: []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`),
	}
	f.m = digest.FromBytes(f.manifest)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	f.keyPath = write("cosign.pub", f.key.PublicPEM(t))
	f.rekorPath = write("rekor.pub", f.rekor.PublicPEM(t))
	f.caPath = write("fulcio.pem", f.ca.PEM())
	caData := base64.StdEncoding.EncodeToString(f.ca.PEM())
	doc := fmt.Sprintf(`{"default":[{"type":"reject"}],"transports":{"docker":{
		"r.example/app":[{"type":"sigstoreSigned","keyPath":%[1]q}],
		"r.example/logged":[{"type":"sigstoreSigned","keyPath":%[1]q,"rekorPublicKeyPath":%[2]q}],
		"r.example/exact":[{"type":"sigstoreSigned","keyPath":%[1]q,"signedIdentity":{"type":"exactRepository","dockerRepository":"r.example/exact"}}],
		"r.example/ci":[{"type":"sigstoreSigned","fulcio":{"caPath":%[3]q,"oidcIssuer":%[4]q,"subjectEmail":%[5]q},"rekorPublicKeyPath":%[2]q,"signedIdentity":{"type":"matchRepository"}}],
		"r.example/mail":[{"type":"sigstoreSigned","fulcio":{"caData":%[6]q,"oidcIssuer":"https://accounts.example","subjectEmail":"dev@example.com"},"rekorPublicKeyPath":%[2]q}]
	}}}`, f.keyPath, f.rekorPath, f.caPath, ghIssuer, ghWorkflow, caData)
	var err error
	if f.p, err = Parse([]byte(doc), "p.json"); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *bundleFixture) check(ref string, sigs ...Signature) (Admission, error) {
	return f.p.Check(context.Background(), Image{Transport: "docker", Name: ref, Ref: "docker://" + ref, Manifest: f.m},
		func(context.Context) ([]Signature, error) { return sigs, nil })
}

func bundleSig(b []byte) Signature { return Signature{Bundle: b} }

// legacySig is a legacy signature of payload pl as the registry source
// hands it in: the payload and the annotations cosign writes.
func legacySig(pl []byte, l sigstoretest.Legacy) Signature {
	s := Signature{Payload: pl, Base64: l.Base64, Cert: l.Annotations["dev.sigstore.cosign/certificate"], Chain: l.Annotations["dev.sigstore.cosign/chain"]}
	if r, ok := l.Annotations["dev.sigstore.cosign/bundle"]; ok {
		s.Rekor = []byte(r)
	}
	return s
}

// simpleSigning is cosign's simple-signing payload for manifest m signed
// as repository repo.
func simpleSigning(repo string, m digest.Digest) []byte {
	return fmt.Appendf(nil, `{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, repo, m)
}

// TestCheckBundle: Sigstore bundles as cosign v3 attaches them, by key and
// keyless, each admitted only for the manifest digest signed, by the key
// or the CA, log and identity of the scope; each rejection says which
// requirement failed and why.
func TestCheckBundle(t *testing.T) {
	f := newBundleFixture(t)
	m, o := f.m, sigstoretest.Options{}
	other := digest.FromString("another image")
	rk := sigstoretest.Options{Rekor: f.rekor}
	// A statement for another digest, spliced under this bundle's signature.
	tampered := func() []byte {
		var b map[string]any
		json.Unmarshal(f.key.Sign(t, other, o), &b)
		env := b["dsseEnvelope"].(map[string]any)
		env["payload"] = base64.StdEncoding.EncodeToString(sigstoretest.Statement(m, sigstoretest.SignPredicate))
		out, _ := json.Marshal(b)
		return out
	}()
	fp, rfp := f.key.Fingerprint(t), f.rekor.Fingerprint(t)
	ciPayload, loggedPayload, otherPayload := simpleSigning("r.example/ci", m), simpleSigning("r.example/logged:1", m), simpleSigning("r.example/ci", other)
	// The same log, saying it logged the entry an hour and 55 minutes ago.
	past := *f.rekor
	past.At = time.Now().Add(-time.Hour - 55*time.Minute)
	tests := []struct {
		name, ref string
		sigs      []Signature
		how, err  string
	}{
		{"key", "r.example/app:1", []Signature{bundleSig(f.key.Sign(t, m, o))}, "sigstoreSigned bundle key " + fp, ""},
		{"key, message signature", "r.example/app:1", []Signature{bundleSig(f.key.Sign(t, m, sigstoretest.Options{Message: f.manifest}))}, "sigstoreSigned bundle key " + fp, ""},
		{"key, logged too", "r.example/app:1", []Signature{bundleSig(f.key.Sign(t, m, rk))}, "sigstoreSigned bundle key " + fp, ""},
		{"key beside a legacy signature by another", "r.example/app:1", []Signature{{Payload: []byte("{}"), Base64: "AAAA"}, bundleSig(f.key.Sign(t, m, o))}, "bundle key", ""},
		{"no signature", "r.example/app:1", nil, "", "no signature found"},
		{"another key", "r.example/app:1", []Signature{bundleSig(f.other.Sign(t, m, o))}, "", "signed by another key"},
		{"another digest (replay)", "r.example/app:1", []Signature{bundleSig(f.key.Sign(t, other, o))}, "", "the signature is for manifest " + other.String() + ", not " + m.String()},
		{"another digest, message signature", "r.example/app:1", []Signature{bundleSig(f.key.Sign(t, other, sigstoretest.Options{Message: []byte("another manifest")}))}, "", "the signature is for manifest"},
		{"tampered statement", "r.example/app:1", []Signature{bundleSig(tampered)}, "", "signed by another key"},
		{"an attestation, not a signature", "r.example/app:1", []Signature{bundleSig(f.key.Sign(t, m, sigstoretest.Options{Predicate: "https://slsa.dev/provenance/v1"}))}, "", "not an image signature"},
		{"malformed", "r.example/app:1", []Signature{bundleSig([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))}, "", "Sigstore bundle is malformed"},
		{"not JSON", "r.example/app:1", []Signature{bundleSig([]byte("\x00"))}, "", "Sigstore bundle is malformed"},
		{"Rekor required, logged", "r.example/logged:1", []Signature{bundleSig(f.key.Sign(t, m, rk))}, "sigstoreSigned bundle key " + fp + " rekor " + rfp, ""},
		{"Rekor required, not logged", "r.example/logged:1", []Signature{bundleSig(f.key.Sign(t, m, o))}, "", "no signature verifies"},
		{"Rekor required, another log", "r.example/logged:1", []Signature{bundleSig(f.key.Sign(t, m, sigstoretest.Options{Rekor: f.otherRekor}))}, "", "no signature verifies"},
		{"Rekor required, legacy signature", "r.example/logged:1", []Signature{{Payload: []byte("{}"), Base64: "AAAA"}}, "", "a legacy signature without a Rekor entry"},
		{"exact identity", "r.example/exact:1", []Signature{bundleSig(f.key.Sign(t, m, o))}, "", "identity mismatch: a Sigstore bundle signs the manifest digest alone"},
		{"keyless workflow (URI)", "r.example/ci:1", []Signature{bundleSig(f.ca.Sign(t, m, ghIssuer, ghWorkflow, rk))}, "sigstoreSigned bundle certificate sha256:", ""},
		{"keyless email", "r.example/mail:1", []Signature{bundleSig(f.ca.Sign(t, m, "https://accounts.example", "dev@example.com", rk))}, "subject dev@example.com rekor " + rfp, ""},
		{"keyless, message signature", "r.example/mail:1", []Signature{bundleSig(f.ca.Sign(t, m, "https://accounts.example", "dev@example.com", sigstoretest.Options{Rekor: f.rekor, Message: f.manifest}))}, "bundle certificate", ""},
		{"keyless, another workflow", "r.example/ci:1", []Signature{bundleSig(f.ca.Sign(t, m, ghIssuer, "https://github.com/org/app/.github/workflows/evil.yml@refs/heads/main", rk))}, "", "identity mismatch: signed by https://github.com/org/app/.github/workflows/evil.yml@refs/heads/main"},
		{"keyless, another issuer", "r.example/ci:1", []Signature{bundleSig(f.ca.Sign(t, m, "https://evil.example", ghWorkflow, rk))}, "", "identity mismatch"},
		{"keyless, an email for a workflow", "r.example/ci:1", []Signature{bundleSig(f.ca.Sign(t, m, ghIssuer, "dev@example.com", rk))}, "", "identity mismatch"},
		{"keyless, another CA", "r.example/ci:1", []Signature{bundleSig(f.otherCA.Sign(t, m, ghIssuer, ghWorkflow, rk))}, "", "no signature verifies with a certificate of the scope's CA"},
		{"keyless, not logged", "r.example/ci:1", []Signature{bundleSig(f.ca.Sign(t, m, ghIssuer, ghWorkflow, o))}, "", "no signature verifies with a certificate"},
		{"keyless, another log", "r.example/ci:1", []Signature{bundleSig(f.ca.Sign(t, m, ghIssuer, ghWorkflow, sigstoretest.Options{Rekor: f.otherRekor}))}, "", "no signature verifies with a certificate"},
		{"keyless, certificate expired since it was logged", "r.example/ci:1", []Signature{bundleSig(f.ca.Sign(t, m, ghIssuer, ghWorkflow, sigstoretest.Options{Rekor: &past, IssuedAt: time.Now().Add(-2 * time.Hour)}))}, "bundle certificate", ""},
		{"keyless, logged after the certificate expired", "r.example/ci:1", []Signature{bundleSig(f.ca.Sign(t, m, ghIssuer, ghWorkflow, sigstoretest.Options{Rekor: f.rekor, IssuedAt: time.Now().Add(-2 * time.Hour)}))}, "", "no signature verifies with a certificate"},
		{"keyless, another digest", "r.example/ci:1", []Signature{bundleSig(f.ca.Sign(t, other, ghIssuer, ghWorkflow, rk))}, "", "the signature is for manifest"},
		{"keyless, by key", "r.example/ci:1", []Signature{bundleSig(f.key.Sign(t, m, rk))}, "", "no signature verifies with a certificate"},
		{"keyless, legacy signature", "r.example/ci:1", []Signature{{Payload: []byte("{}"), Base64: "AAAA"}}, "", "a legacy signature without a certificate"},
		{"keyless legacy (cosign v2)", "r.example/ci:1", []Signature{legacySig(ciPayload, f.ca.SignLegacy(t, ciPayload, ghIssuer, ghWorkflow, rk))}, "sigstoreSigned certificate " + f.ca.Fingerprint(t) + " issuer " + ghIssuer + " subject " + ghWorkflow + " rekor " + rfp + " for r.example/ci", ""},
		{"keyless legacy, another workflow", "r.example/ci:1", []Signature{legacySig(ciPayload, f.ca.SignLegacy(t, ciPayload, ghIssuer, ghWorkflow+"x", rk))}, "", "identity mismatch: signed by " + ghWorkflow + "x"},
		{"keyless legacy, not logged", "r.example/ci:1", []Signature{legacySig(ciPayload, f.ca.SignLegacy(t, ciPayload, ghIssuer, ghWorkflow, o))}, "", "a legacy signature without a Rekor entry"},
		{"keyless legacy, another log", "r.example/ci:1", []Signature{legacySig(ciPayload, f.ca.SignLegacy(t, ciPayload, ghIssuer, ghWorkflow, sigstoretest.Options{Rekor: f.otherRekor}))}, "", "no signature verifies with a certificate"},
		{"keyless legacy, another CA", "r.example/ci:1", []Signature{legacySig(ciPayload, f.otherCA.SignLegacy(t, ciPayload, ghIssuer, ghWorkflow, rk))}, "", "no signature verifies with a certificate"},
		{"keyless legacy, tampered payload", "r.example/ci:1", []Signature{legacySig(simpleSigning("r.example/ci ", m), f.ca.SignLegacy(t, ciPayload, ghIssuer, ghWorkflow, rk))}, "", "no signature verifies with a certificate"},
		{"keyless legacy, another digest", "r.example/ci:1", []Signature{legacySig(otherPayload, f.ca.SignLegacy(t, otherPayload, ghIssuer, ghWorkflow, rk))}, "", "the signature is for manifest"},
		{"keyless legacy, another repository", "r.example/ci:1", []Signature{legacySig(simpleSigning("r.example/evil", m), f.ca.SignLegacy(t, simpleSigning("r.example/evil", m), ghIssuer, ghWorkflow, rk))}, "", "identity mismatch: signed for r.example/evil"},
		{"keyless legacy, malformed Rekor annotation", "r.example/ci:1", []Signature{func() Signature {
			s := legacySig(ciPayload, f.ca.SignLegacy(t, ciPayload, ghIssuer, ghWorkflow, rk))
			s.Rekor = []byte(`{"Payload":{"body":"!"}}`)
			return s
		}()}, "", "Rekor entry is malformed"},
		{"legacy by key, logged", "r.example/logged:1", []Signature{legacySig(loggedPayload, f.key.SignLegacy(t, loggedPayload, rk))}, "sigstoreSigned key " + fp + " rekor " + rfp + " for r.example/logged:1", ""},
		{"legacy by key, logged elsewhere", "r.example/logged:1", []Signature{legacySig(loggedPayload, f.key.SignLegacy(t, loggedPayload, sigstoretest.Options{Rekor: f.otherRekor}))}, "", "no signature verifies"},
		{"legacy by key, as cosign v2 writes it without a log", "r.example/app:1", []Signature{legacySig(simpleSigning("r.example/app:1", m), f.key.SignLegacy(t, simpleSigning("r.example/app:1", m), o))}, "sigstoreSigned key " + fp + " for r.example/app:1", ""},
		{"key scope, keyless bundle", "r.example/app:1", []Signature{bundleSig(f.ca.Sign(t, m, ghIssuer, ghWorkflow, rk))}, "", "signed by another key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, err := f.check(tc.ref, tc.sigs...)
			if tc.err != "" {
				var rj *Rejection
				if !errors.As(err, &rj) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Check: %v, want a rejection with %q", err, tc.err)
				}
				if !strings.Contains(err.Error(), "image docker://"+tc.ref) || strings.Contains(err.Error(), "\n") {
					t.Errorf("rejection %q: not one line naming the image", err)
				}
				repo, _, _ := strings.Cut(tc.ref, ":")
				want := map[string]string{"r.example/app": "by key", "r.example/exact": "by key", "r.example/logged": "by key, logged in Rekor", "r.example/ci": "keyless", "r.example/mail": "keyless"}[repo]
				if !strings.Contains(err.Error(), "scope docker:"+repo+", requirement 1 (sigstoreSigned "+want+"): ") {
					t.Errorf("rejection %q: does not name the scope's requirement 1 (sigstoreSigned %s)", err, want)
				}
				return
			}
			if err != nil || !strings.Contains(a.How, tc.how) {
				t.Fatalf("Check: %+v, %v; want admitted by %q", a, err, tc.how)
			}
		})
	}
}

// TestRecheckBundle: a tree admitted by a bundle is re-admitted offline
// while the policy keeps its key, CA, log and identity, and refused once
// any of them changes.
func TestRecheckBundle(t *testing.T) {
	f := newBundleFixture(t)
	rk := sigstoretest.Options{Rekor: f.rekor}
	admitted := func(ref string, b []byte) string {
		t.Helper()
		a, err := f.check(ref, bundleSig(b))
		if err != nil {
			t.Fatal(err)
		}
		return a.String()
	}
	byKey := admitted("r.example/app:1", f.key.Sign(t, f.m, sigstoretest.Options{}))
	logged := admitted("r.example/logged:1", f.key.Sign(t, f.m, rk))
	ci := admitted("r.example/ci:1", f.ca.Sign(t, f.m, ghIssuer, ghWorkflow, rk))
	legacyCI := func() string {
		pl := simpleSigning("r.example/ci", f.m)
		a, err := f.check("r.example/ci:1", legacySig(pl, f.ca.SignLegacy(t, pl, ghIssuer, ghWorkflow, rk)))
		if err != nil {
			t.Fatal(err)
		}
		return a.String()
	}()
	policyWith := func(req string) *Policy {
		t.Helper()
		p, err := Parse([]byte(`{"default":[`+req+`]}`), "p2.json")
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	dir := t.TempDir()
	otherCA, otherRekor := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "rekor.pub")
	os.WriteFile(otherCA, f.otherCA.PEM(), 0o644)
	os.WriteFile(otherRekor, f.otherRekor.PublicPEM(t), 0o644)
	fulcioReq := func(subject string) string {
		return fmt.Sprintf(`{"type":"sigstoreSigned","fulcio":{"caPath":%q,"oidcIssuer":%q,"subjectEmail":%q},"rekorPublicKeyPath":%q}`, f.caPath, ghIssuer, subject, f.rekorPath)
	}
	tests := []struct {
		name     string
		p        *Policy
		ref      string
		admitted string
		err      string
	}{
		{"key", f.p, "r.example/app:2", byKey, ""},
		{"key and log", f.p, "r.example/logged:1", logged, ""},
		{"key, log now required", f.p, "r.example/logged:1", byKey, "not checked against this scope's Rekor key"},
		{"key, exact identity now", f.p, "r.example/exact:1", byKey, "identity mismatch"},
		{"key, keyless now", f.p, "r.example/ci:1", byKey, "with no certificate of this scope's CA"},
		{"keyless", f.p, "r.example/ci:7", ci, ""},
		{"keyless, default scope", policyWith(fulcioReq(ghWorkflow)), "r.example/other:1", ci, ""},
		{"keyless, another subject now", policyWith(fulcioReq("https://github.com/org/app/.github/workflows/other.yml@refs/heads/main")), "r.example/ci:1", ci, "identity mismatch"},
		{"keyless, key now", f.p, "r.example/app:1", ci, "with no key of this scope"},
		{"keyless legacy", f.p, "r.example/ci:2", legacyCI, ""},
		{"keyless legacy, another repository", policyWith(fulcioReq(ghWorkflow)), "r.example/other:1", legacyCI, "identity mismatch: the stored tree was signed for r.example/ci"},
		{"keyless legacy, another subject now", policyWith(fulcioReq(ghWorkflow + "x")), "r.example/ci:1", legacyCI, "identity mismatch"},
		{"keyless, another identity's scope", f.p, "r.example/mail:1", ci, "identity mismatch"},
		{"keyless, another CA now", policyWith(strings.Replace(fulcioReq(ghWorkflow), f.caPath, otherCA, 1)), "r.example/ci:1", ci, "with no certificate of this scope's CA"},
		{"keyless, another log now", policyWith(strings.Replace(fulcioReq(ghWorkflow), f.rekorPath, otherRekor, 1)), "r.example/ci:1", ci, "not checked against this scope's Rekor key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.p.Recheck(Image{Transport: "docker", Name: tc.ref, Ref: "docker://" + tc.ref}, tc.admitted)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("Recheck of %q: %v", tc.admitted, err)
			case tc.err != "" && (!errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("Recheck of %q: %v, want a rejection with %q", tc.admitted, err, tc.err)
			}
		})
	}
}

// FuzzBundle: whatever a registry serves as a bundle, the check answers
// with an admission or a one-line rejection naming the image, never a
// panic; the seeds are a bundle by key and a keyless one, both genuine.
func FuzzBundle(f *testing.F) {
	fx := newBundleFixture(f)
	f.Add(fx.key.Sign(f, fx.m, sigstoretest.Options{}))
	f.Add(fx.ca.Sign(f, fx.m, ghIssuer, ghWorkflow, sigstoretest.Options{Rekor: fx.rekor}))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, ref := range []string{"r.example/app:1", "r.example/ci:1"} {
			_, err := fx.check(ref, bundleSig(b))
			if err != nil && (!strings.Contains(err.Error(), "image docker://"+ref) || strings.Contains(err.Error(), "\n")) {
				t.Fatalf("rejection %q: not one line naming the image", err)
			}
		}
	})
}
