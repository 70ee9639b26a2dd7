package activate

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/snapshot"
)

// The stack kit: stacks imported through the store's own layered path
// (snapshot.ImportImage of an image whose layers are given as tar
// streams), so the index records them as stacks and cache.Store.StackOf
// names their layers.

// layerFile is one entry of a test layer: a regular file (Content), a
// directory (Dir), a symlink (Link) or a whiteout (a name whose base
// starts with ".wh.", ".wh..wh..opq" for an opaque directory).
type layerFile struct {
	Name, Content, Link string
	Dir                 bool
}

func layerTar(t testing.TB, files []layerFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.Name, Mode: 0o644, Size: int64(len(f.Content))}
		switch {
		case f.Dir:
			hdr = &tar.Header{Typeflag: tar.TypeDir, Name: f.Name + "/", Mode: 0o755}
		case f.Link != "":
			hdr = &tar.Header{Typeflag: tar.TypeSymlink, Name: f.Name, Linkname: f.Link, Mode: 0o777}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f.Content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// importStack imports an image of layers (lowest first) and returns its
// digest: a stack of as many layer directories.
func importStack(t testing.TB, s *cache.Store, layers ...[]layerFile) digest.Digest {
	t.Helper()
	raws := make([][]byte, len(layers))
	for i, files := range layers {
		raws[i] = layerTar(t, files)
	}
	return importStackRaw(t, s, raws...)
}

// importStackRaw is importStack of layer tar streams.
func importStackRaw(t testing.TB, s *cache.Store, layers ...[]byte) digest.Digest {
	t.Helper()
	h := digest.SHA256.Digester()
	for _, l := range layers {
		h.Hash().Write(l)
	}
	img := snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.Docker, Name: "reg/stack:" + h.Digest().Encoded()[:12]},
		Digest: digest.FromString("config of " + h.Digest().String()), Content: layeredImage(layers)}
	tr, _, err := snapshot.ImportImage(context.Background(), s, img, snapshot.ImportOptions{})
	if err != nil {
		t.Fatalf("import %d layers: %v", len(layers), err)
	}
	if _, _, ok, err := s.StackOf(tr.Digest); err != nil || !ok {
		t.Fatalf("import %d layers: tree %s is no stack (%v)", len(layers), tr.Digest, err)
	}
	return tr.Digest
}

// layeredImage is an image's content: its layers as tar streams, each
// naming its diffID as a registry's does.
type layeredImage [][]byte

func (li layeredImage) Config(context.Context) (snapshot.Config, error) {
	return snapshot.Config{}, nil
}

func (li layeredImage) Layers(context.Context) ([]snapshot.Layer, error) {
	var out []snapshot.Layer
	for _, l := range li {
		out = append(out, tarLayer(l))
	}
	return out, nil
}

type tarLayer []byte

func (l tarLayer) DiffID() digest.Digest { return digest.FromBytes(l) }
func (l tarLayer) Blob() digest.Digest   { return digest.FromBytes(l) }
func (l tarLayer) Open(context.Context) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(l)), nil
}

// stackDir is tree d's directory and lower names, as run mounts them.
func stackDir(t testing.TB, s *cache.Store, d digest.Digest) (string, []string) {
	t.Helper()
	dir, lower, ok, err := s.StackOf(d)
	if err != nil || !ok {
		t.Fatalf("tree %s: no stack (%v)", d, err)
	}
	return dir, lower
}

// useStack makes stackOf say that tree d is the stack dir, lower.
func useStack(t testing.TB, d digest.Digest, dir string, lower []string) {
	t.Helper()
	prev := stackOf
	stackOf = func(s *cache.Store, got digest.Digest) (string, []string, bool, error) {
		if got == d {
			return dir, lower, true, nil
		}
		return prev(s, got)
	}
	t.Cleanup(func() { stackOf = prev })
}

// hostEntries lists dir's names as the host sees them.
func hostEntries(t testing.TB, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return strings.Join(names, " ")
}

// TestStackOnDisk: without the index, a directory of nothing but layer@0
// … layer@N-1 links into layerdirs/ is a stack; a plain tree, a gap, a
// file named layer@0 or a link elsewhere is not.
func TestStackOnDisk(t *testing.T) {
	s := newStore(t)
	dir, lower := stackDir(t, s, importStack(t, s, []layerFile{{Name: "a", Content: "1"}}, []layerFile{{Name: "b", Content: "2"}}))
	if got, ok, err := stackOnDisk(dir); err != nil || !ok || strings.Join(got, " ") != strings.Join(lower, " ") {
		t.Errorf("the kit's stack: %q %v %v, want %q", got, ok, err, lower)
	}
	target := "../../../layerdirs/sha256/" + strings.Repeat("a", 64)
	for name, build := range map[string]func(dir string) error{
		"plain":     func(d string) error { return os.Mkdir(filepath.Join(d, "usr"), 0o755) },
		"a file":    func(d string) error { return os.WriteFile(filepath.Join(d, "layer@0"), nil, 0o644) },
		"a gap":     func(d string) error { return os.Symlink(target, filepath.Join(d, "layer@1")) },
		"leading 0": func(d string) error { return os.Symlink(target, filepath.Join(d, "layer@00")) },
		"elsewhere": func(d string) error { return os.Symlink("/usr", filepath.Join(d, "layer@0")) },
		"and another": func(d string) error {
			os.Symlink(target, filepath.Join(d, "layer@0"))
			return os.Mkdir(filepath.Join(d, "usr"), 0o755)
		},
	} {
		dir := t.TempDir()
		if err := build(dir); err != nil {
			t.Fatal(err)
		}
		if got, ok, err := stackOnDisk(dir); ok || err != nil {
			t.Errorf("%s: read as the stack %q (%v)", name, got, err)
		}
	}
}
