package index

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/rootswap/rootswap/internal/fsys"
)

// Conditions callers branch on. Package cache re-exports ErrNotFound and
// ErrLocked as its own (the same values), so errors.Is matches either
// name.
var (
	// ErrDamaged is wrapped by every error that says index.db cannot be
	// read: cache.Store.Verify with repair rebuilds it from the disk.
	ErrDamaged = errors.New("damaged")
	// ErrNotFound is wrapped by an accessor's error for a missing record.
	ErrNotFound = errors.New("not found")
	// ErrLocked is wrapped when index.db stays locked by another process
	// for longer than the DB's timeout.
	ErrLocked = errors.New("store busy")
)

// DB is the index file at a path. It holds no descriptor: the file is
// opened, flocked with a timeout, and closed again by every View and
// Update, so one long command never blocks every other invocation.
type DB struct {
	path    string
	timeout time.Duration
}

// New returns the index at path; a transaction waits up to timeout
// (which must be positive: bbolt waits forever on zero) for another
// process's lock on the file. It touches nothing on disk.
func New(path string, timeout time.Duration) *DB {
	return &DB{path: path, timeout: timeout}
}

// Path is the index file.
func (db *DB) Path() string { return db.path }

// View runs fn in a read-only transaction. The index is opened for the
// call only, so a long command never blocks others. A damaged index.db is
// an error wrapping ErrDamaged, never a panic (see guarded).
func (db *DB) View(fn func(*Tx) error) error {
	return db.guarded(true, func(bdb *bolt.DB) error {
		return bdb.View(func(tx *bolt.Tx) error { return db.run(tx, fn) })
	})
}

// Update runs fn in a read-write transaction; fn's effects are durable when
// Update returns nil. A damaged index.db is an error wrapping
// ErrDamaged.
func (db *DB) Update(fn func(*Tx) error) error {
	return db.guarded(false, func(bdb *bolt.DB) error {
		return bdb.Update(func(tx *bolt.Tx) error { return db.run(tx, fn) })
	})
}

// run checks that every required bucket is there (bbolt hands a fresh,
// empty file back as a database without any), creates in a write
// transaction the added buckets an index of an earlier version lacks, and
// then runs fn. A read-only transaction's accessors read a missing added
// bucket as empty.
func (db *DB) run(tx *bolt.Tx, fn func(*Tx) error) error {
	for _, b := range requiredBuckets {
		if tx.Bucket(b) == nil {
			return db.damaged(fmt.Sprintf("bucket %q is missing", b))
		}
	}
	if tx.Writable() {
		for _, b := range addedBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
	}
	return fn(&Tx{tx})
}

// guarded opens the index and runs fn with it, turning what bbolt does on
// a damaged file into an error wrapping ErrDamaged: its panics ("invalid
// freelist page", "page N expected to be ..."), and faults on its mmap (a
// file truncated under a mapping is SIGBUS), which SetPanicOnFault makes
// recoverable panics of this goroutine for the call. Once damage is seen,
// the process answers every later call with the same error without opening
// the file again (a panic inside bolt.Open can leave its flock held),
// until a transaction that was already running succeeds: then the file is
// read afresh.
//
// A panic that is neither a fault nor raised inside bbolt is a bug of the
// caller's fn and is not disguised as damage.
func (db *DB) guarded(readOnly bool, fn func(*bolt.DB) error) (err error) {
	if err := db.knownDamage(); err != nil {
		return err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		_, fault := p.(interface{ Addr() uintptr })
		if !fault && !strings.Contains(string(debug.Stack()), "go.etcd.io/bbolt") {
			panic(p)
		}
		why := fmt.Sprint(p)
		if fault {
			why = "reading the mapped file faulted (truncated, or a disk error): " + why
		}
		err = db.damaged(why)
	}()
	bdb, err := db.openDB(readOnly)
	if err != nil {
		return err
	}
	defer bdb.Close()
	if err := fn(bdb); err != nil {
		return err
	}
	// A transaction that began before another call found damage has just
	// read the file whole: that verdict is not the file's any more.
	damagedIndexes.Delete(db.path)
	return nil
}

// damagedIndexes maps the path of each index.db found damaged by this
// process to the error that says so, until Replace replaces it.
var damagedIndexes sync.Map

// ForgetDamage makes the process forget every index it has found
// damaged, as a new process would start. For tests.
func ForgetDamage() { damagedIndexes.Clear() }

// damaged records and returns the error for a damaged index.
func (db *DB) damaged(why string) error {
	why = strings.Join(strings.Fields(why), " ")
	err := fmt.Errorf("index %s: %w: %s; run `rootswap verify --repair` to rebuild it from the trees on disk", db.path, ErrDamaged, why)
	prev, _ := damagedIndexes.LoadOrStore(db.path, err)
	return prev.(error)
}

func (db *DB) knownDamage() error {
	if err, ok := damagedIndexes.Load(db.path); ok {
		return err.(error)
	}
	return nil
}

// openDB opens the index for one transaction. bbolt's OpenFile hook opens
// the file, takes on that descriptor the flock bbolt would take (shared to
// read, exclusive to write; it lasts until Close, and bbolt's own flock
// then finds it held by the same open file and returns at once), and only
// then runs the damage checks: no writer is committing while they read,
// and bbolt reads nothing before they pass. A missing file is never
// created here (see Create).
func (db *DB) openDB(readOnly bool) (*bolt.DB, error) {
	var why string
	var locked error
	open := func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag&^os.O_CREATE, perm)
		if errors.Is(err, os.ErrNotExist) {
			why = "the file is missing" // Open creates it only in a store without trees
			return nil, err
		}
		if err != nil {
			return nil, err
		}
		if err := fsys.Flock(f, !readOnly, db.timeout); err != nil {
			f.Close()
			locked = err
			return nil, err
		}
		if why = checkIndexFile(f); why != "" {
			f.Close()
			return nil, errors.New(why)
		}
		return f, nil
	}
	// The freelist is loaded while opening, under the guard, even read-only:
	// bbolt's Check would otherwise load it in a goroutine of its own that
	// no recover reaches. checkIndexFile has read it anyway.
	bdb, err := bolt.Open(db.path, 0o600, &bolt.Options{Timeout: db.timeout, ReadOnly: readOnly, PreLoadFreelist: true, OpenFile: open})
	switch {
	case err == nil:
		return bdb, nil
	case why != "":
		return nil, db.damaged(why)
	case errors.Is(locked, fsys.ErrLocked):
		return nil, fmt.Errorf("index %s: %w: %w", db.path, ErrLocked, locked)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum),
		errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrInvalidMapping):
		return nil, db.damaged(err.Error())
	}
	return nil, fmt.Errorf("index %s: %w", db.path, err)
}

// Create makes the index file with all buckets: built under a temporary
// name, synced, then renamed, so a crash never leaves a half-made index.
// An index that exists is left as it is (another process made one first;
// theirs is as good) and is not an error.
func (db *DB) Create() error {
	if err := write(db.path, "", nil); err != nil {
		return fmt.Errorf("create index: %w", err)
	}
	return nil
}

// Replace makes a new index with all buckets, filled by fill, and renames
// it over the file, which is first hard-linked to keep (a file that does
// not exist is not kept). The path names a sound index, old or new, at
// every instant, and a crash never leaves a half-made one. Once replaced,
// the file is no longer known to this process as damaged. fill runs in
// the new file's only write transaction.
func (db *DB) Replace(keep string, fill func(*Tx) error) error {
	err := write(db.path, keep, func(tx *bolt.Tx) error { return fill(&Tx{tx}) })
	if err != nil {
		return err
	}
	damagedIndexes.Delete(db.path)
	return nil
}

// write makes an index with all buckets, filled by fill, under a
// temporary name next to path, synced, then renamed to path. With keep
// == "" it never replaces an index.db that exists (another process made
// one first; theirs is as good); otherwise the existing file is first
// hard-linked to keep and then replaced. A crash leaves path as it was or
// as it is meant to be, never half made.
func write(path, keep string, fill func(*bolt.Tx) error) error {
	tmp := filepath.Join(filepath.Dir(path), fsys.TempName(fmt.Sprintf(".index.db.%d.", os.Getpid())))
	defer os.Remove(tmp)
	db, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketMeta).Put([]byte("version"), []byte("1")); err != nil {
			return err
		}
		if fill != nil {
			return fill(tx)
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if keep == "" {
		err = fsys.RenameNoReplace(tmp, path)
		if errors.Is(err, os.ErrExist) {
			err = nil
		}
	} else {
		if err := os.Link(path, keep); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return err
	}
	return fsys.SyncDir(filepath.Dir(path))
}

// GarbleRecord overwrites the record at key (the names of the nested
// buckets, then the record's own key) with bytes that do not decode, so a
// test can check what a caller makes of an undecodable record. For tests.
func (db *DB) GarbleRecord(key ...string) error {
	if len(key) < 2 {
		return fmt.Errorf("index %s: garble %q: want a bucket and a key", db.path, key)
	}
	return db.guarded(false, func(bdb *bolt.DB) error {
		return bdb.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte(key[0]))
			for _, name := range key[1 : len(key)-1] {
				if b == nil {
					break
				}
				b = b.Bucket([]byte(name))
			}
			if b == nil {
				return fmt.Errorf("index %s: garble %q: %w", db.path, key, ErrNotFound)
			}
			return b.Put([]byte(key[len(key)-1]), []byte("{not json"))
		})
	})
}
