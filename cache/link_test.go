package cache

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

var hexA = strings.Repeat("a", 64)

func TestParseLinkTarget(t *testing.T) {
	d := digest.NewDigestFromEncoded(digest.SHA256, hexA)
	if got, err := ParseLinkTarget(LinkTarget(d)); err != nil || got != d {
		t.Fatalf("ParseLinkTarget(LinkTarget(%s)) = %s, %v", d, got, err)
	}
	for _, bad := range []string{
		"", "x", "/", ".", "..", "../../trees/sha256/", "../../trees/sha256", "../../trees/md5/abc",
		"../../trees/sha256/abc", "../../trees/sha256/" + strings.ToUpper(hexA),
		"/var/lib/rootswap/trees/sha256/" + hexA, "/trees/sha256/" + hexA,
		"../../trees/sha256/" + hexA + "/..", "../../trees/sha256/" + hexA + "/",
		"../../trees/sha256/" + hexA + "/x", "../trees/sha256/" + hexA, "../../../trees/sha256/" + hexA,
		"../../objects/sha256/" + hexA, "../../trees/sha256/../sha256/" + hexA,
		"../../trees/sha512/" + hexA, "../../trees/sha256/" + hexA + "\n",
	} {
		if got, err := ParseLinkTarget(bad); err == nil {
			t.Errorf("ParseLinkTarget(%q) = %s, want an error", bad, got)
		} else if !strings.Contains(err.Error(), "../../trees/sha256/<hex>") {
			t.Errorf("ParseLinkTarget(%q): error %q does not say what a link must look like", bad, err)
		}
	}
}

func TestReadMachineLink(t *testing.T) {
	s := testStore(t)
	d := digest.NewDigestFromEncoded(digest.SHA256, hexA)
	link := s.MachineLink("web")
	if filepath.Dir(filepath.Dir(link)) != s.MachinesDir() || filepath.Base(link) != "current" {
		t.Fatalf("MachineLink = %s", link)
	}
	if _, err := s.ReadMachineLink("web"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no link: %v, want ErrNotFound", err)
	}
	os.MkdirAll(filepath.Dir(link), 0o755)
	os.Symlink(LinkTarget(d), link)
	if got, err := s.ReadMachineLink("web"); err != nil || got != d {
		t.Fatalf("ReadMachineLink = %s, %v", got, err)
	}
	for name, mk := range map[string]func(string) error{
		"directory":    func(p string) error { return os.Mkdir(p, 0o755) },
		"regular file": func(p string) error { return os.WriteFile(p, []byte(LinkTarget(d)), 0o644) },
		"malformed":    func(p string) error { return os.Symlink("x", p) },
	} {
		os.Remove(link)
		if err := mk(link); err != nil {
			t.Fatal(err)
		}
		_, err := s.ReadMachineLink("web")
		if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "machine web") {
			t.Errorf("%s as current: %v, want an error naming the machine", name, err)
		}
	}
	os.Remove(link)
}
