package snapshot

import (
	"cmp"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/rootswap/rootswap/cache"
)

// Merge flattens layers, lowest first, into the entries of the tree the
// image means, as an overlay mount of them would show it. It is pure: no
// object is read. Within each layer its whiteouts apply first, to the
// lower layers only (a whiteout never removes its own layer's entry),
// then its entries in archive order:
//
//   - a whiteout removes what lower layers had at its name, subtree and
//     all; an opaque marker removes the lower children of its directory;
//   - a directory over a lower directory takes its metadata and keeps the
//     lower children; any other entry replaces the lower one, subtree and
//     all;
//   - a hard link joins its target's hard-link group as the target is at
//     that point, metadata and object (its own header's metadata is
//     ignored, as the kernel would), so a later layer rewriting one name
//     of a group leaves the others as they were.
//
// Refused, wrapping ErrUnsafeEntry and naming the layer (1 is the lowest)
// and the entry: an entry whose parent is missing or not a directory, and
// above all one under a lower layer's symlink, and a whiteout or opaque
// marker under one, as a real overlay would write through it, outside
// the tree; a hard link to a name that is not a regular file or symlink
// at that point, or that a whiteout removed; a name that is not clean
// (layers from ReadDiff never have one).
//
// The result is in parents-first order (each directory before its
// children, siblings by byte order), the same for the same layers. Every
// hard-link group surviving the merge is written as its first name in
// that order, a regular file or symlink, and the others as hard links to
// it; a group member whose target name was replaced or removed later is
// thus a regular file with the group's object. The root "." is listed
// only if a layer has an entry for it.
func Merge(layers []Diff) ([]Entry, error) {
	m := newMerger()
	for i := range layers {
		if err := m.apply(&layers[i]); err != nil {
			return nil, err
		}
	}
	return m.result(), nil
}

// inode is what the names of a hard-link group share: the entry that
// made it, a file or symlink with its metadata and object (for any other
// kind, the node's own entry). It points into the entry list of the
// layer the entry came from, which the merger never writes: a merged
// tree then costs a pointer per name, not a copy of each entry.
type inode struct {
	e      *Entry
	leader string // the group's first name in result's order, once result met it
}

// node is one name of the merged tree.
type node struct {
	ino      *inode          // every node has one; only files and symlinks share theirs
	kids     map[string]bool // a directory's children, by full name
	layer    int32           // the layer whose entry made it (-1: the implicit root)
	implicit bool            // the root no layer has listed yet
}

func (n *node) kind() cache.Kind { return n.ino.e.Kind }

// merger is Merge one layer at a time: apply each layer, lowest first,
// then take the result. A layer's entry list must stay unchanged while
// the merger lives; the caller may drop its own reference once applied.
type merger struct {
	nodes map[string]*node
	gone  map[string]int // names a whiteout removed, and which layer's
	ids   []string       // the diffIDs of the layers so far
	layer int
	diff  *Diff
}

func newMerger() *merger {
	root := &node{layer: -1, implicit: true, ino: &inode{e: &Entry{Entry: cache.Entry{Name: ".", Kind: cache.KindDir}}}, kids: map[string]bool{}}
	return &merger{nodes: map[string]*node{".": root}, gone: map[string]int{}, layer: -1}
}

func (m *merger) layerName(i int) string {
	if id := m.ids[i]; id != "" {
		return fmt.Sprintf("layer %d (%s)", i+1, id)
	}
	return fmt.Sprintf("layer %d", i+1)
}

func (m *merger) refuse(what, name, why string) error {
	return fmt.Errorf("%s: %s %q: %s: %w", m.layerName(m.layer), what, name, why, ErrUnsafeEntry)
}

// apply merges the next layer, d, over the layers applied so far.
func (m *merger) apply(d *Diff) error {
	m.layer++
	m.diff = d
	m.ids = append(m.ids, string(d.ID))
	var own map[string]cache.Kind // only whiteouts need it, and most layers have none
	if len(d.Whiteouts) > 0 {
		own = make(map[string]cache.Kind, len(d.Entries))
	}
	for i := range d.Entries {
		e := &d.Entries[i]
		if !cleanRel(e.Name) {
			return m.refuse("entry", e.Name, "name is not clean")
		}
		if own != nil {
			own[e.Name] = e.Kind
		}
	}
	for _, w := range d.Whiteouts {
		if err := m.whiteout(w, own); err != nil {
			return err
		}
	}
	for i := range d.Entries {
		if err := m.add(&d.Entries[i]); err != nil {
			return err
		}
	}
	return nil
}

// whiteout applies w to the lower layers. own holds the kinds of the
// layer's entries: a directory of its own where a lower layer had a
// symlink replaces the symlink, so nothing below it is reached through it.
func (m *merger) whiteout(w Whiteout, own map[string]cache.Kind) error {
	what := "whiteout"
	dir := path.Dir(w.Name)
	if w.Opaque {
		what, dir = "opaque marker in", w.Name
	}
	if !cleanRel(w.Name) || (!w.Opaque && w.Name == ".") {
		return m.refuse(what, w.Name, "name is not clean")
	}
	for _, a := range ancestors(dir) {
		if k, ok := own[a]; ok {
			if k != cache.KindDir {
				return m.refuse(what, w.Name, fmt.Sprintf("%q is not a directory in this layer", a))
			}
			continue
		}
		n := m.nodes[a]
		switch {
		case n == nil:
			return nil // nothing below to remove
		case n.kind() == cache.KindSymlink:
			return m.refuse(what, w.Name, fmt.Sprintf("%q is a symlink from %s: a whiteout there would act outside the tree", a, m.layerName(int(n.layer))))
		case n.kind() != cache.KindDir:
			return nil
		}
	}
	if !w.Opaque {
		if m.nodes[w.Name] != nil {
			m.remove(w.Name, true)
		}
		return nil
	}
	if n := m.nodes[w.Name]; n != nil && n.kind() == cache.KindDir {
		for _, k := range slices.Sorted(maps.Keys(n.kids)) {
			m.remove(k, true)
		}
	}
	return nil
}

// add applies the layer's entry e: it replaces what the merged tree holds
// at its name (a directory over a directory keeps its children), or
// refuses e, naming its layer, when the merged tree cannot take it.
func (m *merger) add(e *Entry) error {
	switch {
	case e.Name == "." && e.Kind != cache.KindDir:
		return m.refuse("entry", e.Name, "root entry is not a directory")
	case e.Kind == cache.KindFile && !cache.ValidDigest(e.Object):
		return m.refuse("entry", e.Name, "regular file without a valid object")
	}
	if err := m.checkParents(e.Name); err != nil {
		return err
	}
	old := m.nodes[e.Name]
	if old != nil && int(old.layer) == m.layer && !old.implicit {
		return m.refuse("entry", e.Name, "duplicate entry")
	}
	if old != nil && old.kind() == cache.KindDir && e.Kind == cache.KindDir {
		old.ino.e, old.layer, old.implicit = e, int32(m.layer), false
		return nil
	}
	n := &node{layer: int32(m.layer)}
	switch e.Kind {
	case cache.KindHardlink:
		ino, err := m.linkTarget(e)
		if err != nil {
			return err
		}
		n.ino = ino
	case cache.KindFile, cache.KindSymlink, cache.KindChar, cache.KindBlock, cache.KindFIFO:
		n.ino = &inode{e: e}
	case cache.KindDir:
		n.ino, n.kids = &inode{e: e}, map[string]bool{}
	default:
		return m.refuse("entry", e.Name, fmt.Sprintf("unknown kind %q", e.Kind))
	}
	if old != nil {
		m.remove(e.Name, false)
	}
	m.nodes[e.Name] = n
	delete(m.gone, e.Name)
	if e.Name != "." {
		m.nodes[path.Dir(e.Name)].kids[e.Name] = true
	}
	return nil
}

// checkParents refuses the entry name unless every ancestor of it is a
// directory of the merged tree (a symlink among them would lead writes
// out of the tree).
func (m *merger) checkParents(name string) error {
	for _, a := range ancestors(path.Dir(name)) {
		n := m.nodes[a]
		switch {
		case n == nil:
			return m.refuse("entry", name, fmt.Sprintf("parent %q does not exist", a))
		case n.kind() == cache.KindSymlink:
			return m.refuse("entry", name, fmt.Sprintf("parent %q is a symlink from %s: writing through it would leave the tree", a, m.layerName(int(n.layer))))
		case n.kind() != cache.KindDir:
			return m.refuse("entry", name, fmt.Sprintf("parent %q is not a directory", a))
		}
	}
	return nil
}

// linkTarget returns the inode the hard link e shares: that of its target,
// a regular file or symlink of the merged tree. A target that is unclean,
// missing (saying so when a whiteout removed it), e itself or of another
// kind is refused.
func (m *merger) linkTarget(e *Entry) (*inode, error) {
	if !cleanRel(e.Linkname) {
		return nil, m.refuse("entry", e.Name, fmt.Sprintf("hard link target %q is not clean", e.Linkname))
	}
	t := m.nodes[e.Linkname]
	if t == nil {
		if l, ok := m.gone[e.Linkname]; ok {
			return nil, m.refuse("entry", e.Name, fmt.Sprintf("hard link to %q, which a whiteout in %s removed", e.Linkname, m.layerName(l)))
		}
		return nil, m.refuse("entry", e.Name, fmt.Sprintf("hard link to %q, which does not exist", e.Linkname))
	}
	if k := t.kind(); (k != cache.KindFile && k != cache.KindSymlink) || e.Linkname == e.Name {
		return nil, m.refuse("entry", e.Name, fmt.Sprintf("hard link to %q, which is not a regular file or symlink", e.Linkname))
	}
	return t.ino, nil
}

// remove deletes name and its subtree; byWhiteout records them as gone.
func (m *merger) remove(name string, byWhiteout bool) {
	n := m.nodes[name]
	for k := range n.kids {
		m.remove(k, byWhiteout)
	}
	delete(m.nodes, name)
	if byWhiteout {
		m.gone[name] = m.layer
	}
	if name != "." {
		delete(m.nodes[path.Dir(name)].kids, name)
	}
}

// result lists the merged tree; see Merge.
func (m *merger) result() []Entry {
	names := slices.SortedFunc(maps.Keys(m.nodes), parentsFirst)
	out := make([]Entry, 0, len(names))
	for _, name := range names {
		n := m.nodes[name]
		switch k := n.kind(); {
		case n.implicit:
			continue
		case k != cache.KindFile && k != cache.KindSymlink:
			out = append(out, *n.ino.e)
			continue
		}
		e := *n.ino.e
		e.Name = name
		if l := n.ino.leader; l != "" {
			e.Kind, e.Linkname, e.Size, e.Object, e.Xattrs = cache.KindHardlink, l, 0, "", nil
		} else {
			n.ino.leader = name
		}
		out = append(out, e)
	}
	return out
}

// parentsFirst orders names so that a directory comes before everything
// below it: byte order, with "/" lowest ("." is first of all).
func parentsFirst(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == ".":
		return -1
	case b == ".":
		return 1
	}
	for i := 0; i < len(a) && i < len(b); i++ {
		ca, cb := a[i], b[i]
		switch {
		case ca == cb:
			continue
		case ca == '/':
			return -1
		case cb == '/':
			return 1
		}
		return cmp.Compare(ca, cb)
	}
	return cmp.Compare(len(a), len(b))
}

// ancestors lists the directories from the top down to dir, dir included
// and "." excluded.
func ancestors(dir string) []string {
	if dir == "." {
		return nil
	}
	var out []string
	for i := range len(dir) {
		if dir[i] == '/' {
			out = append(out, dir[:i])
		}
	}
	return append(out, dir)
}

// cleanRel reports whether name is what cleanName makes: relative, clean,
// inside the tree.
func cleanRel(name string) bool {
	if name == "." {
		return true
	}
	if name == "" || name[0] == '/' || path.Clean(name) != name || strings.IndexByte(name, 0) >= 0 {
		return false
	}
	return name != ".." && !strings.HasPrefix(name, "../")
}
