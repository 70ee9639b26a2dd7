package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/policy"
)

const bundleType = "application/vnd.dev.sigstore.bundle.v0.3+json"

// rawDoc is a remote.Taggable of exact bytes.
type rawDoc struct {
	body []byte
	mt   types.MediaType
}

func (d rawDoc) RawManifest() ([]byte, error)        { return d.body, nil }
func (d rawDoc) MediaType() (types.MediaType, error) { return d.mt, nil }

// attach pushes bundle to repo of s as cosign v3 attaches it to manifest
// m (cosign's specs/BUNDLE_SPEC.md): the bundle blob, the empty config,
// an OCI manifest with artifactType and subject; and, when tagIndex, the
// referrers tag sha256-HEX holding an OCI index that lists it (what a
// client writes where the registry has no referrers API). A registry
// with the API lists it by the subject alone.
func (s *server) attach(t *testing.T, repo string, m digest.Digest, bundle []byte, tagIndex bool) {
	t.Helper()
	s.attachAs(t, repo, m, bundle, tagIndex, bundleType)
}

// attachAs is attach with the artifactType the referrers tag lists.
func (s *server) attachAs(t *testing.T, repo string, m digest.Digest, bundle []byte, tagIndex bool, listed string) {
	t.Helper()
	r, err := name.NewRepository(s.host + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	put := func(b []byte, mt types.MediaType) v1.Descriptor {
		l := static.NewLayer(b, mt)
		if err := remote.WriteLayer(r, l); err != nil {
			t.Fatal(err)
		}
		h, _ := l.Digest()
		return v1.Descriptor{MediaType: mt, Digest: h, Size: int64(len(b))}
	}
	art, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     types.OCIManifestSchema1,
		"artifactType":  bundleType,
		"config":        put([]byte("{}"), "application/vnd.oci.empty.v1+json"),
		"layers":        []v1.Descriptor{put(bundle, bundleType)},
		"subject":       map[string]any{"mediaType": types.OCIManifestSchema1, "digest": m, "size": 1},
	})
	ad := digest.FromBytes(art)
	if err := remote.Put(r.Digest(ad.String()), rawDoc{art, types.OCIManifestSchema1}); err != nil {
		t.Fatal(err)
	}
	if tagIndex {
		idx, _ := json.Marshal(map[string]any{
			"schemaVersion": 2,
			"mediaType":     types.OCIImageIndex,
			"manifests":     []map[string]any{{"mediaType": types.OCIManifestSchema1, "digest": ad, "size": len(art), "artifactType": listed}},
		})
		if err := remote.Put(r.Tag(m.Algorithm().String()+"-"+m.Encoded()), rawDoc{idx, types.OCIImageIndex}); err != nil {
			t.Fatal(err)
		}
	}
	s.take()
}

// specArtifactType makes go-containerregistry's test registry answer the
// referrers API as the OCI distribution spec says: each descriptor's
// artifactType is its manifest's artifactType (that registry gives the
// config's media type, which the spec wants only when the manifest has
// none).
func specArtifactType(path string, body []byte) []byte {
	if !strings.Contains(path, "/referrers/") {
		return nil
	}
	return bytes.ReplaceAll(body, []byte(`"artifactType":"application/vnd.oci.empty.v1+json"`), []byte(`"artifactType":"`+bundleType+`"`))
}

// bundlesOf resolves ref with src and returns the Sigstore bundles among
// its signatures.
func bundlesOf(t *testing.T, src *Source, ref string) ([]string, error) {
	t.Helper()
	im, err := src.Resolve(t.Context(), parseRef(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := im.Content.(interface {
		Signatures(context.Context) ([]policy.Signature, error)
	}).Signatures(t.Context())
	var out []string
	for _, s := range sigs {
		if s.Bundle != nil {
			out = append(out, string(s.Bundle))
		}
	}
	return out, err
}

// TestSignaturesReferrers: the Sigstore bundles attached to an image are
// read through the referrers API where the registry has it (no referrers
// tag asked), through the referrers tag where it answers 404, from the
// mirror that serves tags when it has them; other artifacts are not
// fetched, and a bundle whose blob lies about its digest is an error.
func TestSignaturesReferrers(t *testing.T) {
	img := testImage(t, nil, asLayers([]*testLayer{newLayer(t, "gzip", tarOf(t, "a", "1"))})...)
	m := manifestDigest(t, img)
	tag := m.Algorithm().String() + "-" + m.Encoded()

	t.Run("referrers API", func(t *testing.T) {
		s := newServer(t, ggcrregistry.WithReferrersSupport(true))
		s.push(t, "app:v1", img)
		s.attach(t, "app", m, []byte(`{"api":1}`), false)
		s.alter = specArtifactType
		var paths []string
		s.gate = func(_ http.ResponseWriter, r *http.Request) bool { paths = append(paths, r.URL.Path); return false }
		got, err := bundlesOf(t, newSource(Options{}), "docker://"+s.host+"/app:v1")
		if err != nil || len(got) != 1 || got[0] != `{"api":1}` {
			t.Fatalf("bundles %q, %v; want the one attached", got, err)
		}
		if !slices.Contains(paths, "/v2/app/referrers/"+m.String()) || slices.Contains(paths, "/v2/app/manifests/"+tag) {
			t.Errorf("asked %v: want the referrers API and not the referrers tag", paths)
		}
	})

	t.Run("referrers tag where the API is missing", func(t *testing.T) {
		s := newServer(t)
		s.push(t, "app:v1", img)
		s.attach(t, "app", m, []byte(`{"tag":1}`), true)
		var paths []string
		s.gate = func(_ http.ResponseWriter, r *http.Request) bool { paths = append(paths, r.URL.Path); return false }
		got, err := bundlesOf(t, newSource(Options{}), "docker://"+s.host+"/app:v1")
		if err != nil || len(got) != 1 || got[0] != `{"tag":1}` {
			t.Fatalf("bundles %q, %v; want the one attached", got, err)
		}
		if !slices.Contains(paths, "/v2/app/referrers/"+m.String()) || !slices.Contains(paths, "/v2/app/manifests/"+tag) {
			t.Errorf("asked %v: want the referrers API, then the referrers tag", paths)
		}
	})

	t.Run("referrers tag listing the config's type", func(t *testing.T) {
		// Some writers list a bundle under its config's media type, the
		// empty one, or no artifactType at all: its manifest says.
		for _, listed := range []string{"application/vnd.oci.empty.v1+json", ""} {
			s := newServer(t)
			s.push(t, "app:v1", img)
			s.attachAs(t, "app", m, []byte(`{"tag":2}`), true, listed)
			got, err := bundlesOf(t, newSource(Options{}), "docker://"+s.host+"/app:v1")
			if err != nil || len(got) != 1 || got[0] != `{"tag":2}` {
				t.Errorf("listed as %q: bundles %q, %v; want the one attached", listed, got, err)
			}
		}
	})

	t.Run("none attached", func(t *testing.T) {
		s := newServer(t)
		s.push(t, "app:v1", img)
		got, err := bundlesOf(t, newSource(Options{}), "docker://"+s.host+"/app:v1")
		if err != nil || len(got) != 0 {
			t.Fatalf("bundles %q, %v; want none", got, err)
		}
	})

	t.Run("other artifacts are not fetched", func(t *testing.T) {
		s := newServer(t, ggcrregistry.WithReferrersSupport(true))
		s.push(t, "app:v1", img)
		sbom, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": types.OCIManifestSchema1,
			"config": map[string]any{"mediaType": "application/spdx+json", "digest": digest.FromString("{}"), "size": 2}, "layers": []any{},
			"subject": map[string]any{"mediaType": types.OCIManifestSchema1, "digest": m, "size": 1}})
		r, _ := name.NewRepository(s.host + "/app")
		remote.WriteLayer(r, static.NewLayer([]byte("{}"), "application/spdx+json"))
		if err := remote.Put(r.Digest(digest.FromBytes(sbom).String()), rawDoc{sbom, types.OCIManifestSchema1}); err != nil {
			t.Fatal(err)
		}
		s.take()
		got, err := bundlesOf(t, newSource(Options{}), "docker://"+s.host+"/app:v1")
		if err != nil || len(got) != 0 {
			t.Fatalf("bundles %q, %v; want none", got, err)
		}
		if reqs := strings.Join(s.take(), ","); strings.Count(reqs, "GET manifest") > 2 {
			t.Errorf("asked %s: the SBOM's manifest was fetched", reqs)
		}
	})

	t.Run("a lying blob", func(t *testing.T) {
		s := newServer(t, ggcrregistry.WithReferrersSupport(true))
		s.push(t, "app:v1", img)
		s.attach(t, "app", m, []byte(`{"good":1}`), false)
		s.alter = func(path string, body []byte) []byte {
			if b := specArtifactType(path, body); b != nil {
				return b
			}
			if bytes.Equal(body, []byte(`{"good":1}`)) {
				return []byte(`{"evil":1}`)
			}
			return nil
		}
		_, err := bundlesOf(t, newSource(Options{}), "docker://"+s.host+"/app:v1")
		if err == nil || !strings.Contains(err.Error(), "referrers of "+m.String()) {
			t.Fatalf("a bundle blob of another digest: %v; want an error naming the referrers", err)
		}
	})

	t.Run("the mirror's bundles", func(t *testing.T) {
		up, mirror := newServer(t), newServer(t)
		up.push(t, "app:v1", img)
		mirror.push(t, "cache/app:v1", img)
		mirror.attach(t, "cache/app", m, []byte(`{"mirror":1}`), true)
		conf := writeConf(t, fmt.Sprintf("[[registry]]\nprefix = %q\n[[registry.mirror]]\nlocation = %q\n", up.host, mirror.host+"/cache"))
		var logs bytes.Buffer
		src := newSource(Options{MirrorsFile: conf, Timeout: time.Second, Log: slog.New(slog.NewTextHandler(&logs, nil))})
		got, err := bundlesOf(t, src, "docker://"+up.host+"/app:v1")
		if err != nil || len(got) != 1 || got[0] != `{"mirror":1}` {
			t.Fatalf("bundles %q, %v; want the mirror's", got, err)
		}
		if logs.Len() != 0 {
			t.Errorf("warnings: %s", logs.String())
		}
	})
}
