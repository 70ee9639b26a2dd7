package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// layeredSource is an image's content: layers that name their diffIDs, as a
// registry does, and counts the layers opened.
type layeredSource struct {
	layers [][]byte
	ids    []digest.Digest // nil: the sha256 of each layer
	mu     sync.Mutex
	opened map[int]int
}

func (f *layeredSource) Config(context.Context) (snapshot.Config, error) {
	return snapshot.Config{}, nil
}

func (f *layeredSource) Layers(context.Context) ([]snapshot.Layer, error) {
	var ls []snapshot.Layer
	for i, b := range f.layers {
		id := digest.FromBytes(b)
		if f.ids != nil {
			id = f.ids[i]
		}
		ls = append(ls, idLayer{f, i, id})
	}
	return ls, nil
}

type idLayer struct {
	f  *layeredSource
	i  int
	id digest.Digest
}

func (l idLayer) DiffID() digest.Digest { return l.id }
func (l idLayer) Blob() digest.Digest   { return digest.FromString(string(l.id)) }
func (l idLayer) Open(context.Context) (io.ReadCloser, error) {
	l.f.mu.Lock()
	defer l.f.mu.Unlock()
	if l.f.opened == nil {
		l.f.opened = map[int]int{}
	}
	l.f.opened[l.i]++
	return io.NopCloser(bytes.NewReader(l.f.layers[l.i])), nil
}

func (f *layeredSource) opens() int {
	n := 0
	for _, c := range f.opened {
		n += c
	}
	return n
}

// TestImportLayered: layers are stored once each and merged with overlay
// semantics into the tree; an image sharing a layer with one the store
// has fetches only its own; a layer that is not its diffID is refused and
// leaves neither tree nor layer record.
func TestImportLayered(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, filepath.Join(t.TempDir(), "store"))
	base := tarball(dir("etc", 0o755), file("etc/version", "v1", 0o644), file("etc/gone", "x", 0o644), dir("d", 0o755), file("d/old", "o", 0o644))
	v1 := &layeredSource{layers: [][]byte{base, tarball(file("etc/version", "v2", 0o644), whiteout("etc/.wh.gone"), whiteout("d/.wh..wh..opq"), file("d/new", "n", 0o644))}}
	t1, created, err := snapshot.ImportImage(ctx, s, snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.Docker, Name: "reg/app:1"}, Digest: digest.FromString("config-1"), Content: v1}, snapshot.ImportOptions{})
	if err != nil || !created {
		t.Fatalf("import: %v", err)
	}
	root := storetest.Tree(t, s, t1.Digest)
	for name, want := range map[string]string{"etc/version": "v2", "d/new": "n"} {
		if b, err := os.ReadFile(filepath.Join(root, name)); err != nil || string(b) != want {
			t.Errorf("%s: %q %v, want %q", name, b, err, want)
		}
	}
	for _, gone := range []string{"etc/gone", "d/old", "etc/.wh.gone", "d/.wh..wh..opq"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is in the tree: %v", gone, err)
		}
	}
	if len(t1.Layers) != 2 || v1.opens() != 2 || t1.NewBytes != int64(len("v1xov2n")) {
		t.Errorf("tree layers %v, %d layers opened, %d new bytes; want 2, 2 and 7", t1.Layers, v1.opens(), t1.NewBytes)
	}

	// v2 shares the base: only its own layer is read.
	v2 := &layeredSource{layers: [][]byte{base, tarball(file("etc/version", "v3", 0o644))}}
	if _, _, err := snapshot.ImportImage(ctx, s, snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.Docker, Name: "reg/app:2"}, Digest: digest.FromString("config-2"), Content: v2}, snapshot.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if v2.opened[0] != 0 || v2.opened[1] != 1 {
		t.Errorf("v2 opened %v, want only its top layer once", v2.opened)
	}

	// An image listing one diffID twice fetches it once.
	empty := tarball()
	twice := &layeredSource{layers: [][]byte{base, empty, empty}}
	if _, _, err := snapshot.ImportImage(ctx, s, snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.Docker, Name: "reg/app:3"}, Digest: digest.FromString("config-3"), Content: twice}, snapshot.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if twice.opens() != 1 {
		t.Errorf("a repeated empty layer opened %v, want once", twice.opened)
	}

	// A hard link to a lower layer's file shares its content; a later
	// layer rewriting the target leaves the link as it was.
	links := &layeredSource{layers: [][]byte{base, tarball(hardlink("etc/link", "etc/version")), tarball(file("etc/version", "v9", 0o644))}}
	t4, _, err := snapshot.ImportImage(ctx, s, snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.Docker, Name: "reg/app:4"}, Digest: digest.FromString("config-4"), Content: links}, snapshot.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"etc/version": "v9", "etc/link": "v1"} {
		if b, err := os.ReadFile(filepath.Join(storetest.Tree(t, s, t4.Digest), name)); err != nil || string(b) != want {
			t.Errorf("hard link across layers: %s: %q %v, want %q", name, b, err, want)
		}
	}

	// A layer that is not what its diffID says.
	liar := &layeredSource{layers: [][]byte{tarball(file("x", "x", 0o644))}, ids: []digest.Digest{digest.FromString("another layer")}}
	_, _, err = snapshot.ImportImage(ctx, s, snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.Docker, Name: "reg/liar:1"}, Digest: digest.FromString("config-liar"), Content: liar}, snapshot.ImportOptions{})
	if !errors.Is(err, snapshot.ErrDigestMismatch) || !strings.Contains(err.Error(), "layer 1") || !strings.Contains(err.Error(), "docker://reg/liar:1") {
		t.Errorf("lying layer: %v", err)
	}
	if _, ok, _ := snapshot.Lookup(s, digest.FromString("config-liar")); ok {
		t.Error("a lying image has a tree")
	}
	err = s.View(func(tx *index.Tx) error { _, err := tx.Layer(digest.FromString("another layer")); return err })
	if !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("a lying layer has a record: %v", err)
	}

	// A hostile upper layer fails the merge: nothing is written through
	// the lower layer's symlink and no tree is made.
	evil := &layeredSource{layers: [][]byte{tarball(symlink("etc", "/tmp")), tarball(file("etc/passwd", "x", 0o644))}}
	_, _, err = snapshot.ImportImage(ctx, s, snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.Docker, Name: "reg/evil:1"}, Digest: digest.FromString("config-evil"), Content: evil}, snapshot.ImportOptions{})
	if !errors.Is(err, snapshot.ErrUnsafeEntry) || !strings.Contains(err.Error(), "layer 2") {
		t.Errorf("write through a lower symlink: %v", err)
	}
	if _, ok, _ := snapshot.Lookup(s, digest.FromString("config-evil")); ok {
		t.Error("a hostile image has a tree")
	}
}
