// Package escapetest is the oracle of the hostile-input tests: a victim
// directory next to a store that an archive escaping its tree would write
// through, and fingerprints that show any change to it, to the store's
// neighbours or to host files.
package escapetest

import (
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Victim fills dir/victim with a few files (one read-only), a directory
// and a symlink, all with old timestamps, so that any write through an
// escape shows, and returns its path.
func Victim(t testing.TB, dir string) string {
	t.Helper()
	v := filepath.Join(dir, "victim")
	for _, d := range []string{v, v + "/dir"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{"file": "precious", "dir/inner": "inner", "ro": "read-only"} {
		if err := os.WriteFile(filepath.Join(v, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(v+"/ro", 0o444); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("file", v+"/link"); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1000000000, 0)
	for _, p := range []string{v + "/file", v + "/dir/inner", v + "/ro", v + "/dir", v} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

// Fingerprint records type, mode, owner, size, link count, mtime, content
// hash and symlink target of everything under root (root included), or
// of root alone if it is a file.
func Fingerprint(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		line := fmt.Sprintf("%o %d:%d size %d nlink %d mtime %d.%09d", st.Mode, st.Uid, st.Gid, st.Size, st.Nlink, st.Mtim.Sec, st.Mtim.Nsec)
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" sha256 %x", h.Sum(nil))
		case syscall.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			line += " -> " + target
		}
		out[p] = line
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Diff lists, one line each and sorted, what changed from want to got:
// entries removed, changed and created. "" means none.
func Diff(want, got map[string]string) string {
	var d []string
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if g, ok := got[k]; !ok {
			d = append(d, fmt.Sprintf("  %s: removed (was %s)", k, want[k]))
		} else if g != want[k] {
			d = append(d, fmt.Sprintf("  %s: %s (was %s)", k, g, want[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			d = append(d, fmt.Sprintf("  %s: created: %s", k, got[k]))
		}
	}
	return strings.Join(d, "\n")
}

// Names lists the names in dir, sorted.
func Names(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
