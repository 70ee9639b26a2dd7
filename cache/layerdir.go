package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/failpoint"
	"github.com/rootswap/rootswap/internal/fsys"
)

// LayerDir is one layer's directory as overlayfs stacks it (see
// snapshot.LayerDirs): Entries as AddStored takes them (each parent and
// hard link target before what needs it), Whiteouts the names that hide
// what lower layers hold there, Opaque the directories of Entries (or
// ".") whose lower children are hidden.
type LayerDir struct {
	Entries   []ManifestEntry
	Whiteouts []string
	Opaque    []string
}

// opaqueXattr marks a directory opaque for overlayfs; no image brings it
// (checkEntry refuses every trusted.* xattr), only a layer directory's
// build writes it.
const opaqueXattr = "trusted.overlay.opaque"

// manifest is l as a layer manifest: its entries, then its whiteouts
// (kind 'w') and opaque directories (kind 'o'), which is how a layer
// directory's record names its entry list.
func (l *LayerDir) manifest(diffID digest.Digest) LayerManifest {
	lm := LayerManifest{DiffID: diffID, Entries: l.Entries}
	for _, w := range l.Whiteouts {
		lm.Whiteouts = append(lm.Whiteouts, Whiteout{Name: w})
	}
	for _, o := range l.Opaque {
		lm.Whiteouts = append(lm.Whiteouts, Whiteout{Name: o, Opaque: true})
	}
	return lm
}

// layerDirOf is the layer directory a layer manifest lists (the inverse
// of LayerDir.manifest).
func layerDirOf(lm LayerManifest) LayerDir {
	l := LayerDir{Entries: lm.Entries}
	for _, w := range lm.Whiteouts {
		if w.Opaque {
			l.Opaque = append(l.Opaque, w.Name)
		} else {
			l.Whiteouts = append(l.Whiteouts, w.Name)
		}
	}
	return l
}

// LockLayerDir serialises publishing the layer directory of chain ID
// chain: two imports of images that share a base build it once.
func (s *Store) LockLayerDir(ctx context.Context, chain digest.Digest) (*fsys.Lock, error) {
	return s.lockFile(ctx, s.layerDirLockPath(chain), true)
}

func (s *Store) layerDirLockPath(chain digest.Digest) string {
	return filepath.Join(s.root, "locks", "layerdir-"+chain.Encoded())
}

// PublishLayerDir makes sure the store has the layer directory of chain
// ID chain (the layer diffID over the layers of chain ID parent, "" for
// none) and returns its record. If the index has it, nothing is built.
// Otherwise l is built under tmp/ (entries checked and created as
// AddStored does, files hard links to their objects, whiteouts as 0:0
// character devices, opaque directories marked trusted.overlay.opaque=y:
// what overlayfs reads in a lower directory) and published in the fixed
// order, each step's failpoint named after it: its entry list as a layer
// manifest, syncfs, the manifest and the directory renamed in
// (layers/sha256/<manifest>, layerdirs/sha256/<chain>), then the index
// record. A crash leaves at most an unrecorded directory, which a later
// publish moves aside and gc removes. The caller holds the shared store
// lock (NewBuilder takes it again) from before it read the layers l was
// made from; PublishLayerDir takes the directory's lock.
func (s *Store) PublishLayerDir(ctx context.Context, chain, diffID, parent digest.Digest, l LayerDir) (index.LayerDir, error) {
	for _, d := range []digest.Digest{chain, diffID} {
		if !ValidDigest(d) || d.Algorithm() != digest.SHA256 {
			return index.LayerDir{}, fmt.Errorf("layer directory %q: %q is not a sha256 digest: %w", chain, d, ErrInvalid)
		}
	}
	if parent != "" && !ValidDigest(parent) {
		return index.LayerDir{}, fmt.Errorf("layer directory %s: parent %q: %w", chain, parent, ErrInvalid)
	}
	lock, err := s.LockLayerDir(ctx, chain)
	if err != nil {
		return index.LayerDir{}, err
	}
	defer lock.Unlock()
	rec, err := s.layerDirRecord(chain)
	if err == nil || !errors.Is(err, ErrNotFound) {
		return rec, err
	}
	b, err := s.stageLayerDir(ctx, l)
	if err != nil {
		return index.LayerDir{}, fmt.Errorf("layer directory %s: %w", chain, err)
	}
	defer b.Abort() // a no-op once recorded
	rec = index.LayerDir{Chain: chain, DiffID: diffID, Parent: parent}
	// 1. Its entry list, as a layer manifest, in the staging: the entries
	//    as made (a hard link past the link limit is a copy).
	l.Entries = b.made
	lm := l.manifest(diffID)
	var counts index.Layer
	staged := filepath.Join(b.st.Dir, "layerdir-manifest")
	if rec.Manifest, err = writeLayerManifest(staged, &lm, &counts); err != nil {
		return index.LayerDir{}, fmt.Errorf("layer directory %s: manifest: %w", chain, err)
	}
	rec.Files, rec.Bytes = counts.Files, counts.Bytes
	failpoint.Hit("cache-layerdir-staged")
	// 2. Everything staged reaches the disk before any name points at it.
	if err := fsys.Syncfs(s.root); err != nil {
		return index.LayerDir{}, err
	}
	failpoint.Hit("cache-layerdir-synced")
	// 3. A directory there without a record is a crash's leftover: aside
	//    into our staging, which dies with us. Then the manifest (the same
	//    lines under the same name are the same file) and the directory,
	//    renamed in and made durable.
	dst := s.LayerDirPath(chain)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return index.LayerDir{}, fmt.Errorf("layer directory %s: %w", chain, err)
	}
	if err := os.Rename(dst, filepath.Join(b.st.Dir, "old")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return index.LayerDir{}, fmt.Errorf("layer directory %s: %w", chain, err)
	}
	mdst := s.LayerManifestPath(rec.Manifest)
	if err := os.MkdirAll(filepath.Dir(mdst), 0o700); err != nil {
		return index.LayerDir{}, fmt.Errorf("layer directory %s: %w", chain, err)
	}
	if err := os.Rename(staged, mdst); err != nil {
		return index.LayerDir{}, fmt.Errorf("layer directory %s: manifest: %w", chain, err)
	}
	if err := fsys.RenameNoReplace(filepath.Join(b.st.Dir, "rootfs"), dst); err != nil {
		return index.LayerDir{}, fmt.Errorf("layer directory %s: %w", chain, err)
	}
	failpoint.Hit("cache-layerdir-renamed")
	if err := fsys.SyncDir(filepath.Dir(dst)); err != nil {
		return index.LayerDir{}, err
	}
	if err := fsys.SyncDir(filepath.Dir(mdst)); err != nil {
		return index.LayerDir{}, err
	}
	// 4. The record makes the directory exist; the lease goes with it.
	failpoint.Hit("cache-layerdir-before-index")
	rec.Created = time.Now().UTC()
	err = s.Update(func(tx *index.Tx) error {
		if err := tx.PutLayerDir(rec); err != nil {
			return err
		}
		return tx.DeleteLease(b.st.ID)
	})
	if err != nil {
		return index.LayerDir{}, fmt.Errorf("layer directory %s: %w", chain, err)
	}
	b.done = true
	failpoint.Hit("cache-layerdir-after-index")
	return rec, nil
}

// layerDirRecord returns the index's record of layer directory chain.
func (s *Store) layerDirRecord(chain digest.Digest) (rec index.LayerDir, err error) {
	err = s.View(func(tx *index.Tx) error { rec, err = tx.LayerDir(chain); return err })
	return rec, err
}

// stageLayerDir builds the directory l describes in a new Builder's
// staging (rootfs/), with its directories' metadata applied; the caller
// publishes or aborts it. On error the staging is gone.
func (s *Store) stageLayerDir(ctx context.Context, l LayerDir) (*Builder, error) {
	b, err := s.NewBuilder(ctx)
	if err != nil {
		return nil, err
	}
	b.keepMade = true
	if err := b.addLayerDir(ctx, l); err != nil {
		b.Abort()
		return nil, err
	}
	return b, nil
}

func (b *Builder) addLayerDir(ctx context.Context, l LayerDir) error {
	for i := range l.Entries {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := b.AddStored(l.Entries[i]); err != nil {
			return err
		}
	}
	for _, name := range l.Whiteouts {
		if err := b.rootfs.Mknod(name, syscall.S_IFCHR, 0); err != nil {
			return fmt.Errorf("whiteout %q: %w", name, err)
		}
	}
	if err := b.finishDirs(); err != nil {
		return err
	}
	for _, name := range l.Opaque {
		if err := b.markOpaque(name); err != nil {
			return fmt.Errorf("opaque %q: %w", name, err)
		}
	}
	return nil
}

// markOpaque marks the directory name (which must be an entry made so
// far) opaque for overlayfs.
func (b *Builder) markOpaque(name string) error {
	f, err := b.rootfs.OpenDirFile(name)
	if err != nil {
		return err
	}
	err = fsys.SetXattr(f, opaqueXattr, []byte("y"))
	f.Close()
	return err
}

// rebuildLayerDir makes layer directory rec again from its manifest and
// the objects it lists, in the publish order (staged, syncfs, the damaged
// one moved aside into the staging, the new one renamed in). Its record
// stays, unless the rebuilt list differs (a link past the link limit is a
// copy now, or no longer): then its new manifest is renamed in and the
// record says so. The caller holds the exclusive store lock (verify
// --repair).
func (s *Store) rebuildLayerDir(ctx context.Context, rec index.LayerDir) error {
	lm, err := s.readLayerManifest(index.Layer{DiffID: rec.DiffID, Manifest: rec.Manifest, Files: rec.Files})
	if err != nil {
		return err
	}
	b, err := s.newBuilder(nil)
	if err != nil {
		return err
	}
	defer b.Abort()
	b.keepMade = true
	l := layerDirOf(lm)
	if err := b.addLayerDir(ctx, l); err != nil {
		return err
	}
	l.Entries = b.made
	m := l.manifest(rec.DiffID)
	var counts index.Layer
	staged := filepath.Join(b.st.Dir, "layerdir-manifest")
	mf, err := writeLayerManifest(staged, &m, &counts)
	if err != nil {
		return err
	}
	if err := fsys.Syncfs(s.root); err != nil {
		return err
	}
	dst := s.LayerDirPath(rec.Chain)
	if err := os.Rename(dst, filepath.Join(b.st.Dir, "old")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if mf != rec.Manifest {
		if err := os.Rename(staged, s.LayerManifestPath(mf)); err != nil {
			return err
		}
	}
	if err := fsys.RenameNoReplace(filepath.Join(b.st.Dir, "rootfs"), dst); err != nil {
		return err
	}
	if err := fsys.SyncDir(filepath.Dir(dst)); err != nil {
		return err
	}
	if mf == rec.Manifest {
		return nil
	}
	if err := fsys.SyncDir(filepath.Dir(s.LayerManifestPath(mf))); err != nil {
		return err
	}
	rec.Manifest, rec.Files, rec.Bytes = mf, counts.Files, counts.Bytes
	return s.Update(func(tx *index.Tx) error { return tx.PutLayerDir(rec) })
}
