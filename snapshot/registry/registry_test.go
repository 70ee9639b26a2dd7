package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/snapshot"
)

// parseRef parses an image argument of one of this package's
// transports, as the command line's table does.
func parseRef(t testing.TB, s string) snapshot.Ref {
	t.Helper()
	parse := map[string]func(string) (snapshot.Ref, error){"docker://": ParseDocker, "oci:": ParseLayout, "oci-archive:": ParseOCIArchive, "docker-archive:": ParseArchive}
	for prefix, f := range parse {
		if rest, ok := strings.CutPrefix(s, prefix); ok {
			r, err := f(rest)
			if err != nil {
				t.Fatalf("image %q: %v", s, err)
			}
			return r
		}
	}
	t.Fatalf("image %q: no transport of this package", s)
	return snapshot.Ref{}
}

func newSource(opt Options) *Source {
	if opt.Keychain == nil {
		opt.Keychain = anon
	}
	if opt.MirrorsFile == "" {
		opt.MirrorsFile = "/nonexistent/registries.conf"
	}
	return New(opt)
}

// readAll reads layer l's stream to its end and returns the content.
func readAll(ctx context.Context, l snapshot.Layer) ([]byte, error) {
	rc, err := l.Open(ctx)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// checkLayers reads every layer of img and checks it against want, layer
// by layer: diffID, blob and content; and img's config.
func checkLayers(t *testing.T, img snapshot.Image, want ...*testLayer) {
	t.Helper()
	ctx := t.Context()
	ls, err := img.Layers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != len(want) {
		t.Fatalf("%d layers, want %d", len(ls), len(want))
	}
	// The image carries its config too: the document its digest names.
	c, err := img.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if digest.FromBytes(c.Raw) != img.Digest || c.OCI.OS != "linux" || len(c.OCI.RootFS.DiffIDs) != len(want) {
		t.Errorf("config of %s: digest %s, OS %q, %d diffIDs", img.Digest, digest.FromBytes(c.Raw), c.OCI.OS, len(c.OCI.RootFS.DiffIDs))
	}
	for i, l := range ls {
		w := want[i]
		if got, want := l.DiffID(), digest.FromBytes(w.raw); got != want {
			t.Errorf("layer %d: DiffID %s, want %s", i, got, want)
		}
		if got, want := l.Blob(), digest.FromBytes(w.blob); got != want && l.Blob() != "" {
			t.Errorf("layer %d: Blob %s, want %s", i, got, want)
		}
		b, err := readAll(ctx, l)
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		if digest.FromBytes(b) != l.DiffID() {
			t.Errorf("layer %d (%s): stream has digest %s, want its DiffID %s", i, w.mt, digest.FromBytes(b), l.DiffID())
		}
	}
}

func threeLayers(t *testing.T) []*testLayer {
	return []*testLayer{
		newLayer(t, "gzip", tarOf(t, "a", "gzip layer")),
		newLayer(t, "zstd", tarOf(t, "b", "zstd layer")),
		newLayer(t, "none", tarOf(t, "c", "plain layer")),
	}
}

func asLayers(ls []*testLayer) []v1.Layer {
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = l
	}
	return out
}

func TestResolveTagAndDigest(t *testing.T) {
	s := newServer(t)
	ls := threeLayers(t)
	img := testImage(t, nil, asLayers(ls)...)
	s.push(t, "app:v1", img)
	src := newSource(Options{})
	want := configDigest(t, img)
	for _, ref := range []string{
		"docker://" + s.host + "/app:v1",
		"docker://" + s.host + "/app@" + manifestDigest(t, img).String(),
	} {
		t.Run(ref, func(t *testing.T) {
			im, err := src.Resolve(t.Context(), parseRef(t, ref))
			if err != nil {
				t.Fatal(err)
			}
			if im.Digest != want || im.Manifest != manifestDigest(t, img) {
				t.Fatalf("Resolve = %s (manifest %s), want the config digest %s (manifest %s)", im.Digest, im.Manifest, want, manifestDigest(t, img))
			}
			checkLayers(t, im, ls...)
		})
	}
}

func TestIndexPicksPlatform(t *testing.T) {
	s := newServer(t)
	amd := []*testLayer{newLayer(t, "gzip", tarOf(t, "arch", "amd64"))}
	arm := []*testLayer{newLayer(t, "gzip", tarOf(t, "arch", "arm64"))}
	imgAMD := testImage(t, &v1.Platform{OS: "linux", Architecture: "amd64"}, asLayers(amd)...)
	imgARM := testImage(t, &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, asLayers(arm)...)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: imgAMD, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: imgARM, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
	)
	s.pushIndex(t, "multi:v1", idx)
	ref := "docker://" + s.host + "/multi:v1"
	for _, c := range []struct {
		platform string
		img      v1.Image
		layers   []*testLayer
	}{{"linux/amd64", imgAMD, amd}, {"linux/arm64", imgARM, arm}, {"linux/arm64/v8", imgARM, arm}} {
		t.Run(c.platform, func(t *testing.T) {
			src := newSource(Options{Platform: c.platform})
			im, err := src.Resolve(t.Context(), parseRef(t, ref))
			if err != nil {
				t.Fatal(err)
			}
			if want := configDigest(t, c.img); im.Digest != want {
				t.Fatalf("Resolve = %s, want %s", im.Digest, want)
			}
			checkLayers(t, im, c.layers...)
		})
	}
	t.Run("none matches", func(t *testing.T) {
		_, err := newSource(Options{Platform: "linux/s390x"}).Resolve(t.Context(), parseRef(t, ref))
		if err == nil || !strings.Contains(err.Error(), "no manifest for linux/s390x, only for linux/amd64, linux/arm64/v8") {
			t.Fatalf("err = %v, want one naming linux/s390x and the platforms there are", err)
		}
	})
}

// A registry that lies about any byte is caught, with an error that says
// what lied.
func TestLyingRegistry(t *testing.T) {
	type lie struct {
		name string
		// setup pushes the image and returns a rewrite for the server
		// and the ref to resolve.
		setup func(t *testing.T, s *server) (ref string, alter func(path string, body []byte) []byte)
		// resolveErr: Resolve fails with it; else reading the layers does.
		resolveErr, layerErr string
	}
	blobOf := func(l *testLayer) string { return digest.FromBytes(l.blob).String() }
	cases := []lie{
		{name: "corrupted blob", setup: func(t *testing.T, s *server) (string, func(string, []byte) []byte) {
			l := newLayer(t, "gzip", tarOf(t, "f", strings.Repeat("x", 5000)))
			s.push(t, "app:v1", testImage(t, nil, l))
			return "app:v1", func(p string, b []byte) []byte {
				if strings.HasSuffix(p, blobOf(l)) {
					b = bytes.Clone(b)
					b[len(b)-10] ^= 0xff // inside the gzip trailer's CRC or the deflate data
					return b
				}
				return nil
			}
		}, layerErr: "checksum"},
		{name: "corrupted uncompressed blob", setup: func(t *testing.T, s *server) (string, func(string, []byte) []byte) {
			l := newLayer(t, "none", tarOf(t, "f", strings.Repeat("x", 5000)))
			s.push(t, "app:v1", testImage(t, nil, l))
			return "app:v1", func(p string, b []byte) []byte {
				if strings.HasSuffix(p, blobOf(l)) {
					b = bytes.Clone(b)
					b[600] ^= 0xff
					return b
				}
				return nil
			}
		}, layerErr: "checksum"},
		{name: "truncated blob", setup: func(t *testing.T, s *server) (string, func(string, []byte) []byte) {
			l := newLayer(t, "zstd", tarOf(t, "f", strings.Repeat("xyz", 5000)))
			s.push(t, "app:v1", testImage(t, nil, l))
			return "app:v1", func(p string, b []byte) []byte {
				if strings.HasSuffix(p, blobOf(l)) {
					return b[:len(b)/2]
				}
				return nil
			}
		}, layerErr: "truncated"},
		{name: "manifest declares a layer larger than it is", setup: func(t *testing.T, s *server) (string, func(string, []byte) []byte) {
			s.push(t, "app:v1", testImage(t, nil, newLayer(t, "gzip", tarOf(t, "f", "content"))))
			return "app:v1", sizeLie(t, 7)
		}, layerErr: "its manifest declares"},
		{name: "manifest declares a layer smaller than it is", setup: func(t *testing.T, s *server) (string, func(string, []byte) []byte) {
			s.push(t, "app:v1", testImage(t, nil, newLayer(t, "gzip", tarOf(t, "f", "content"))))
			return "app:v1", sizeLie(t, -7)
		}, layerErr: "longer than"},
		{name: "config lie", setup: func(t *testing.T, s *server) (string, func(string, []byte) []byte) {
			img := testImage(t, nil, newLayer(t, "gzip", tarOf(t, "f", "content")))
			s.push(t, "app:v1", img)
			cfg := configDigest(t, img).String()
			return "app:v1", func(p string, b []byte) []byte {
				if strings.HasSuffix(p, cfg) {
					return bytes.Replace(b, []byte(`"linux"`), []byte(`"LINUX"`), 1)
				}
				return nil
			}
		}, resolveErr: "config sha256:"},
		{name: "manifest lie under a digest ref", setup: func(t *testing.T, s *server) (string, func(string, []byte) []byte) {
			img := testImage(t, nil, newLayer(t, "gzip", tarOf(t, "f", "content")))
			s.push(t, "app:v1", img)
			return "app@" + manifestDigest(t, img).String(), func(p string, b []byte) []byte {
				if strings.Contains(p, "/manifests/") {
					return append(bytes.Clone(b), '\n') // the same JSON, other bytes
				}
				return nil
			}
		}, resolveErr: "does not match requested digest"},
		{name: "layer count mismatch", setup: func(t *testing.T, s *server) (string, func(string, []byte) []byte) {
			img := testImage(t, nil, newLayer(t, "gzip", tarOf(t, "a", "1")), newLayer(t, "gzip", tarOf(t, "b", "2")))
			cf, _ := img.ConfigFile()
			cf = cf.DeepCopy()
			cf.RootFS.DiffIDs = cf.RootFS.DiffIDs[:1]
			img, err := mutate.ConfigFile(img, cf)
			if err != nil {
				t.Fatal(err)
			}
			s.push(t, "app:v1", img)
			return "app:v1", nil
		}, resolveErr: "lists 2 layers but its config 1 diffIDs"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newServer(t)
			ref, alter := c.setup(t, s)
			s.mu.Lock()
			s.alter = alter
			s.mu.Unlock()
			ref = "docker://" + s.host + "/" + ref
			src := newSource(Options{})
			im, err := src.Resolve(t.Context(), parseRef(t, ref))
			if c.resolveErr != "" {
				t.Log(err)
				if err == nil || !strings.Contains(err.Error(), c.resolveErr) || !strings.Contains(err.Error(), ref) {
					t.Fatalf("Resolve err = %v, want one naming %s and containing %q", err, ref, c.resolveErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ls, err := im.Layers(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			_, err = readAll(t.Context(), ls[0])
			t.Log(err)
			if err == nil || !strings.Contains(err.Error(), c.layerErr) || !strings.Contains(err.Error(), ls[0].Blob().String()) {
				t.Fatalf("reading the layer: err = %v, want one naming blob %s and containing %q", err, ls[0].Blob(), c.layerErr)
			}
		})
	}
}

// sizeLie rewrites a manifest (a tag's: nothing checks its digest) to
// declare its first layer's size off by delta.
func sizeLie(t *testing.T, delta int64) func(string, []byte) []byte {
	return func(p string, b []byte) []byte {
		if !strings.Contains(p, "/manifests/") {
			return nil
		}
		m, err := v1.ParseManifest(bytes.NewReader(b))
		if err != nil {
			t.Error(err)
			return nil
		}
		m.Layers[0].Size += delta
		out, err := json.Marshal(m)
		if err != nil {
			t.Error(err)
		}
		return out
	}
}

func TestNotFound(t *testing.T) {
	s := newServer(t)
	s.push(t, "app:v1", testImage(t, nil, newLayer(t, "gzip", tarOf(t, "a", "1"))))
	for _, ref := range []string{"app:nope", "nope:v1", "app@sha256:" + strings.Repeat("0", 64)} {
		_, err := newSource(Options{}).Resolve(t.Context(), parseRef(t, "docker://"+s.host+"/"+ref))
		if !errors.Is(err, snapshot.ErrImageNotFound) {
			t.Errorf("%s: err = %v, want ErrImageNotFound", ref, err)
		}
	}
}

func TestAuthFailure(t *testing.T) {
	s := newServer(t)
	img := testImage(t, nil, newLayer(t, "gzip", tarOf(t, "a", "1")))
	s.push(t, "app:v1", img)
	s.gate = func(w http.ResponseWriter, r *http.Request) bool {
		if u, p, ok := r.BasicAuth(); ok && u == "user" && p == "right" {
			return false
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
		return true
	}
	ref := "docker://" + s.host + "/app:v1"
	_, err := newSource(Options{Keychain: basicKeychain{"user", "wrong"}}).Resolve(t.Context(), parseRef(t, ref))
	if err == nil || errors.Is(err, snapshot.ErrUnreachable) || !strings.HasPrefix(err.Error(), "registry "+s.host+": authentication failed for app: ") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("wrong password: err = %v, want one line \"registry %s: authentication failed for app: …\", not unreachable", err, s.host)
	}
	cache := &mapCache{}
	cache.RecordRef(ref, configDigest(t, img), digest.FromString("old"))
	_, err = newSource(Options{Keychain: basicKeychain{"user", "wrong"}, Refs: cache}).Pull(t.Context(), parseRef(t, ref))
	if err == nil || errors.Is(err, snapshot.ErrUnreachable) || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("wrong password, Pull of a cached ref: err = %v, want an authentication failure", err)
	}
	src := newSource(Options{Keychain: basicKeychain{"user", "right"}})
	im, err := src.Resolve(t.Context(), parseRef(t, ref))
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	ls, err := im.Layers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAll(t.Context(), ls[0]); err != nil {
		t.Fatal(err)
	}
}

func TestUnreachable(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		host := l.Addr().String()
		l.Close()
		_, err = newSource(Options{}).Resolve(t.Context(), parseRef(t, "docker://"+host+"/app:v1"))
		if !errors.Is(err, snapshot.ErrUnreachable) {
			t.Fatalf("err = %v, want ErrUnreachable", err)
		}
	})
	t.Run("no answer", func(t *testing.T) {
		s := newServer(t)
		stop := make(chan struct{})
		t.Cleanup(func() { close(stop) }) // before the server closes: cleanups run last first
		s.gate = func(w http.ResponseWriter, r *http.Request) bool {
			<-stop
			return true
		}
		// The timeout is short so the test is quick; what is asserted is
		// that Resolve returns at all, under a deadline far beyond it.
		src := newSource(Options{Timeout: 100 * time.Millisecond})
		done := make(chan error, 1)
		go func() {
			_, err := src.Resolve(t.Context(), parseRef(t, "docker://"+s.host+"/app:v1"))
			done <- err
		}()
		select {
		case err := <-done:
			if !errors.Is(err, snapshot.ErrUnreachable) {
				t.Fatalf("err = %v, want ErrUnreachable", err)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("Resolve against a registry that never answers did not return")
		}
	})
}

func TestRefCache(t *testing.T) {
	s := newServer(t)
	v1l := []*testLayer{newLayer(t, "gzip", tarOf(t, "v", "1"))}
	img1 := testImage(t, nil, asLayers(v1l)...)
	s.push(t, "app:latest", img1)
	ref := "docker://" + s.host + "/app:latest"
	cache := &mapCache{}

	// A first resolve asks the registry. The image asks to be recorded;
	// the source records nothing itself: the importer does, once the
	// image's tree is stored (here, the test).
	im, err := newSource(Options{Refs: cache}).Resolve(t.Context(), parseRef(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	d := im.Digest
	if d != configDigest(t, img1) || im.Manifest != manifestDigest(t, img1) || !im.Record {
		t.Fatalf("Resolve = %s (manifest %s, record %v), want %s (manifest %s) to record", d, im.Manifest, im.Record, configDigest(t, img1), manifestDigest(t, img1))
	}
	if rd, _, ok, _ := cache.LookupRef(ref); ok {
		t.Fatalf("Resolve recorded %s before the image was stored", rd)
	}
	cache.RecordRef(ref, im.Digest, im.Manifest)
	s.take()

	// Another process: a recorded ref is resolved with no request at all,
	// and its layers come from the manifest fetched by digest.
	src := newSource(Options{Refs: cache})
	im, err = src.Resolve(t.Context(), parseRef(t, ref))
	if err != nil || im.Digest != d || im.Manifest != manifestDigest(t, img1) || im.Record {
		t.Fatalf("recorded Resolve = %s (manifest %s, record %v), %v; want %s, nothing to record", im.Digest, im.Manifest, im.Record, err, d)
	}
	if reqs := s.take(); len(reqs) != 0 {
		t.Fatalf("a recorded Resolve made requests %v, want none", reqs)
	}
	checkLayers(t, im, v1l...)
	s.take()

	// A pull of a tag that has not moved is one manifest HEAD.
	src = newSource(Options{Refs: cache})
	if im, err = src.Pull(t.Context(), parseRef(t, ref)); err != nil || im.Digest != d || im.Record {
		t.Fatalf("Pull of an unmoved tag = %s (record %v), %v; want %s, nothing to record", im.Digest, im.Record, err, d)
	}
	if reqs := s.take(); strings.Join(reqs, ",") != "HEAD manifest" {
		t.Fatalf("a Pull of an unmoved tag made requests %v, want one manifest HEAD", reqs)
	}

	// The tag moves: Pull reads the new manifest and config and returns
	// the new image, to be recorded once stored. Until then the record,
	// and so Resolve, still name the old one, without asking.
	v2l := []*testLayer{newLayer(t, "zstd", tarOf(t, "v", "2"))}
	img2 := testImage(t, nil, asLayers(v2l)...)
	s.push(t, "app:latest", img2)
	src = newSource(Options{Refs: cache})
	im2, err := src.Pull(t.Context(), parseRef(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	if reqs := s.take(); strings.Join(reqs, ",") != "HEAD manifest,GET manifest,GET blob" {
		t.Fatalf("a Pull of a moved tag made requests %v, want HEAD, GET of the manifest and GET of the config", reqs)
	}
	d2 := im2.Digest
	if d2 != configDigest(t, img2) || im2.Manifest != manifestDigest(t, img2) || !im2.Record {
		t.Fatalf("Pull of a moved tag = %s (manifest %s, record %v), want %s to record", d2, im2.Manifest, im2.Record, configDigest(t, img2))
	}
	if rd, _, _, _ := cache.LookupRef(ref); rd != d {
		t.Fatalf("after the Pull the record says %s, want the old %s until the new image is stored", rd, d)
	}
	if got, err := src.Resolve(t.Context(), parseRef(t, ref)); err != nil || got.Digest != d {
		t.Fatalf("Resolve after an unstored Pull = %s, %v; want the recorded %s", got.Digest, err, d)
	}
	if reqs := s.take(); len(reqs) != 0 {
		t.Fatalf("Resolve after Pull made requests %v", reqs)
	}
	checkLayers(t, im2, v2l...)
	cache.RecordRef(ref, im2.Digest, im2.Manifest)

	// A digest ref once recorded needs nothing, even to pull.
	dref := "docker://" + s.host + "/app@" + manifestDigest(t, img2).String()
	im, err = newSource(Options{Refs: cache}).Resolve(t.Context(), parseRef(t, dref))
	if err != nil || !im.Record {
		t.Fatalf("first Resolve(%s): record %v, %v", dref, im.Record, err)
	}
	cache.RecordRef(dref, im.Digest, im.Manifest)
	s.take()
	src = newSource(Options{Refs: cache})
	if im, err := src.Pull(t.Context(), parseRef(t, dref)); err != nil || im.Digest != d2 || im.Record {
		t.Fatalf("Pull(%s) = %s (record %v), %v; want %s", dref, im.Digest, im.Record, err, d2)
	}
	if got, err := src.Resolve(t.Context(), parseRef(t, dref)); err != nil || got.Digest != d2 {
		t.Fatalf("Resolve(%s) = %s, %v; want %s", dref, got.Digest, err, d2)
	}
	if reqs := s.take(); len(reqs) != 0 {
		t.Fatalf("Pull and Resolve of a recorded digest ref made requests %v", reqs)
	}

	// With the registry gone, a recorded ref still resolves; Pull says
	// the registry is unreachable.
	dead := "docker://" + closedPort(t) + "/app:latest"
	cache.RecordRef(dead, d2, manifestDigest(t, img2))
	src = newSource(Options{Refs: cache})
	if got, err := src.Resolve(t.Context(), parseRef(t, dead)); err != nil || got.Digest != d2 {
		t.Fatalf("Resolve(%s) of a dead registry = %s, %v; want the recorded %s", dead, got.Digest, err, d2)
	}
	if _, err := src.Pull(t.Context(), parseRef(t, dead)); !errors.Is(err, snapshot.ErrUnreachable) {
		t.Fatalf("Pull(%s) of a dead registry: err = %v, want ErrUnreachable", dead, err)
	}
}

func TestParse(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a:b.tar")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		in   string
		want snapshot.Ref
	}{
		{"docker://example.com/app:v1", snapshot.Ref{Transport: snapshot.Docker, Name: "example.com/app:v1"}},
		{"docker://127.0.0.1:5000/a/b@sha256:" + strings.Repeat("a", 64), snapshot.Ref{Transport: snapshot.Docker, Name: "127.0.0.1:5000/a/b@sha256:" + strings.Repeat("a", 64)}},
		{"oci:/srv/layout", snapshot.Ref{Transport: snapshot.OCI, Path: "/srv/layout"}},
		{"oci:/srv/lay:out/x:v1", snapshot.Ref{Transport: snapshot.OCI, Path: "/srv/lay:out/x", Tag: "v1"}},
		{"docker-archive:/srv/a.tar", snapshot.Ref{Transport: snapshot.DockerArchive, Path: "/srv/a.tar"}},
		{"docker-archive:" + file, snapshot.Ref{Transport: snapshot.DockerArchive, Path: file}},
		{"docker-archive:" + file + ":app:v1", snapshot.Ref{Transport: snapshot.DockerArchive, Path: file, Tag: "app:v1"}},
	} {
		got := parseRef(t, c.in)
		if got != c.want || got.String() != c.in {
			t.Errorf("parse %q = %+v (%s), want %+v", c.in, got, got, c.want)
		}
	}
	for _, bad := range []string{"UPPER/x:y", "a/b@sha256:12", ""} {
		if r, err := ParseDocker(bad); err == nil {
			t.Errorf("ParseDocker(%q) = %+v, want an error", bad, r)
		}
	}
}

// The importer opens layers from several goroutines at once.
func TestOpenConcurrently(t *testing.T) {
	s := newServer(t)
	var ls []*testLayer
	for i := range 8 {
		ls = append(ls, newLayer(t, []string{"gzip", "zstd", "none"}[i%3], tarOf(t, "f", strings.Repeat(string(rune('a'+i)), 100000))))
	}
	img := testImage(t, nil, asLayers(ls)...)
	s.push(t, "app:v1", img)
	src := newSource(Options{})
	im, err := src.Resolve(t.Context(), parseRef(t, "docker://"+s.host+"/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	layers, err := im.Layers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, len(layers))
	for _, l := range layers {
		go func() {
			b, err := readAll(t.Context(), l)
			if err == nil && digest.FromBytes(b) != l.DiffID() {
				err = errors.New("content does not match the diffID")
			}
			errs <- err
		}()
	}
	for range layers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// A registry whose HEAD sends no Docker-Content-Digest still serves a
// pull: by a GET of the tag.
func TestPullHeadWithoutDigest(t *testing.T) {
	s := newServer(t)
	img := testImage(t, nil, newLayer(t, "gzip", tarOf(t, "a", "1")))
	s.push(t, "app:v1", img)
	ref := "docker://" + s.host + "/app:v1"
	cache := &mapCache{}
	cache.RecordRef(ref, digest.FromString("old config"), digest.FromString("old"))
	s.gate = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodHead || !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
		w.Header().Set("Content-Length", "100")
		return true
	}
	src := newSource(Options{Refs: cache})
	im, err := src.Pull(t.Context(), parseRef(t, ref))
	if err != nil {
		t.Fatal(err)
	}
	if reqs := s.take(); strings.Join(reqs, ",") != "HEAD manifest,GET manifest,GET blob" {
		t.Errorf("requests %v, want a HEAD, then a GET of the manifest and of the config", reqs)
	}
	if im.Digest != configDigest(t, img) || im.Manifest != manifestDigest(t, img) || !im.Record {
		t.Errorf("pulled %s (manifest %s, record %v), want config %s and manifest %s to record", im.Digest, im.Manifest, im.Record, configDigest(t, img), manifestDigest(t, img))
	}
}
