package activate

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/snapshot"
)

// The stack kit: until the store writes stacks (issue 19's store side,
// cache.Store.StackOf), these tests make one by hand in the contract's
// layout, layerdirs/sha256/<chain ID> published by cache.PublishLayerDir and a
// stack directory of layer@N links to them, and have stackOf name it for
// an imported tree.

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

// makeStack builds layers (lowest first) as layer directories in s and a
// stack directory of them for tree d (stacks/sha256/<hex>: trees/ holds
// d's plain tree), and returns the directory and its lower names topmost
// first, as StackOf does.
func makeStack(t testing.TB, s *cache.Store, d digest.Digest, layers ...[]layerFile) (string, []string) {
	t.Helper()
	raws := make([][]byte, len(layers))
	for i, files := range layers {
		raws[i] = layerTar(t, files)
	}
	return makeStackRaw(t, s, d, raws...)
}

// makeStackRaw is makeStack of layer tar streams.
func makeStackRaw(t testing.TB, s *cache.Store, d digest.Digest, layers ...[]byte) (string, []string) {
	t.Helper()
	ctx := context.Background()
	var ds []snapshot.Diff
	var chain digest.Digest
	var chains []digest.Digest
	for i, raw := range layers {
		w, err := s.NewLayerWriter(ctx)
		if err != nil {
			t.Fatal(err)
		}
		d, err := snapshot.ReadDiff(ctx, bytes.NewReader(raw), w.Put)
		w.Abort() // the objects stay
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		ds = append(ds, d)
		diffID := digest.FromBytes(raw)
		if chain == "" {
			chain = diffID
		} else {
			chain = digest.FromString(chain.String() + " " + diffID.String())
		}
		chains = append(chains, chain)
	}
	dirs, err := snapshot.LayerDirs(ds)
	if err != nil {
		t.Fatal(err)
	}
	layerdirs := filepath.Join(s.Root(), "layerdirs", "sha256")
	stack := filepath.Join(s.Root(), "stacks", "sha256", d.Encoded())
	for _, d := range []string{layerdirs, stack} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var lower []string
	for i, l := range dirs {
		parent := digest.Digest("")
		if i > 0 {
			parent = chains[i-1]
		}
		if _, err := s.PublishLayerDir(ctx, chains[i], digest.FromBytes(layers[i]), parent, l); err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		name := "layer@" + strconv.Itoa(i)
		if err := os.Symlink("../../../layerdirs/sha256/"+chains[i].Encoded(), filepath.Join(stack, name)); err != nil {
			t.Fatal(err)
		}
		lower = append([]string{name}, lower...)
	}
	return stack, lower
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
	d := digest.FromString("t")
	dir, lower := makeStack(t, s, d, []layerFile{{Name: "a", Content: "1"}}, []layerFile{{Name: "b", Content: "2"}})
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
