package registry

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/snapshot"
)

func TestLayout(t *testing.T) {
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	ls1 := threeLayers(t)
	img1 := testImage(t, nil, asLayers(ls1)...)
	ls2 := []*testLayer{newLayer(t, "zstd", tarOf(t, "two", "2"))}
	img2 := testImage(t, nil, asLayers(ls2)...)
	amd := []*testLayer{newLayer(t, "gzip", tarOf(t, "arch", "amd64"))}
	arm := []*testLayer{newLayer(t, "gzip", tarOf(t, "arch", "arm64"))}
	imgAMD := testImage(t, &v1.Platform{OS: "linux", Architecture: "amd64"}, asLayers(amd)...)
	imgARM := testImage(t, &v1.Platform{OS: "linux", Architecture: "arm64"}, asLayers(arm)...)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: imgAMD, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: imgARM, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	tag := func(t string) layout.Option { return layout.WithAnnotations(map[string]string{refNameAnnotation: t}) }
	for _, err := range []error{p.AppendImage(img1, tag("v1")), p.AppendImage(img2, tag("v2")), p.AppendIndex(idx, tag("multi"))} {
		if err != nil {
			t.Fatal(err)
		}
	}
	src := NewLayout(Options{Platform: "linux/arm64"})
	for _, c := range []struct {
		ref    string
		img    v1.Image
		layers []*testLayer
	}{{"oci:" + dir + ":v1", img1, ls1}, {"oci:" + dir + ":v2", img2, ls2}, {"oci:" + dir + ":multi", imgARM, arm}} {
		im, err := src.Resolve(t.Context(), parseRef(t, c.ref))
		if err != nil {
			t.Fatal(err)
		}
		if want := configDigest(t, c.img); im.Digest != want {
			t.Fatalf("%s: Resolve = %s, want %s", c.ref, im.Digest, want)
		}
		checkLayers(t, im, c.layers...)
	}
	_, err = src.Resolve(t.Context(), parseRef(t, "oci:"+dir))
	if err == nil || !strings.Contains(err.Error(), "tags multi, v1, v2") {
		t.Fatalf("no tag in a layout of three: err = %v, want one listing the tags", err)
	}
	if _, err = src.Resolve(t.Context(), parseRef(t, "oci:"+dir+":v3")); !errors.Is(err, snapshot.ErrImageNotFound) {
		t.Fatalf("missing tag: err = %v, want ErrImageNotFound", err)
	}
	if _, err = src.Resolve(t.Context(), parseRef(t, "oci:"+dir+"/nonexistent:v1")); !errors.Is(err, snapshot.ErrImageNotFound) {
		t.Fatalf("missing layout: err = %v, want ErrImageNotFound", err)
	} else if n := strings.Count(err.Error(), "nonexistent"); n != 1 {
		t.Errorf("missing layout: %q names the path %d times, want once", err, n)
	}
	_, err = NewArchive(Options{}).Resolve(t.Context(), parseRef(t, "docker-archive:"+dir+"/gone.tar"))
	if !errors.Is(err, snapshot.ErrImageNotFound) || strings.Count(err.Error(), "gone.tar") != 1 {
		t.Errorf("missing archive: %v; want ErrImageNotFound naming the path once", err)
	}

	// A layout of one image needs no tag.
	one := t.TempDir()
	p1, err := layout.Write(one, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	ls3 := []*testLayer{newLayer(t, "none", tarOf(t, "three", "3"))}
	img3 := testImage(t, nil, asLayers(ls3)...)
	if err := p1.AppendImage(img3); err != nil {
		t.Fatal(err)
	}
	if im, err := src.Resolve(t.Context(), parseRef(t, "oci:"+one)); err != nil || im.Digest != configDigest(t, img3) {
		t.Fatalf("oci:%s = %s, %v; want %s", one, im.Digest, err, configDigest(t, img3))
	}

	// A blob changed on disk fails its layer's stream (an uncompressed
	// one: no decompressor's checksum catches it first).
	blob := filepath.Join(one, "blobs", "sha256", digest.FromBytes(ls3[0].blob).Encoded())
	b, _ := os.ReadFile(blob)
	b[len(b)-1] ^= 0xff
	os.Chmod(blob, 0o644)
	if err := os.WriteFile(blob, b, 0o644); err != nil {
		t.Fatal(err)
	}
	im, err := src.Resolve(t.Context(), parseRef(t, "oci:"+one))
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := im.Layers(t.Context())
	if _, err := readAll(t.Context(), layers[0]); err == nil || !strings.Contains(err.Error(), "digest mismatch") {
		t.Fatalf("corrupted layout blob: err = %v, want a digest mismatch", err)
	}
}

func TestArchiveGgcr(t *testing.T) {
	file := filepath.Join(t.TempDir(), "images.tar")
	ls1 := []*testLayer{newLayer(t, "gzip", tarOf(t, "a", "1")), newLayer(t, "gzip", tarOf(t, "b", "2"))}
	img1 := testImage(t, nil, asLayers(ls1)...)
	ls2 := []*testLayer{newLayer(t, "gzip", tarOf(t, "c", "3"))}
	img2 := testImage(t, nil, asLayers(ls2)...)
	t1, _ := name.NewTag("example.com/app:v1")
	t2, _ := name.NewTag("other:latest")
	if err := tarball.MultiWriteToFile(file, map[name.Tag]v1.Image{t1: img1, t2: img2}); err != nil {
		t.Fatal(err)
	}
	src := NewArchive(Options{})
	for _, c := range []struct {
		ref    string
		img    v1.Image
		layers []*testLayer
	}{{"docker-archive:" + file + ":example.com/app:v1", img1, ls1}, {"docker-archive:" + file + ":other", img2, ls2}} {
		im, err := src.Resolve(t.Context(), parseRef(t, c.ref))
		if err != nil {
			t.Fatal(err)
		}
		if want := configDigest(t, c.img); im.Digest != want {
			t.Fatalf("%s: Resolve = %s, want %s", c.ref, im.Digest, want)
		}
		checkLayers(t, im, c.layers...)
	}
	_, err := src.Resolve(t.Context(), parseRef(t, "docker-archive:"+file))
	if err == nil || !strings.Contains(err.Error(), "tags example.com/app:v1, other:latest") {
		t.Fatalf("no REF in an archive of two: err = %v, want one listing the tags", err)
	}
	if _, err := src.Resolve(t.Context(), parseRef(t, "docker-archive:"+file+":nope")); !errors.Is(err, snapshot.ErrImageNotFound) {
		t.Fatalf("missing REF: err = %v, want ErrImageNotFound", err)
	}
}

// dockerSave writes a tarball as `docker save` does: legacy (ID/layer.tar,
// HEX.json; a second image's shared layer a symlink) or, with oci, as
// Docker 25 does (blobs/sha256/HEX, with index.json and oci-layout).
func dockerSave(t *testing.T, file string, oci bool, tag string, raws ...[]byte) (digest.Digest, digest.Digest) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, b []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	cfg := map[string]any{"architecture": "amd64", "os": "linux", "rootfs": map[string]any{"type": "layers", "diff_ids": []string{}}}
	var diffIDs []string
	var layers []string
	for i, raw := range raws {
		d := digest.FromBytes(raw)
		diffIDs = append(diffIDs, d.String())
		if oci {
			layers = append(layers, "blobs/sha256/"+d.Encoded())
			add(layers[i], raw)
		} else {
			id := digest.FromString(d.String() + "id").Encoded()
			layers = append(layers, id+"/layer.tar")
			if i == len(raws)-1 && i > 0 {
				// The last layer again as a symlink, as save writes a
				// layer two IDs share.
				tw.WriteHeader(&tar.Header{Name: id + "/layer.tar", Typeflag: tar.TypeSymlink, Linkname: "../" + layers[0]})
				diffIDs[i] = diffIDs[0]
				continue
			}
			add(layers[i], raw)
		}
	}
	cfg["rootfs"].(map[string]any)["diff_ids"] = diffIDs
	cb, _ := json.Marshal(cfg)
	cd := digest.FromBytes(cb)
	cpath := cd.Encoded() + ".json"
	if oci {
		cpath = "blobs/sha256/" + cd.Encoded()
	}
	add(cpath, cb)
	mb, _ := json.Marshal([]map[string]any{{"Config": cpath, "RepoTags": []string{tag}, "Layers": layers}})
	add("manifest.json", mb)
	if oci {
		add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
		add("index.json", []byte(`{"schemaVersion":2,"manifests":[]}`))
	}
	tw.Close()
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return cd, digest.FromBytes(raws[0])
}

func TestArchiveDockerSave(t *testing.T) {
	for _, oci := range []bool{false, true} {
		t.Run(map[bool]string{false: "legacy", true: "docker 25"}[oci], func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "save.tar")
			raws := [][]byte{tarOf(t, "a", "1"), tarOf(t, "b", "2"), tarOf(t, "a", "1")}
			want, _ := dockerSave(t, file, oci, "app:v1", raws...)
			src := NewArchive(Options{})
			im, err := src.Resolve(t.Context(), parseRef(t, "docker-archive:"+file))
			if err != nil {
				t.Fatal(err)
			}
			if im.Digest != want {
				t.Fatalf("Resolve = %s, want %s", im.Digest, want)
			}
			if im2, err := src.Resolve(t.Context(), parseRef(t, "docker-archive:"+file+":app:v1")); err != nil || im2.Digest != want {
				t.Fatalf("with REF: %s, %v", im2.Digest, err)
			}
			ls, err := im.Layers(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			for i, l := range ls {
				b, err := readAll(t.Context(), l)
				if err != nil {
					t.Fatalf("layer %d: %v", i, err)
				}
				if digest.FromBytes(b) != l.DiffID() {
					t.Fatalf("layer %d: content %s, DiffID %s", i, digest.FromBytes(b), l.DiffID())
				}
				if oci && l.Blob() != l.DiffID() {
					t.Errorf("layer %d: Blob %s, want the uncompressed blob's digest %s", i, l.Blob(), l.DiffID())
				}
			}
		})
	}
}
