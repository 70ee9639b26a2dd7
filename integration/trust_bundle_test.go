package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/internal/sigstoretest"
)

// attachBundle attaches Sigstore bundle b to manifest m of repo (NAME, in
// reg) as cosign v3 does on a registry without the referrers API, as
// cosign's specs/BUNDLE_SPEC.md describes it (written here from that
// description, not from rootswap's reader): the bundle as a blob; an OCI
// image manifest with artifactType application/vnd.dev.sigstore.bundle.v0.3+json,
// the empty config ({} of media type application/vnd.oci.empty.v1+json),
// the bundle as its one layer and m as its subject; and the referrers
// tag sha256-HEX of m holding an OCI index listing that manifest with
// its artifactType. Debian's distribution 2.8 has no referrers API, so
// the tag is what a reader finds.
func attachBundle(t *testing.T, reg *registry, repo string, m digest.Digest, b []byte) {
	t.Helper()
	r := ggcrRef(t, reg.Addr()+"/"+repo+":x").Context()
	put := func(blob []byte, mt types.MediaType) v1.Descriptor {
		l := static.NewLayer(blob, mt)
		if err := remote.WriteLayer(r, l); err != nil {
			t.Fatalf("push blob to %s: %v", r, err)
		}
		h, _ := l.Digest()
		return v1.Descriptor{MediaType: mt, Digest: h, Size: int64(len(blob))}
	}
	art, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     types.OCIManifestSchema1,
		"artifactType":  sigstoretest.BundleType,
		"config":        put([]byte("{}"), "application/vnd.oci.empty.v1+json"),
		"layers":        []v1.Descriptor{put(b, sigstoretest.BundleType)},
		"subject":       map[string]any{"mediaType": types.OCIManifestSchema1, "digest": m, "size": 1},
		"annotations":   map[string]string{"dev.sigstore.bundle.content": "dsse-envelope", "dev.sigstore.bundle.predicateType": sigstoretest.SignPredicate},
	})
	ad := digest.FromBytes(art)
	if err := remote.Put(r.Digest(ad.String()), rawManifest{art, types.OCIManifestSchema1}); err != nil {
		t.Fatalf("push bundle manifest to %s: %v", r, err)
	}
	// The referrers tag lists every artifact attached so far.
	tag := r.Tag(m.Algorithm().String() + "-" + m.Encoded())
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	if d, err := remote.Get(tag); err == nil {
		json.Unmarshal(d.Manifest, &idx)
	}
	idx.Manifests = append(idx.Manifests, v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: v1.Hash{Algorithm: "sha256", Hex: ad.Encoded()}, Size: int64(len(art)), ArtifactType: sigstoretest.BundleType})
	ib, _ := json.Marshal(idx)
	if err := remote.Put(tag, rawManifest{ib, types.OCIImageIndex}); err != nil {
		t.Fatalf("push referrers tag %s: %v", tag, err)
	}
}

// pushLegacy pushes a cosign legacy signature manifest for manifest m of
// repo holding payload pl with the layer annotations l carries (the
// signature, and for a keyless one its certificate, chain and Rekor
// entry), as cosign v2 writes them (see pushSignature).
func pushLegacy(t *testing.T, reg *registry, repo string, m digest.Digest, pl []byte, l sigstoretest.Legacy) {
	t.Helper()
	config := []byte(fmt.Sprintf(`{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":[%q]},"config":{}}`, digest.FromBytes(pl)))
	tag := m.Algorithm().String() + "-" + m.Encoded() + ".sig"
	pushRaw(t, reg, repo+":"+tag, config, []rawLayer{{mediaType: cosignPayloadType, blob: pl}}, func(om *ociManifest) {
		om.Layers[0].Annotations = l.Annotations
	})
}

// GitHub Actions' OIDC issuer and a release workflow's identity, as
// Fulcio's certificates name them (the identity a URI SAN).
const (
	ghIssuer   = "https://token.actions.githubusercontent.com"
	ghWorkflow = "https://github.com/org/app/.github/workflows/release.yml@refs/heads/main"
)

// TestTrustBundle: Sigstore bundles attached as cosign v3 attaches them,
// through the referrers tag of a registry without the referrers API:
// by a key, and keyless (a test Fulcio CA, a GitHub Actions workflow
// identity, a test Rekor key), each checked offline before any layer is
// fetched. A rejection is one line naming the image, the scope and what
// failed, exit 1, nothing stored (verify clean), a machine keeps its
// tree; the admission is recorded, and re-checked offline when the
// policy changes.
func TestTrustBundle(t *testing.T) {
	needIntegration(t)
	reg := startRegistry(t, registryOpts{})
	s := newStore(t)
	dir := t.TempDir()
	key, other := sigstoretest.NewKey(t), sigstoretest.NewKey(t)
	ca, rekor := sigstoretest.NewCA(t), sigstoretest.NewRekor(t)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyPath, caPath, rekorPath := write("cosign.pub", key.PublicPEM(t)), write("fulcio.pem", ca.PEM()), write("rekor.pub", rekor.PublicPEM(t))
	fp, rfp := key.Fingerprint(t), rekor.Fingerprint(t)
	a := reg.Addr()
	keyless := func(subject string) map[string]any {
		return map[string]any{"type": "sigstoreSigned", "fulcio": map[string]any{"caPath": caPath, "oidcIssuer": ghIssuer, "subjectEmail": subject},
			"rekorPublicKeyPath": rekorPath, "signedIdentity": map[string]any{"type": "matchRepository"}}
	}
	policyFile := write("policy.json", mustJSON(t, map[string]any{
		"default": []any{map[string]any{"type": "reject"}},
		"transports": map[string]any{"docker": map[string]any{
			a + "/bundle/key": []any{map[string]any{"type": "sigstoreSigned", "keyPath": keyPath}},
			a + "/bundle/ci":  []any{keyless(ghWorkflow)},
		}},
	}))
	s.env = append(s.env, "ROOTSWAP_POLICY="+policyFile)

	rig := &trustRig{t: t, s: s, reg: reg, policy: policyFile}
	push, refused, admitted := rig.push, rig.refused, rig.admitted
	rk := sigstoretest.Options{Rekor: rekor}

	t.Run("by key", func(t *testing.T) {
		ref, m, img, _ := push("bundle/key:1")
		attachBundle(t, reg, "bundle/key", m, key.Sign(t, m, sigstoretest.Options{}))
		admitted(ref, img, "sigstoreSigned bundle key "+fp+" (scope docker:"+a+"/bundle/key)")
	})
	t.Run("no signature", func(t *testing.T) {
		ref, _, _, blob := push("bundle/key:unsigned")
		refused(ref, blob, "scope docker:"+a+"/bundle/key", "no signature found")
	})
	t.Run("another key", func(t *testing.T) {
		ref, m, _, blob := push("bundle/key:other")
		attachBundle(t, reg, "bundle/key", m, other.Sign(t, m, sigstoretest.Options{}))
		refused(ref, blob, "signed by another key")
	})
	t.Run("a bundle for another digest (replay)", func(t *testing.T) {
		_, good, _, _ := push("bundle/key:good")
		ref, m, _, blob := push("bundle/key:replay")
		attachBundle(t, reg, "bundle/key", m, key.Sign(t, good, sigstoretest.Options{}))
		refused(ref, blob, "the signature is for manifest "+good.String())
	})
	t.Run("malformed bundle", func(t *testing.T) {
		ref, m, _, blob := push("bundle/key:malformed")
		attachBundle(t, reg, "bundle/key", m, []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{}}`))
		refused(ref, blob, "Sigstore bundle is malformed")
	})
	t.Run("keyless, a GitHub Actions workflow", func(t *testing.T) {
		ref, m, img, _ := push("bundle/ci:1")
		attachBundle(t, reg, "bundle/ci", m, ca.Sign(t, m, ghIssuer, ghWorkflow, rk))
		admitted(ref, img, "issuer "+ghIssuer+" subject "+ghWorkflow+" rekor "+rfp)
	})
	t.Run("keyless, another workflow", func(t *testing.T) {
		ref, m, _, blob := push("bundle/ci:evil")
		attachBundle(t, reg, "bundle/ci", m, ca.Sign(t, m, ghIssuer, "https://github.com/org/app/.github/workflows/evil.yml@refs/heads/main", rk))
		refused(ref, blob, "identity mismatch", "evil.yml")
	})
	t.Run("keyless, not logged", func(t *testing.T) {
		ref, m, _, blob := push("bundle/ci:unlogged")
		attachBundle(t, reg, "bundle/ci", m, ca.Sign(t, m, ghIssuer, ghWorkflow, sigstoretest.Options{}))
		refused(ref, blob, "no signature verifies with a certificate")
	})
	t.Run("keyless legacy signature (cosign v2)", func(t *testing.T) {
		ref, m, img, _ := push("bundle/ci:v2")
		pl := cosignPayload(a+"/bundle/ci", m)
		pushLegacy(t, reg, "bundle/ci", m, pl, ca.SignLegacy(t, pl, ghIssuer, ghWorkflow, rk))
		admitted(ref, img, "sigstoreSigned certificate "+ca.Fingerprint(t)+" issuer "+ghIssuer+" subject "+ghWorkflow+" rekor "+rfp+" for "+a+"/bundle/ci")
	})
	t.Run("keyless legacy signature, another workflow", func(t *testing.T) {
		ref, m, _, blob := push("bundle/ci:v2evil")
		pl := cosignPayload(a+"/bundle/ci", m)
		pushLegacy(t, reg, "bundle/ci", m, pl, ca.SignLegacy(t, pl, ghIssuer, "https://github.com/org/app/.github/workflows/evil.yml@refs/heads/main", rk))
		refused(ref, blob, "identity mismatch", "evil.yml")
	})
	t.Run("a machine keeps its tree", func(t *testing.T) {
		ref, m, img, _ := push("bundle/key:stable")
		attachBundle(t, reg, "bundle/key", m, key.Sign(t, m, sigstoretest.Options{}))
		s.ok("prepare", "--pull", "m", ref)
		_, m2, _, blob := push("bundle/key:stable") // the tag moves to an image signed by another key
		attachBundle(t, reg, "bundle/key", m2, other.Sign(t, m2, sigstoretest.Options{}))
		s.fail(1, []string{"signed by another key"}, "prepare", "--pull", "m", ref)
		if reg.BlobGets(blob) != 0 {
			t.Error("prepare fetched the rejected image's layer")
		}
		if ms := s.machines(); len(ms) != 1 || ms[0].Digest != img {
			t.Fatalf("after the rejection the machines are %+v, want m at %s", ms, img)
		}
	})
	t.Run("policy changed after caching", func(t *testing.T) {
		ci := "docker://" + a + "/bundle/ci:1" // admitted above
		moved := write("moved.json", mustJSON(t, map[string]any{"default": []any{keyless("https://github.com/org/app/.github/workflows/other.yml@refs/heads/main")}}))
		same := write("same.json", mustJSON(t, map[string]any{"default": []any{keyless(ghWorkflow)}}))
		before := reg.Requests()
		s.fail(1, []string{ci, "rejected by policy", moved, "identity mismatch"}, "--policy", moved, "prepare", "m2", ci)
		s.ok("--policy", same, "prepare", "m3", ci)
		if n := reg.Requests() - before; n != 0 {
			t.Errorf("the offline re-checks made %d registry requests", n)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTrustBundleMirror: bundles are read where the image is, through the
// mirror configured for its registry, as the legacy signatures are: a
// bundle attached on the mirror only admits the image under the
// upstream's scope; one attached upstream only is found there after the
// mirror's 404 (a mirror of the images alone is no failing mirror); an
// image with none anywhere is rejected.
func TestTrustBundleMirror(t *testing.T) {
	needIntegration(t)
	up := startRegistry(t, registryOpts{})
	mir := startRegistry(t, registryOpts{})
	s := newStore(t)
	dir := t.TempDir()
	key := sigstoretest.NewKey(t)
	keyPath := filepath.Join(dir, "cosign.pub")
	os.WriteFile(keyPath, key.PublicPEM(t), 0o644)
	envKey, conf := writeMirrorsConf(t, up.Addr(), mir.Addr())
	policyFile := filepath.Join(dir, "policy.json")
	os.WriteFile(policyFile, []byte(fmt.Sprintf(`{"default":[{"type":"reject"}],"transports":{"docker":{%q:[{"type":"sigstoreSigned","keyPath":%q}]}}}`, up.Addr()+"/trust", keyPath)), 0o644)
	s.env = append(s.env, envKey+"="+conf, "ROOTSWAP_POLICY="+policyFile)

	image := func(tag string) ([]byte, rawLayer, digest.Digest) {
		l := storedGzip(t, layerTar(t, dirEnt("etc/"), fileEnt("etc/version", tag+"\n")))
		cfg := imageConfig(t, l.diffID)
		_, m := pushRaw(t, mir, "trust/app:"+tag, cfg, []rawLayer{l}, nil)
		return cfg, l, m
	}
	for _, c := range []struct {
		name, tag string
		on        *registry // where the bundle is attached; nil: nowhere
	}{
		{"bundle on the mirror", "1", mir},
		{"bundle upstream", "2", up},
		{"no bundle", "3", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, l, m := image(c.tag)
			if c.on != nil {
				attachBundle(t, c.on, "trust/app", m, key.Sign(t, m, sigstoretest.Options{}))
			}
			ref := "docker://" + up.Addr() + "/trust/app:" + c.tag
			res := s.run("import", ref)
			switch {
			case c.on == nil:
				if res.code != 1 || !strings.Contains(res.stderr, "no signature found") || mir.BlobGets(digest.FromBytes(l.blob)) != 0 {
					t.Errorf("import of an unsigned image: exit %d, layer fetched %d times\n%s%s", res.code, mir.BlobGets(digest.FromBytes(l.blob)), res.stdout, res.stderr)
				}
			case res.code != 0 || strings.TrimSpace(res.stdout) != digest.FromBytes(cfg).String() || strings.Contains(res.stderr, "mirror"):
				t.Errorf("import: exit %d\n%s%s", res.code, res.stdout, res.stderr)
			}
		})
	}
	if out := s.ok("images", "--trust"); strings.Count(out, "sigstoreSigned bundle key "+key.Fingerprint(t)) != 2 {
		t.Errorf("images --trust: %s, want two trees admitted by the bundle key", out)
	}
}
