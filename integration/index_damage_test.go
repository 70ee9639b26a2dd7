package integration

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/testimage"
)

// indexMeta reads what the damage below needs from index.db's newer valid
// meta page: bbolt's page size, the pages in use, the root and freelist
// pages. (A test-side reader, so the test does not trust the code it tests.)
func indexMeta(t *testing.T, path string) (pageSize, pgid, root, freelist int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	best := uint64(0)
	for _, off := range []int{0, int(le.Uint32(b[16+8:]))} {
		m := b[off+16:]
		if le.Uint32(m) != 0xED0CDAED {
			continue
		}
		if txid := le.Uint64(m[48:]); txid >= best {
			best = txid
			pageSize, root, freelist, pgid = int(le.Uint32(m[8:])), int(le.Uint64(m[16:])), int(le.Uint64(m[32:])), int(le.Uint64(m[40:]))
		}
	}
	if pageSize == 0 {
		t.Fatalf("%s: no meta page", path)
	}
	return
}

func scribbleFile(t *testing.T, path string, off, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(uint64(off), 1))
	for i := off; i < off+n && i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

var indexDamages = []struct {
	name string
	do   func(t *testing.T, path string)
}{
	{"zero-length", func(t *testing.T, p string) { os.Truncate(p, 0) }},
	{"truncated to half its pages", func(t *testing.T, p string) {
		ps, pgid, _, _ := indexMeta(t, p)
		os.Truncate(p, int64(ps*(pgid/2)))
	}},
	{"truncated to one page", func(t *testing.T, p string) {
		ps, _, _, _ := indexMeta(t, p)
		os.Truncate(p, int64(ps))
	}},
	{"random bytes over the meta pages", func(t *testing.T, p string) {
		ps, _, _, _ := indexMeta(t, p)
		scribbleFile(t, p, 0, 2*ps)
	}},
	{"random bytes over the freelist page", func(t *testing.T, p string) {
		ps, _, _, fl := indexMeta(t, p)
		scribbleFile(t, p, fl*ps, ps)
	}},
	{"random bytes over the root page", func(t *testing.T, p string) {
		ps, _, root, _ := indexMeta(t, p)
		scribbleFile(t, p, root*ps, ps)
	}},
}

func smallTar(t *testing.T) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "hello", Mode: 0o644, Size: 2, ModTime: time.Unix(1700000000, 0)})
	tw.Write([]byte("hi"))
	tw.Close()
	p := filepath.Join(t.TempDir(), "small.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// storeListing is every name under the store but the index, with its size:
// what must not change when a command refuses to work.
func storeListing(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if strings.HasPrefix(rel, "index.db") || strings.HasPrefix(rel, "locks") || rel == "lock" {
			return nil
		}
		b.WriteString(rel + " " + fi.Mode().String() + "\n")
		return nil
	})
	return b.String()
}

// A damaged index.db makes every command fail with one line naming it, or
// work without it; none panics. run still starts the current tree, gc
// deletes nothing, and verify --repair rebuilds the index from the disk,
// after which everything works again and a cache-hit prepare imports
// nothing.
func TestIndexDamage(t *testing.T) {
	needIntegration(t)
	v1, v2 := testimage.Images(t)
	d1, d2 := testimage.ImageID(t, v1), testimage.ImageID(t, v2)
	tarPath := smallTar(t)
	for _, dm := range indexDamages {
		t.Run(dm.name, func(t *testing.T) {
			s := newStore(t)
			s.ok("prepare", "web", v1)
			s.ok("prepare", "web", v2)
			s.ok("prepare", "api", v1)
			s.ok("pin", d1)
			index := filepath.Join(s.root, "index.db")
			dm.do(t, index)
			damaged, _ := os.ReadFile(index)
			before := storeListing(t, s.root)

			// Every command: exit code, no Go panic, and one error line
			// naming index.db (or success, for those that need no index).
			for _, c := range []struct {
				args     []string
				needsIdx bool
			}{
				{[]string{"list"}, true},
				{[]string{"list", "--json"}, true},
				{[]string{"images"}, true},
				{[]string{"history", "web"}, true},
				{[]string{"prepare", "web", v2}, true},
				{[]string{"prepare", "new", v1}, true},
				{[]string{"import", "--tar", tarPath}, true},
				{[]string{"activate", "web", d1}, true},
				{[]string{"rollback", "web"}, true},
				{[]string{"pin", d2}, true},
				{[]string{"unpin", d1}, true},
				{[]string{"gc"}, true},
				{[]string{"gc", "--keep", "0"}, true},
				{[]string{"gc", "--dry-run"}, true},
				{[]string{"verify"}, true},
				{[]string{"verify", d1}, true},
				{[]string{"report", "web"}, false},
				{[]string{"unit", "--unit-dir", t.TempDir(), "web", v2}, false},
			} {
				r := s.run(c.args...)
				all := r.stdout + r.stderr
				what := strings.Join(c.args, " ")
				if strings.Contains(all, "panic:") || strings.Contains(all, "goroutine ") {
					t.Errorf("%s: printed a Go panic:\n%s", what, all)
					continue
				}
				if r.code == 0 && !c.needsIdx {
					continue
				}
				lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
				if r.code != 1 || len(lines) != 1 || !strings.HasPrefix(lines[0], "rootswap: ") ||
					!strings.Contains(lines[0], index) || !strings.Contains(lines[0], "verify --repair") {
					t.Errorf("%s: exit %d, stderr %q; want exit 1 and one line naming %s and verify --repair", what, r.code, r.stderr, index)
				}
			}
			if after := storeListing(t, s.root); after != before {
				t.Errorf("commands on a damaged index changed the store:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if now, _ := os.ReadFile(index); !bytes.Equal(now, damaged) {
				t.Errorf("commands on a damaged index rewrote index.db")
			}

			// The link is the truth for what runs.
			r := s.run("run", "web", "/bin/cat", "/etc/rootswap-version")
			if r.code != 0 || !strings.Contains(r.stdout, "v2") {
				t.Errorf("run web on a damaged index: exit %d, stdout %q, stderr %q; want v2", r.code, r.stdout, r.stderr)
			}
			if strings.Contains(r.stderr, "panic:") || strings.Count(strings.TrimSpace(r.stderr), "rootswap:") > 1 {
				t.Errorf("run web: stderr %q, want at most a one-line warning", r.stderr)
			}
			if w := strings.TrimSpace(r.stderr); !strings.Contains(w, "rootswap: warning:") || !strings.Contains(w, index) {
				t.Errorf("run web: stderr %q, want a one-line warning naming %s", r.stderr, index)
			}

			// verify --repair rebuilds it.
			out := s.ok("verify", "--repair")
			for _, want := range []string{"rebuilt: index.db from the disk: 2 trees, 2 machines", "lost: the history of 2 machine(s)", "lost: every pin"} {
				if !strings.Contains(out, want) {
					t.Errorf("verify --repair output does not say %q:\n%s", want, out)
				}
			}
			if ents, _ := filepath.Glob(index + ".damaged-*"); len(ents) != 1 {
				t.Errorf("the damaged index is not kept beside the new one: %v", ents)
			}
			if out := s.ok("verify"); !strings.Contains(out, ": 0 problems") {
				t.Errorf("verify after the rebuild:\n%s", out)
			}
			ms := map[string]string{}
			for _, m := range s.machines() {
				ms[m.Name] = m.Digest
			}
			if ms["web"] != d2 || ms["api"] != d1 || len(ms) != 2 {
				t.Errorf("list after the rebuild: %v, want web at %s and api at %s", ms, d2, d1)
			}
			if imgs := s.images(); len(imgs) != 2 {
				t.Errorf("images after the rebuild: %+v, want 2", imgs)
			}
			var hist []struct {
				Generation uint64 `json:"generation"`
				Digest     string `json:"digest"`
				Reason     string `json:"reason"`
			}
			if err := json.Unmarshal([]byte(s.ok("history", "web", "--json")), &hist); err != nil {
				t.Fatal(err)
			}
			if len(hist) != 1 || hist[0].Digest != d2 || hist[0].Reason != "recovered" {
				t.Errorf("history web after the rebuild: %+v, want one recovered generation of %s", hist, d2)
			}
			// A cache hit: the recovered tree stays (an import would rename
			// a new one in), and prepare says nothing changed. (Counting
			// containers would see other tests' on the shared daemon.)
			ino := func() uint64 {
				fi, err := os.Stat(s.treePath(d2))
				if err != nil {
					t.Fatal(err)
				}
				return fi.Sys().(*syscall.Stat_t).Ino
			}
			was := ino()
			if out := s.ok("prepare", "web", v2); !strings.Contains(out, "unchanged") || ino() != was {
				t.Errorf("prepare of the recovered tree: %q, tree inode %d, was %d; want a cache hit", out, ino(), was)
			}
			if got := s.ok("run", "web", "/bin/cat", "/etc/rootswap-version"); !strings.Contains(got, "v2") {
				t.Errorf("run web after the rebuild printed %q, want v2", got)
			}
			s.ok("prepare", "web", v1)
			if got := s.ok("rollback", "web"); !strings.Contains(got, "generation") {
				t.Errorf("rollback after the rebuild: %q", got)
			}
		})
	}
}
