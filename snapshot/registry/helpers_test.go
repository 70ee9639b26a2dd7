package registry

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// tarOf is a layer tar holding files name → content.
func tarOf(t testing.TB, files ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for i := 0; i+1 < len(files); i += 2 {
		if err := tw.WriteHeader(&tar.Header{Name: files[i], Mode: 0o644, Size: int64(len(files[i+1])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(files[i+1]))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// testLayer is a layer whose blob bytes the test controls.
type testLayer struct {
	raw, blob []byte
	mt        types.MediaType
	sizeLie   int64 // added to the size the manifest declares
}

func newLayer(t testing.TB, comp string, raw []byte) *testLayer {
	t.Helper()
	var b bytes.Buffer
	l := &testLayer{raw: raw}
	switch comp {
	case "gzip":
		z := gzip.NewWriter(&b)
		z.Write(raw)
		z.Close()
		l.mt = types.OCILayer
	case "zstd":
		z, _ := zstd.NewWriter(&b)
		z.Write(raw)
		z.Close()
		l.mt = types.OCILayerZStd
	case "none":
		b.Write(raw)
		l.mt = types.OCIUncompressedLayer
	default:
		t.Fatalf("compression %q", comp)
	}
	l.blob = b.Bytes()
	return l
}

func hashOf(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", s)}
}

func (l *testLayer) Digest() (v1.Hash, error) { return hashOf(l.blob), nil }
func (l *testLayer) DiffID() (v1.Hash, error) { return hashOf(l.raw), nil }
func (l *testLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.blob)), nil
}
func (l *testLayer) Uncompressed() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l.raw)), nil
}
func (l *testLayer) Size() (int64, error)                { return int64(len(l.blob)) + l.sizeLie, nil }
func (l *testLayer) MediaType() (types.MediaType, error) { return l.mt, nil }

// testImage is an image of the given layers for platform (nil: ours).
func testImage(t testing.TB, p *v1.Platform, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	if p != nil {
		cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func configDigest(t testing.TB, img v1.Image) digest.Digest {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(h.String())
}

func manifestDigest(t testing.TB, img interface{ Digest() (v1.Hash, error) }) digest.Digest {
	t.Helper()
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(h.String())
}

// server is an in-memory registry on loopback that counts what it is
// asked, and through which a test may alter responses.
type server struct {
	host string
	mu   sync.Mutex
	reqs []string // "METHOD kind", kind: ping, manifest, blob, referrers
	// alter, if set, may rewrite the body of a response to a GET of a
	// path; it returns nil to leave it as is.
	alter func(path string, body []byte) []byte
	// gate, if set, answers a request instead of the registry when it
	// returns true.
	gate func(w http.ResponseWriter, r *http.Request) bool
}

func newServer(t testing.TB, opts ...ggcrregistry.Option) *server {
	t.Helper()
	s := &server{}
	reg := ggcrregistry.New(append([]ggcrregistry.Option{ggcrregistry.Logger(log.New(io.Discard, "", 0))}, opts...)...)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := "ping"
		switch {
		case strings.Contains(r.URL.Path, "/manifests/"):
			kind = "manifest"
		case strings.Contains(r.URL.Path, "/blobs/"):
			kind = "blob"
		case strings.Contains(r.URL.Path, "/referrers/"):
			kind = "referrers"
		}
		s.mu.Lock()
		s.reqs = append(s.reqs, r.Method+" "+kind)
		alter, gate := s.alter, s.gate
		s.mu.Unlock()
		if gate != nil && gate(w, r) {
			return
		}
		if alter == nil || r.Method != http.MethodGet {
			reg.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if b := alter(r.URL.Path, body); b != nil {
			body = b
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(rec.Code)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	s.host = strings.TrimPrefix(srv.URL, "http://")
	return s
}

// count returns how many requests of "METHOD kind" were made since the
// last reset, and resets.
func (s *server) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.reqs
	s.reqs = nil
	var out []string
	for _, q := range r {
		if !strings.HasSuffix(q, " ping") {
			out = append(out, q)
		}
	}
	return out
}

func (s *server) push(t testing.TB, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(s.host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	s.take()
}

func (s *server) pushIndex(t testing.TB, ref string, idx v1.ImageIndex) {
	t.Helper()
	r, err := name.ParseReference(s.host + "/" + ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	s.take()
}

// mapCache is a RefCache in memory.
type mapCache struct {
	mu sync.Mutex
	m  map[string]record
}

func (c *mapCache) LookupRef(ref string) (d, manifest digest.Digest, ok bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.m[ref]
	return r.config, r.manifest, ok, nil
}

func (c *mapCache) RecordRef(ref string, d, manifest digest.Digest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]record{}
	}
	c.m[ref] = record{d, manifest}
	return nil
}

// anon is a keychain with no credentials, so tests never read the
// machine's ~/.docker/config.json.
var anon = authn.NewMultiKeychain()

// basicKeychain hands out one username and password.
type basicKeychain struct{ user, pass string }

func (k basicKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return &authn.Basic{Username: k.user, Password: k.pass}, nil
}
