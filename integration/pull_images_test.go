package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/internal/testimage"
)

// The test images of the registry source (issue 13) and the helpers that
// put them in a registry, an OCI layout and a docker-archive tarball.

// layersDockerfile builds the layer-semantics image FROM v1 (%s): each
// step is a layer whose diff holds one of the cases a layer merge gets
// wrong. v1 has only a few busybox applets linked, so the steps call
// busybox by name. ADD of a local tar is extracted by the daemon itself,
// outside any container: the only way to put a device node under /dev
// (a RUN step sees the build container's /dev tmpfs, not the layer).
const layersDockerfile = `FROM %s
ADD dev.tar /
RUN busybox mkdir -p /srv/del /srv/opq/sub /srv/todir/inner /srv/hl /srv/dirtofile/sub && \
    echo keep > /srv/del/keep && echo gone > /srv/del/gone && \
    echo old1 > /srv/opq/old1 && echo old2 > /srv/opq/sub/old2 && \
    echo inner > /srv/todir/inner/f && \
    echo shared > /srv/hl/one && busybox ln /srv/hl/one /srv/hl/two && busybox ln /srv/hl/one /srv/hl/three && \
    echo file > /srv/filetodir && echo deep > /srv/dirtofile/sub/deep && \
    echo '#!/bin/sh' > /srv/suid && busybox chmod 4755 /srv/suid && \
    echo '#!/bin/sh' > /srv/sgid && busybox chgrp 1000 /srv/sgid && busybox chmod 2755 /srv/sgid && \
    busybox mkfifo -m 0640 /srv/fifo
RUN busybox rm /srv/del/gone /etc/rootswap-obsolete && \
    busybox rm -rf /srv/opq && busybox mkdir /srv/opq && echo new > /srv/opq/new && \
    busybox rm -rf /srv/todir && busybox ln -s del /srv/todir && \
    busybox ln /srv/hl/one /srv/hl/four && \
    busybox rm /srv/filetodir && busybox mkdir /srv/filetodir && echo child > /srv/filetodir/child && \
    busybox rm -rf /srv/dirtofile && echo now-a-file > /srv/dirtofile && \
    busybox chmod 0750 /usr/bin/capfile
RUN echo rewritten > /srv/hl/two && busybox chmod 4750 /srv/suid
`

// layersCase is one thing the layers image's diffs must hold, as Docker
// wrote them, or the fidelity test proves nothing about that case.
type layersCase struct {
	what  string
	layer int // index in the manifest: 0 is v1's, 1 the ADD, 2-4 the RUNs
	find  func(h *tar.Header) bool
}

var layersCases = []layersCase{
	{"a device node under dev/ (ADD)", 1, func(h *tar.Header) bool {
		return h.Name == "dev/rootswap-null" && h.Typeflag == tar.TypeChar && h.Devmajor == 1 && h.Devminor == 3
	}},
	{"a setuid file", 2, func(h *tar.Header) bool { return h.Name == "srv/suid" && h.Mode&0o4000 != 0 }},
	{"a setgid file", 2, func(h *tar.Header) bool { return h.Name == "srv/sgid" && h.Mode&0o2000 != 0 }},
	{"a fifo", 2, func(h *tar.Header) bool { return h.Name == "srv/fifo" && h.Typeflag == tar.TypeFifo }},
	{"a hard link within the layer", 2, func(h *tar.Header) bool { return h.Typeflag == tar.TypeLink && strings.HasPrefix(h.Name, "srv/hl/") }},
	{"a whiteout of a deleted file (RUN rm)", 3, func(h *tar.Header) bool { return h.Name == "srv/del/.wh.gone" }},
	{"a whiteout of a file of v1's layer", 3, func(h *tar.Header) bool { return h.Name == "etc/.wh.rootswap-obsolete" }},
	{"an opaque directory (rm -rf, mkdir)", 3, func(h *tar.Header) bool { return h.Name == "srv/opq/.wh..wh..opq" }},
	{"a directory turned into a symlink", 3, func(h *tar.Header) bool {
		return h.Name == "srv/todir" && h.Typeflag == tar.TypeSymlink && h.Linkname == "del"
	}},
	{"a hard link to a lower layer's file", 3, func(h *tar.Header) bool {
		return h.Typeflag == tar.TypeLink && (h.Name == "srv/hl/four" || h.Linkname == "srv/hl/four")
	}},
	{"a file turned into a directory", 3, func(h *tar.Header) bool { return h.Name == "srv/filetodir/" && h.Typeflag == tar.TypeDir }},
	{"a directory turned into a file", 3, func(h *tar.Header) bool { return h.Name == "srv/dirtofile" && h.Typeflag == tar.TypeReg }},
	{"a security.capability xattr in a later layer", 3, func(h *tar.Header) bool {
		_, ok := h.PAXRecords["SCHILY.xattr.security.capability"]
		return h.Name == "usr/bin/capfile" && ok
	}},
	{"one name of a hard-link group rewritten", 4, func(h *tar.Header) bool { return h.Name == "srv/hl/two" && h.Typeflag == tar.TypeReg }},
}

// devTar is the ADD step's archive: dev/ with a char device 1:3.
func devTar(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "dev/", Mode: 0o755, ModTime: mt},
		{Typeflag: tar.TypeChar, Name: "dev/rootswap-null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mt},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var (
	layersOnce sync.Once
	layersRef  string
	layersErr  error
)

// layersImage returns the local layers image (layersDockerfile), built
// once per test process and reused across processes under a tag derived
// from v1's image ID and the build context.
func layersImage(t *testing.T) string {
	t.Helper()
	v1ref, _ := testimage.Images(t)
	layersOnce.Do(func() { layersRef, layersErr = buildLayersImage(t, v1ref) })
	if layersErr != nil {
		t.Fatal(layersErr)
	}
	return layersRef
}

func buildLayersImage(t *testing.T, base string) (string, error) {
	baseID := testimage.ImageID(t, base)
	dockerfile := fmt.Sprintf(layersDockerfile, base)
	dev := devTar(t)
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", baseID, dockerfile)
	h.Write(dev)
	ref := "rootswap-test/layers:" + hex.EncodeToString(h.Sum(nil))[:12]

	// Test processes of other packages or runs may build it at the same
	// time: one builds, the others find the tag.
	unlock, err := flockFile(filepath.Join(os.TempDir(), "rootswap-layers-image.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if out, err := exec.Command("docker", "image", "inspect", "-f", "{{.Id}}", ref).CombinedOutput(); err == nil {
		t.Logf("layers image %s already built: %s", ref, strings.TrimSpace(string(out)))
		return ref, nil
	}
	ctx := t.TempDir()
	if err := os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(ctx, "dev.tar"), dev, 0o644); err != nil {
		return "", err
	}
	// The classic builder, as internal/testimage uses; --network none: the
	// private daemon has no bridge and the steps fetch nothing.
	cmd := exec.Command("docker", "build", "--network", "none", "--force-rm", "-t", ref, ctx)
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("docker build of the layers image: %v\n%s", err, out)
	}
	return ref, nil
}

// flockFile takes an exclusive flock on p, shared by all processes.
func flockFile(p string) (func(), error) {
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("flock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}

// ggcrRef parses a registry reference for go-containerregistry; the
// registry on loopback speaks plain http.
func ggcrRef(t *testing.T, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("reference %q: %v", ref, err)
	}
	return r
}

// remoteImage reads ref (HOST/REPO:TAG or @sha256:…) from a registry.
// Reading the manifest and config is cheap; layers are fetched only when
// the caller opens them, so a test that counts blob GETs calls this
// before its own counting starts or not at all.
func remoteImage(t *testing.T, ref string) v1.Image {
	t.Helper()
	img, err := remote.Image(ggcrRef(t, ref))
	if err != nil {
		t.Fatalf("remote image %s: %v", ref, err)
	}
	return img
}

// imageFacts is what the tests compare about one image: config digest,
// and the manifest's layer blobs and the config's diffIDs, in order.
type imageFacts struct {
	config  digest.Digest
	blobs   []digest.Digest
	diffIDs []digest.Digest
	types   []types.MediaType
}

func factsOf(t *testing.T, img v1.Image) imageFacts {
	t.Helper()
	var f imageFacts
	cd, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	f.config = digest.Digest(cd.String())
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		f.blobs = append(f.blobs, digest.Digest(l.Digest.String()))
		f.types = append(f.types, l.MediaType)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range cf.RootFS.DiffIDs {
		f.diffIDs = append(f.diffIDs, digest.Digest(d.String()))
	}
	return f
}

// layerHeaders lists the tar headers of img's layer i.
func layerHeaders(t *testing.T, img v1.Image, i int) []*tar.Header {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := ls[i].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var hs []*tar.Header
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hs
		}
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		hs = append(hs, h)
	}
}

// rawLayer is one layer blob as pushed: its bytes and media type, and
// the digest of its uncompressed tar.
type rawLayer struct {
	mediaType types.MediaType
	blob      []byte
	diffID    digest.Digest
}

// ociManifest is an image manifest written by hand, so that a hostile
// case can make it lie.
type ociManifest struct {
	SchemaVersion int             `json:"schemaVersion"`
	MediaType     types.MediaType `json:"mediaType"`
	Config        v1.Descriptor   `json:"config"`
	Layers        []v1.Descriptor `json:"layers"`
}

// rawManifest is a remote.Taggable of exact bytes.
type rawManifest struct {
	body []byte
	mt   types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.body, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

// pushRaw pushes an image made of exact bytes to reg as NAME:TAG: the
// config blob, every layer blob, then an OCI manifest naming them, which
// edit (if not nil) may change first, to lie. It returns the remote
// reference HOST/NAME:TAG and the manifest's digest. The registry checks
// each blob's digest on upload and that the blobs a manifest names exist,
// nothing else.
func pushRaw(t *testing.T, reg *registry, nameTag string, config []byte, layers []rawLayer, edit func(*ociManifest)) (string, digest.Digest) {
	t.Helper()
	ref := reg.Addr() + "/" + nameTag
	r := ggcrRef(t, ref)
	opts := []remote.Option{}
	m := ociManifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	blob := func(b []byte, mt types.MediaType) v1.Descriptor {
		l := static.NewLayer(b, mt)
		if err := remote.WriteLayer(r.Context(), l, opts...); err != nil {
			t.Fatalf("push blob to %s: %v", ref, err)
		}
		h, _ := l.Digest()
		return v1.Descriptor{MediaType: mt, Digest: h, Size: int64(len(b))}
	}
	m.Config = blob(config, types.OCIConfigJSON)
	for _, l := range layers {
		m.Layers = append(m.Layers, blob(l.blob, l.mediaType))
	}
	if edit != nil {
		edit(&m)
	}
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(r, rawManifest{body, types.OCIManifestSchema1}, opts...); err != nil {
		t.Fatalf("push manifest %s: %v", ref, err)
	}
	return ref, digest.FromBytes(body)
}

// pushZstd writes src's layers again, zstd-compressed, as an OCI image
// NAME:TAG with src's exact config bytes: the same config digest, so the
// same image ID and tree key as src, reached through zstd blobs only.
func pushZstd(t *testing.T, reg *registry, src v1.Image, nameTag string) string {
	t.Helper()
	config, err := src.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	ls, err := src.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var raws []rawLayer
	for i, l := range ls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.Copy(zw, io.TeeReader(rc, h)); err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		rc.Close()
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		diffID := digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(h.Sum(nil)))
		if want, _ := l.DiffID(); diffID.String() != want.String() {
			t.Fatalf("layer %d: uncompressed to %s, the config says %s", i, diffID, want)
		}
		raws = append(raws, rawLayer{mediaType: types.OCILayerZStd, blob: buf.Bytes(), diffID: diffID})
	}
	ref, _ := pushRaw(t, reg, nameTag, config, raws, nil)
	return ref
}

// writeOCILayout writes img to a new OCI image layout under the test's
// temp dir, its index entry named tag; it returns the layout's path.
func writeOCILayout(t *testing.T, img v1.Image, tag string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		t.Fatalf("oci layout %s: %v", dir, err)
	}
	return dir
}

// dockerSave writes `docker save REF` to a tarball under the test's temp
// dir and returns its path (Docker 20.10 writes the legacy layout:
// manifest.json, one directory per layer).
func dockerSave(t *testing.T, ref string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "image.tar")
	if out, err := exec.Command("docker", "save", "-o", p, ref).CombinedOutput(); err != nil {
		t.Fatalf("docker save %s: %v\n%s", ref, err, out)
	}
	return p
}

// gzipTar gzips an uncompressed layer tar and names its diffID.
func gzipTar(t *testing.T, tarball []byte) rawLayer {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(tarball)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return rawLayer{mediaType: types.OCILayer, blob: buf.Bytes(), diffID: digest.FromBytes(tarball)}
}

// imageConfig is a minimal OCI image config for linux/GOARCH over
// diffIDs.
func imageConfig(t *testing.T, diffIDs ...digest.Digest) []byte {
	t.Helper()
	var cf v1.ConfigFile
	cf.Architecture = runtime.GOARCH
	cf.OS = "linux"
	cf.RootFS.Type = "layers"
	for _, d := range diffIDs {
		h, err := v1.NewHash(d.String())
		if err != nil {
			t.Fatal(err)
		}
		cf.RootFS.DiffIDs = append(cf.RootFS.DiffIDs, h)
	}
	cf.Config.Cmd = []string{"/bin/sh"}
	b, err := json.Marshal(cf)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPullTestImages builds the registry source's test images and checks
// that they hold what the pull tests rely on (so that a Docker that wrote
// the diffs differently fails here, not as a vacuous pass there): the
// layers image's diffs hold every layersCases entry, pushed to a real
// registry its config digest is Docker's image ID, its zstd twin has the
// same config and diffIDs with zstd blobs only, and the OCI layout and
// docker-archive copies are readable.
func TestPullTestImages(t *testing.T) {
	needIntegration(t)
	local := layersImage(t)
	reg := startRegistry(t, registryOpts{})
	remoteRef := pushImageAs(t, reg, local, "rootswap-test/layers:gz")
	img := remoteImage(t, remoteRef)
	f := factsOf(t, img)
	if want := testimage.ImageID(t, local); f.config.String() != want {
		t.Fatalf("pushed config %s, Docker's image ID %s", f.config, want)
	}
	if len(f.blobs) != 5 || len(f.diffIDs) != 5 {
		t.Fatalf("layers image: %d layers, %d diffIDs, want 5 (v1, ADD, 3 RUN)", len(f.blobs), len(f.diffIDs))
	}
	t.Logf("layers image %s: config %s, layer types %v", local, f.config, f.types)
	headers := map[int][]*tar.Header{}
	for _, c := range layersCases {
		if headers[c.layer] == nil {
			headers[c.layer] = layerHeaders(t, img, c.layer)
		}
		if !slices.ContainsFunc(headers[c.layer], c.find) {
			var names []string
			for _, h := range headers[c.layer] {
				names = append(names, fmt.Sprintf("%s(%c→%s)", h.Name, h.Typeflag, h.Linkname))
			}
			t.Errorf("layer %d has no %s; it holds %v", c.layer, c.what, names)
		} else {
			t.Logf("layer %d holds %s", c.layer, c.what)
		}
	}

	zref := pushZstd(t, reg, img, "rootswap-test/layers:zstd")
	zf := factsOf(t, remoteImage(t, zref))
	if zf.config != f.config || !slices.Equal(zf.diffIDs, f.diffIDs) {
		t.Fatalf("zstd image: config %s diffIDs %v, want %s %v", zf.config, zf.diffIDs, f.config, f.diffIDs)
	}
	for i, mt := range zf.types {
		if mt != types.OCILayerZStd || zf.blobs[i] == f.blobs[i] {
			t.Errorf("zstd image layer %d: %s %s, want a zstd blob other than %s", i, mt, zf.blobs[i], f.blobs[i])
		}
	}
	// The zstd blobs, fetched back, decompress to the config's diffIDs.
	zimg := remoteImage(t, zref)
	zls, _ := zimg.Layers()
	for i, l := range zls {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		_, err = io.Copy(h, rc)
		rc.Close()
		if err != nil {
			t.Fatalf("zstd layer %d: %v", i, err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != f.diffIDs[i].String() {
			t.Errorf("zstd layer %d decompresses to %s, want %s", i, got, f.diffIDs[i])
		}
	}

	oci := writeOCILayout(t, img, "layers")
	lp, err := layout.FromPath(oci)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "layers" {
		t.Fatalf("oci layout index: %+v %v", im, err)
	}
	archive := dockerSave(t, local)
	fi, err := os.Stat(archive)
	if err != nil || fi.Size() == 0 {
		t.Fatalf("docker save: %v", err)
	}
	t.Logf("oci layout %s, docker-archive %s (%d bytes)", oci, archive, fi.Size())
}
