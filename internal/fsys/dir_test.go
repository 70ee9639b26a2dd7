package fsys

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestLinkat links across two Dirs and checks what callers branch on: an
// existing name, a missing source, and a name that would leave its Dir.
func TestLinkat(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a", "b/sub"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "a", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "b", "escape")); err != nil {
		t.Fatal(err)
	}
	a, err := OpenDir(filepath.Join(root, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := OpenDir(filepath.Join(root, "b"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := Linkat(a, "f", b, "sub/g"); err != nil {
		t.Fatal(err)
	}
	var sa, sb Stat
	sa, _ = Lstat(filepath.Join(root, "a", "f"))
	sb, _ = Lstat(filepath.Join(root, "b", "sub", "g"))
	if sa.Ino != sb.Ino || sb.Nlink != 2 {
		t.Fatalf("b/sub/g is inode %d with %d links, want a/f's %d with 2", sb.Ino, sb.Nlink, sa.Ino)
	}
	if err := Linkat(a, "f", b, "sub/g"); !errors.Is(err, os.ErrExist) {
		t.Errorf("linking over an existing name: %v, want ErrExist", err)
	}
	if err := Linkat(a, "missing", b, "h"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("linking a missing name: %v, want ErrNotExist", err)
	}
	for _, name := range []string{"../a/x", "/x", "escape/x"} {
		if err := Linkat(a, "f", b, name); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("linking to %q: %v, want ErrUnsafePath", name, err)
		}
	}
	if err := Linkat(b, "sub/g", b, "sub/h"); err != nil {
		t.Errorf("linking within one Dir: %v", err)
	}
}
