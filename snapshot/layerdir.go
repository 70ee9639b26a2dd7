package snapshot

import (
	"maps"
	"path"
	"slices"

	"github.com/rootswap/rootswap/cache"
)

// LayerDirs returns, for each layer of ds (lowest first), what its
// directory must hold so that overlayfs, stacking the directories, shows
// exactly the tree Merge makes of ds (issue 19: a layer is a directory).
// Each list is the layer's own entries in archive order, with:
//
//   - a directory the layer does not list but puts something under (or a
//     whiteout in) made from the lower layers' one, so overlayfs merges
//     it with their metadata, as Merge keeps it;
//   - a hard link to a lower layer's name made a copy of that name's
//     entry: a regular file names the same object, so both are links of
//     one inode again; a symlink is copied;
//   - whiteouts left as whiteouts (the store writes them as 0:0
//     character devices) and opaque markers as opaque directories.
//
// The layers are checked as Merge checks them, and refused with the same
// errors. A directory holds what its layer means over these lower layers:
// the same layer over other ones (another base image) may need another
// directory, which is why a directory is named by the layer's chain ID.
func LayerDirs(ds []Diff) ([]cache.LayerDir, error) {
	m := newMerger()
	out := make([]cache.LayerDir, len(ds))
	for i := range ds {
		out[i] = layerDir(m, &ds[i])
		if err := m.apply(&ds[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// layerDir lists d's directory over the lower layers merged into m.
// Anything layerDir cannot make sense of, apply refuses right after.
func layerDir(m *merger, d *Diff) cache.LayerDir {
	var l cache.LayerDir
	made := map[string]int{} // names in the directory so far: their index in l.Entries
	// The directory's root is the merged root's, unless the layer lists
	// one: overlayfs shows the topmost layer's.
	if root := m.nodes["."]; !root.implicit {
		made["."] = 0
		l.Entries = append(l.Entries, *root.ino.e)
	}
	// parents makes every ancestor of name that the layer has not made
	// yet from the lower layers' directory, or, if there is none, a
	// placeholder that the layer's own entry later replaces (else apply
	// refuses the layer).
	var parents func(name string)
	parents = func(name string) {
		dir := path.Dir(name)
		if _, ok := made[dir]; ok || name == "." || dir == "." {
			return
		}
		parents(dir)
		e := cache.ManifestEntry{Entry: cache.Entry{Name: dir, Kind: cache.KindDir, Mode: 0o755}}
		if n := m.nodes[dir]; n != nil && n.kind() == cache.KindDir {
			e = *n.ino.e
			e.Name = dir
		}
		made[dir] = len(l.Entries)
		l.Entries = append(l.Entries, e)
	}
	for i := range d.Entries {
		e := d.Entries[i]
		parents(e.Name)
		if j, ok := made[e.Name]; ok && e.Kind == cache.KindDir {
			l.Entries[j] = e // the layer's own directory over a placeholder
			continue
		}
		if e.Kind == cache.KindHardlink {
			if _, ok := made[e.Linkname]; !ok {
				if n := m.nodes[e.Linkname]; n != nil && (n.kind() == cache.KindFile || n.kind() == cache.KindSymlink) {
					c := *n.ino.e
					c.Name = e.Name
					e = c
				}
			}
		}
		made[e.Name] = len(l.Entries)
		l.Entries = append(l.Entries, e)
	}
	// A whiteout or opaque marker where the merged tree has no directory
	// to act in acts on nothing (as in Merge): the directory gets none,
	// rather than a directory the merged tree lacks.
	isDir := func(dir string) bool {
		for _, a := range ancestors(dir) {
			if j, ok := made[a]; ok {
				if l.Entries[j].Kind != cache.KindDir {
					return false
				}
				continue
			}
			if n := m.nodes[a]; n == nil || n.kind() != cache.KindDir {
				return false
			}
		}
		return true
	}
	// A whiteout is written only where a lower layer has something to
	// hide: in a directory no lower layer has, overlayfs passes readdir
	// through and would list it.
	for _, w := range d.Whiteouts {
		switch {
		case w.Opaque && w.Name == ".":
			// overlayfs reads no opaque mark on a layer's root: each lower
			// top-level name is hidden by itself, a directory of the layer's
			// own by making it opaque.
			for _, k := range slices.Sorted(maps.Keys(m.nodes["."].kids)) {
				switch j, ok := made[k]; {
				case !ok:
					l.Whiteouts = append(l.Whiteouts, k)
				case l.Entries[j].Kind == cache.KindDir:
					l.Opaque = append(l.Opaque, k)
				}
			}
		case w.Opaque && isDir(w.Name):
			parents(w.Name + "/-")
			l.Opaque = append(l.Opaque, w.Name)
		case !w.Opaque && isDir(path.Dir(w.Name)) && m.nodes[w.Name] != nil:
			parents(w.Name)
			l.Whiteouts = append(l.Whiteouts, w.Name)
		}
	}
	return l
}
