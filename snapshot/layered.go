package snapshot

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/failpoint"
)

// parallelLayers is how many layers are fetched and stored at once: a
// layer is mostly decompression and hashing, one core each, and the
// registry's round trips overlap.
func parallelLayers() int { return max(2, min(runtime.GOMAXPROCS(0), 4)) }

// buildLayered makes tree d, a stack of layer directories, from layers,
// which all name their diffIDs: every layer the store lacks is fetched,
// checked and recorded (several at once); then the layers' entry lists
// are read once each and merged in order (refusing what Merge refuses),
// which tells what each layer's directory must hold over the layers
// below it; every directory the store lacks (by chain ID) is published,
// its files linked to the layers' objects, and then the stack naming
// them, whose manifest is the merged list, committed with pub. An
// upgrade that adds one layer builds one directory. The shared store lock is held from the
// first layer to the tree's index record, so gc cannot take a layer or
// a layer directory that no tree lists yet.
func buildLayered(ctx context.Context, s *cache.Store, layers []Layer, ref string, d digest.Digest, pub published, opt ImportOptions) (index.Tree, error) {
	ids := make([]digest.Digest, len(layers))
	for i, l := range layers {
		ids[i] = l.DiffID()
		if err := ids[i].Validate(); err != nil || ids[i].Algorithm() != digest.SHA256 {
			return index.Tree{}, fmt.Errorf("image %s: layer %d: diffID %q is not a sha256 digest", ref, i+1, ids[i])
		}
	}
	lock, err := s.Lock(ctx, false)
	if err != nil {
		return index.Tree{}, err
	}
	defer lock.Unlock()
	missing, err := missingLayers(s, ids)
	if err != nil {
		return index.Tree{}, err
	}
	start := time.Now()
	lp := planLayers(opt.Progress, layers, ids, missing)
	newBytes, err := fetchLayers(ctx, s, layers, missing, opt, lp)
	if err != nil {
		return index.Tree{}, fmt.Errorf("image %s: %w", ref, err)
	}
	fetched := time.Now()
	failpoint.Hit("snapshot-mid-merge") // every layer recorded, no tree yet
	t, err := publishStack(ctx, s, ids, ref, d, newBytes, pub, opt.Log)
	if err == nil && opt.Log != nil {
		opt.Log.Debug("layers fetched", "image", ref, "layers", len(ids), "fetched", len(missing),
			"fetch", fetched.Sub(start).Round(time.Millisecond))
	}
	return t, err
}

// publishStack makes tree d, for image ref, a stack of the layers ids,
// which the store has recorded: their entry lists are read once each and
// merged in order (refusing what Merge refuses), which tells what each
// layer's directory must hold over the layers below it; every directory
// the store lacks (by chain ID) is published, and then the stack naming
// them, whose manifest is the merged list, committed with pub (the
// image's config and admission, in the tree's own index commit). An
// upgrade that adds one layer builds one directory. It is the one way
// every source's layers become a tree. The caller holds the shared store lock from before the
// layers were recorded, and d's tree lock.
func publishStack(ctx context.Context, s *cache.Store, ids []digest.Digest, ref string, d digest.Digest, newBytes int64, pub published, log *slog.Logger) (index.Tree, error) {
	start := time.Now()
	chains := cache.ChainIDs(ids)
	lacking, err := missingLayerDirs(s, chains)
	if err != nil {
		return index.Tree{}, err
	}
	dirs, entries, read, err := mergeStored(s, ids, lacking)
	if err != nil {
		return index.Tree{}, fmt.Errorf("image %s: %w", ref, err)
	}
	merged := time.Now()
	for i := range ids {
		if !lacking[i] {
			continue
		}
		parent := digest.Digest("")
		if i > 0 {
			parent = chains[i-1]
		}
		if _, err := s.PublishLayerDir(ctx, chains[i], ids[i], parent, dirs[i]); err != nil {
			return index.Tree{}, fmt.Errorf("image %s: layer %d: %w", ref, i+1, err)
		}
		dirs[i] = cache.LayerDir{} // published: its list is not needed any more
	}
	published := time.Now()
	failpoint.Hit("snapshot-layerdirs-published") // every layer directory recorded, no stack yet
	var bt cache.Times
	t, err := s.BuildStack(ctx, d, cache.Stack{Layers: ids, Entries: entries, Refs: refs(ref), NewBytes: newBytes,
		Config: pub.config, Admitted: pub.admitted, Times: &bt})
	if err == nil && log != nil {
		ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
		log.Debug("stack published", "image", ref, "layers", len(ids),
			"merge", ms(merged.Sub(start)), "merge_read", ms(read),
			"layer_dirs", countTrue(lacking), "layer_dirs_build", ms(published.Sub(merged)),
			"stack", ms(time.Since(published)), "stack_syncfs", ms(bt.Sync), "stack_publish", ms(bt.Publish))
	}
	return t, err
}

func countTrue(b []bool) int {
	n := 0
	for _, v := range b {
		if v {
			n++
		}
	}
	return n
}

// missingLayerDirs says, for each chain ID, whether the store lacks its
// layer directory (no record). A chain ID listed twice is lacking only
// at its first place.
func missingLayerDirs(s *cache.Store, chains []digest.Digest) ([]bool, error) {
	lacking := make([]bool, len(chains))
	err := s.View(func(tx *index.Tx) error {
		seen := map[digest.Digest]bool{}
		for i, c := range chains {
			if seen[c] {
				continue
			}
			seen[c] = true
			_, err := tx.LayerDir(c)
			switch {
			case errors.Is(err, cache.ErrNotFound):
				lacking[i] = true
			case err != nil:
				return err
			}
		}
		return nil
	})
	return lacking, err
}

// missingLayers returns, lowest first, the index of the first layer of
// each diffID the store has no record of: an image may list one diffID
// twice (empty layers are alike), and it is fetched once.
func missingLayers(s *cache.Store, ids []digest.Digest) ([]int, error) {
	var missing []int
	err := s.View(func(tx *index.Tx) error {
		seen := map[digest.Digest]bool{}
		for i, id := range ids {
			if seen[id] {
				continue
			}
			seen[id] = true
			_, err := tx.Layer(id)
			switch {
			case errors.Is(err, cache.ErrNotFound):
				missing = append(missing, i)
			case err != nil:
				return err
			}
		}
		return nil
	})
	return missing, err
}

// fetchLayers stores the layers at the indexes missing, several at once,
// and returns the content bytes they added to the store; the first error
// cancels the others.
func fetchLayers(ctx context.Context, s *cache.Store, layers []Layer, missing []int, opt ImportOptions, lp LayerProgress) (int64, error) {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallelLayers())
	total := &totals{p: opt.Progress}
	added := make([]int64, len(missing))
	for k, i := range missing {
		g.Go(func() (err error) {
			if lp != nil {
				defer func() { lp.Fetched(k, err) }()
			}
			var t cache.Times
			added[k], t, err = fetchLayer(gctx, s, i, layers[i], total.layer(), func(rc io.Reader) {
				if lp == nil {
					return
				}
				var read func() int64
				if c, ok := rc.(BlobCounter); ok {
					read = c.BlobRead
				}
				lp.Fetching(k, read)
			})
			if err == nil && opt.Log != nil {
				ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
				opt.Log.Debug("layer stored", "layer", i+1, "diff_id", layers[i].DiffID(), "new_bytes", added[k],
					"read", ms(t.Write), "syncfs", ms(t.Sync), "publish", ms(t.Publish))
			}
			return err
		})
	}
	err := g.Wait()
	var sum int64
	for _, n := range added {
		sum += n
	}
	return sum, err
}

// fetchLayer reads layer i (0 is the lowest) through ReadDiff, its files
// stored as objects, checks that the stream was the layer the config
// names, and records it; it returns the bytes it added to the store and
// how long its steps took. Nothing is recorded for a layer that fails:
// the objects it stored have no name but their own, which gc removes.
// opened, if not nil, is told the stream once it is open.
func fetchLayer(ctx context.Context, s *cache.Store, i int, l Layer, progress Progress, opened func(io.Reader)) (newBytes int64, t cache.Times, err error) {
	id := l.DiffID()
	what := fmt.Sprintf("layer %d (%s)", i+1, id)
	w, err := s.NewLayerWriter(ctx)
	if err != nil {
		return 0, t, err
	}
	defer w.Abort() // a no-op after Commit
	rc, err := l.Open(ctx)
	if err != nil {
		return 0, t, fmt.Errorf("%s: %w", what, err)
	}
	defer rc.Close()
	if opened != nil {
		opened(rc)
	}
	h := sha256.New()
	// readDiff reads the stream to its end, so a source's check of the
	// blob (at EOF) has happened when it returns.
	diff, err := readDiff(ctx, io.TeeReader(rc, h), w.Put, progress)
	if err != nil {
		return 0, t, fmt.Errorf("%s: %w", what, err)
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)); got != id {
		return 0, t, fmt.Errorf("%s: content is %s, not the diffID the image's config lists: %w", what, got, ErrDigestMismatch)
	}
	failpoint.Hit("snapshot-mid-layer") // a layer read and checked, not recorded
	lm := cache.LayerManifest{DiffID: id, Blob: l.Blob(), Entries: diff.Entries, Whiteouts: diff.Whiteouts}
	rec, err := w.Commit(ctx, lm)
	if err != nil {
		return 0, t, fmt.Errorf("%s: %w", what, err)
	}
	return rec.NewBytes, w.Times(), nil
}

// mergeStored reads the layers' recorded entry lists, once each, and
// merges them in order into the entry list of the image's tree; for each
// layer marked in want it also lists what the layer's directory must
// hold over the layers below (see LayerDirs), before that layer is
// merged. Nothing of a layer but its entry list (which the merged names
// and the directories point into) outlives its turn. It also returns how
// long reading the lists took.
func mergeStored(s *cache.Store, ids []digest.Digest, want []bool) ([]cache.LayerDir, []cache.ManifestEntry, time.Duration, error) {
	m := newMerger()
	dirs := make([]cache.LayerDir, len(ids))
	var read time.Duration
	for i, id := range ids {
		start := time.Now()
		lm, err := s.ReadLayer(id)
		read += time.Since(start)
		if err != nil {
			return nil, nil, read, fmt.Errorf("layer %d (%s): %w", i+1, id, err)
		}
		d := Diff{ID: id, Entries: lm.Entries, Whiteouts: lm.Whiteouts}
		if want[i] {
			dirs[i] = layerDir(m, &d)
		}
		if err := m.apply(&d); err != nil {
			return nil, nil, read, err
		}
	}
	return dirs, m.result(), read, nil
}

// totals sums the progress of layers read at once for one Progress.
type totals struct {
	p              Progress
	mu             sync.Mutex
	bytes, entries int64
}

// layer returns the Progress for one more layer, or nil if there is none
// to tell.
func (t *totals) layer() Progress {
	if t.p == nil {
		return nil
	}
	return &layerProgress{t: t}
}

type layerProgress struct {
	t              *totals
	bytes, entries int64
}

func (l *layerProgress) Update(bytes, entries int64) {
	t := l.t
	t.mu.Lock()
	defer t.mu.Unlock()
	t.bytes += bytes - l.bytes
	t.entries += entries - l.entries
	l.bytes, l.entries = bytes, entries
	t.p.Update(t.bytes, t.entries)
}

// Done is the whole import's, which build calls.
func (l *layerProgress) Done() {}
