package cache

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/fsys"
)

// layerDirVerdict is what verifyLayerDirs learnt: every layer directory
// record, and why each bad one is bad.
type layerDirVerdict struct {
	recs map[digest.Digest]index.LayerDir
	bad  map[digest.Digest]string
}

// verifyLayerDirs checks the layer directories of chains (nil: every
// one the index records) into rep: each matches the layer manifest its
// record names, entry by entry (as a tree matches its own), every
// whiteout is a 0:0 character device and every opaque directory is
// marked, nothing is there that the manifest does not list, and every
// directory is readable. What each readable manifest keeps (itself, its
// objects) goes into lv.
func (s *Store) verifyLayerDirs(rep *VerifyReport, chains []digest.Digest, badObjects map[digest.Digest]string, lv *layerVerdict) (layerDirVerdict, error) {
	v := layerDirVerdict{recs: map[digest.Digest]index.LayerDir{}, bad: map[digest.Digest]string{}}
	var recs []index.LayerDir
	if err := s.View(func(tx *index.Tx) (err error) { recs, err = tx.LayerDirs(); return err }); err != nil {
		return v, err
	}
	for _, rec := range recs {
		v.recs[rec.Chain] = rec
	}
	if chains == nil {
		for _, rec := range recs {
			chains = append(chains, rec.Chain)
		}
	}
	for _, c := range chains {
		rec, ok := v.recs[c]
		if !ok {
			continue // the stack that names it says so
		}
		probs := s.verifyLayerDir(rec, badObjects, lv)
		if len(probs) > 0 {
			v.bad[c] = probs[0].Detail
		}
		rep.Problems = append(rep.Problems, probs...)
	}
	return v, nil
}

// verifyLayerDir compares layer directory rec with its manifest.
func (s *Store) verifyLayerDir(rec index.LayerDir, badObjects map[digest.Digest]string, lv *layerVerdict) []Problem {
	var out []Problem
	bad := func(path, format string, args ...any) {
		out = append(out, Problem{Kind: "layerdir", Digest: rec.Chain, Path: path, Detail: fmt.Sprintf(format, args...)})
	}
	root := s.LayerDirPath(rec.Chain)
	if fi, err := os.Lstat(root); err != nil || !fi.IsDir() {
		bad("", "layer directory missing")
		return out
	}
	lm, err := s.readLayerManifest(index.Layer{DiffID: rec.DiffID, Manifest: rec.Manifest, Files: rec.Files})
	if err != nil {
		bad("", "%v", err)
		return out
	}
	// Its manifest and objects are what repair rebuilds it from: no
	// leftovers, even when the directory is damaged.
	lv.manifests[rec.Manifest] = true
	for _, e := range lm.Entries {
		if e.Kind == KindFile {
			lv.objects[e.Object] = true
		}
	}
	if n := int64(len(lm.Entries) + len(lm.Whiteouts)); n != rec.Files {
		bad("", "manifest lists %d entries, index says %d", n, rec.Files)
	}
	listed := map[string]bool{".": true}
	for _, me := range lm.Entries {
		listed[me.Name] = true
		if me.Kind == KindDir && me.Name == "." {
			continue
		}
		if detail := s.checkEntry(root, me, badObjects); detail != "" {
			bad(me.Name, "%s", detail)
		}
	}
	for _, w := range lm.Whiteouts {
		p := filepath.Join(root, w.Name)
		if w.Opaque {
			if !opaque(p) {
				bad(w.Name, "not marked opaque")
			}
			continue
		}
		listed[w.Name] = true
		if st, err := fsys.Lstat(p); err != nil {
			bad(w.Name, "whiteout missing: %v", err)
		} else if st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 0 {
			bad(w.Name, "not a whiteout (a 0:0 character device)")
		}
	}
	// Anything there the manifest does not list, and every directory
	// that cannot be read.
	err = filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(root, p)
		if err != nil {
			bad(rel, "unreadable: %v", err)
			return nil
		}
		if !listed[filepath.ToSlash(rel)] {
			bad(rel, "not in the manifest")
		}
		return nil
	})
	if err != nil {
		bad("", "%v", err)
	}
	return out
}

// opaque reports whether directory p is marked opaque for overlayfs.
func opaque(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	x, err := fsys.Xattrs(f)
	return err == nil && string(x[opaqueXattr]) == "y"
}

// verifyStack checks stack t: its directory holds exactly its layer@N
// links, each to the layer directory its record names, every one of
// them recorded and sound (ldv), and its manifest (the merged list)
// hashes to and counts what the record says.
func (s *Store) verifyStack(t index.Tree, ldv layerDirVerdict) []Problem {
	var out []Problem
	bad := func(path, format string, args ...any) {
		out = append(out, Problem{Kind: "tree", Digest: t.Digest, Path: path, Detail: fmt.Sprintf(format, args...)})
	}
	root := s.TreePath(t.Digest)
	if fi, err := os.Lstat(root); err != nil || !fi.IsDir() {
		bad("", "tree directory missing")
		return out
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		bad("", "unreadable: %v", err)
	}
	want := map[string]digest.Digest{}
	for i, c := range t.Stack {
		want[StackLink(i)] = c
	}
	for _, e := range ents {
		if _, ok := want[e.Name()]; !ok {
			bad(e.Name(), "not one of the stack's %d layer links", len(t.Stack))
		}
	}
	for i, c := range t.Stack {
		name := StackLink(i)
		switch target, err := os.Readlink(filepath.Join(root, name)); {
		case err != nil:
			bad(name, "layer link: %v", err)
		case target != stackTarget(c):
			bad(name, "layer link points at %q, want %q", target, stackTarget(c))
		}
		if _, ok := ldv.recs[c]; !ok {
			bad(name, "layer directory %s is not recorded", c)
		} else if why, ok := ldv.bad[c]; ok {
			bad(name, "layer directory %s is damaged: %s", c, why)
		}
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
		if _, err := ParseManifestLine(sc.Text()); err != nil {
			bad("", "manifest: %v", err)
			return out
		}
		n++
	}
	if err := sc.Err(); err != nil {
		bad("", "manifest: %v", err)
	}
	if got := hashDigest(h); got != t.Manifest {
		bad("", "manifest hashes to %s, index says %s", got, t.Manifest)
	}
	if n != t.Files {
		bad("", "manifest lists %d entries, index says %d", n, t.Files)
	}
	return out
}
