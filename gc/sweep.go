package gc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/activate"
	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/failpoint"
	"github.com/rootswap/rootswap/internal/fsys"
)

// DefaultKeep is how many generations of each machine keep their trees:
// the current one and two to roll back to.
const DefaultKeep = 3

// procDir is where the kernel shows processes; a variable for tests only.
var procDir = "/proc"

// Options tune Collect.
type Options struct {
	Keep      int           // trees of each machine's Keep newest generations are kept
	UnusedFor time.Duration // > 0: keep unreachable trees used more recently than this
	DryRun    bool          // plan only: report what a real run would do, change nothing
	Now       time.Time     // zero means time.Now()
}

// Result is what a collection removed, or with DryRun would remove.
type Result struct {
	DryRun     bool           `json:"dry_run"`
	Trees      []RemovedTree  `json:"trees"`
	Objects    int            `json:"objects"`
	BytesFreed int64          `json:"bytes_freed"` // content bytes of every file that disappears
	Leases     int            `json:"leases"`      // expired or dead imports' leases dropped
	Staging    int            `json:"staging"`     // dead staging directories under tmp/ removed
	Layers     []RemovedLayer `json:"layers"`      // layer records removed, with their manifests
	// LayerDirs are the layer directories removed: no kept tree stacks
	// them, or no record names them (a crash's leftover).
	LayerDirs []RemovedLayerDir `json:"layer_dirs"`
	Kept      []KeptTree        `json:"kept"`
}

// RemovedLayerDir is one layer directory removed (with DryRun: one a real
// run would remove).
type RemovedLayerDir struct {
	Chain  digest.Digest `json:"chain_id"`
	Bytes  int64         `json:"bytes"` // content bytes of its regular files, shared or not
	Reason string        `json:"reason"`
}

// RemovedLayer is one layer record removed (with DryRun: one a real run
// would remove).
type RemovedLayer struct {
	DiffID digest.Digest `json:"diff_id"`
	Bytes  int64         `json:"bytes"` // content bytes of its regular files, shared or not
	Reason string        `json:"reason"`
}

// RemovedTree is one tree removed (with DryRun: one a real run would remove).
type RemovedTree struct {
	Digest digest.Digest `json:"digest"`
	Bytes  int64         `json:"bytes"` // content bytes of its regular files, shared or not
	Reason string        `json:"reason"`
}

// KeptTree is one tree kept and why.
type KeptTree struct {
	Digest digest.Digest `json:"digest"`
	Why    string        `json:"why"`
}

// Collect removes what no root needs: stale trees, then the objects only
// they linked, dead staging and expired leases. It holds the exclusive
// store lock throughout, so no import, activation or pin runs meanwhile;
// with DryRun it takes the same lock, makes the same plan and stops there,
// so the plan it reports is the one a real run would have executed.
//
// A real run that fails part-way has still left a consistent store (see
// the package documentation); the next Collect finishes the job.
func Collect(ctx context.Context, s *cache.Store, opt Options) (Result, error) {
	if opt.Keep < 0 {
		return Result{}, fmt.Errorf("keep %d: %w", opt.Keep, cache.ErrInvalid)
	}
	if opt.Now.IsZero() {
		opt.Now = time.Now()
	}
	lock, err := s.Lock(ctx, true)
	if err != nil {
		return Result{}, fmt.Errorf("gc: %w", err)
	}
	defer lock.Unlock()
	p, err := makePlan(s, opt)
	if err != nil {
		return Result{}, fmt.Errorf("gc: %w", err)
	}
	if opt.DryRun {
		return p.Result, nil
	}
	err = p.execute(ctx, s)
	if err != nil {
		err = fmt.Errorf("gc: %w", err)
	}
	return p.Result, err
}

// plan is everything a run will delete, with the report it will give.
type plan struct {
	Result
	trees     []staleTree
	objects   []Object
	dropped   map[digest.Digest]uint64 // names of each object in the stale trees and dead staging
	manifests []digest.Digest
	layers    []digest.Digest        // layer records to delete
	layerDirs []digest.Digest        // layer directories to remove, recorded or not
	dirMfs    map[digest.Digest]bool // manifests of the layer directories kept
	layerMfs  []digest.Digest        // layer manifests to remove
	layerObjs map[digest.Digest]bool // objects the kept layers list
	leases    []string
	staging   []string // dead staging ids
	locks     []string // tree lock files of digests the index will not have
}

type staleTree struct {
	digest  digest.Digest
	indexed bool
}

type inode struct{ dev, ino uint64 }

// makePlan reads the index, the disk and /proc, lets Mark decide, and
// works out what the stale trees take with them: one step per inventory
// (trees, staging, objects, manifests, leases, tree locks), each adding
// its part to the plan. It writes nothing.
func makePlan(s *cache.Store, opt Options) (*plan, error) {
	g, indexed, err := graph(s)
	if err != nil {
		return nil, err
	}
	marked := Mark(g, Policy{Keep: opt.Keep, UnusedFor: opt.UnusedFor, Now: opt.Now})
	p := &plan{Result: Result{DryRun: opt.DryRun, Trees: []RemovedTree{}, Layers: []RemovedLayer{}, LayerDirs: []RemovedLayerDir{}, Kept: []KeptTree{}}}
	kept := map[digest.Digest]bool{}
	for _, k := range marked.Kept {
		kept[k.Digest] = true
		p.Kept = append(p.Kept, KeptTree{k.Digest, k.String()})
	}
	objs, names, err := objectNames(s)
	if err != nil {
		return nil, err
	}
	if err := p.staleTrees(s, marked.Stale, indexed, names); err != nil {
		return nil, err
	}
	if err := p.deadStaging(s, names); err != nil {
		return nil, err
	}
	if err := p.staleLayerDirs(s, kept, indexed, names); err != nil {
		return nil, err
	}
	if err := p.staleLayers(s, kept, indexed); err != nil {
		return nil, err
	}
	p.orphans(objs, names)
	if err := p.lostManifests(s, g, kept); err != nil {
		return nil, err
	}
	p.deadLeases(g, marked, opt.Now)
	if err := p.staleLocks(s, indexed); err != nil {
		return nil, err
	}
	return p, nil
}

// names counts the names that are about to go (those in stale trees and
// dead staging) of every object, and of the files that are no object
// (empty files, copies past the link limit), by inode.
type names struct {
	objAt   map[inode]digest.Digest
	dropped map[digest.Digest]uint64
	others  map[inode]*other
}

type other struct {
	links, names uint64
	size         int64
}

// objectNames lists the objects, and indexes them by inode so that the
// names in stale trees can be counted against them.
func objectNames(s *cache.Store) ([]Object, *names, error) {
	digests, err := s.ObjectDigests()
	if err != nil {
		return nil, nil, err
	}
	var objs []Object
	n := &names{objAt: map[inode]digest.Digest{}, dropped: map[digest.Digest]uint64{}, others: map[inode]*other{}}
	for _, d := range digests {
		fi, err := os.Lstat(s.ObjectPath(d))
		if err != nil {
			return nil, nil, fmt.Errorf("object %s: %w", d, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || !fi.Mode().IsRegular() {
			continue // not something the store made; leave it alone
		}
		objs = append(objs, Object{d, uint64(st.Nlink), fi.Size()})
		n.objAt[inode{st.Dev, st.Ino}] = d
	}
	return objs, n, nil
}

// drop counts every regular file under dir as a name about to go, and
// returns the content bytes of its distinct files. A dir that does not
// exist (an index record without its tree) counts nothing.
func (n *names) drop(dir string) (int64, error) {
	var bytes int64
	seen := map[inode]bool{}
	err := filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			if path == dir && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipAll
			}
			return err
		}
		if !de.Type().IsRegular() {
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		key := inode{st.Dev, st.Ino}
		if !seen[key] {
			seen[key] = true
			bytes += fi.Size()
		}
		if d, ok := n.objAt[key]; ok {
			n.dropped[d]++
			return nil
		}
		o := n.others[key]
		if o == nil {
			o = &other{links: uint64(st.Nlink), size: fi.Size()}
			n.others[key] = o
		}
		o.names++
		return nil
	})
	return bytes, err
}

// staleTrees plans the removal of Mark's stale trees and their manifests.
func (p *plan) staleTrees(s *cache.Store, stale []Stale, indexed map[digest.Digest]index.Tree, n *names) error {
	for _, st := range stale {
		bytes, err := n.drop(s.TreePath(st.Digest))
		if err != nil {
			return fmt.Errorf("tree %s: %w", st.Digest, err)
		}
		rec, ok := indexed[st.Digest]
		if len(rec.Stack) > 0 {
			bytes = rec.Bytes // a stack holds links; its files are its layers'
		}
		p.trees = append(p.trees, staleTree{st.Digest, ok})
		p.Trees = append(p.Trees, RemovedTree{st.Digest, bytes, st.Reason})
		p.manifests = append(p.manifests, st.Digest)
	}
	return nil
}

// staleLayers plans the removal of the layer records no kept tree names
// in its Tree.Layers (layers are a cache whose roots are the kept trees),
// and of a kept one whose manifest cannot be read (it could not be used
// again), and of every layer manifest no kept record names; it collects
// the objects the kept layers list, which orphans then keeps. It needs
// the kept trees; the caller holds the exclusive store lock, so no
// LayerWriter (which holds it shared) commits meanwhile.
func (p *plan) staleLayers(s *cache.Store, kept map[digest.Digest]bool, indexed map[digest.Digest]index.Tree) error {
	var recs []index.Layer
	if err := s.View(func(tx *index.Tx) (err error) { recs, err = tx.Layers(); return err }); err != nil {
		return err
	}
	wanted := map[digest.Digest]bool{}
	for d := range kept {
		for _, l := range indexed[d].Layers {
			wanted[l] = true
		}
	}
	p.layerObjs = map[digest.Digest]bool{}
	keptMfs := map[digest.Digest]bool{}
	for _, rec := range recs {
		reason := "no kept tree was built from it"
		if wanted[rec.DiffID] {
			l, err := s.ReadLayer(rec.DiffID)
			switch {
			case err == nil:
				keptMfs[rec.Manifest] = true
				for _, e := range l.Entries {
					if e.Kind == cache.KindFile {
						p.layerObjs[e.Object] = true
					}
				}
				continue
			case errors.Is(err, cache.ErrInvalid), errors.Is(err, fs.ErrNotExist):
				reason = "its manifest is unreadable: " + err.Error()
			default:
				return err
			}
		}
		p.layers = append(p.layers, rec.DiffID)
		p.Layers = append(p.Layers, RemovedLayer{rec.DiffID, rec.Bytes, reason})
	}
	// A layer directory's entry list is a layer manifest too.
	for d := range p.dirMfs {
		keptMfs[d] = true
	}
	mfs, err := s.LayerManifestDigests()
	if err != nil {
		return err
	}
	for _, d := range mfs {
		if !keptMfs[d] {
			p.layerMfs = append(p.layerMfs, d)
		}
	}
	return nil
}

// staleLayerDirs plans the removal of the layer directories no kept tree
// stacks (a stack's Tree.Stack is its roots), and of directories under
// layerdirs/ that no record names (a crash between a directory's rename
// and its record); their names count as going, so the objects only they
// link are orphans. It keeps the manifests of the others for
// staleLayers. The caller holds the exclusive store lock, so no import
// (which holds it shared from its first layer to its stack's record) is
// between publishing a directory and the stack that names it.
func (p *plan) staleLayerDirs(s *cache.Store, kept map[digest.Digest]bool, indexed map[digest.Digest]index.Tree, n *names) error {
	var recs []index.LayerDir
	if err := s.View(func(tx *index.Tx) (err error) { recs, err = tx.LayerDirs(); return err }); err != nil {
		return err
	}
	wanted := map[digest.Digest]bool{}
	for d := range kept {
		rec, ok := indexed[d]
		if !ok {
			// Kept without a record (a machine's link ahead of the index
			// after a crash, or a rebuilt index): what its directory links
			// to is kept too. Reading the directory may only keep more.
			for _, c := range s.StackLinks(d) {
				wanted[c] = true
			}
			continue
		}
		for _, c := range rec.Stack {
			wanted[c] = true
		}
	}
	p.dirMfs = map[digest.Digest]bool{}
	recorded := map[digest.Digest]bool{}
	drop := func(c digest.Digest, reason string) error {
		bytes, err := n.drop(s.LayerDirPath(c))
		if err != nil {
			return fmt.Errorf("layer directory %s: %w", c, err)
		}
		p.layerDirs = append(p.layerDirs, c)
		p.LayerDirs = append(p.LayerDirs, RemovedLayerDir{c, bytes, reason})
		return nil
	}
	for _, rec := range recs {
		recorded[rec.Chain] = true
		if wanted[rec.Chain] {
			p.dirMfs[rec.Manifest] = true
			continue
		}
		if err := drop(rec.Chain, "no kept tree stacks it"); err != nil {
			return err
		}
	}
	onDisk, err := s.LayerDirDigests()
	if err != nil {
		return err
	}
	for _, c := range onDisk {
		if !recorded[c] && !wanted[c] {
			if err := drop(c, "not recorded (left by a crash)"); err != nil {
				return err
			}
		}
	}
	return nil
}

// deadStaging plans the removal of staging whose import is dead.
func (p *plan) deadStaging(s *cache.Store, n *names) error {
	var err error
	if p.staging, err = s.DeadStaging(); err != nil {
		return err
	}
	for _, id := range p.staging {
		dir := filepath.Join(s.TmpDir(), id)
		if _, err := os.Lstat(dir); err != nil {
			continue // a lock file whose directory is already gone
		}
		p.Staging++
		if _, err := n.drop(dir); err != nil {
			return fmt.Errorf("staging %s: %w", id, err)
		}
	}
	return nil
}

// orphans plans the removal of the objects only the dropped names link,
// and counts the bytes freed: those objects', and those of the other
// files whose every name goes.
func (p *plan) orphans(objs []Object, n *names) {
	p.objects, p.dropped = Orphans(objs, n.dropped, p.layerObjs), n.dropped
	p.Objects = len(p.objects)
	for _, o := range p.objects {
		p.BytesFreed += o.Size
	}
	for _, o := range n.others {
		if o.names >= o.links {
			p.BytesFreed += o.size
		}
	}
}

// lostManifests plans the removal of manifests whose tree is neither
// indexed nor on disk: a crash fell between a previous run's removal of
// the record and of the manifest.
func (p *plan) lostManifests(s *cache.Store, g Graph, kept map[digest.Digest]bool) error {
	known := map[digest.Digest]bool{}
	for _, t := range g.Trees {
		known[t.Digest] = true
	}
	mfs, err := s.ManifestDigests()
	if err != nil {
		return err
	}
	for _, d := range mfs {
		if !known[d] && !kept[d] {
			p.manifests = append(p.manifests, d)
		}
	}
	return nil
}

// deadLeases plans dropping expired leases, and those of imports whose
// staging is dead. It needs deadStaging's list.
func (p *plan) deadLeases(g Graph, marked Marked, now time.Time) {
	dead := map[string]bool{}
	for _, id := range p.staging {
		dead[id] = true
	}
	p.leases = marked.ExpiredLeases
	for _, l := range g.Leases {
		if dead[l.ID] && l.Expires.After(now) {
			p.leases = append(p.leases, l.ID)
		}
	}
	sort.Strings(p.leases)
	p.Leases = len(p.leases)
}

// staleLocks plans the removal of tree and layer directory lock files of
// digests the index will not have: those removed now, and imports that
// failed or were killed. It needs staleTrees' and staleLayerDirs' lists.
func (p *plan) staleLocks(s *cache.Store, indexed map[digest.Digest]index.Tree) error {
	stale := map[digest.Digest]bool{}
	for _, t := range p.trees {
		stale[t.digest] = true
	}
	locked, err := s.TreeLocks()
	if err != nil {
		return err
	}
	for _, d := range locked {
		if _, ok := indexed[d]; !ok || stale[d] {
			p.locks = append(p.locks, s.TreeLockPath(d))
		}
	}
	// Layer directory locks of directories that will not be there: a
	// publish that failed or was killed, or one removed now.
	var recorded map[digest.Digest]bool
	err = s.View(func(tx *index.Tx) error {
		recs, err := tx.LayerDirs()
		recorded = map[digest.Digest]bool{}
		for _, r := range recs {
			recorded[r.Chain] = true
		}
		return err
	})
	if err != nil {
		return err
	}
	for _, c := range p.layerDirs {
		delete(recorded, c)
	}
	dirLocks, err := s.LayerDirLocks()
	if err != nil {
		return err
	}
	for _, c := range dirLocks {
		if !recorded[c] {
			p.locks = append(p.locks, s.LayerDirLockPath(c))
		}
	}
	return nil
}

// graph builds Mark's input from the index, the disk and /proc. It also
// returns the index's tree records.
func graph(s *cache.Store) (Graph, map[digest.Digest]index.Tree, error) {
	g, indexed, machines, err := indexRecords(s)
	if err != nil {
		return g, nil, err
	}
	onDisk, err := s.TreeDigests()
	if err != nil {
		return g, nil, err
	}
	for _, d := range onDisk {
		if _, ok := indexed[d]; !ok {
			g.Trees = append(g.Trees, Tree{Digest: d})
		}
	}
	if g.Machines, err = machineLinks(s, machines); err != nil {
		return g, nil, err
	}
	g.InUse, err = inUse(procDir, filepath.Join(s.Root(), "trees"))
	if err != nil {
		return g, nil, err
	}
	return g, indexed, nil
}

// indexRecords reads, in one transaction, the graph's trees, pins and
// leases and the machines with their generations, and the tree records.
func indexRecords(s *cache.Store) (Graph, map[digest.Digest]index.Tree, map[string]*Machine, error) {
	var g Graph
	indexed := map[digest.Digest]index.Tree{}
	machines := map[string]*Machine{}
	err := s.View(func(tx *index.Tx) error {
		trees, err := tx.Trees()
		if err != nil {
			return err
		}
		for _, t := range trees {
			indexed[t.Digest] = t
			g.Trees = append(g.Trees, Tree{Digest: t.Digest, Indexed: true, LastUsed: t.LastUsed})
		}
		hs, err := tx.Histories()
		if err != nil {
			return err
		}
		for _, m := range hs {
			mm := &Machine{Name: m.Name, Current: m.Current}
			for _, gen := range m.Generations {
				mm.Generations = append(mm.Generations, Generation{gen.Number, gen.Digest})
			}
			machines[m.Name] = mm
		}
		if g.Pins, err = tx.Pins(); err != nil {
			return err
		}
		leases, err := tx.Leases()
		for _, l := range leases {
			g.Leases = append(g.Leases, Lease{l.ID, l.Expires})
		}
		return err
	})
	return g, indexed, machines, err
}

// machineLinks adds to the index's machines where each one's symlink
// points, and returns them by name.
//
// The symlinks are the truth about what runs: a machine the index does
// not know yet (a crash right after its first flip, a rebuilt index)
// counts too, whatever its name: a directory named before names followed
// nspawn's rules still holds a link a service may use.
func machineLinks(s *cache.Store, machines map[string]*Machine) ([]Machine, error) {
	ents, err := os.ReadDir(s.MachinesDir())
	if err != nil {
		return nil, fmt.Errorf("machines: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() && machines[e.Name()] == nil {
			machines[e.Name()] = &Machine{Name: e.Name()}
		}
	}
	var out []Machine
	for name, m := range machines {
		d, err := activate.CurrentTree(s, name)
		if err != nil && !errors.Is(err, cache.ErrNotFound) {
			return nil, err // a root that cannot be read: sweeping now could delete it
		}
		m.Link = d
		out = append(out, *m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// execute carries out the plan in the order that keeps every crash
// recoverable (see the package documentation). The caller holds the
// exclusive store lock. Its report is corrected for anything skipped.
// It stays one function, longer than most, so that the numbered steps
// read in the order they run.
func (p *plan) execute(ctx context.Context, s *cache.Store) error {
	// 1. The index forgets the stale trees, stale layer directories, dead
	//    leases and stale layers in one transaction: from here on nothing
	//    can activate, pin or stack them, or build from those layers.
	var trees []digest.Digest
	for _, t := range p.trees {
		trees = append(trees, t.digest)
	}
	r := cache.Removal{Trees: trees, LayerDirs: p.layerDirs, Layers: p.layers, Leases: p.leases}
	if err := s.Forget(r); err != nil {
		return err
	}
	failpoint.Hit("gc-records-deleted")
	// 2. Dead staging, by the store's own rule.
	if err := s.CleanTmp(ctx); err != nil {
		return err
	}
	// 3. Each stale tree and layer directory leaves its live name in one
	//    rename, into staging that dies with this process, so nothing is
	//    ever half deleted under its name. The staging is ours until
	//    Remove.
	st, err := s.SetAside(r)
	if err != nil {
		return err
	}
	failpoint.Hit("gc-trees-aside")
	// 4. Manifests of trees that no longer exist, and layer manifests no
	//    kept layer or layer directory record names.
	if err := s.RemoveManifests(p.manifests, p.layerMfs); err != nil {
		if st != nil {
			st.Remove()
		}
		return err
	}
	failpoint.Hit("gc-manifests-removed")
	// 5. The directories set aside and the objects only they link, side
	//    by side.
	treesDone := make(chan error, 1)
	if st == nil {
		treesDone <- nil
	} else {
		go func() { treesDone <- st.Remove() }()
	}
	err = p.removeObjects(s)
	if terr := <-treesDone; err == nil && terr != nil {
		err = fmt.Errorf("staging %s: %w", st.ID, terr)
	}
	if err != nil {
		return err
	}
	// 6. Tree lock files nobody holds. One held is an import under way,
	//    which keeps it.
	for _, path := range p.locks {
		if _, err := fsys.RemoveLocked(path); err != nil {
			return err
		}
	}
	return nil
}

// removeObjects removes the orphan objects. The link count is checked
// again (cache.Store.RemoveObject): an object that a name the plan did
// not see still links stays.
func (p *plan) removeObjects(s *cache.Store) error {
	for _, o := range p.objects {
		removed, err := s.RemoveObject(o.Digest, p.dropped[o.Digest])
		if err != nil {
			return err
		}
		if !removed {
			p.Objects--
			p.BytesFreed -= o.Size
			continue
		}
		failpoint.Hit("gc-mid-objects") // the trees are being removed beside
	}
	return nil
}
