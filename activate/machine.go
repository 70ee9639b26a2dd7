package activate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/failpoint"
	"github.com/rootswap/rootswap/internal/fsys"
)

// ErrInvalidName is returned (wrapped) for a bad machine name.
var ErrInvalidName = errors.New("invalid machine name")

// ErrNoGeneration is returned (wrapped) when rollback has nowhere to go.
var ErrNoGeneration = errors.New("no such generation")

// nameRE is systemd's hostname_is_valid(name, 0), which systemd-nspawn
// applies to --machine and machined to registrations (src/basic/
// hostname-util.c, the same in systemd 252): dot-separated labels of
// ASCII letters, digits and hyphens, no label empty or starting or ending
// with a hyphen. ValidName adds the length limit, HOST_NAME_MAX (64).
// Such a name is also a safe path component (no "/", never "." or "..")
// and a unit name part that needs no systemd-escape ("-" and "." are kept
// as they are in rootswap-NAME.service and systemd-nspawn@NAME.service).
var nameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$`)

// ValidName checks a machine name before it becomes a path, a unit name
// or systemd-nspawn's --machine: it accepts exactly the names nspawn does.
func ValidName(name string) error {
	if len(name) > 64 || !nameRE.MatchString(name) {
		return fmt.Errorf("machine %q: %w (a hostname: letters, digits and -, in labels separated by single dots, no label starting or ending with -; at most 64 characters)", name, ErrInvalidName)
	}
	return nil
}

func linkPath(s *cache.Store, name string) string {
	return filepath.Join(s.MachinesDir(), name, "current")
}

// CurrentTree returns the digest machine name's symlink points at, or an error
// wrapping cache.ErrNotFound if it has none. The link format is cache's
// (cache.ParseLinkTarget); a malformed link is an error naming the machine.
func CurrentTree(s *cache.Store, name string) (digest.Digest, error) {
	return s.ReadMachineLink(name)
}

// tmpLinkPrefix names a link staged by flip; load removes any a crash or
// a failure left behind.
const tmpLinkPrefix = ".current-"

// flip points machine name at tree d, with record committing the index
// record of the change, in the order that keeps the index and the link
// agreeing:
//
//  1. The new link under a temporary name. This is where a full disk
//     fails a flip: a target of ~80 bytes does not fit in an ext4 inode
//     and takes a block.
//  2. record commits the index. If it fails, the staged link goes and
//     nothing changed.
//  3. rename(2) replaces `current` atomically and needs no new space. If
//     it fails, undo reverts the index, best effort.
//  4. fsync the directory, so the rename is durable.
//
// A crash (or a failed undo) between 2 and 3 leaves the index ahead of
// the link; the next load sees the disagreement and adopts the link.
func flip(s *cache.Store, name string, d digest.Digest, record func() error, undo func() error) error {
	dir := filepath.Join(s.MachinesDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("machine %s: %w", name, err)
	}
	target := filepath.Join("..", "..", "trees", string(d.Algorithm()), d.Encoded())
	// 1.
	failpoint.Hit("flip-before-symlink")
	staged, err := fsys.StageSymlink(dir, tmpLinkPrefix, target)
	if err != nil {
		return fmt.Errorf("machine %s: %w", name, err)
	}
	failpoint.Hit("flip-temp-link")
	// 2.
	if err := record(); err != nil {
		staged.Remove()
		return err
	}
	failpoint.Hit("flip-recorded")
	// 3.
	if err := staged.Rename("current"); err != nil {
		undo()
		return fmt.Errorf("machine %s: %w", name, err)
	}
	failpoint.Hit("flip-renamed")
	// 4.
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("machine %s: %w", name, err)
	}
	return nil
}

// state is a machine's index state reconciled with its symlink.
type state struct {
	m    index.Machine
	gens []index.Generation
	cur  digest.Digest // from the symlink; "" if none
}

func (st *state) gen(n uint64) (index.Generation, bool) {
	for _, g := range st.gens {
		if g.Number == n {
			return g, true
		}
	}
	return index.Generation{}, false
}

// load reads a machine's state and repairs the index if a crash left it
// behind the symlink. The caller holds the machine lock.
func load(s *cache.Store, name string) (*state, error) {
	// Links staged by a flip that failed or crashed before its rename.
	staged, _ := filepath.Glob(filepath.Join(s.MachinesDir(), name, tmpLinkPrefix+"*"))
	for _, p := range staged {
		os.Remove(p)
	}
	st := &state{}
	cur, err := CurrentTree(s, name)
	if err != nil && !errors.Is(err, cache.ErrNotFound) {
		return nil, err
	}
	st.cur = cur
	err = s.View(func(tx *index.Tx) error {
		m, err := tx.Machine(name)
		if err != nil && !errors.Is(err, cache.ErrNotFound) {
			return err
		}
		st.m = m
		st.m.Name = name
		st.gens, err = tx.Generations(name)
		return err
	})
	if err != nil {
		return nil, err
	}
	if g, ok := st.gen(st.m.Current); cur == "" || (ok && g.Digest == cur) {
		return st, nil
	}
	// The index and the symlink disagree: a crash, or a failed undo,
	// between the index commit and the rename (see flip). The symlink is
	// what runs: adopt it.
	err = s.Update(func(tx *index.Tx) error {
		for i := len(st.gens) - 1; i >= 0; i-- {
			if st.gens[i].Digest == cur {
				st.m.Current = st.gens[i].Number
				return tx.PutMachine(st.m)
			}
		}
		g, err := tx.AppendGeneration(name, index.Generation{Digest: cur, Time: time.Now().UTC(), Reason: "recovered"})
		if err != nil {
			return err
		}
		st.gens = append(st.gens, g)
		st.m.Current = g.Number
		return tx.PutMachine(st.m)
	})
	return st, err
}

// lock takes the shared store lock (gc may not sweep under a flip) and the
// machine's own lock (two flips may not lose each other).
func lock(ctx context.Context, s *cache.Store, name string) (func(), error) {
	sl, err := s.Lock(ctx, false)
	if err != nil {
		return nil, err
	}
	ml, err := s.LockMachine(ctx, name)
	if err != nil {
		sl.Unlock()
		return nil, fmt.Errorf("machine %s: %w", name, err)
	}
	return func() { ml.Unlock(); sl.Unlock() }, nil
}

// reconcile makes machine name's index agree with its link, as every
// flip does first (see load), and returns its record and current
// generation.
func reconcile(ctx context.Context, s *cache.Store, name string) (index.Machine, index.Generation, error) {
	unlock, err := lock(ctx, s, name)
	if err != nil {
		return index.Machine{}, index.Generation{}, err
	}
	defer unlock()
	st, err := load(s, name)
	if err != nil {
		return index.Machine{}, index.Generation{}, err
	}
	g, _ := st.gen(st.m.Current)
	return st.m, g, nil
}

// Activate points machine name at tree d (which must be in the index) and
// records a new generation with image ref and reason. Activating the tree
// that is already current changes nothing and reports changed false.
func Activate(ctx context.Context, s *cache.Store, name string, d digest.Digest, image, reason string) (g index.Generation, changed bool, err error) {
	if err := ValidName(name); err != nil {
		return g, false, err
	}
	defer func() { err = noSpace(s, name, fmt.Sprintf("machine %s: activate %s", name, d), err) }()
	unlock, err := lock(ctx, s, name)
	if err != nil {
		return g, false, err
	}
	defer unlock()
	st, err := load(s, name)
	if err != nil {
		return g, false, err
	}
	if cur, ok := st.gen(st.m.Current); ok && st.cur == d {
		return cur, false, nil
	}
	var t index.Tree
	if err := s.View(func(tx *index.Tx) (err error) { t, err = tx.Tree(d); return err }); err != nil {
		return g, false, err
	}
	if t.Broken {
		return g, false, fmt.Errorf("tree %s: marked broken by verify; import it again", d)
	}
	prev := st.m
	now := time.Now().UTC()
	record := func() error {
		failpoint.Hit("activate-before-index")
		return s.Update(func(tx *index.Tx) error {
			var err error
			g, err = tx.AppendGeneration(name, index.Generation{Digest: d, Image: image, Time: now, Reason: reason})
			if err != nil {
				return err
			}
			m := prev
			m.Current = g.Number
			// An activation is a choice of d: it is no longer declined.
			m.Forgive(d)
			if image != "" {
				m.Image = image
			}
			if err := tx.PutMachine(m); err != nil {
				return err
			}
			t.LastUsed = now
			if image != "" && !contains(t.Refs, image) {
				t.Refs = append(t.Refs, image)
			}
			return tx.PutTree(t)
		})
	}
	// The generation stays in the history, never current: there is no
	// taking back a number once it was committed.
	undo := func() error { return s.Update(func(tx *index.Tx) error { return tx.PutMachine(prev) }) }
	if err := flip(s, name, d, record, undo); err != nil {
		return index.Generation{}, false, err
	}
	failpoint.Hit("activate-after-index")
	return g, true, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ManualRollback is the reason an operator's `rollback` records for the
// digest it left.
const ManualRollback = "rolled back by hand"

// Rollback moves machine name to an earlier generation: by default the one
// before the current one, or the one named by to (a generation number or a
// digest, whose newest generation is taken). No generation is added.
//
// A rollback holds: the digest it leaves is marked failed (reason
// ManualRollback), so the restart that applies the rollback, whose
// prepare --pull resolves the same reference, declines it instead of
// activating it again; so does update. It stays declined until the
// reference names another digest or prepare gets --force. The digest
// rolled back to is no longer declined: the operator chose it.
func Rollback(ctx context.Context, s *cache.Store, name, to string) (index.Generation, error) {
	return rollbackFor(ctx, s, name, to, ManualRollback)
}

// rollbackFor is Rollback, recording why as the reason the digest left is
// declined.
func rollbackFor(ctx context.Context, s *cache.Store, name, to, why string) (_ index.Generation, err error) {
	if err := ValidName(name); err != nil {
		return index.Generation{}, err
	}
	defer func() { err = noSpace(s, name, fmt.Sprintf("machine %s: rollback", name), err) }()
	unlock, err := lock(ctx, s, name)
	if err != nil {
		return index.Generation{}, err
	}
	defer unlock()
	st, err := load(s, name)
	if err != nil {
		return index.Generation{}, err
	}
	if len(st.gens) == 0 {
		return index.Generation{}, fmt.Errorf("machine %s: %w", name, cache.ErrNotFound)
	}
	target, err := pick(st, name, to)
	if err != nil {
		return index.Generation{}, err
	}
	var t index.Tree
	if err := s.View(func(tx *index.Tx) (err error) { t, err = tx.Tree(target.Digest); return err }); errors.Is(err, cache.ErrNotFound) {
		return index.Generation{}, fmt.Errorf("machine %s: generation %d: its tree %s was removed by gc: %w", name, target.Number, target.Digest, ErrNoGeneration)
	} else if err != nil {
		return index.Generation{}, fmt.Errorf("machine %s: generation %d: %w", name, target.Number, err)
	}
	if t.Broken {
		return index.Generation{}, fmt.Errorf("machine %s: generation %d: tree %s is marked broken", name, target.Number, t.Digest)
	}
	prev := st.m
	record := func() error {
		failpoint.Hit("rollback-before-index")
		return s.Update(func(tx *index.Tx) error {
			m := prev
			m.Current = target.Number
			if st.cur != "" && st.cur != target.Digest {
				m.Decline(st.cur, why)
			}
			m.Forgive(target.Digest)
			return tx.PutMachine(m)
		})
	}
	undo := func() error { return s.Update(func(tx *index.Tx) error { return tx.PutMachine(prev) }) }
	if err := flip(s, name, target.Digest, record, undo); err != nil {
		return index.Generation{}, err
	}
	failpoint.Hit("rollback-after-index")
	return target, nil
}

func pick(st *state, name, to string) (index.Generation, error) {
	if to == "" {
		prev := index.Generation{}
		for _, g := range st.gens {
			if g.Number < st.m.Current && g.Number > prev.Number {
				prev = g
			}
		}
		if prev.Number == 0 {
			return prev, fmt.Errorf("machine %s: generation %d is the oldest: %w", name, st.m.Current, ErrNoGeneration)
		}
		return prev, nil
	}
	if n, err := strconv.ParseUint(to, 10, 64); err == nil {
		if g, ok := st.gen(n); ok {
			return g, nil
		}
		return index.Generation{}, fmt.Errorf("machine %s: generation %d: %w", name, n, ErrNoGeneration)
	}
	d, err := digest.Parse(to)
	if err != nil {
		return index.Generation{}, fmt.Errorf("--to %q: not a generation number or digest: %w", to, cache.ErrInvalid)
	}
	for i := len(st.gens) - 1; i >= 0; i-- {
		if st.gens[i].Digest == d {
			return st.gens[i], nil
		}
	}
	return index.Generation{}, fmt.Errorf("machine %s: digest %s: %w", name, d, ErrNoGeneration)
}

// Status is one machine as `list` shows it.
type Status struct {
	Name       string        `json:"name"`
	Digest     digest.Digest `json:"digest"`
	Generation uint64        `json:"generation"`
	Image      string        `json:"image"`
	Activated  time.Time     `json:"activated"`
}

// List returns every machine, read from the index and the symlinks without
// taking any lock.
func List(s *cache.Store) ([]Status, error) {
	var out []Status
	err := s.View(func(tx *index.Tx) error {
		hs, err := tx.Histories()
		if err != nil {
			return err
		}
		for _, m := range hs {
			st := Status{Name: m.Name, Generation: m.Current}
			for _, g := range m.Generations {
				if g.Number == m.Current {
					st.Digest, st.Image, st.Activated = g.Digest, g.Image, g.Time
				}
			}
			if cur, err := CurrentTree(s, m.Name); err == nil && cur != st.Digest {
				st.Digest, st.Image = cur, "" // a flip the index has not caught up with
			}
			out = append(out, st)
		}
		return nil
	})
	return out, err
}

// History returns machine name's generations, oldest first, and its
// record (the current generation, the failed digests).
func History(s *cache.Store, name string) ([]index.Generation, index.Machine, error) {
	if err := ValidName(name); err != nil {
		return nil, index.Machine{}, err
	}
	var gens []index.Generation
	var m index.Machine
	err := s.View(func(tx *index.Tx) (err error) {
		if m, err = tx.Machine(name); err != nil {
			return err
		}
		gens, err = tx.Generations(name)
		return err
	})
	return gens, m, err
}

// HealthOf labels generation g of machine m: "failed" (rolled back from:
// a crash loop, a failed update, an operator's rollback; m.Why says
// which), "healthy" (stayed up healthyAfter), "failing" (its last runs
// failed) or "" (nothing known yet).
func HealthOf(m index.Machine, g index.Generation, healthyAfter time.Duration) string {
	switch {
	case slices.Contains(m.Failed, g.Digest):
		return "failed"
	case Healthy(g, healthyAfter):
		return "healthy"
	case g.Failures > 0:
		return "failing"
	}
	return ""
}

// TreeFor returns the absolute path of machine name's current tree.
func TreeFor(s *cache.Store, name string) (string, digest.Digest, error) {
	d, err := CurrentTree(s, name)
	if err != nil {
		return "", "", err
	}
	p := s.TreePath(d)
	if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
		return "", "", fmt.Errorf("machine %s: tree %s is missing", name, d)
	}
	return p, d, nil
}
