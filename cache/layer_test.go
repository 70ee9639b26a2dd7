package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/failpoint"
)

// layerItems is a layer with every kind of entry, a file past smallFile,
// an empty one, xattrs on a file and a directory, and a hard link to a
// lower layer's file.
func layerItems() []item {
	big := strings.Repeat("0123456789abcdef", smallFile/16+1)
	return []item{
		{Entry: Entry{Name: "etc", Kind: KindDir, Mode: 0o555, UID: 1, GID: 2, ModTime: mtime, Xattrs: map[string][]byte{"user.d": []byte("dir\x00\xff")}}},
		reg("etc/hostname", "box\n", 0o644),
		reg("etc/empty", "", 0o600),
		reg("etc/big", big, 0o644),
		{Entry: Entry{Name: "etc/su", Kind: KindFile, Mode: 0o4755, UID: 1000, GID: 1000, ModTime: mtime, Size: 2,
			Xattrs: map[string][]byte{"user.x": []byte("1")}}, content: "su"},
		{Entry: Entry{Name: "etc/mtab", Kind: KindSymlink, Linkname: "/proc/mounts", UID: 5, GID: 6, ModTime: mtime}},
		{Entry: Entry{Name: "etc/lower", Kind: KindHardlink, Linkname: "usr/bin/lower", ModTime: mtime}},
		{Entry: Entry{Name: "dev", Kind: KindDir, Mode: 0o755, ModTime: mtime}},
		{Entry: Entry{Name: "dev/null", Kind: KindChar, Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: mtime}},
	}
}

// putLayer stores items' files through a new LayerWriter and returns the
// writer (uncommitted) with the layer's manifest.
func putLayer(t *testing.T, s *Store, diffID, blob digest.Digest, items []item) (*LayerWriter, LayerManifest) {
	t.Helper()
	w, err := s.NewLayerWriter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	l := LayerManifest{DiffID: diffID, Blob: blob}
	for _, it := range items {
		me := ManifestEntry{Entry: it.Entry}
		if it.Kind == KindFile {
			if me.Object, err = w.Put(it.Entry, strings.NewReader(it.content)); err != nil {
				w.Abort()
				t.Fatal(err)
			}
		}
		l.Entries = append(l.Entries, me)
	}
	return w, l
}

// TestLayerWriterRoundTrip: Put stores each file as the Builder's object
// (an empty one as nothing), Commit records the layer, and ReadLayer
// gives back the entries, xattrs and whiteouts as committed.
func TestLayerWriterRoundTrip(t *testing.T) {
	s := testStore(t)
	items := layerItems()
	diffID, blob := digest.FromString("layer"), digest.FromString("blob")
	w, l := putLayer(t, s, diffID, blob, items)
	l.Whiteouts = []Whiteout{{Name: "var/gone"}, {Name: "opt", Opaque: true}}
	var files, bytes int64
	for i, it := range items {
		if it.Kind != KindFile {
			continue
		}
		if want := objectOf(it); l.Entries[i].Object != want {
			t.Errorf("%s: Put gave %s, the Builder's object is %s", it.Name, l.Entries[i].Object, want)
		}
		_, err := os.Lstat(s.ObjectPath(l.Entries[i].Object))
		if it.Size == 0 && err == nil {
			t.Errorf("%s: an empty file was stored", it.Name)
		}
		if it.Size > 0 && err != nil {
			t.Errorf("%s: not stored: %v", it.Name, err)
		}
		bytes += it.Size
		files++
	}
	rec, err := w.Commit(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	if rec.DiffID != diffID || !reflect.DeepEqual(rec.Blobs, []digest.Digest{blob}) || rec.Files != int64(len(items)+2) ||
		rec.Bytes != bytes || rec.NewBytes != bytes || rec.Created.IsZero() {
		t.Errorf("record %+v: want %d files, %d bytes, all new, blob %s", rec, len(items)+2, bytes, blob)
	}
	got, err := s.ReadLayer(diffID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, l) {
		t.Errorf("ReadLayer:\n%+v\nwant\n%+v", got, l)
	}
	if names(t, s.TmpDir()) != nil {
		t.Errorf("tmp/ after Commit: %v", names(t, s.TmpDir()))
	}

	// A second writer of the same files writes nothing new.
	w2, l2 := putLayer(t, s, digest.FromString("other layer"), "", items)
	if w2.ow.newBytes != 0 {
		t.Errorf("second writer of the same objects: %d new bytes, want 0", w2.ow.newBytes)
	}
	w2.Abort()
	w2.Abort()
	if _, err := w2.Commit(context.Background(), l2); err == nil {
		t.Error("Commit after Abort: no error")
	}
	if _, err := s.ReadLayer(l2.DiffID); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadLayer of an aborted layer: %v, want ErrNotFound", err)
	}
}

// TestLayerCommitExisting: committing a layer the index has keeps its
// record, adds the blob, and leaves no second manifest.
func TestLayerCommitExisting(t *testing.T) {
	s := testStore(t)
	diffID := digest.FromString("layer")
	w, l := putLayer(t, s, diffID, digest.FromString("gz"), layerItems())
	first, err := w.Commit(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	w, l = putLayer(t, s, diffID, digest.FromString("zst"), layerItems()[:2])
	rec, err := w.Commit(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Manifest != first.Manifest || rec.Files != first.Files || !reflect.DeepEqual(rec.Blobs, []digest.Digest{digest.FromString("gz"), digest.FromString("zst")}) {
		t.Errorf("second commit: %+v, want the first %+v with both blobs", rec, first)
	}
	if n := names(t, filepath.Join(s.Root(), "layers", "sha256")); len(n) != 1 {
		t.Errorf("layer manifests: %v, want one", n)
	}
	var byBlob digest.Digest
	if err := s.View(func(tx *index.Tx) (err error) { byBlob, err = tx.LayerByBlob(digest.FromString("zst")); return err }); err != nil || byBlob != diffID {
		t.Errorf("LayerByBlob(zst): %s, %v; want %s", byBlob, err, diffID)
	}
}

// TestLayerPutShort: content shorter than e.Size is an error, small or
// large, and stores no object.
func TestLayerPutShort(t *testing.T) {
	s := testStore(t)
	w, err := s.NewLayerWriter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, size := range []int64{10, smallFile + 10} {
		e := Entry{Name: "f", Kind: KindFile, Mode: 0o644, ModTime: mtime, Size: size}
		if _, err := w.Put(e, strings.NewReader("short")); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("size %d, 5 bytes: %v, want ErrUnexpectedEOF", size, err)
		}
	}
	if _, err := w.Put(Entry{Name: "d", Kind: KindDir}, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Put of a directory: %v, want ErrInvalid", err)
	}
	if objs, _ := s.ObjectDigests(); len(objs) != 0 {
		t.Errorf("objects after short puts: %v", objs)
	}
}

// TestLayerWritersConcurrent: two writers putting the same objects at the
// same time both succeed with the same digests, and each object's bytes
// are counted new once between them.
func TestLayerWritersConcurrent(t *testing.T) {
	s := testStore(t)
	var items []item
	var total int64
	for i := range 200 {
		it := reg(fmt.Sprintf("f%d", i), strings.Repeat(fmt.Sprint(i), 100+i), 0o644)
		items = append(items, it)
		total += it.Size
	}
	items = append(items, reg("big", strings.Repeat("x", smallFile+1), 0o644))
	total += smallFile + 1
	var wg sync.WaitGroup
	ls := make([]LayerManifest, 2)
	ws := make([]*LayerWriter, 2)
	errs := make([]error, 2)
	start := make(chan struct{})
	for i := range 2 {
		w, err := s.NewLayerWriter(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ws[i] = w
		ls[i].DiffID = digest.FromString(fmt.Sprint("layer", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for _, it := range items {
				obj, err := w.Put(it.Entry, strings.NewReader(it.content))
				if err != nil {
					errs[i] = err
					return
				}
				ls[i].Entries = append(ls[i].Entries, ManifestEntry{Entry: it.Entry, Object: obj})
			}
		}()
	}
	close(start)
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("writer %d: %v", i, errs[i])
		}
	}
	if !reflect.DeepEqual(ls[0].Entries, ls[1].Entries) {
		t.Error("the two writers named different objects")
	}
	if n := ws[0].ow.newBytes + ws[1].ow.newBytes; n != total {
		t.Errorf("new bytes of both writers: %d, want %d (each object once)", n, total)
	}
	for i := range 2 {
		if _, err := ws[i].Commit(context.Background(), ls[i]); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLayerReadDamaged: a manifest that does not hash to its record, or
// is missing, is an error naming the layer; verify reports such a layer
// and one whose object is gone, and --repair drops their records.
func TestLayerReadDamaged(t *testing.T) {
	ctx := context.Background()
	s := testStore(t)
	var recs []index.Layer
	for i := range 3 {
		w, l := putLayer(t, s, digest.FromString(fmt.Sprint("layer", i)), "", []item{reg(fmt.Sprint("f", i), fmt.Sprint("content", i), 0o644)})
		rec, err := w.Commit(ctx, l)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	// 0: a manifest that says something else; 1: no manifest; 2: no object.
	other, err := os.ReadFile(s.LayerManifestPath(recs[2].Manifest))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.LayerManifestPath(recs[0].Manifest), other, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(s.LayerManifestPath(recs[1].Manifest)); err != nil {
		t.Fatal(err)
	}
	l2, err := s.ReadLayer(recs[2].DiffID)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(s.ObjectPath(l2.Entries[0].Object)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadLayer(recs[0].DiffID); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), recs[0].DiffID.String()) {
		t.Errorf("ReadLayer of a changed manifest: %v, want ErrInvalid naming the layer", err)
	}
	if _, err := s.ReadLayer(recs[1].DiffID); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), recs[1].DiffID.String()) {
		t.Errorf("ReadLayer of a missing manifest: %v, want ErrNotExist naming the layer", err)
	}
	rep, err := s.Verify(ctx, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[digest.Digest]bool{}
	for _, p := range rep.Problems {
		if p.Kind == "layer" {
			bad[p.Digest] = true
		}
	}
	if len(bad) != 3 {
		t.Errorf("verify's layer problems: %v, want all three layers", rep.Problems)
	}
	if _, err := s.Verify(ctx, nil, true); err != nil {
		t.Fatal(err)
	}
	var left []index.Layer
	if err := s.View(func(tx *index.Tx) (err error) { left, err = tx.Layers(); return err }); err != nil || len(left) != 0 {
		t.Errorf("layers after verify --repair: %v, %v; want none", left, err)
	}
}

// TestBuildFromListRecordsLayers: the tree record names the layers it
// was built from, and a layer's objects no tree links are no leftovers.
func TestBuildFromListRecordsLayers(t *testing.T) {
	ctx := context.Background()
	s := testStore(t)
	w, l := putLayer(t, s, digest.FromString("layer"), "", []item{
		{Entry: Entry{Name: ".", Kind: KindDir, Mode: 0o755, ModTime: mtime}}, reg("a", "a", 0o644), reg("b", "overwritten", 0o644)})
	if _, err := w.Commit(ctx, l); err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("tree")
	lock, err := s.LockTree(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	layers := []digest.Digest{l.DiffID}
	tr, err := s.BuildFromList(ctx, d, List{Entries: l.Entries[:2], Layers: layers})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(tr.Layers, layers) {
		t.Errorf("tree layers %v, want %v", tr.Layers, layers)
	}
	rep, err := s.Verify(ctx, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Leftovers) != 0 {
		t.Errorf("leftovers: %v, want none (the layer lists the object no tree links)", rep.Leftovers)
	}
}

// TestLayerCommitCrash kills a process at each step of Commit and checks
// that the store it leaves passes the store check, and that a layer
// recorded is readable.
func TestLayerCommitCrash(t *testing.T) {
	if root := os.Getenv("ROOTSWAP_TEST_LAYER_STORE"); root != "" {
		s, err := Open(context.Background(), root, Options{})
		if err != nil {
			t.Fatal(err)
		}
		w, l := putLayer(t, s, digest.FromString("layer"), digest.FromString("blob"), layerItems())
		l.Whiteouts = []Whiteout{{Name: "gone"}}
		w.Commit(context.Background(), l)
		return
	}
	for _, point := range []string{"cache-layer-staged", "cache-layer-synced", "cache-layer-manifest-renamed", "cache-layer-before-index", "cache-layer-after-index"} {
		t.Run(point, func(t *testing.T) {
			s := testStore(t)
			cmd := exec.Command(os.Args[0], "-test.run=^TestLayerCommitCrash$")
			cmd.Env = append(os.Environ(), "ROOTSWAP_TEST_LAYER_STORE="+s.Root(), failpoint.Env+"="+point)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("not killed at %s: %v\n%s", point, err, out)
			}
			// What the next command does first: remove dead staging.
			if _, err := Open(context.Background(), s.Root(), Options{}); err != nil {
				t.Fatal(err)
			}
			_, err = s.ReadLayer(digest.FromString("layer"))
			recorded := point == "cache-layer-after-index"
			if recorded && err != nil || !recorded && !errors.Is(err, ErrNotFound) {
				t.Errorf("ReadLayer after a crash at %s: %v", point, err)
			}
		})
	}
}

// TestPutBufferBound: however the sizes of the small files a writer puts
// grow, its buffer never holds more than smallFile bytes, and a file past
// smallFile is streamed without one. Several writers run at once, so this
// bound times their number is what the pull holds in buffers. A Builder
// stores its files through the same writer, so the bound holds there too
// (it once did not).
func TestPutBufferBound(t *testing.T) {
	sizes := []int{100, 70 << 10, smallFile * 5 / 8, smallFile * 3 / 4, smallFile, smallFile + 1}
	entry := func(i int) Entry {
		return Entry{Name: fmt.Sprintf("f%d", i), Kind: KindFile, Mode: 0o644, ModTime: mtime, Size: int64(sizes[i])}
	}
	check := func(t *testing.T, i int, ow *objectWriter) {
		if c := cap(ow.buf); c > smallFile {
			t.Fatalf("after a %d-byte file the buffer holds %d bytes, more than smallFile (%d)", sizes[i], c, smallFile)
		}
	}
	t.Run("layer", func(t *testing.T) {
		w, err := testStore(t).NewLayerWriter(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		for i, size := range sizes {
			if _, err := w.Put(entry(i), strings.NewReader(strings.Repeat("x", size))); err != nil {
				t.Fatal(err)
			}
			check(t, i, w.ow)
		}
	})
	t.Run("tree", func(t *testing.T) {
		b, err := testStore(t).NewBuilder(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer b.Abort()
		for i, size := range sizes {
			if err := b.Add(entry(i), strings.NewReader(strings.Repeat("x", size))); err != nil {
				t.Fatal(err)
			}
			check(t, i, b.ow)
		}
	})
}
