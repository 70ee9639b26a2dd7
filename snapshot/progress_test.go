package snapshot_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/snapshot"
)

// layerEvents records what a layered import tells a LayerProgress.
type layerEvents struct {
	mu     sync.Mutex
	events []string
}

func (e *layerEvents) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.events = append(e.events, s)
}
func (e *layerEvents) Update(bytes, entries int64) {}
func (e *layerEvents) Done()                       { e.add("done") }
func (e *layerEvents) Layers(fetch []snapshot.LayerFetch, skipped int) {
	for _, f := range fetch {
		e.add(fmt.Sprintf("fetch %s size %d", f.DiffID, f.Size))
	}
	e.add(fmt.Sprintf("skipped %d", skipped))
}
func (e *layerEvents) Fetching(k int, read func() int64) { e.add(fmt.Sprintf("fetching %d", k)) }
func (e *layerEvents) Fetched(k int, err error)          { e.add(fmt.Sprintf("fetched %d %v", k, err)) }

// TestLayerProgress: a layered import tells a LayerProgress the layers it
// fetches (blob sizes where the source knows them) and how many the
// store had, before any fetch, and each fetch's start and end.
func TestLayerProgress(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, filepath.Join(t.TempDir(), "store"))
	base := tarball(dir("etc", 0o755), file("etc/version", "v1", 0o644))
	top := tarball(file("etc/version", "v2", 0o644))
	if _, _, err := snapshot.ImportImage(ctx, s, snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.Docker, Name: "reg/app:1"}, Digest: digest.FromString("config-1"), Content: &layeredSource{layers: [][]byte{base}}}, snapshot.ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	ev := &layerEvents{}
	v2 := &layeredSource{layers: [][]byte{base, top, base}}
	if _, _, err := snapshot.ImportImage(ctx, s, snapshot.Image{Ref: snapshot.Ref{Transport: snapshot.Docker, Name: "reg/app:2"}, Digest: digest.FromString("config-2"), Content: v2}, snapshot.ImportOptions{Progress: ev}); err != nil {
		t.Fatal(err)
	}
	want := []string{"fetch " + digest.FromBytes(top).String() + " size -1", "skipped 1", "fetching 0", "fetched 0 <nil>", "done"}
	if !slices.Equal(ev.events, want) {
		t.Errorf("events %q\nwant %q", ev.events, want)
	}
}
