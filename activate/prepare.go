package activate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
)

// Source is where prepare gets images: the Docker daemon through the
// snapshot package in rootswap, a fake in unit tests.
type Source interface {
	// Pull asks for a fresh copy of ref.
	Pull(ctx context.Context, ref string) error
	// Resolve returns the image digest ref names now; an error wrapping
	// ErrUnreachable means the source cannot be asked at all.
	Resolve(ctx context.Context, ref string) (digest.Digest, error)
	// Import makes sure the store has tree d; created reports an export.
	Import(ctx context.Context, ref string, d digest.Digest) (created bool, err error)
}

// ErrUnreachable is wrapped by a Source that cannot be reached.
var ErrUnreachable = errors.New("image source unreachable")

// PrepareOptions tune Prepare; the zero value means no pull and the
// default health policy.
type PrepareOptions struct {
	Pull         bool
	Force        bool          // activate a digest even if it failed before
	HealthyAfter time.Duration // a run this long makes a generation healthy
	MaxFailures  int           // failed short runs in a row that make a crash loop
}

func (p *PrepareOptions) defaults() {
	if p.HealthyAfter <= 0 {
		p.HealthyAfter = DefaultHealthyAfter
	}
	if p.MaxFailures <= 0 {
		p.MaxFailures = DefaultMaxFailures
	}
}

// Prepared says what Prepare did.
type Prepared struct {
	Digest     digest.Digest
	Generation uint64
	Imported   bool // a new tree was exported into the store
	Activated  bool // current moved to a new generation
	Cached     bool // the source was unreachable: the cached tree stays current
	RolledBack bool // current was crash-looping and was rolled back
	Declined   bool // the image's digest failed before: the current tree stays
}

// Prepare makes machine name run image ref: resolve, import if the store
// lacks the tree, activate. When ref already names the current tree (and
// it is not crash-looping) it costs one resolve, one readlink and one index
// read, and writes nothing.
//
// Around that: with Pull, a failed pull is a warning. When the source is
// unreachable and the machine has a current tree, it warns and keeps it.
// When the current generation is crash-looping, it rolls back to the last
// healthy one and marks the bad digest failed; a failed digest is declined
// (warning, no error) until ref names another digest or Force is set.
func Prepare(ctx context.Context, s *cache.Store, src Source, log *slog.Logger, name, ref string, opt PrepareOptions) (_ Prepared, err error) {
	opt.defaults()
	if err := ValidName(name); err != nil {
		return Prepared{}, err
	}
	defer func() { err = noSpace(s, name, fmt.Sprintf("prepare %s %s", name, ref), err) }()
	if opt.Pull {
		if err := src.Pull(ctx, ref); err != nil {
			log.Warn("pull failed; using the local image", "image", ref, "err", err)
		}
	}
	d, err := src.Resolve(ctx, ref)
	if errors.Is(err, ErrUnreachable) {
		cur, cerr := CurrentTree(s, name)
		if cerr != nil {
			return Prepared{}, fmt.Errorf("%w; machine %s has no cached tree to start from", err, name)
		}
		log.Warn("image source unreachable; keeping the cached tree", "machine", name, "digest", cur, "err", err)
		return Prepared{Digest: cur, Cached: true}, nil
	}
	if err != nil {
		return Prepared{}, err
	}

	// One read for the path every restart takes, and for the health check.
	cur, _ := CurrentTree(s, name)
	var m cache.Machine
	var g cache.Generation
	treeOK := false
	err = s.View(func(tx *cache.Tx) error {
		var err error
		if m, err = tx.Machine(name); err != nil {
			return nil // a new machine
		}
		g, _ = tx.Generation(name, m.Current)
		t, err := tx.Tree(d)
		treeOK = err == nil && !t.Broken
		return nil
	})
	if err != nil {
		return Prepared{}, err
	}
	p := Prepared{Digest: d}
	if m.Current != 0 && g.Digest == cur && crashLooping(g, opt) && !opt.Force {
		good, ok, err := autoRollback(ctx, s, log, name, g, opt)
		if err != nil {
			return Prepared{}, err
		}
		if ok {
			cur, p.RolledBack, p.Digest, p.Generation = good.Digest, true, good.Digest, good.Number
			m.Failed = append(m.Failed, g.Digest)
		}
	}
	if slices.Contains(m.Failed, d) {
		if !opt.Force {
			log.Warn("image digest failed on this machine before; keeping the current tree (use --force to try it again)",
				"machine", name, "image", ref, "digest", d, "current", cur)
			p.Digest, p.Declined = cur, true
			if !p.RolledBack {
				p.Generation = m.Current
			}
			return p, nil
		}
		if err := clearFailed(s, name, d); err != nil {
			return Prepared{}, err
		}
	}
	// Only when the index agrees with the link: otherwise Activate's load
	// reconciles them.
	if cur == d && treeOK && !p.RolledBack && m.Current != 0 && g.Digest == cur {
		p.Generation = m.Current
		return p, nil
	}
	// Between the import's commit and the activation the tree is no gc
	// root yet: the shared store lock keeps gc's sweep out until the
	// symlink makes it one.
	lock, err := s.Lock(ctx, false)
	if err != nil {
		return Prepared{}, err
	}
	defer lock.Unlock()
	if p.Imported, err = src.Import(ctx, ref, d); err != nil {
		return Prepared{}, err
	}
	gen, changed, err := Activate(ctx, s, name, d, ref, "prepare")
	if err != nil {
		return Prepared{}, err
	}
	p.Digest, p.Generation, p.Activated = d, gen.Number, changed
	return p, nil
}

// noSpaceError is a command that found the disk full: one line saying
// what failed, on which store, and what the machine runs now.
type noSpaceError struct {
	what, store string
	cur         digest.Digest
	err         error
}

func (e *noSpaceError) Error() string {
	still := "the machine has no current tree"
	if e.cur != "" {
		still = "the machine still runs " + string(e.cur)
	}
	return fmt.Sprintf("%s: no space left on device (store %s): %s", e.what, e.store, still)
}

func (e *noSpaceError) Unwrap() error { return e.err }

// noSpace turns an error caused by a full disk into a noSpaceError about
// what, and leaves any other error alone. What the machine runs is read
// from its link after the failure: the link is what runs.
func noSpace(s *cache.Store, name, what string, err error) error {
	if !errors.Is(err, syscall.ENOSPC) {
		return err
	}
	var inner *noSpaceError
	if errors.As(err, &inner) {
		err = inner.err // a prepare's activation: say it once, as the prepare
	}
	cur, _ := CurrentTree(s, name)
	return &noSpaceError{what: what, store: s.Root(), cur: cur, err: err}
}
