package cache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/fsys"
)

// Conditions callers branch on. ErrNotFound and ErrLocked are index's
// own values, so errors.Is matches a record's absence or a busy index.db
// by either package's name.
var (
	ErrNotFound = index.ErrNotFound
	ErrExists   = errors.New("already exists")
	ErrLocked   = index.ErrLocked
	ErrUnsafe   = fsys.ErrUnsafePath
	ErrInvalid  = errors.New("invalid")
)

// DefaultLockTimeout is how long a command waits for a contended lock.
const DefaultLockTimeout = 60 * time.Second

// LeaseTTL is how long an import's lease protects it from gc.
const LeaseTTL = time.Hour

// Store is an open store directory. It holds no descriptor between calls:
// the index is opened per transaction and locks are taken per operation.
type Store struct {
	root        string
	lockTimeout time.Duration
}

// Options tune Open.
type Options struct {
	LockTimeout time.Duration // zero means DefaultLockTimeout; negative: try once, fail at once if busy
	KeepTmp     bool          // leave dead staging alone (gc --dry-run changes nothing)
	MustExist   bool          // fail with ErrNoStore rather than create a store
}

// ErrNoStore is Open's error for a root that holds no store when
// Options.MustExist is set.
var ErrNoStore = errors.New("no store")

// Open makes the store layout under root if needed (the index is created
// atomically) and removes staging that no live process holds. With
// MustExist, a root with neither index.db nor trees/ is ErrNoStore and
// nothing is created.
func Open(ctx context.Context, root string, opt Options) (*Store, error) {
	switch {
	case opt.LockTimeout == 0:
		opt.LockTimeout = DefaultLockTimeout
	case opt.LockTimeout < 0:
		opt.LockTimeout = time.Nanosecond // both flock loops try once before the deadline
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", root, err)
	}
	s := &Store{root: abs, lockTimeout: opt.LockTimeout}
	if _, err := os.Stat(s.indexPath()); err != nil {
		if _, terr := os.Stat(filepath.Join(abs, "trees")); opt.MustExist && os.IsNotExist(err) && os.IsNotExist(terr) {
			return nil, fmt.Errorf("%w at %s", ErrNoStore, abs)
		}
		// A store that has trees or machines but lost its index is
		// damaged, not new: an empty index would make gc take every tree
		// for a crash leftover. Transactions then report index.db as
		// missing; verify --repair rebuilds it.
		if os.IsNotExist(err) && s.hasContent() {
			return s, nil
		}
		for _, d := range []string{"objects/sha256", "trees/sha256", "manifests/sha256", "layers/sha256", "layerdirs/sha256", "machines", "tmp", "locks"} {
			if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
				return nil, fmt.Errorf("store %s: %w", root, err)
			}
		}
		if err := s.db().Create(); err != nil {
			return nil, fmt.Errorf("store %s: %w", root, err)
		}
	}
	if !opt.KeepTmp {
		if err := s.CleanTmp(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// hasContent reports whether the store holds any tree or machine.
func (s *Store) hasContent() bool {
	for _, d := range []string{filepath.Join(s.root, "trees", "sha256"), s.MachinesDir()} {
		if ents, err := os.ReadDir(d); err == nil && len(ents) > 0 {
			return true
		}
	}
	return false
}

// Root is the store directory.
func (s *Store) Root() string { return s.root }

func (s *Store) indexPath() string { return filepath.Join(s.root, "index.db") }

// db is the store's index, opened per transaction with the store's lock
// timeout.
func (s *Store) db() *index.DB { return index.New(s.indexPath(), s.lockTimeout) }

// View runs fn in a read-only transaction of the store's index (see
// index.DB.View): a damaged index.db is an error wrapping
// index.ErrDamaged.
func (s *Store) View(fn func(*index.Tx) error) error { return s.db().View(fn) }

// Update runs fn in a read-write transaction of the store's index (see
// index.DB.Update); fn's effects are durable when Update returns nil.
func (s *Store) Update(fn func(*index.Tx) error) error { return s.db().Update(fn) }

// TreePath is where tree d lives (whether or not it exists).
func (s *Store) TreePath(d digest.Digest) string {
	return filepath.Join(s.root, "trees", string(d.Algorithm()), d.Encoded())
}

// ObjectPath is where object d lives.
func (s *Store) ObjectPath(d digest.Digest) string {
	return filepath.Join(s.root, "objects", string(d.Algorithm()), d.Encoded())
}

// ManifestPath is where the manifest of tree d lives.
func (s *Store) ManifestPath(d digest.Digest) string {
	return filepath.Join(s.root, "manifests", string(d.Algorithm()), d.Encoded())
}

// MachinesDir is the directory of machine symlinks.
func (s *Store) MachinesDir() string { return filepath.Join(s.root, "machines") }

// TmpDir is the staging directory.
func (s *Store) TmpDir() string { return filepath.Join(s.root, "tmp") }

// The store's locks are flock(2) files taken with the store's timeout:
//
//   - the store lock (Lock, root/lock): shared for imports (NewBuilder),
//     activation, pins and verify; exclusive for gc's Collect and verify
//     --repair;
//   - a tree lock (LockTree, locks/tree-<hex>), exclusive: one import of
//     an image digest at a time;
//   - a machine lock (LockMachine, locks/machine-<name>), exclusive: one
//     flip of a machine at a time;
//   - the update lock (LockUpdate, locks/update), exclusive: one `update`
//     at a time; taken before any other, and nothing waits for it but
//     another update;
//   - a staging lock (tmp/<id>.lock), held by its builder from birth;
//     cleaners only TryLock it.
//
// Lock order. snapshot.ImportImage takes the tree lock before the store
// lock (its NewBuilder); snapshot.ImportTar takes the store lock first and
// the tree lock after, as it learns the digest only from the stream. The
// two orders are safe only because both take the store lock shared:
// shared holders never wait for each other, and the one exclusive holder,
// gc, never waits for a tree lock (it only TryLocks them to remove their
// files, fsys.RemoveLocked). Taking the store lock exclusive in an import,
// or making gc wait for a tree lock, would deadlock (until a lock timeout
// broke it). activate takes the machine lock after the store lock
// (activate's lock), and takes no tree or store lock while it holds a
// machine lock. activate.Prepare holds the store lock shared across import
// and activation, so the shared lock is taken again inside it, on another
// open file: flock grants a shared lock beside shared holders. Innermost
// of all is bbolt's own flock on index.db, held for one View or Update.

// Lock takes the store lock: shared for imports and activation, exclusive
// for gc's sweep. The error on timeout wraps ErrLocked and names the holder.
func (s *Store) Lock(ctx context.Context, exclusive bool) (*fsys.Lock, error) {
	return s.lockFile(ctx, filepath.Join(s.root, "lock"), exclusive)
}

// LockTree serialises imports of one image digest, so concurrent prepares
// of the same new image export it once.
func (s *Store) LockTree(ctx context.Context, d digest.Digest) (*fsys.Lock, error) {
	return s.lockFile(ctx, filepath.Join(s.root, "locks", "tree-"+d.Encoded()), true)
}

// LockMachine serialises flips of one machine.
func (s *Store) LockMachine(ctx context.Context, name string) (*fsys.Lock, error) {
	return s.lockFile(ctx, filepath.Join(s.root, "locks", "machine-"+name), true)
}

// LockUpdate serialises `rootswap update` runs on the store: a second one
// waits for the first, up to the lock timeout. Imports, activations and
// gc do not take it.
func (s *Store) LockUpdate(ctx context.Context) (*fsys.Lock, error) {
	return s.lockFile(ctx, filepath.Join(s.root, "locks", "update"), true)
}

func (s *Store) lockFile(ctx context.Context, path string, exclusive bool) (*fsys.Lock, error) {
	l, err := fsys.LockFile(ctx, path, exclusive, s.lockTimeout)
	if errors.Is(err, fsys.ErrLocked) {
		return nil, fmt.Errorf("%s: %w: %w", filepath.Base(path), ErrLocked, err)
	}
	return l, err
}

// Staging is a private directory under tmp/, alive while its lock is held.
type Staging struct {
	ID   string
	Dir  string
	lock *fsys.Lock
}

// NewStaging creates tmp/<id>/ guarded by tmp/<id>.lock. The lock file
// appears already locked, and before the directory exists, so a cleaner
// never mistakes a live staging for a dead one.
func (s *Store) NewStaging(kind string) (*Staging, error) {
	id := fsys.TempName(fmt.Sprintf("%s-%d-", kind, os.Getpid()))
	lockPath := filepath.Join(s.TmpDir(), id+".lock")
	l, err := fsys.CreateLocked(lockPath)
	if err != nil {
		return nil, fmt.Errorf("staging: %w", err)
	}
	dir := filepath.Join(s.TmpDir(), id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		l.Unlock()
		os.Remove(lockPath)
		return nil, fmt.Errorf("staging: %w", err)
	}
	return &Staging{ID: id, Dir: dir, lock: l}, nil
}

// Remove deletes the staging directory and then its lock file, in that
// order, and releases the lock.
func (st *Staging) Remove() error {
	err := os.RemoveAll(st.Dir)
	os.Remove(st.Dir + ".lock")
	st.lock.Unlock()
	return err
}

// CleanTmp removes staging whose lock no live process holds (see
// DeadStaging), and drops the leases of the imports that owned it. It is
// cheap when tmp/ is empty, which is the case on every path that matters
// for speed.
func (s *Store) CleanTmp(ctx context.Context) error {
	dead, err := s.DeadStaging()
	if err != nil {
		return err
	}
	for _, id := range dead {
		// Hold the lock while removing, so no other cleaner races us;
		// a directory that never had a lock file has none to take.
		l, free, err := fsys.TryLock(filepath.Join(s.TmpDir(), id+".lock"))
		if err == nil && !free {
			continue
		}
		os.RemoveAll(filepath.Join(s.TmpDir(), id))
		os.Remove(filepath.Join(s.TmpDir(), id+".lock"))
		l.Unlock()
	}
	if len(dead) == 0 {
		return nil
	}
	err = s.Update(func(tx *index.Tx) error {
		for _, id := range dead {
			if err := tx.DeleteLease(id); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, index.ErrDamaged) {
		// The leases expire, or go with the rebuild; commands that need
		// the index report the damage themselves, and `run` needs none.
		return nil
	}
	return err
}
