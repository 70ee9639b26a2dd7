package integration

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
)

// cosign's legacy signature format, as cosign's documentation describes
// it (docs/specs/SIGNATURE_SPEC.md): a manifest tagged sha256-HEX.sig in
// the image's repository whose layers are simple-signing payloads of
// media type application/vnd.dev.cosign.simplesigning.v1+json, each with
// its base64 signature in the annotation dev.cosignproject.cosign/signature.
// Written here from that description, not from rootswap's verifier.
const (
	cosignPayloadType = types.MediaType("application/vnd.dev.cosign.simplesigning.v1+json")
	cosignSigAnnot    = "dev.cosignproject.cosign/signature"
)

// cosignPayload is the simple-signing payload cosign signs: the
// repository (cosign records no tag) and the manifest digest.
func cosignPayload(repo string, manifest digest.Digest) []byte {
	return []byte(fmt.Sprintf(`{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, repo, manifest))
}

// cosignSign signs payload as cosign signs with an ECDSA key: ASN.1 over
// its SHA-256, base64.
func cosignSign(t *testing.T, k *ecdsa.PrivateKey, payload []byte) string {
	t.Helper()
	sum := sha256.Sum256(payload)
	sig, err := k.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// pushSignature pushes a cosign signature manifest for manifest m of
// repo (NAME, in reg) holding payload and its signature sig.
func pushSignature(t *testing.T, reg *registry, repo string, m digest.Digest, payload []byte, sig string) {
	t.Helper()
	config := []byte(fmt.Sprintf(`{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":[%q]},"config":{}}`, digest.FromBytes(payload)))
	tag := m.Algorithm().String() + "-" + m.Encoded() + ".sig"
	pushRaw(t, reg, repo+":"+tag, config, []rawLayer{{mediaType: cosignPayloadType, blob: payload}}, func(om *ociManifest) {
		om.Layers[0].Annotations = map[string]string{cosignSigAnnot: sig}
	})
}

// trustKey makes an ECDSA P-256 key, writes its public half as PEM under
// dir, and returns the key, the file and its fingerprint as rootswap
// shows it (sha256 of the DER SubjectPublicKeyInfo).
func trustKey(t *testing.T, dir, name string) (*ecdsa.PrivateKey, string, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return k, p, "sha256:" + hex.EncodeToString(sum[:])
}

// TestTrustPolicy: with a signature policy, an image is imported only if
// the scope that matches it longest admits it, and that is decided before
// any layer blob is fetched: a rejection is one line naming the image,
// the scope and the reason, exit 1, nothing stored (verify clean), and a
// machine keeps its tree.
func TestTrustPolicy(t *testing.T) {
	needIntegration(t)
	reg := startRegistry(t, registryOpts{})
	s := newStore(t)
	dir := t.TempDir()
	key, keyPath, fp := trustKey(t, dir, "trusted.pub")
	other, _, _ := trustKey(t, dir, "other.pub")
	a := reg.Addr()
	pol := map[string]any{
		"default": []any{map[string]any{"type": "reject"}},
		"transports": map[string]any{"docker": map[string]any{
			a + "/trust":             []any{map[string]any{"type": "sigstoreSigned", "keyPath": keyPath}},
			a + "/trust/signed":      []any{map[string]any{"type": "sigstoreSigned", "keyPath": keyPath, "signedIdentity": map[string]any{"type": "matchRepository"}}},
			a + "/trust/open":        []any{map[string]any{"type": "insecureAcceptAnything"}},
			a + "/trust/open:locked": []any{map[string]any{"type": "reject"}},
		}},
	}
	b, _ := json.Marshal(pol)
	policyFile := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policyFile, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s.env = append(s.env, "ROOTSWAP_POLICY="+policyFile)

	rig := &trustRig{t: t, s: s, reg: reg, policy: policyFile}
	push, refused, admitted := rig.push, rig.refused, rig.admitted
	// sign pushes to repo a signature by k of manifest m, whose payload
	// names identity, as cosign signs.
	sign := func(repo string, m digest.Digest, identity string, k *ecdsa.PrivateKey) {
		t.Helper()
		pl := cosignPayload(identity, m)
		pushSignature(t, reg, repo, m, pl, cosignSign(t, k, pl))
	}

	t.Run("signed", func(t *testing.T) {
		ref, m, img, _ := push("trust/signed:1")
		sign("trust/signed", m, a+"/trust/signed", key)
		admitted(ref, img, "sigstoreSigned key "+fp+" for "+a+"/trust/signed (scope docker:"+a+"/trust/signed)")
	})
	t.Run("signed by digest, default identity", func(t *testing.T) {
		_, m, img, _ := push("trust/bydigest:1")
		sign("trust/bydigest", m, a+"/trust/bydigest", key)
		admitted("docker://"+a+"/trust/bydigest@"+m.String(), img, "sigstoreSigned key "+fp+" for "+a+"/trust/bydigest (scope docker:"+a+"/trust)")
	})
	t.Run("unsigned", func(t *testing.T) {
		ref, _, _, blob := push("trust/signed:unsigned")
		refused(ref, blob, "scope docker:"+a+"/trust/signed", "no signature")
	})
	t.Run("wrong key", func(t *testing.T) {
		ref, m, _, blob := push("trust/signed:wrongkey")
		sign("trust/signed", m, a+"/trust/signed", other)
		refused(ref, blob, "no signature verifies with the scope's key")
	})
	t.Run("tampered payload", func(t *testing.T) {
		ref, m, _, blob := push("trust/signed:tampered")
		pl := cosignPayload(a+"/trust/signed", m)
		sig := cosignSign(t, key, pl)
		evil := cosignPayload(a+"/trust/signed ", m) // one byte more, same digest named
		pushSignature(t, reg, "trust/signed", m, evil, sig)
		refused(ref, blob, "no signature verifies")
	})
	t.Run("replayed signature of another digest", func(t *testing.T) {
		_, good, _, _ := push("trust/signed:good")
		ref, m, _, blob := push("trust/signed:replay")
		pl := cosignPayload(a+"/trust/signed", good)
		pushSignature(t, reg, "trust/signed", m, pl, cosignSign(t, key, pl)) // good's signature under m's tag
		refused(ref, blob, "the signature is for manifest", good.String())
	})
	t.Run("identity mismatch", func(t *testing.T) {
		ref, m, _, blob := push("trust/signed:elsewhere")
		sign("trust/signed", m, a+"/evil/app", key)
		refused(ref, blob, "identity mismatch")
	})
	t.Run("default reject", func(t *testing.T) {
		ref, _, _, blob := push("elsewhere/app:1")
		refused(ref, blob, "scope default", "rejects every image")
	})
	t.Run("insecureAcceptAnything", func(t *testing.T) {
		ref, _, img, _ := push("trust/open:1")
		admitted(ref, img, "insecureAcceptAnything (scope docker:"+a+"/trust/open)")
	})
	t.Run("longest scope", func(t *testing.T) {
		ref, _, _, blob := push("trust/open:locked")
		refused(ref, blob, "scope docker:"+a+"/trust/open:locked", "rejects every image")
	})
	t.Run("a machine keeps its tree", func(t *testing.T) {
		ref, m, img, _ := push("trust/signed:stable")
		sign("trust/signed", m, a+"/trust/signed", key)
		s.ok("prepare", "--pull", "m", ref)
		_, _, _, blob := push("trust/signed:stable") // the tag moves to an unsigned image
		s.fail(1, []string{"no signature"}, "prepare", "--pull", "m", ref)
		if reg.BlobGets(blob) != 0 {
			t.Error("prepare fetched the rejected image's layer")
		}
		if ms := s.machines(); len(ms) != 1 || ms[0].Digest != img {
			t.Fatalf("after the rejection the machines are %+v, want m at %s", ms, img)
		}
		// update fetches through the same check.
		res := s.run("update", "m")
		t.Logf("update: exit %d\n%s%s", res.code, res.stdout, res.stderr)
		if res.code == 0 || !strings.Contains(res.stdout+res.stderr, "no signature") || reg.BlobGets(blob) != 0 {
			t.Errorf("update to an unsigned image: exit %d, blob fetched %d times\n%s%s", res.code, reg.BlobGets(blob), res.stdout, res.stderr)
		}
		if ms := s.machines(); len(ms) != 1 || ms[0].Digest != img {
			t.Fatalf("after the rejected update the machines are %+v, want m at %s", ms, img)
		}
	})
	t.Run("policy tightened after caching", func(t *testing.T) {
		open := "docker://" + a + "/trust/open:1" // admitted by insecureAcceptAnything above
		signed := "docker://" + a + "/trust/signed:1"
		tight := map[string]any{"default": []any{map[string]any{"type": "sigstoreSigned", "keyPath": keyPath, "signedIdentity": map[string]any{"type": "matchRepository"}}}}
		b, _ := json.Marshal(tight)
		tightFile := filepath.Join(dir, "tight.json")
		os.WriteFile(tightFile, b, 0o644)
		s.ok("prepare", "m4", open) // under the policy of the test
		before := reg.Requests()
		s.fail(1, []string{open, "rejected by policy", tightFile, "with no key of this scope"}, "--policy", tightFile, "prepare", "m2", open)
		// A machine that runs the tree already keeps it, with a warning.
		res := s.run("--policy", tightFile, "prepare", "m4", open)
		if res.code != 0 || !strings.Contains(res.stdout, "unchanged") || !strings.Contains(res.stderr, "no longer admits") {
			t.Errorf("prepare of a running tree the policy no longer admits: exit %d\n%s%s", res.code, res.stdout, res.stderr)
		}
		for _, m := range s.machines() {
			if m.Name == "m2" {
				t.Errorf("a tree the tightened policy rejects was activated: %+v", m)
			}
		}
		// A tree signed by the key still passes, offline.
		s.ok("--policy", tightFile, "prepare", "m3", signed)
		// verify lists the trees the tightened policy rejects.
		res = s.run("--policy", tightFile, "verify")
		t.Logf("verify under the tightened policy:\n%s", res.stdout)
		if res.code != 1 || !strings.Contains(res.stdout, "rejected: ") || !strings.Contains(res.stdout, open) || strings.Contains(res.stdout, signed+":") {
			t.Errorf("verify under the tightened policy: exit %d\n%s%s", res.code, res.stdout, res.stderr)
		}
		if n := reg.Requests() - before; n != 0 {
			t.Errorf("the offline re-checks made %d registry requests", n)
		}
	})
	t.Run("unsupported requirement", func(t *testing.T) {
		bad := filepath.Join(dir, "gpg.json")
		os.WriteFile(bad, []byte(`{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/etc/pki/key.gpg"}]}`), 0o644)
		ref, _, _, blob := push("trust/open:gpg")
		before := len(s.images())
		s.fail(1, []string{bad, "signedBy", "not supported"}, "--policy", bad, "import", ref)
		if reg.BlobGets(blob) != 0 || len(s.images()) != before {
			t.Error("an unsupported policy let the import start")
		}
	})
	t.Run("a policy named but missing", func(t *testing.T) {
		ref, _, _, _ := push("trust/open:missing")
		s.fail(1, []string{"policy", "missing.json"}, "--policy", filepath.Join(dir, "missing.json"), "import", ref)
	})
}

// TestTrustMirror: the signature is read where the image is, through the
// mirror configured for its registry: an image and its signature pushed
// to the mirror only are admitted under the upstream's scope; an unsigned
// one on the mirror is rejected. An oci: layout, which carries no
// signature rootswap reads, is rejected under a sigstoreSigned default
// and admitted by its transport's "" scope.
func TestTrustMirror(t *testing.T) {
	needIntegration(t)
	up := startRegistry(t, registryOpts{})
	mir := startRegistry(t, registryOpts{})
	s := newStore(t)
	dir := t.TempDir()
	key, keyPath, fp := trustKey(t, dir, "trusted.pub")
	envKey, conf := writeMirrorsConf(t, up.Addr(), mir.Addr())
	pol := fmt.Sprintf(`{"default":[{"type":"sigstoreSigned","keyPath":%q}],"transports":{"docker":{%q:[{"type":"sigstoreSigned","keyPath":%q,"signedIdentity":{"type":"matchRepository"}}]}}}`,
		keyPath, up.Addr()+"/trust", keyPath)
	policyFile := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policyFile, []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	s.env = append(s.env, envKey+"="+conf, "ROOTSWAP_POLICY="+policyFile)

	l := storedGzip(t, layerTar(t, dirEnt("etc/"), fileEnt("etc/version", "mirrored\n")))
	cfg := imageConfig(t, l.diffID)
	_, m := pushRaw(t, mir, "trust/app:1", cfg, []rawLayer{l}, nil)
	pl := cosignPayload(up.Addr()+"/trust/app", m)
	pushSignature(t, mir, "trust/app", m, pl, cosignSign(t, key, pl))
	ref := "docker://" + up.Addr() + "/trust/app:1"
	if got := strings.TrimSpace(s.ok("import", ref)); got != digest.FromBytes(cfg).String() {
		t.Fatalf("import %s through the mirror: %q", ref, got)
	}
	if out := s.ok("images", "--trust"); !strings.Contains(out, "sigstoreSigned key "+fp) {
		t.Errorf("images --trust: %s, want the key %s", out, fp)
	}

	// A mirror of the images alone: the signature is on the upstream. The
	// mirror's 404 for the signature tag is no failing mirror: the layer
	// still comes from it (the upstream does not have it).
	l4 := storedGzip(t, layerTar(t, dirEnt("etc/"), fileEnt("etc/version", "signed upstream\n")))
	cfg4 := imageConfig(t, l4.diffID)
	_, m4 := pushRaw(t, mir, "trust/app:4", cfg4, []rawLayer{l4}, nil)
	pl4 := cosignPayload(up.Addr()+"/trust/app", m4)
	pushSignature(t, up, "trust/app", m4, pl4, cosignSign(t, key, pl4))
	res := s.run("import", "docker://"+up.Addr()+"/trust/app:4")
	if res.code != 0 || strings.TrimSpace(res.stdout) != digest.FromBytes(cfg4).String() || strings.Contains(res.stderr, "mirror") {
		t.Fatalf("import of an image signed upstream: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	if mir.BlobGets(digest.FromBytes(l4.blob)) != 1 {
		t.Errorf("the layer was fetched from the mirror %d times, want once", mir.BlobGets(digest.FromBytes(l4.blob)))
	}

	l2 := storedGzip(t, layerTar(t, dirEnt("etc/"), fileEnt("etc/version", "unsigned\n")))
	pushRaw(t, mir, "trust/app:2", imageConfig(t, l2.diffID), []rawLayer{l2}, nil)
	s.fail(1, []string{"trust/app:2", "no signature"}, "import", "docker://"+up.Addr()+"/trust/app:2")
	if mir.BlobGets(digest.FromBytes(l2.blob)) != 0 || up.BlobGets(digest.FromBytes(l2.blob)) != 0 {
		t.Error("the rejected image's layer was fetched")
	}

	layoutDir := writeOCILayout(t, remoteImage(t, mir.Addr()+"/trust/app:2"), "v1") // not stored: rejected above
	s.fail(1, []string{"oci:" + layoutDir, "scope default", "signatures are read only from registries"}, "import", "oci:"+layoutDir+":v1")
	open := filepath.Join(dir, "open.json")
	os.WriteFile(open, []byte(`{"default":[{"type":"reject"}],"transports":{"oci":{"":[{"type":"insecureAcceptAnything"}]}}}`), 0o644)
	l3 := storedGzip(t, layerTar(t, fileEnt("other", "x\n")))
	pushRaw(t, mir, "trust/app:3", imageConfig(t, l3.diffID), []rawLayer{l3}, nil)
	layout3 := writeOCILayout(t, remoteImage(t, mir.Addr()+"/trust/app:3"), "v3")
	s.ok("--policy", open, "import", "oci:"+layout3+":v3")
	if out := s.ok("images", "--trust"); !strings.Contains(out, `insecureAcceptAnything (scope oci:"")`) {
		t.Errorf("images --trust: %s, want the oci: tree admitted by its transport's scope", out)
	}

	// verify re-checks every tree against the policy in force: the oci:
	// tree is one the environment's policy rejects; a policy admitting
	// both kinds leaves verify clean (the harness's final check).
	res = s.run("verify")
	if res.code != 1 || !strings.Contains(res.stdout, "rejected: ") || !strings.Contains(res.stdout, "oci:"+layout3) || strings.Count(res.stdout, "rejected: ") != 1 {
		t.Errorf("verify under a key policy: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	both := filepath.Join(dir, "both.json")
	os.WriteFile(both, []byte(fmt.Sprintf(`{"default":[{"type":"sigstoreSigned","keyPath":%q,"signedIdentity":{"type":"matchRepository"}}],"transports":{"oci":{"":[{"type":"insecureAcceptAnything"}]}}}`, keyPath)), 0o644)
	s.env = append(s.env, "ROOTSWAP_POLICY="+both) // the last one wins
}

// trustRig is a store with a signature policy (file policy) and the
// registry it imports from, for the tests of the policy.
type trustRig struct {
	t      *testing.T
	s      *store
	reg    *registry
	policy string
	n      int
}

// push pushes a new one-layer image as NAME:TAG and returns its ref,
// manifest digest, image digest and layer blob.
func (r *trustRig) push(nameTag string) (string, digest.Digest, string, digest.Digest) {
	r.n++
	l := storedGzip(r.t, layerTar(r.t, dirEnt("etc/"), fileEnt("etc/version", fmt.Sprintf("%s %d\n", nameTag, r.n))))
	cfg := imageConfig(r.t, l.diffID)
	ref, m := pushRaw(r.t, r.reg, nameTag, cfg, []rawLayer{l}, nil)
	return "docker://" + ref, m, digest.FromBytes(cfg).String(), digest.FromBytes(l.blob)
}

// refused imports ref and expects a one-line rejection mentioning each of
// mention, with no blob of the image fetched and nothing stored.
func (r *trustRig) refused(ref string, blob digest.Digest, mention ...string) {
	t, s := r.t, r.s
	t.Helper()
	before := len(s.images())
	res := s.fail(1, append([]string{ref, "rejected by policy", r.policy}, mention...), "import", ref)
	if msg := strings.TrimSpace(res.stderr); strings.Count(msg, "\n") != 0 {
		t.Errorf("%s: the rejection is not one line:\n%s", ref, msg)
	}
	t.Logf("%s", strings.TrimSpace(res.stderr))
	if got := r.reg.BlobGets(blob); got != 0 {
		t.Errorf("%s: the layer blob was fetched %d times before the rejection", ref, got)
	}
	if after := len(s.images()); after != before {
		t.Errorf("%s: %d trees after the rejection, %d before", ref, after, before)
	}
	s.verify("after the rejection of " + ref)
}

// admitted imports ref, which must be image img, and expects `images
// --trust` to say how, how it was admitted.
func (r *trustRig) admitted(ref, img, how string) {
	t, s := r.t, r.s
	t.Helper()
	if got := strings.TrimSpace(s.ok("import", ref)); got != img {
		t.Fatalf("import %s: %q, want %s", ref, got, img)
	}
	out := s.ok("images", "--trust")
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(img, f[0]) {
			if !strings.Contains(line, how) {
				t.Errorf("images --trust for %s: %q, want %q", ref, line, how)
			}
			return
		}
	}
	t.Errorf("images --trust lists no %s:\n%s", img, out)
}
