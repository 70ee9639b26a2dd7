package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/rootswap/rootswap/snapshot"
)

// tarDir writes the files under dir into a tar at file, compressed with
// comp ("none", "gzip", "zstd"), names relative to dir.
func tarDir(t *testing.T, dir, file, comp string) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name, _ = filepath.Rel(dir, p)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			tw.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	tw.Close()
	if err := os.WriteFile(file, compress(t, comp, buf.Bytes()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func compress(t *testing.T, comp string, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	switch comp {
	case "none":
		return b
	case "gzip":
		z := gzip.NewWriter(&out)
		z.Write(b)
		z.Close()
	case "zstd":
		z, _ := zstd.NewWriter(&out)
		z.Write(b)
		z.Close()
	}
	return out.Bytes()
}

// TestOCIArchive: a tar of an OCI layout, plain or compressed, resolves
// and reads as the layout directory does, tags and platforms included.
func TestOCIArchive(t *testing.T) {
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	ls1 := threeLayers(t)
	img1 := testImage(t, nil, asLayers(ls1)...)
	ls2 := []*testLayer{newLayer(t, "gzip", tarOf(t, "two", "2"))}
	img2 := testImage(t, nil, asLayers(ls2)...)
	tag := func(t string) layout.Option { return layout.WithAnnotations(map[string]string{refNameAnnotation: t}) }
	if err := p.AppendImage(img1, tag("v1")); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img2, tag("v2")); err != nil {
		t.Fatal(err)
	}
	for _, comp := range []string{"none", "gzip", "zstd"} {
		t.Run(comp, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "img.tar")
			tarDir(t, dir, file, comp)
			tmp := t.TempDir()
			src := NewOCIArchive(Options{TempDir: tmp})
			defer src.Close()
			for _, c := range []struct {
				ref    string
				img    v1.Image
				layers []*testLayer
			}{{"oci-archive:" + file + ":v1", img1, ls1}, {"oci-archive:" + file + ":v2", img2, ls2}} {
				im, err := src.Resolve(t.Context(), parseRef(t, c.ref))
				if err != nil {
					t.Fatal(err)
				}
				if want := configDigest(t, c.img); im.Digest != want {
					t.Fatalf("%s: Resolve = %s, want %s", c.ref, im.Digest, want)
				}
				checkLayers(t, im, c.layers...)
			}
			if _, err := src.Resolve(t.Context(), parseRef(t, "oci-archive:"+file)); err == nil || !strings.Contains(err.Error(), "tags v1, v2") {
				t.Errorf("no tag in an archive of two: err = %v, want one listing the tags", err)
			}
			if _, err := src.Resolve(t.Context(), parseRef(t, "oci-archive:"+file+":v3")); !errors.Is(err, snapshot.ErrImageNotFound) {
				t.Errorf("missing tag: err = %v, want ErrImageNotFound", err)
			}
			if _, err := src.Resolve(t.Context(), parseRef(t, "oci-archive:"+file+".gone")); !errors.Is(err, snapshot.ErrImageNotFound) {
				t.Errorf("missing archive: err = %v, want ErrImageNotFound", err)
			}
			// The decompressed copy is unlinked: nothing is left in TempDir.
			if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
				t.Errorf("%d entries left in the temporary directory", len(ents))
			}
		})
	}
}

// TestArchiveCompressed: `docker save | gzip` (or zstd) reads as the
// plain tarball does.
func TestArchiveCompressed(t *testing.T) {
	for _, comp := range []string{"gzip", "zstd"} {
		t.Run(comp, func(t *testing.T) {
			plain := filepath.Join(t.TempDir(), "save.tar")
			raws := [][]byte{tarOf(t, "a", "1"), tarOf(t, "b", "2"), tarOf(t, "a", "1")}
			want, _ := dockerSave(t, plain, false, "app:v1", raws...)
			b, _ := os.ReadFile(plain)
			file := plain + "." + comp
			if err := os.WriteFile(file, compress(t, comp, b), 0o644); err != nil {
				t.Fatal(err)
			}
			src := NewArchive(Options{TempDir: t.TempDir()})
			defer src.Close()
			im, err := src.Resolve(t.Context(), parseRef(t, "docker-archive:"+file+":app:v1"))
			if err != nil || im.Digest != want {
				t.Fatalf("Resolve = %s, %v; want %s", im.Digest, err, want)
			}
			ls, err := im.Layers(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			for i, l := range ls {
				got, err := readAll(t.Context(), l)
				if err != nil || !bytes.Equal(got, raws[i]) {
					t.Errorf("layer %d: %v; content differs: %t", i, err, !bytes.Equal(got, raws[i]))
				}
				if s := l.(snapshot.SizedLayer).Size(); s != int64(len(raws[i])) {
					t.Errorf("layer %d: size %d, want %d from the archive", i, s, len(raws[i]))
				}
				// The stream counts the blob bytes it read, for progress.
				rc, err := l.Open(t.Context())
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, rc)
				if n := rc.(snapshot.BlobCounter).BlobRead(); n != int64(len(raws[i])) {
					t.Errorf("layer %d: BlobRead %d after the whole blob, want %d", i, n, len(raws[i]))
				}
				rc.Close()
			}
		})
	}
}

// TestHostileArchives: names are only looked up, never created, so ".."
// cannot escape; link loops, non-files and a compression bomb are refused
// in one line each.
func TestHostileArchives(t *testing.T) {
	build := func(t *testing.T, hs ...tar.Header) string {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range hs {
			body := ""
			if h.Typeflag == tar.TypeReg {
				body = "content of " + h.Name
				h.Size = int64(len(body))
			}
			h.Mode = 0o644
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			io.WriteString(tw, body)
		}
		tw.Close()
		file := filepath.Join(t.TempDir(), "a.tar")
		os.WriteFile(file, buf.Bytes(), 0o644)
		return file
	}
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("secret"), 0o644)
	file := build(t,
		tar.Header{Name: "../../etc/escape", Typeflag: tar.TypeReg},
		tar.Header{Name: "up", Typeflag: tar.TypeSymlink, Linkname: "../../../../" + victim},
		tar.Header{Name: "loop1", Typeflag: tar.TypeSymlink, Linkname: "loop2"},
		tar.Header{Name: "loop2", Typeflag: tar.TypeSymlink, Linkname: "loop1"},
		tar.Header{Name: "dev", Typeflag: tar.TypeChar},
		tar.Header{Name: "hard", Typeflag: tar.TypeLink, Linkname: "/../etc/escape"},
	)
	tf, err := openTar(t.Context(), file, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	// "../../etc/escape" is the archive's own "etc/escape", and so is a
	// hard link to "/../etc/escape".
	for _, n := range []string{"etc/escape", "../etc/escape", "hard"} {
		if b, err := tf.ReadFile(n, 100); err != nil || string(b) != "content of ../../etc/escape" {
			t.Errorf("%s: %q, %v", n, b, err)
		}
	}
	// A symlink out of the archive resolves inside it: to nothing.
	if _, _, err := tf.Open("up"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("symlink to %s: err = %v, want not found in the archive", victim, err)
	}
	if _, _, err := tf.Open("loop1"); err == nil || !strings.Contains(err.Error(), "links to follow") {
		t.Errorf("link loop: err = %v", err)
	}
	if _, _, err := tf.Open("dev"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("device: err = %v", err)
	}
	if _, err := tf.ReadFile("etc/escape", 5); err == nil {
		t.Error("a file longer than its limit was read")
	}

	// A bomb: 64 MiB of zeros gzipped to 64 KiB, past the bound.
	old := expansionSlack
	expansionSlack = 1 << 20
	defer func() { expansionSlack = old }()
	var bomb bytes.Buffer
	z := gzip.NewWriter(&bomb)
	z.Write(make([]byte, 64<<20))
	z.Close()
	bf := filepath.Join(t.TempDir(), "bomb.tar.gz")
	os.WriteFile(bf, bomb.Bytes(), 0o644)
	tmp := t.TempDir()
	if _, err := openTar(t.Context(), bf, tmp); err == nil || !strings.Contains(err.Error(), "compression bomb") {
		t.Errorf("bomb: err = %v", err)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("a refused bomb left %d files", len(ents))
	}
}

// FuzzOpenTar: whatever bytes an archive holds, indexing it and reading
// every name it lists never panics, never reads past a limit and never
// loops (links are bounded).
func FuzzOpenTar(f *testing.F) {
	dir := f.TempDir()
	for i, raws := range [][][]byte{{tarOfF(f, "a", "1")}, {tarOfF(f, "a", "1"), tarOfF(f, "b", "2")}} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for j, r := range raws {
			tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("l%d/layer.tar", j), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(r))})
			tw.Write(r)
		}
		tw.WriteHeader(&tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "../l0/layer.tar"})
		tw.WriteHeader(&tar.Header{Name: "manifest.json", Typeflag: tar.TypeReg, Mode: 0o644, Size: 2})
		tw.Write([]byte("[]"))
		tw.Close()
		f.Add(buf.Bytes())
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(buf.Bytes())
		zw.Close()
		f.Add(z.Bytes())
		_ = i
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file := filepath.Join(dir, "fuzz.tar")
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		tf, err := openTar(t.Context(), file, dir)
		if err != nil {
			return
		}
		defer tf.Close()
		for name := range tf.entries {
			if b, err := tf.ReadFile(name, 1<<20); err == nil && len(b) > 1<<20 {
				t.Fatalf("%s: read %d bytes past the limit", name, len(b))
			}
			if rc, _, err := tf.Open(name); err == nil {
				io.Copy(io.Discard, io.LimitReader(rc, 1<<20))
				rc.Close()
			}
		}
	})
}

// tarOfF is tarOf for a fuzz target's seeds.
func tarOfF(f *testing.F, name, content string) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
	tw.Write([]byte(content))
	tw.Close()
	return b.Bytes()
}

// TestOpenTarStopsWithTheContext: decompressing stops when the context
// ends (Ctrl-C during a large docker save | gzip).
func TestOpenTarStopsWithTheContext(t *testing.T) {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(tarOf(t, "a", "1"))
	zw.Close()
	file := filepath.Join(t.TempDir(), "a.tar.gz")
	os.WriteFile(file, z.Bytes(), 0o644)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := openTar(ctx, file, t.TempDir()); !errors.Is(err, context.Canceled) {
		t.Errorf("openTar with a cancelled context: err = %v", err)
	}
}
