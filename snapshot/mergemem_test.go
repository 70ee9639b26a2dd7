package snapshot_test

import (
	"fmt"
	"runtime"
	"testing"
	"unsafe"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/snapshot"
)

// TestMergeMemory: merging a large layer allocates, per entry and all
// told (the result list, nodes, maps, their growth), less than five
// entries' worth. A merger copying each entry into its nodes needs about
// seven (the 1 GB bench image's merge peaked at 43 MB of live heap so);
// pointing into the layers' lists, about three. Allocation,
// not time: the same on any machine for one Go release.
func TestMergeMemory(t *testing.T) {
	const dirs, per = 100, 100
	obj := digest.FromString("x")
	dir := func(name string) snapshot.Entry {
		return snapshot.Entry{Entry: cache.Entry{Name: name, Kind: cache.KindDir, Mode: 0o755}}
	}
	file := func(name string) snapshot.Entry {
		return snapshot.Entry{Entry: cache.Entry{Name: name, Kind: cache.KindFile, Mode: 0o644, Size: 1}, Object: obj}
	}
	base := snapshot.Diff{Entries: []snapshot.Entry{dir("srv")}}
	for d := range dirs {
		dn := fmt.Sprintf("srv/d%03d", d)
		base.Entries = append(base.Entries, dir(dn))
		for f := range per {
			base.Entries = append(base.Entries, file(fmt.Sprintf("%s/f%03d", dn, f)))
		}
	}
	top := snapshot.Diff{Entries: []snapshot.Entry{file("srv/d000/f000")}}
	n := len(base.Entries)

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	out, err := snapshot.Merge([]snapshot.Diff{base, top})
	runtime.ReadMemStats(&after)
	if err != nil || len(out) != n {
		t.Fatalf("Merge: %d entries, %v; want %d", len(out), err, n)
	}
	perEntry := (after.TotalAlloc - before.TotalAlloc) / uint64(n)
	if limit := 5 * uint64(unsafe.Sizeof(snapshot.Entry{})); perEntry > limit {
		t.Errorf("merging %d entries allocates %d bytes per entry, more than %d (five entries' worth)", n, perEntry, limit)
	}
	t.Logf("%d bytes per entry", perEntry)
}
