package cache

import (
	"bufio"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
)

// Rebuild is what rebuilding the index from the disk recovered and lost.
type Rebuild struct {
	Damaged  string   `json:"damaged"`  // where the replaced index.db was kept, relative to the store
	Trees    int      `json:"trees"`    // tree records made from trees/ and manifests/
	Machines int      `json:"machines"` // machine records made from machines/NAME/current, one generation each
	Lost     []string `json:"lost"`     // what the disk cannot tell, one line each
}

// rebuild makes a new index from what is on disk, the way a damaged one
// is recovered: every trees/sha256/<hex> whose manifest (manifests/sha256/
// <hex>, named by the same digest) exists and matches the tree becomes a
// tree record; every machines/NAME/current link to such a tree becomes a
// machine with one generation, reason "recovered". History, health, refs,
// pins, leases, layer records and ref records live only in the index:
// they are reported lost, never invented (layers are a cache: dropping
// them costs the next pull a fetch). The old file is kept as index.db.damaged-<time>; the new one is
// built under a temporary name and renamed over index.db, so index.db
// exists at every instant. The caller holds the exclusive store lock.
func (s *Store) rebuild() (*Rebuild, error) {
	rb := &Rebuild{Lost: []string{}}
	recs, err := s.recoverTrees(rb)
	if err != nil {
		return nil, err
	}
	dirs, err := s.recoverLayerDirs(rb, recs)
	if err != nil {
		return nil, err
	}
	machs, err := s.recoverMachines(rb, recs)
	if err != nil {
		return nil, err
	}
	rb.Trees, rb.Machines = len(recs), len(machs)
	if len(machs) > 0 {
		rb.Lost = append(rb.Lost, fmt.Sprintf("the history of %d machine(s): every generation but the current one, health counts, failed marks", len(machs)))
	}
	rb.Lost = append(rb.Lost, "image refs of every tree (the next prepare of an image records its ref again)", "every pin (pin again what gc must keep)", "every lease (imports under way fail and can be run again)",
		"every layer record (a layer cache: the next pull fetches those layers again; gc or verify --repair removes their manifests and objects)",
		"every ref record (the next prepare --pull resolves each reference again)")

	rb.Damaged = "index.db.damaged-" + time.Now().UTC().Format("20060102T150405.000000000Z")
	err = s.db().Replace(filepath.Join(s.root, rb.Damaged), func(t *index.Tx) error {
		for _, r := range recs {
			if err := t.PutTree(r); err != nil {
				return err
			}
		}
		for _, r := range dirs {
			if err := t.PutLayerDir(r); err != nil {
				return err
			}
		}
		for _, m := range machs {
			g, err := t.AppendGeneration(m.name, m.gen)
			if err != nil {
				return err
			}
			if err := t.PutMachine(index.Machine{Name: m.name, Current: g.Number}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rebuild index %s: %w", s.indexPath(), err)
	}
	return rb, nil
}

// recoverTrees returns the record of every tree on disk that matches its
// manifest, and adds the others to rb.Lost.
func (s *Store) recoverTrees(rb *Rebuild) (map[digest.Digest]index.Tree, error) {
	trees, err := s.TreeDigests()
	if err != nil {
		return nil, err
	}
	recs := map[digest.Digest]index.Tree{}
	for _, d := range trees {
		t, why := s.recoverTree(d)
		if why != "" {
			rb.Lost = append(rb.Lost, fmt.Sprintf("tree %s: not recovered: %s (verify --repair removes it as a leftover)", d, why))
			continue
		}
		recs[d] = t
	}
	return recs, nil
}

// recoveredMachine is a machine rebuilt from its current link.
type recoveredMachine struct {
	name string
	gen  index.Generation
}

// recoverMachines returns one generation for every machine whose current
// link names a recovered tree, and adds the others to rb.Lost.
func (s *Store) recoverMachines(rb *Rebuild, trees map[digest.Digest]index.Tree) ([]recoveredMachine, error) {
	ents, err := os.ReadDir(s.MachinesDir())
	if err != nil {
		return nil, fmt.Errorf("machines: %w", err)
	}
	var machs []recoveredMachine
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		name := e.Name()
		d, err := s.ReadMachineLink(name)
		switch _, ok := trees[d]; {
		case errors.Is(err, ErrNotFound):
			rb.Lost = append(rb.Lost, fmt.Sprintf("machine %s: not recovered: it has no current link", name))
			continue
		case err != nil:
			rb.Lost = append(rb.Lost, fmt.Sprintf("%v: not recovered", err))
			continue
		case !ok:
			rb.Lost = append(rb.Lost, fmt.Sprintf("machine %s: not recovered: its current tree %s was not", name, d))
			continue
		}
		when := time.Now().UTC()
		if fi, err := os.Lstat(s.MachineLink(name)); err == nil {
			when = fi.ModTime().UTC()
		}
		machs = append(machs, recoveredMachine{name, index.Generation{Number: 1, Digest: d, Time: when, Reason: "recovered"}})
	}
	return machs, nil
}

// recoverTree makes tree d's record from its manifest, or says why not.
func (s *Store) recoverTree(d digest.Digest) (index.Tree, string) {
	fi, err := os.Stat(s.ManifestPath(d))
	if err != nil {
		return index.Tree{}, "manifest: " + err.Error()
	}
	mf, err := s.OpenManifest(d)
	if err != nil {
		return index.Tree{}, "manifest: " + err.Error()
	}
	defer mf.Close()
	h := sha256.New()
	sc := bufio.NewScanner(io.TeeReader(mf, h))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	t := index.Tree{Digest: d, Refs: []string{}, Created: fi.ModTime().UTC(), LastUsed: fi.ModTime().UTC()}
	for sc.Scan() {
		me, err := ParseManifestLine(sc.Text())
		if err != nil {
			return index.Tree{}, "manifest: " + err.Error()
		}
		t.Files++
		if me.Kind == KindFile {
			t.Bytes += me.Size
		}
	}
	if err := sc.Err(); err != nil {
		return index.Tree{}, "manifest: " + err.Error()
	}
	t.Manifest = hashDigest(h)
	if chains := s.StackLinks(d); len(chains) > 0 {
		// A stack: recovered marked broken until recoverLayerDirs finds
		// every layer directory it names whole (gc and repair keep them
		// meanwhile).
		for _, c := range chains {
			if fi, err := os.Stat(s.LayerDirPath(c)); err != nil || !fi.IsDir() {
				return index.Tree{}, fmt.Sprintf("stack: layer directory %s is missing", c)
			}
		}
		t.Stack, t.Broken = chains, true
		return t, ""
	}
	if probs := s.verifyTree(t, nil); len(probs) > 0 {
		return index.Tree{}, fmt.Sprintf("does not match its manifest (%d problems; first: %s)", len(probs), probs[0])
	}
	return t, ""
}

// recoverLayerDirs makes the records of the layer directories the
// recovered stacks in trees name, and marks a stack sound again once
// every directory it names is matched. A directory's record is lost with
// the index, but its layer manifest is on disk under layers/: the one
// that describes the directory exactly (verify finds no problem, which
// checks every entry, object and whiteout and that nothing else is
// there) is its manifest; its parent is the layer below in the stack and
// the lowest one's diffID is its chain ID (a higher one's diffID is not
// on disk and stays empty: nothing reads it but messages). A directory
// no manifest matches leaves its stacks broken, which the next prepare of
// their image mends by publishing it again; rb.Lost says which.
func (s *Store) recoverLayerDirs(rb *Rebuild, trees map[digest.Digest]index.Tree) ([]index.LayerDir, error) {
	type candidate struct {
		digest digest.Digest
		lm     LayerManifest
	}
	var cands map[int64][]candidate // by entries on disk: entries and whiteouts, not opaque marks
	load := func() error {
		cands = map[int64][]candidate{}
		ms, err := s.LayerManifestDigests()
		if err != nil {
			return err
		}
		for _, m := range ms {
			lm, err := s.readLayerManifest(index.Layer{Manifest: m})
			if err != nil {
				continue // verify --repair reports or removes it
			}
			n := int64(len(lm.Entries))
			for _, w := range lm.Whiteouts {
				if !w.Opaque {
					n++
				}
			}
			cands[n] = append(cands[n], candidate{m, lm})
		}
		return nil
	}
	found := map[digest.Digest]*index.LayerDir{} // nil: no manifest matches
	match := func(chain, parent digest.Digest, lowest bool) (*index.LayerDir, error) {
		if r, ok := found[chain]; ok {
			return r, nil
		}
		if cands == nil {
			if err := load(); err != nil {
				return nil, err
			}
		}
		root := s.LayerDirPath(chain)
		fi, err := os.Stat(root)
		if err != nil {
			found[chain] = nil
			return nil, nil
		}
		var onDisk int64
		_ = filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
			if err == nil {
				onDisk++
			}
			return nil
		})
		rec := index.LayerDir{Chain: chain, Parent: parent, Created: fi.ModTime().UTC()}
		if lowest {
			rec.DiffID = chain
		}
		// The walk counts the directory itself; a manifest lists its
		// root only when the layer does.
		for _, n := range []int64{onDisk, onDisk - 1} {
			for _, c := range cands[n] {
				r := rec
				r.Manifest, r.Files = c.digest, int64(len(c.lm.Entries)+len(c.lm.Whiteouts))
				for _, e := range c.lm.Entries {
					if e.Kind == KindFile {
						r.Bytes += e.Size
					}
				}
				lv := &layerVerdict{objects: map[digest.Digest]bool{}, manifests: map[digest.Digest]bool{}}
				if len(s.verifyLayerDir(r, nil, lv)) == 0 {
					found[chain] = &r
					return &r, nil
				}
			}
		}
		found[chain] = nil
		return nil, nil
	}
	var out []index.LayerDir
	for _, d := range slices.Sorted(maps.Keys(trees)) {
		t := trees[d]
		if len(t.Stack) == 0 {
			continue
		}
		whole := true
		for i, c := range t.Stack {
			parent := digest.Digest("")
			if i > 0 {
				parent = t.Stack[i-1]
			}
			r, err := match(c, parent, i == 0)
			if err != nil {
				return nil, err
			}
			if r == nil {
				whole = false
				rb.Lost = append(rb.Lost, fmt.Sprintf("tree %s: layer directory %s matches no layer manifest on disk: the stack is recovered marked broken, and the next prepare of its image publishes the directory again", d, c))
				break
			}
		}
		if whole {
			t.Broken = false
			trees[d] = t
		}
	}
	for _, c := range slices.Sorted(maps.Keys(found)) {
		if r := found[c]; r != nil {
			out = append(out, *r)
		}
	}
	return out, nil
}
