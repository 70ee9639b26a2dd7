package snapshot

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
)

// ImportTar imports a rootfs tar stream as a one-layer stack; its key is
// the sha256 of the stream (which is also its layer's diffID). ref, if
// not empty, is recorded with the tree. The stream is stored as a layer
// is (storeFlat), then published as every image's layers are
// (publishStack). Importing a stream the store already has returns the
// existing tree.
func ImportTar(ctx context.Context, s *cache.Store, r io.Reader, ref string) (index.Tree, error) {
	lock, err := s.Lock(ctx, false)
	if err != nil {
		return index.Tree{}, err
	}
	defer lock.Unlock()
	d, newBytes, err := storeFlat(ctx, s, r, nil)
	if err != nil {
		return index.Tree{}, err
	}
	tl, err := s.LockTree(ctx, d)
	if err != nil {
		return index.Tree{}, err
	}
	defer tl.Unlock()
	if t, ok, err := Lookup(s, d); err != nil || ok {
		return t, err
	}
	return publishStack(ctx, s, []digest.Digest{d}, ref, d, newBytes, published{}, nil)
}

// storeFlat reads a flattened rootfs stream (readFlat) as one layer,
// each regular file stored as an object, and records the layer under
// the sha256 of every byte read from r, padding included; it returns
// that diffID and the bytes the layer added to the store. Nothing is
// recorded for a stream that fails. The caller holds the shared store
// lock until a tree names the layer.
func storeFlat(ctx context.Context, s *cache.Store, r io.Reader, progress Progress) (digest.Digest, int64, error) {
	w, err := s.NewLayerWriter(ctx)
	if err != nil {
		return "", 0, err
	}
	defer w.Abort() // a no-op after Commit
	h := sha256.New()
	diff, err := readFlat(ctx, io.TeeReader(r, h), w.Put, progress)
	if err != nil {
		return "", 0, err
	}
	d := digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
	rec, err := w.Commit(ctx, cache.LayerManifest{DiffID: d, Entries: diff.Entries})
	if err != nil {
		return "", 0, err
	}
	return d, rec.NewBytes, nil
}

func refs(ref string) []string {
	if ref == "" {
		return nil
	}
	return []string{ref}
}

// Lookup returns the record of tree d if the store has it complete.
// It reports false for a missing tree and for one verify marked broken.
func Lookup(s *cache.Store, d digest.Digest) (index.Tree, bool, error) {
	var t index.Tree
	err := s.View(func(tx *index.Tx) (err error) { t, err = tx.Tree(d); return err })
	if errors.Is(err, cache.ErrNotFound) {
		return t, false, nil
	}
	if err != nil {
		return t, false, err
	}
	return t, !t.Broken, nil
}

// RecordRef records in s's ref cache that img.Ref names img, if its
// source asks for that (img.Record). Call it only once the store holds
// img's tree: a record lets a later command act on the ref offline.
func RecordRef(s *cache.Store, img Image) error {
	if !img.Record {
		return nil
	}
	if err := s.RecordRef(img.Ref.String(), img.Digest, img.Manifest); err != nil {
		return fmt.Errorf("image %s: %w", img.Ref, err)
	}
	return nil
}

// recordIf records img's ref when the store was found to have its tree
// (ok, and no error err).
func recordIf(s *cache.Store, img Image, ok bool, err error) error {
	if err != nil || !ok {
		return err
	}
	return RecordRef(s, img)
}

// ImportOptions tune ImportImage; the zero value shows and logs nothing.
type ImportOptions struct {
	Progress Progress     // told how the stream advances; may be nil
	Log      *slog.Logger // told of each tree created; may be nil
	// Platform is the OS/ARCH[/VARIANT] an image must be for (--platform);
	// "" is this host's. An image whose config names another is refused.
	Platform string
	// Admit, if set, decides whether an image the store lacks may be
	// imported, before any of its layers is fetched: an error refuses it
	// (nothing is fetched or stored); otherwise it returns how the image
	// was admitted, recorded with its tree (index.Tree.Admitted).
	Admit func(ctx context.Context, img Image) (string, error)
	// Readmit, if set, decides offline whether a tree the store already
	// has may serve img, from how it was admitted at import (t.Admitted):
	// an error refuses it (ImportImage returns the error and records no
	// ref).
	Readmit func(img Image, t index.Tree) error
}

// ImportImage makes sure the store has a tree for img (its Digest is the
// tree key) and its config, committed with the tree in one index commit
// with how the signature policy admitted it (an image whose config names
// another platform than opt.Platform, or whose config document is not
// its digest's, is refused first, then one the policy refuses, opt.Admit,
// before any layer is fetched), and then records img's ref (RecordRef). A tree found in the store is re-checked
// (opt.Readmit) before it serves img. If the store already
// has the tree, the source is not asked and created is false. Otherwise the image's rootfs streams from src
// through the hostile-input checks into the store, and every stream is
// closed on every path, Ctrl-C included (for Docker: the export container
// is removed). Concurrent imports of one digest stream it once: the
// others wait for the tree lock and then find the tree.
func ImportImage(ctx context.Context, s *cache.Store, img Image, opt ImportOptions) (t index.Tree, created bool, err error) {
	d := img.Digest
	found := func(t index.Tree, ok bool, err error) (index.Tree, bool, error) {
		if err == nil && ok {
			err = checkStoredPlatform(s, img, opt.Platform)
		}
		if err == nil && ok && opt.Readmit != nil {
			err = opt.Readmit(img, t)
		}
		if err == nil && ok {
			mendConfig(ctx, s, img, opt)
		}
		return t, false, recordIf(s, img, ok, err)
	}
	if t, ok, err := Lookup(s, d); err != nil || ok {
		return found(t, ok, err)
	}
	lock, err := s.LockTree(ctx, d)
	if err != nil {
		return t, false, err
	}
	defer lock.Unlock()
	if t, ok, err := Lookup(s, d); err != nil || ok {
		return found(t, ok, err)
	}
	config, err := checkConfig(ctx, img, opt.Platform)
	if err != nil {
		return t, false, err
	}
	admitted := ""
	if opt.Admit != nil {
		if admitted, err = opt.Admit(ctx, img); err != nil {
			return t, false, err
		}
	}
	start := time.Now()
	// The config and the admission go in the tree's own index commit: a
	// crash leaves the tree with both or no tree. The ref after it: a ref
	// recorded names an image complete with them.
	if t, err = build(ctx, s, img, published{config, admitted}, opt); err != nil {
		return t, false, err
	}
	if err := RecordRef(s, img); err != nil {
		return t, false, err
	}
	if opt.Log != nil {
		opt.Log.Info("imported", "image", img.Ref.String(), "digest", d, "files", t.Files, "bytes", t.Bytes, "new_bytes", t.NewBytes, "took", time.Since(start).Round(time.Millisecond))
	}
	return t, true, nil
}

// published is what the tree's index commit records besides the tree: the
// image's config document and how the signature policy admitted it.
type published struct {
	config   []byte
	admitted string
}

// build streams img's rootfs from its source into a new tree and commits it
// with pub: a flattened export through the Builder as it streams, layers
// through the per-layer records (buildLayered). The caller holds img's
// tree lock. progress is done when build returns.
func build(ctx context.Context, s *cache.Store, img Image, pub published, opt ImportOptions) (index.Tree, error) {
	progress := opt.Progress
	if progress != nil {
		defer progress.Done()
	}
	ref, d := img.Ref.String(), img.Digest
	layers, err := img.Layers(ctx)
	if err != nil {
		return index.Tree{}, err
	}
	switch {
	case len(layers) == 1 && layers[0].DiffID() == "":
		return buildFlat(ctx, s, layers[0], ref, d, pub, progress, opt.Log)
	case len(layers) == 0:
		return index.Tree{}, fmt.Errorf("image %s lists no layers", ref)
	}
	return buildLayered(ctx, s, layers, ref, d, pub, opt)
}

// buildFlat streams the flattened rootfs l (the Docker daemon's export)
// into a new tree d, committed with pub: a one-layer stack, its layer
// stored and published as a registry's layers are.
func buildFlat(ctx context.Context, s *cache.Store, l Layer, ref string, d digest.Digest, pub published, progress Progress, log *slog.Logger) (index.Tree, error) {
	lock, err := s.Lock(ctx, false)
	if err != nil {
		return index.Tree{}, err
	}
	defer lock.Unlock()
	rc, err := l.Open(ctx)
	if err != nil {
		return index.Tree{}, err
	}
	defer rc.Close()
	id, newBytes, err := storeFlat(ctx, s, rc, progress)
	if err != nil {
		return index.Tree{}, fmt.Errorf("export of %s: %w", ref, err)
	}
	return publishStack(ctx, s, []digest.Digest{id}, ref, d, newBytes, pub, log)
}
