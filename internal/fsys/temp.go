package fsys

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
)

// TempName is prefix followed by 12 random hex digits: a name for
// something made beside its final place and renamed into it, that no other
// writer picks at the same time.
func TempName(prefix string) string {
	var r [6]byte
	rand.Read(r[:]) // never fails (crypto/rand since Go 1.24)
	return prefix + hex.EncodeToString(r[:])
}

// StagedLink is a symlink made under a temporary name in its directory,
// waiting to replace a link there (Rename) or to be dropped (Remove).
// Staging it first is what makes the replacement atomic: rename(2) over
// the old link either happens or not.
type StagedLink struct {
	dir, tmp string
}

// StageSymlink creates a symlink to target in dir, named TempName(prefix).
// The error is os.Symlink's.
func StageSymlink(dir, prefix, target string) (*StagedLink, error) {
	l := &StagedLink{dir: dir, tmp: filepath.Join(dir, TempName(prefix))}
	if err := os.Symlink(target, l.tmp); err != nil {
		return nil, err
	}
	return l, nil
}

// Rename renames the staged link over dir/name, replacing what is there
// atomically; if that fails the staged link is removed and the error is
// os.Rename's. The caller fsyncs dir (SyncDir) to make it durable.
func (l *StagedLink) Rename(name string) error {
	err := os.Rename(l.tmp, filepath.Join(l.dir, name))
	if err != nil {
		os.Remove(l.tmp)
	}
	return err
}

// Remove drops the staged link, best effort.
func (l *StagedLink) Remove() { os.Remove(l.tmp) }
