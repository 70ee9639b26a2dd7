package gc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/internal/fsys"
)

// storeMount says how trees/ appears in mount tables: as a path (paths:
// absolute, as the store was opened and with symlinks resolved, since a
// mount option keeps the path it was given while the kernel reports cwd
// and mount points resolved) and, for bind mounts, as a path inside its
// file system (dev "major:minor" and rel, the path below that file
// system's root).
type storeMount struct {
	paths []string
	dev   string
	rel   string
}

// treeOf returns the tree that path p lies in, under any of the store's
// names for trees/.
func (sm storeMount) treeOf(p string) (digest.Digest, bool) {
	for _, dir := range sm.paths {
		if d, ok := treeOf(dir, p); ok {
			return d, true
		}
	}
	return "", false
}

// inUse finds the trees under treesDir that running processes still use
// although no machine may point at them any more. It looks at every
// process's cwd and root, and at the mount table of every mount namespace
// once: a bind mount of a tree, a mount on or inside a tree (run's
// overlay of a stack's layers), a tree as a mount's source (the overlay
// `rootswap mount` makes of a stack elsewhere), or a tree named in a file
// system's options (the overlay lowerdir= that systemd-nspawn
// --volatile=overlay mounts). Processes that vanish or
// cannot be read while it looks are skipped; an unreadable /proc is an
// error, because then nothing can be known.
func inUse(procDir, treesDir string) (map[digest.Digest]string, error) {
	sm, err := findStoreMount(procDir, treesDir)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("scan processes: %w", err)
	}
	found := map[digest.Digest]string{}
	use := func(d digest.Digest, why string) {
		if _, ok := found[d]; !ok {
			found[d] = why
		}
	}
	seenNS := map[string]bool{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join(procDir, e.Name())
		who := fmt.Sprintf("pid %d (%s)", pid, comm(dir))
		for _, link := range []string{"cwd", "root"} {
			target, err := os.Readlink(filepath.Join(dir, link))
			if err != nil {
				continue
			}
			if d, ok := sm.treeOf(target); ok {
				use(d, fmt.Sprintf("%s %s %s", who, link, target))
			}
		}
		ns, err := os.Readlink(filepath.Join(dir, "ns", "mnt"))
		if err != nil || seenNS[ns] {
			continue
		}
		f, err := os.Open(filepath.Join(dir, "mountinfo"))
		if err != nil {
			continue
		}
		seenNS[ns] = true
		for _, u := range scanMountinfo(f, sm) {
			use(u.digest, who+": "+u.how)
		}
		f.Close()
	}
	return found, nil
}

// findStoreMount resolves treesDir and finds the mount that holds it in
// this process's mount table.
func findStoreMount(procDir, treesDir string) (storeMount, error) {
	real, err := filepath.EvalSymlinks(treesDir)
	if err != nil {
		return storeMount{}, fmt.Errorf("trees %s: %w", treesDir, err)
	}
	sm := storeMount{paths: []string{real}}
	if abs, err := filepath.Abs(treesDir); err == nil && abs != real {
		sm.paths = append(sm.paths, abs)
	}
	f, err := os.Open(filepath.Join(procDir, "self", "mountinfo"))
	if err != nil {
		return storeMount{}, fmt.Errorf("scan mounts: %w", err)
	}
	defer f.Close()
	best := -1
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		m, ok := fsys.ParseMountinfo(sc.Text())
		// The longest mount point wins; at the same point a later line
		// is mounted on top of an earlier one, so it wins too.
		if !ok || !within(real, m.Point) || len(m.Point) < best {
			continue
		}
		best = len(m.Point)
		sm.dev = m.Dev
		sm.rel = filepath.Join(m.Root, strings.TrimPrefix(real, m.Point))
	}
	return sm, sc.Err()
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

type mountUse struct {
	digest digest.Digest
	how    string
}

// scanMountinfo returns the trees one mount table uses.
func scanMountinfo(r io.Reader, sm storeMount) []mountUse {
	var out []mountUse
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		m, ok := fsys.ParseMountinfo(sc.Text())
		if !ok {
			continue
		}
		// A bind mount of a tree (or of a directory in it), wherever it is mounted.
		if sm.dev != "" && m.Dev == sm.dev {
			if d, ok := treeOf(sm.rel, m.Root); ok {
				out = append(out, mountUse{d, "bind mount of " + m.Root + " at " + m.Point})
			}
		}
		// Anything mounted on or in a tree pins it as a mount point.
		if d, ok := sm.treeOf(m.Point); ok {
			out = append(out, mountUse{d, m.FSType + " mounted at " + m.Point})
		}
		// A tree as the source: the overlay of a stack (run's, `rootswap
		// mount`'s) names the stack's directory there (fsys.MountOverlay),
		// whatever its lower directories' names say.
		if d, ok := sm.treeOf(m.Source); ok {
			out = append(out, mountUse{d, fmt.Sprintf("%s of %s at %s", m.FSType, m.Source, m.Point)})
		}
		// A tree named in the options: overlay's lowerdir=, upperdir=.
		for _, opt := range strings.Split(m.SuperOpts, ",") {
			key, val, ok := strings.Cut(opt, "=")
			if !ok {
				continue
			}
			for _, p := range strings.Split(val, ":") {
				if d, ok := sm.treeOf(p); ok {
					out = append(out, mountUse{d, fmt.Sprintf("%s %s=%s at %s", m.FSType, key, p, m.Point)})
				}
			}
		}
	}
	return out
}

// treeOf returns the tree that path p lies in, if it lies in one under
// treesDir (…/trees, holding <algorithm>/<encoded>).
func treeOf(treesDir, p string) (digest.Digest, bool) {
	rest, ok := strings.CutPrefix(p, treesDir+"/")
	if !ok {
		return "", false
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) < 2 {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[1])
	if d.Validate() != nil {
		return "", false
	}
	return d, true
}

func comm(procPID string) string {
	b, err := os.ReadFile(filepath.Join(procPID, "comm"))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
