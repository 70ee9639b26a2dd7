package gc

import (
	"context"
	"errors"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// file is one regular file of a test layer.
type file struct{ name, content string }

var layerTime = time.Unix(1700000000, 0)

// commitLayer stores files as layer diffID and commits it; it returns
// the layer's entries and the object of each file by name.
func commitLayer(t testing.TB, s *cache.Store, diffID digest.Digest, files ...file) ([]cache.ManifestEntry, map[string]digest.Digest) {
	t.Helper()
	w, err := s.NewLayerWriter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	l := cache.LayerManifest{DiffID: diffID, Blob: digest.FromString("blob of " + diffID.String())}
	objs := map[string]digest.Digest{}
	for _, f := range files {
		e := cache.Entry{Name: f.name, Kind: cache.KindFile, Mode: 0o644, ModTime: layerTime, Size: int64(len(f.content))}
		obj, err := w.Put(e, strings.NewReader(f.content))
		if err != nil {
			t.Fatal(err)
		}
		objs[f.name] = obj
		l.Entries = append(l.Entries, cache.ManifestEntry{Entry: e, Object: obj})
	}
	if _, err := w.Commit(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	return l.Entries, objs
}

// layeredTree commits each layer (named diffID prefix+index) and builds
// tree d from them, an upper layer's file replacing a lower one's.
func layeredTree(t testing.TB, s *cache.Store, d digest.Digest, layers ...[]file) []digest.Digest {
	t.Helper()
	ctx := context.Background()
	byName := map[string]cache.ManifestEntry{}
	var diffIDs []digest.Digest
	for i, files := range layers {
		id := digest.FromString(d.String() + string(rune('0'+i)))
		es, _ := commitLayer(t, s, id, files...)
		for _, e := range es {
			byName[e.Name] = e
		}
		diffIDs = append(diffIDs, id)
	}
	entries := []cache.ManifestEntry{{Entry: cache.Entry{Name: ".", Kind: cache.KindDir, Mode: 0o755, ModTime: layerTime}}}
	for _, n := range slices.Sorted(func(yield func(string) bool) {
		for n := range byName {
			if !yield(n) {
				return
			}
		}
	}) {
		entries = append(entries, byName[n])
	}
	lock, err := s.LockTree(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	if _, err := s.BuildFromList(ctx, d, cache.List{Entries: entries, Refs: []string{"layered"}, Layers: diffIDs}); err != nil {
		t.Fatal(err)
	}
	return diffIDs
}

func layerRecorded(t testing.TB, s *cache.Store, diffID digest.Digest) bool {
	t.Helper()
	err := s.View(func(tx *index.Tx) error { _, err := tx.Layer(diffID); return err })
	if err != nil && !errors.Is(err, cache.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func removedLayers(rep Result) []digest.Digest {
	out := []digest.Digest{}
	for _, l := range rep.Layers {
		out = append(out, l.DiffID)
	}
	return out
}

// TestLayersGoWithTheirTrees: a kept tree keeps its layers and every
// object they list, even one no tree links (a file the upper layer
// overwrote); a dropped tree's layers go with the objects only they
// held, and so does a layer no tree was built from. A dry run plans the
// same.
func TestLayersGoWithTheirTrees(t *testing.T) {
	s := storetest.New(t)
	kept, dropped := digest.FromString("kept"), digest.FromString("dropped")
	keptLayers := layeredTree(t, s, kept,
		[]file{{"a", "lower a"}, {"shared", "in both trees"}},
		[]file{{"a", "upper a"}})
	droppedLayers := layeredTree(t, s, dropped, []file{{"c", "only in dropped"}, {"shared", "in both trees"}})
	activateTree(t, s, "m", kept)
	_, lowerA := commitLayer(t, s, keptLayers[0], file{"a", "lower a"}) // the record is kept as it is
	loose := digest.FromString("loose")
	_, looseObjs := commitLayer(t, s, loose, file{"l", "only in a loose layer"})
	_, droppedObjs := commitLayer(t, s, droppedLayers[0], file{"c", "only in dropped"}, file{"shared", "in both trees"})

	dry := collect(t, s, Options{Keep: 1, DryRun: true})
	rep := collect(t, s, Options{Keep: 1})
	want := sorted(append([]digest.Digest{loose}, droppedLayers...)...)
	if got := removedLayers(rep); !reflect.DeepEqual(got, want) {
		t.Errorf("layers removed: %v, want %v", got, want)
	}
	if !reflect.DeepEqual(dry.Layers, rep.Layers) {
		t.Errorf("dry run planned layers %v, the run removed %v", dry.Layers, rep.Layers)
	}
	for _, l := range rep.Layers {
		if l.Bytes == 0 || l.Reason == "" {
			t.Errorf("removed layer %+v: want its bytes and why", l)
		}
	}
	for _, id := range keptLayers {
		if !layerRecorded(t, s, id) {
			t.Errorf("layer %s of the kept tree was removed", id)
		}
		if _, err := s.ReadLayer(id); err != nil {
			t.Errorf("layer %s of the kept tree: %v", id, err)
		}
	}
	if !exists(s.ObjectPath(lowerA["a"])) {
		t.Error("the object of the overwritten lower file is gone: its kept layer lists it")
	}
	for _, id := range want {
		if layerRecorded(t, s, id) {
			t.Errorf("layer %s is still recorded", id)
		}
	}
	for _, obj := range []digest.Digest{looseObjs["l"], droppedObjs["c"]} {
		if exists(s.ObjectPath(obj)) {
			t.Errorf("object %s of a removed layer only is still there", obj)
		}
	}
	if !exists(s.ObjectPath(droppedObjs["shared"])) {
		t.Error("an object the kept tree links went with the dropped layer")
	}
	if mfs, err := os.ReadDir(s.Root() + "/layers/sha256"); err != nil || len(mfs) != len(keptLayers) {
		t.Errorf("layer manifests left: %d, %v; want %d", len(mfs), err, len(keptLayers))
	}
	// Nothing more to do.
	if again := collect(t, s, Options{Keep: 1}); len(again.Layers) != 0 || again.Objects != 0 {
		t.Errorf("second gc: %+v, want nothing removed", again)
	}
}

// TestLayerOfAPinnedTree: a pin keeps a tree, and so its layers.
func TestLayerOfAPinnedTree(t *testing.T) {
	s := storetest.New(t)
	d := digest.FromString("pinned")
	ids := layeredTree(t, s, d, []file{{"p", "pinned content"}})
	if err := Pin(context.Background(), s, d); err != nil {
		t.Fatal(err)
	}
	if rep := collect(t, s, Options{Keep: 1}); len(rep.Layers) != 0 || !layerRecorded(t, s, ids[0]) {
		t.Errorf("gc removed %v, want the pinned tree's layer kept", rep.Layers)
	}
}
