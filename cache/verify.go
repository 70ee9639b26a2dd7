package cache

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/fsys"
)

// IdentityXattr reports whether xattr name is part of an object's
// identity: the ones an import keeps. Others (an SELinux label the host
// adds, say) are the host's business and ignored by verify.
func IdentityXattr(name string) bool {
	return name == "security.capability" || strings.HasPrefix(name, "user.")
}

// Problem is one inconsistency verify found.
type Problem struct {
	Kind   string        `json:"kind"` // index, tree, object, machine, layer, layerdir
	Digest digest.Digest `json:"digest,omitempty"`
	Path   string        `json:"path,omitempty"`
	Detail string        `json:"detail"`
}

func (p Problem) String() string {
	if p.Kind == "machine" { // a machine is named first, then what its link points at
		what := "machine " + p.Path
		if p.Digest != "" {
			what += " (current " + p.Digest.String() + ")"
		}
		return what + ": " + p.Detail
	}
	what := p.Kind
	if p.Digest != "" {
		what += " " + p.Digest.String()
	}
	if p.Path != "" {
		what += " " + p.Path
	}
	return what + ": " + p.Detail
}

// VerifyReport is what Verify found, and with repair what it mended.
type VerifyReport struct {
	Trees     int       `json:"trees"`
	Objects   int       `json:"objects"`
	Problems  []Problem `json:"problems"`
	Leftovers []string  `json:"leftovers"` // unreferenced files and directories, relative to the store
	Repaired  []string  `json:"repaired,omitempty"`
	Rebuilt   *Rebuild  `json:"rebuilt,omitempty"` // set when --repair rebuilt a damaged index
}

// Verify checks the store: the index is internally consistent; every
// indexed tree (or only those in only) exists and matches its manifest;
// every object hashes to its name, metadata included; and, unless only is
// given, every machine points at an indexed, complete tree that the index
// records as its current generation. It lists unreferenced leftovers. With
// repair, under the exclusive store lock, it removes leftovers and corrupt
// objects and marks broken trees so the next prepare imports them again.
func (s *Store) Verify(ctx context.Context, only []digest.Digest, repair bool) (*VerifyReport, error) {
	lock, err := s.Lock(ctx, repair)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	rep := &VerifyReport{Problems: []Problem{}, Leftovers: []string{}}
	trees, machines, err := s.readIndex(rep, repair)
	if err != nil {
		return nil, err
	}
	indexed := map[digest.Digest]bool{}
	for _, t := range trees {
		indexed[t.Digest] = true
	}
	if len(only) > 0 {
		if trees, err = selectTrees(trees, only); err != nil {
			return nil, err
		}
	}

	// Objects first, in parallel: a tree file linked to a sound object is
	// sound without hashing it again.
	badObjects, nobj, err := s.verifyObjects(ctx, len(only) == 0)
	if err != nil {
		return nil, err
	}
	rep.Objects = nobj
	for d, why := range badObjects {
		rep.Problems = append(rep.Problems, Problem{Kind: "object", Digest: d, Detail: why})
	}
	// Layer directories before the stacks that name them: every one, or
	// with only those the selected stacks name.
	lv := layerVerdict{objects: map[digest.Digest]bool{}, manifests: map[digest.Digest]bool{}}
	var chains []digest.Digest
	if len(only) > 0 {
		chains = []digest.Digest{}
		for _, t := range trees {
			chains = append(chains, t.Stack...)
		}
	}
	ldv, err := s.verifyLayerDirs(rep, chains, badObjects, &lv)
	if err != nil {
		return nil, err
	}
	broken := s.verifyTrees(rep, trees, badObjects, ldv)
	// Machines, layers and leftovers belong to the whole store: verify
	// DIGEST… answers for those trees alone.
	var adopt map[string]digest.Digest
	if len(only) == 0 {
		var mprobs []Problem
		mprobs, adopt = s.verifyMachines(machines, indexed, broken)
		rep.Problems = append(rep.Problems, mprobs...)
		if err = s.verifyLayers(rep, badObjects, &lv); err != nil {
			return nil, err
		}
		if l := s.leftovers(indexed, lv, ldv); l != nil {
			rep.Leftovers = l
		}
	}
	sort.Slice(rep.Problems, func(i, j int) bool { return rep.Problems[i].String() < rep.Problems[j].String() })
	if repair {
		// Corrupt objects first: a layer directory is rebuilt from sound
		// ones only.
		for d := range badObjects {
			if err := os.Remove(s.ObjectPath(d)); err == nil {
				rep.Repaired = append(rep.Repaired, "removed corrupt object "+d.String())
			}
		}
		if err := s.repairLayerDirs(ctx, rep, trees, ldv, broken); err != nil {
			return rep, err
		}
		if err := s.repair(ctx, rep, broken, adopt, lv.bad); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// layerVerdict is what verifyLayers learnt: the layers with a problem,
// and what the sound layers and layer directories keep (their objects
// and manifests), which are no leftovers even when no tree links them.
type layerVerdict struct {
	bad       []digest.Digest
	objects   map[digest.Digest]bool
	manifests map[digest.Digest]bool
}

// verifyLayers checks every layer record into rep: its manifest exists
// and hashes to what the record says, and every object it lists exists
// and is sound. A layer is only a cache: repair drops the records of bad
// ones, and the next pull fetches those layers again.
func (s *Store) verifyLayers(rep *VerifyReport, badObjects map[digest.Digest]string, lv *layerVerdict) error {
	var layers []index.Layer
	if err := s.View(func(tx *index.Tx) (err error) { layers, err = tx.Layers(); return err }); err != nil {
		return err
	}
	for _, rec := range layers {
		bad := func(format string, args ...any) {
			rep.Problems = append(rep.Problems, Problem{Kind: "layer", Digest: rec.DiffID, Detail: fmt.Sprintf(format, args...) + "; verify --repair drops the record (the next pull fetches the layer again)"})
		}
		l, err := s.readLayerManifest(rec)
		if err != nil {
			bad("%v", err)
			lv.bad = append(lv.bad, rec.DiffID)
			continue
		}
		why := ""
		for _, e := range l.Entries {
			if e.Kind != KindFile || e.Size == 0 {
				continue // an empty file has no object
			}
			if w, ok := badObjects[e.Object]; ok {
				why = fmt.Sprintf("entry %q: object %s is corrupt: %s", e.Name, e.Object, w)
			} else if _, err := os.Lstat(s.ObjectPath(e.Object)); err != nil {
				why = fmt.Sprintf("entry %q: object %s is missing", e.Name, e.Object)
			}
			if why != "" {
				break
			}
		}
		if why != "" {
			bad("%s", why)
			lv.bad = append(lv.bad, rec.DiffID)
			continue
		}
		lv.manifests[rec.Manifest] = true
		for _, e := range l.Entries {
			if e.Kind == KindFile {
				lv.objects[e.Object] = true
			}
		}
	}
	return nil
}

// readIndex reads the trees and machines Verify checks, and the index's
// own problems into rep. With repair, an index that is damaged or has
// problems is rebuilt from the disk first (rep.Rebuilt) and read again;
// without, a damaged index is an error wrapping index.ErrDamaged.
func (s *Store) readIndex(rep *VerifyReport, repair bool) ([]index.Tree, map[string]indexedMachine, error) {
	var trees []index.Tree
	var machines map[string]indexedMachine
	read := func() error {
		return s.View(func(tx *index.Tx) error {
			for _, e := range tx.Check() {
				rep.Problems = append(rep.Problems, Problem{Kind: "index", Detail: e.Error()})
			}
			var err error
			if trees, err = tx.Trees(); err != nil {
				return err
			}
			machines, err = readMachines(tx)
			return err
		})
	}
	err := read()
	if errors.Is(err, index.ErrDamaged) && !repair {
		return nil, nil, err
	}
	if errors.Is(err, index.ErrDamaged) || (err == nil && repair && len(rep.Problems) > 0) {
		// The index cannot be trusted: make a new one from the disk, then
		// verify the store against that.
		if err != nil {
			rep.Problems = append(rep.Problems, Problem{Kind: "index", Detail: err.Error()})
		}
		if rep.Rebuilt, err = s.rebuild(); err != nil {
			return nil, nil, err
		}
		err = read()
	}
	return trees, machines, err
}

// selectTrees returns the trees named in only, in only's order; a digest
// the index lacks is an error wrapping ErrNotFound.
func selectTrees(trees []index.Tree, only []digest.Digest) ([]index.Tree, error) {
	var sel []index.Tree
	for _, d := range only {
		found := false
		for _, t := range trees {
			if t.Digest == d {
				sel, found = append(sel, t), true
			}
		}
		if !found {
			return nil, fmt.Errorf("tree %s: %w", d, ErrNotFound)
		}
	}
	return sel, nil
}

// verifyTrees checks each tree into rep and returns the broken ones:
// marked broken already, or with a problem now.
func (s *Store) verifyTrees(rep *VerifyReport, trees []index.Tree, badObjects map[digest.Digest]string, ldv layerDirVerdict) map[digest.Digest]bool {
	broken := map[digest.Digest]bool{}
	for _, t := range trees {
		rep.Trees++
		if t.Broken {
			rep.Problems = append(rep.Problems, Problem{Kind: "tree", Digest: t.Digest, Detail: "marked broken; the next prepare imports it again"})
			broken[t.Digest] = true
			continue
		}
		check := func() []Problem { return s.verifyTree(t, badObjects) }
		if len(t.Stack) > 0 {
			check = func() []Problem { return s.verifyStack(t, ldv) }
		}
		for _, p := range check() {
			rep.Problems = append(rep.Problems, p)
			broken[t.Digest] = true
		}
	}
	return broken
}

// ObjectDigest computes the name a file deserves as an object, from its
// metadata and content.
func ObjectDigest(p string) (digest.Digest, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := fsys.Fstat(f)
	if err != nil {
		return "", err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return "", fmt.Errorf("%s: not a regular file", p)
	}
	xs, err := fsys.Xattrs(f)
	if err != nil {
		return "", err
	}
	for k := range xs {
		if !IdentityXattr(k) {
			delete(xs, k)
		}
	}
	e := Entry{Mode: st.Mode & 0o7777, UID: int(st.Uid), GID: int(st.Gid), ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec), Xattrs: xs}
	h := objectHasher(&e)
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hashDigest(h), nil
}

func (s *Store) verifyObjects(ctx context.Context, all bool) (map[digest.Digest]string, int, error) {
	dir := filepath.Join(s.root, "objects", "sha256")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, err
	}
	bad := map[digest.Digest]string{}
	var mu sync.Mutex
	work := make(chan string)
	var wg sync.WaitGroup
	for i := 0; i < runtime.NumCPU(); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				want := digest.NewDigestFromEncoded(digest.SHA256, name)
				why := ""
				if want.Validate() != nil {
					why = "name is not a sha256 digest"
				} else if got, err := ObjectDigest(filepath.Join(dir, name)); err != nil {
					why = err.Error()
				} else if got != want {
					why = "content or metadata changed: hashes to " + got.String()
				}
				if why != "" {
					mu.Lock()
					bad[want] = why
					mu.Unlock()
				}
			}
		}()
	}
	for _, e := range ents {
		if ctx.Err() != nil {
			break
		}
		work <- e.Name()
	}
	close(work)
	wg.Wait()
	return bad, len(ents), ctx.Err()
}

// verifyTree compares tree t with its manifest, entry by entry.
func (s *Store) verifyTree(t index.Tree, badObjects map[digest.Digest]string) []Problem {
	var out []Problem
	bad := func(path, format string, args ...any) {
		out = append(out, Problem{Kind: "tree", Digest: t.Digest, Path: path, Detail: fmt.Sprintf(format, args...)})
	}
	root := s.TreePath(t.Digest)
	if fi, err := os.Lstat(root); err != nil || !fi.IsDir() {
		bad("", "tree directory missing")
		return out
	}
	mf, err := s.OpenManifest(t.Digest)
	if err != nil {
		bad("", "manifest: %v", err)
		return out
	}
	defer mf.Close()
	h := sha256.New()
	sc := bufio.NewScanner(io.TeeReader(mf, h))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := int64(0)
	for sc.Scan() {
		me, err := ParseManifestLine(sc.Text())
		if err != nil {
			bad("", "manifest: %v", err)
			return out
		}
		n++
		if me.Kind == KindDir && me.Name == "." {
			continue
		}
		if detail := s.checkEntry(root, me, badObjects); detail != "" {
			bad(me.Name, "%s", detail)
		}
	}
	if err := sc.Err(); err != nil {
		bad("", "manifest: %v", err)
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != t.Manifest {
		bad("", "manifest hashes to %s, index says %s", got, t.Manifest)
	}
	if n != t.Files {
		bad("", "manifest lists %d entries, index says %d", n, t.Files)
	}
	// Anything in the tree the manifest does not list, and every
	// directory that cannot be read.
	count := int64(0)
	filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			rel, _ := filepath.Rel(root, p)
			bad(rel, "unreadable: %v", err)
			return nil
		}
		count++
		return nil
	})
	if count-1 > t.Files { // the root itself is not always listed
		bad("", "tree has %d entries, manifest %d", count-1, t.Files)
	}
	return out
}

// checkEntry compares manifest entry me with the file it names under
// root, and says how they differ, or "" if they agree.
func (s *Store) checkEntry(root string, me ManifestEntry, badObjects map[digest.Digest]string) string {
	p := filepath.Join(root, me.Name)
	st, err := fsys.Lstat(p)
	if err != nil {
		return fmt.Sprintf("missing: %v", err)
	}
	switch me.Kind {
	case KindHardlink:
		if tst, err := fsys.Lstat(filepath.Join(root, me.Linkname)); err != nil || tst.Ino != st.Ino {
			return fmt.Sprintf("no longer a hard link to %s", me.Linkname)
		}
		return ""
	case KindFile:
		return s.checkFile(p, st, me, badObjects)
	}
	wantType := map[Kind]uint32{KindDir: syscall.S_IFDIR, KindSymlink: syscall.S_IFLNK, KindChar: syscall.S_IFCHR, KindBlock: syscall.S_IFBLK, KindFIFO: syscall.S_IFIFO}
	if st.Mode&syscall.S_IFMT != wantType[me.Kind] {
		return "type changed"
	}
	if me.Kind == KindSymlink {
		if target, _ := os.Readlink(p); target != me.Linkname {
			return fmt.Sprintf("symlink points at %q, want %q", target, me.Linkname)
		}
	} else if st.Mode&0o7777 != me.Mode || int(st.Uid) != me.UID || int(st.Gid) != me.GID {
		return fmt.Sprintf("mode or owner changed: %o %d:%d, want %o %d:%d", st.Mode&0o7777, st.Uid, st.Gid, me.Mode, me.UID, me.GID)
	}
	return ""
}

// checkFile compares regular file p (stat st) with its object: the same
// inode, which Verify hashed already, or the same content and metadata.
func (s *Store) checkFile(p string, st fsys.Stat, me ManifestEntry, badObjects map[digest.Digest]string) string {
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return "not a regular file"
	}
	if why, ok := badObjects[me.Object]; ok {
		return fmt.Sprintf("object %s is corrupt: %s", me.Object, why)
	}
	if ost, err := fsys.Lstat(s.ObjectPath(me.Object)); err == nil && ost.Ino == st.Ino {
		return "" // the object was hashed above
	}
	if got, err := ObjectDigest(p); err != nil || got != me.Object {
		return fmt.Sprintf("content or metadata differ from object %s", me.Object)
	}
	return ""
}

// indexedMachine is what the index says of a machine's current tree.
type indexedMachine struct {
	current uint64
	digest  digest.Digest // of the current generation; "" if the index has none
}

func readMachines(tx *index.Tx) (map[string]indexedMachine, error) {
	ms, err := tx.Machines()
	if err != nil {
		return nil, err
	}
	out := map[string]indexedMachine{}
	for _, m := range ms {
		im := indexedMachine{current: m.Current}
		if g, err := tx.Generation(m.Name, m.Current); err == nil {
			im.digest = g.Digest
		} else if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		out[m.Name] = im
	}
	return out, nil
}

// verifyMachines compares every machine's link with the disk and the
// index: a machine the index records or the disk has (machines/NAME/)
// must have a well-formed link to a complete, indexed tree, and the
// index's current generation must be that tree. It returns the machines
// whose link repair may adopt into the index (link ahead of the index).
func (s *Store) verifyMachines(machines map[string]indexedMachine, indexed, broken map[digest.Digest]bool) ([]Problem, map[string]digest.Digest) {
	var out []Problem
	adopt := map[string]digest.Digest{}
	names := map[string]bool{}
	for name := range machines {
		names[name] = true
	}
	ents, _ := os.ReadDir(s.MachinesDir())
	for _, e := range ents {
		names[e.Name()] = true
	}
	for name := range names {
		bad := func(d digest.Digest, format string, args ...any) {
			out = append(out, Problem{Kind: "machine", Path: name, Digest: d, Detail: fmt.Sprintf(format, args...)})
		}
		im, known := machines[name]
		d, err := s.ReadMachineLink(name)
		switch {
		case errors.Is(err, ErrNotFound) && known && im.current == 0:
			continue // declared (unit --auto-update) and never activated
		case errors.Is(err, ErrNotFound) && known:
			bad(im.digest, "the index records generation %d but %s is missing; `rootswap activate %s %s` points it again", im.current, s.MachineLink(name), name, im.digest)
			continue
		case errors.Is(err, ErrNotFound):
			continue // a directory left without a link: nothing runs from it
		case err != nil:
			bad("", "%s", strings.TrimPrefix(err.Error(), "machine "+name+": "))
			continue
		}
		if fi, err := os.Stat(s.TreePath(d)); err != nil || !fi.IsDir() {
			bad(d, "current points at a tree that is missing")
			continue
		}
		switch {
		case !indexed[d]:
			bad(d, "current points at a tree the index does not have")
			continue
		case broken[d]:
			bad(d, "current points at a broken tree")
			continue
		}
		const fix = "the next prepare or activate of the machine reconciles; verify --repair adopts the link"
		switch {
		case !known:
			bad(d, "current exists but the index has no record of the machine (a crash after its first flip): %s", fix)
			adopt[name] = d
		case im.digest != d:
			bad(d, "the index's current generation %d is %s (a crash or a full disk between the index commit and the flip): %s", im.current, im.digest, fix)
			adopt[name] = d
		}
	}
	return out, adopt
}

// leftovers lists what no index record, machine or live process needs:
// unindexed trees and manifests, unrecorded layer directories, layer
// manifests no sound layer or layer directory record names, staging whose lock is free, and objects no tree links (link
// count 1) and no sound layer lists.
func (s *Store) leftovers(indexed map[digest.Digest]bool, lv layerVerdict, ldv layerDirVerdict) []string {
	var out []string
	// A layer directory a stack on disk links to is no leftover, recorded
	// or not (an index rebuilt from the disk has no layer directory
	// records: the next import of the image publishes them again).
	linked := map[digest.Digest]bool{}
	trees, _ := s.TreeDigests()
	for _, d := range trees {
		for _, c := range s.StackLinks(d) {
			linked[c] = true
		}
	}
	ldirs, _ := os.ReadDir(filepath.Join(s.root, "layerdirs", "sha256"))
	for _, e := range ldirs {
		c := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		if _, ok := ldv.recs[c]; !ok && !linked[c] {
			out = append(out, filepath.Join("layerdirs", "sha256", e.Name()))
		}
	}
	for _, kind := range []string{"trees", "manifests"} {
		ents, _ := os.ReadDir(filepath.Join(s.root, kind, "sha256"))
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".#") {
				continue // systemd-nspawn's lock on a tree it runs: .#<hex>.lck
			}
			if !indexed[digest.NewDigestFromEncoded(digest.SHA256, e.Name())] {
				out = append(out, filepath.Join(kind, "sha256", e.Name()))
			}
		}
	}
	lmfs, _ := os.ReadDir(filepath.Join(s.root, "layers", "sha256"))
	for _, e := range lmfs {
		if !lv.manifests[digest.NewDigestFromEncoded(digest.SHA256, e.Name())] {
			out = append(out, filepath.Join("layers", "sha256", e.Name()))
		}
	}
	dead, _ := s.DeadStaging()
	for _, id := range dead {
		out = append(out, filepath.Join("tmp", id))
	}
	dir := filepath.Join(s.root, "objects", "sha256")
	objs, _ := os.ReadDir(dir)
	for _, e := range objs {
		if lv.objects[digest.NewDigestFromEncoded(digest.SHA256, e.Name())] {
			continue
		}
		if st, err := fsys.Lstat(filepath.Join(dir, e.Name())); err == nil && st.Nlink == 1 {
			out = append(out, filepath.Join("objects", "sha256", e.Name()))
		}
	}
	sort.Strings(out)
	return out
}

// repairLayerDirs rebuilds each damaged layer directory from its
// manifest and objects; one that cannot be (its manifest or an object is
// gone) is removed, record first, so that the next import of an image
// that stacks it publishes it again from its layers. A stack whose only
// damage was a layer directory rebuilt here is no longer broken.
func (s *Store) repairLayerDirs(ctx context.Context, rep *VerifyReport, trees []index.Tree, ldv layerDirVerdict, broken map[digest.Digest]bool) error {
	if len(ldv.bad) == 0 {
		return nil
	}
	var dropped []digest.Digest
	fixed := layerDirVerdict{recs: ldv.recs, bad: map[digest.Digest]string{}}
	for c, why := range ldv.bad {
		if err := s.rebuildLayerDir(ctx, ldv.recs[c]); err != nil {
			dropped = append(dropped, c)
			fixed.bad[c] = why
			continue
		}
		rep.Repaired = append(rep.Repaired, "rebuilt layer directory "+c.String()+" from its manifest")
	}
	if err := s.RemoveLayerDirs(ctx, dropped); err != nil {
		return err
	}
	for _, c := range dropped {
		rep.Repaired = append(rep.Repaired, "removed damaged layer directory "+c.String()+" (the next prepare publishes it again)")
	}
	for _, t := range trees {
		if broken[t.Digest] && !t.Broken && len(t.Stack) > 0 && len(s.verifyStack(t, fixed)) == 0 {
			delete(broken, t.Digest)
		}
	}
	return nil
}

func (s *Store) repair(ctx context.Context, rep *VerifyReport, broken map[digest.Digest]bool, adopt map[string]digest.Digest, badLayers []digest.Digest) error {
	// Bad layer records go: a layer is a cache. Their manifests and the
	// objects only they listed are leftovers already, removed below.
	if len(badLayers) > 0 {
		err := s.Update(func(tx *index.Tx) error {
			for _, d := range badLayers {
				if err := tx.DeleteLayer(d); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, d := range badLayers {
			rep.Repaired = append(rep.Repaired, "dropped layer record "+d.String())
		}
	}
	if len(adopt) > 0 {
		now := time.Now().UTC()
		err := s.Update(func(tx *index.Tx) error {
			for name, d := range adopt {
				if err := tx.AdoptLink(name, d, now); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for name, d := range adopt {
			rep.Repaired = append(rep.Repaired, fmt.Sprintf("machine %s: the index adopts its current link to %s", name, d))
		}
	}
	// Corrupt objects have left objects/ (Verify) so that a re-import
	// writes them anew; every tree that names one is broken.
	if len(broken) > 0 {
		err := s.Update(func(tx *index.Tx) error {
			for d := range broken {
				t, err := tx.Tree(d)
				if err != nil {
					continue
				}
				t.Broken = true
				if err := tx.PutTree(t); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for d := range broken {
			rep.Repaired = append(rep.Repaired, "marked tree "+d.String()+" broken")
		}
	}
	if err := s.CleanTmp(ctx); err != nil {
		return err
	}
	for _, l := range rep.Leftovers {
		if strings.HasPrefix(l, "trees/") && s.machineUses(filepath.Base(l)) {
			continue // an unindexed tree a machine still runs is not ours to delete
		}
		if err := os.RemoveAll(filepath.Join(s.root, l)); err == nil {
			rep.Repaired = append(rep.Repaired, "removed "+l)
		}
	}
	sort.Strings(rep.Repaired)
	return nil
}

func (s *Store) machineUses(hex string) bool {
	ents, _ := os.ReadDir(s.MachinesDir())
	for _, e := range ents {
		if d, err := s.ReadMachineLink(e.Name()); err == nil && d.Encoded() == hex {
			return true
		}
	}
	return false
}
