package snapshot_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/snapshot"
)

// objects is a fake object store: ReadDiff puts each regular file's
// content here, keyed by a digest of its content.
type objects map[digest.Digest]string

func (o objects) put(e cache.Entry, r io.Reader) (digest.Digest, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	d := digest.FromBytes(b)
	o[d] = string(b)
	return d, nil
}

// readDiffs parses each layer archive; the first refusal is returned.
func readDiffs(o objects, layers [][]byte) ([]snapshot.Diff, error) {
	var ds []snapshot.Diff
	for i, l := range layers {
		d, err := snapshot.ReadDiff(context.Background(), bytes.NewReader(l), o.put)
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", i+1, err)
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// listing is a merged tree as lines: name kind mode uid:gid, then a
// file's content, a link's target or a device's numbers.
func listing(o objects, es []snapshot.Entry) []string {
	var out []string
	for _, e := range es {
		l := fmt.Sprintf("%s %c %04o %d:%d", e.Name, e.Kind, e.Mode, e.UID, e.GID)
		switch e.Kind {
		case cache.KindFile:
			l += fmt.Sprintf(" %q", o[e.Object])
		case cache.KindSymlink, cache.KindHardlink:
			l += " -> " + e.Linkname
		case cache.KindChar, cache.KindBlock:
			l += fmt.Sprintf(" %d:%d", e.Devmajor, e.Devminor)
		}
		out = append(out, l)
	}
	return out
}

func layers(ls ...[]hdr) [][]byte {
	var out [][]byte
	for _, l := range ls {
		out = append(out, tarball(l...))
	}
	return out
}

func layer(hs ...hdr) []hdr { return hs }

func whiteout(name string) hdr { return file(name, "", 0o644) }

type mergeCase struct {
	name   string
	layers [][]byte
	want   []string // the merged listing, or for a refusal:
	refuse string   // what the error must contain
}

func mergeCases() []mergeCase {
	return []mergeCase{
		{name: "whiteout removes a lower file",
			layers: layers(layer(file("a", "a", 0o644), file("b", "b", 0o644)), layer(whiteout(".wh.a"))),
			want:   []string{`b f 0644 0:0 "b"`}},
		{name: "whiteout removes a lower subtree",
			layers: layers(layer(dir("d", 0o755), file("d/x", "x", 0o644), dir("d/y", 0o755), file("d/y/z", "z", 0o644), file("k", "k", 0o644)), layer(whiteout(".wh.d"))),
			want:   []string{`k f 0644 0:0 "k"`}},
		{name: "whiteout in a lower directory the layer does not list",
			layers: layers(layer(dir("etc", 0o755), file("etc/x", "x", 0o644), file("etc/y", "y", 0o644)), layer(whiteout("etc/.wh.x"))),
			want:   []string{"etc d 0755 0:0", `etc/y f 0644 0:0 "y"`}},
		{name: "absolute whiteout stays in the tree, as absolute names do",
			layers: layers(layer(dir("etc", 0o755), file("etc/passwd", "x", 0o644)), layer(whiteout("/etc/.wh.passwd"))),
			want:   []string{"etc d 0755 0:0"}},
		{name: "whiteout of a name no lower layer has",
			layers: layers(layer(file("a", "a", 0o644)), layer(whiteout(".wh.nothing"), dir("new", 0o755), whiteout("new/.wh.x"))),
			want:   []string{`a f 0644 0:0 "a"`, "new d 0755 0:0"}},
		{name: "whiteout then a new entry in a later layer",
			layers: layers(layer(file("a", "1", 0o644)), layer(whiteout(".wh.a")), layer(file("a", "3", 0o600))),
			want:   []string{`a f 0600 0:0 "3"`}},
		{name: "opaque directory hides lower children",
			layers: layers(layer(dir("d", 0o755), file("d/x", "x", 0o644), dir("d/s", 0o755), file("d/s/y", "y", 0o644)),
				layer(dir("d", 0o700), whiteout("d/.wh..wh..opq"), file("d/new", "n", 0o644))),
			want: []string{"d d 0700 0:0", `d/new f 0644 0:0 "n"`}},
		{name: "opaque marker never hides its own layer's entries",
			layers: layers(layer(dir("d", 0o755), file("d/x", "x", 0o644)),
				layer(dir("d", 0o755), file("d/new", "n", 0o644), whiteout("d/.wh..wh..opq"))),
			want: []string{"d d 0755 0:0", `d/new f 0644 0:0 "n"`}},
		{name: "opaque marker without its directory's entry keeps lower metadata",
			layers: layers(layer(owned(dir("d", 0o750), 3, 3), file("d/x", "x", 0o644)), layer(whiteout("d/.wh..wh..opq"))),
			want:   []string{"d d 0750 3:3"}},
		{name: "opaque root",
			layers: layers(layer(file("a", "a", 0o644), dir("d", 0o755)), layer(whiteout(".wh..wh..opq"), file("b", "b", 0o644))),
			want:   []string{`b f 0644 0:0 "b"`}},
		{name: "file replaces a lower directory and its subtree",
			layers: layers(layer(dir("d", 0o755), file("d/x", "x", 0o644), dir("d/y", 0o755)), layer(file("d", "now a file", 0o644))),
			want:   []string{`d f 0644 0:0 "now a file"`}},
		{name: "symlink replaces a lower directory",
			layers: layers(layer(dir("d", 0o755), file("d/x", "x", 0o644)), layer(symlink("d", "/etc"))),
			want:   []string{"d l 0777 0:0 -> /etc"}},
		{name: "directory replaces a lower file",
			layers: layers(layer(file("d", "file", 0o644)), layer(dir("d", 0o711), file("d/x", "x", 0o644))),
			want:   []string{"d d 0711 0:0", `d/x f 0644 0:0 "x"`}},
		{name: "directory replaces a lower symlink and may then be filled",
			layers: layers(layer(dir("a", 0o755)), layer(symlink("a", "/etc")),
				layer(dir("a", 0o755), whiteout("a/.wh..wh..opq"), file("a/passwd", "p", 0o644))),
			want: []string{"a d 0755 0:0", `a/passwd f 0644 0:0 "p"`}},
		{name: "directory over a directory keeps the children and takes the metadata",
			layers: layers(layer(dir("d", 0o755), file("d/x", "x", 0o644)), layer(owned(dir("d", 0o700), 5, 6), file("d/y", "y", 0o644))),
			want:   []string{"d d 0700 5:6", `d/x f 0644 0:0 "x"`, `d/y f 0644 0:0 "y"`}},
		{name: "root entry over a root entry",
			layers: layers(layer(dir("./", 0o755), file("a", "a", 0o644)), layer(owned(dir("./", 0o700), 1, 1))),
			want:   []string{". d 0700 1:1", `a f 0644 0:0 "a"`}},
		{name: "rewriting one name of a hard-link group leaves the others",
			layers: layers(layer(file("a", "old", 0o644), hardlink("b", "a"), hardlink("c", "a")), layer(file("a", "new", 0o600))),
			want:   []string{`a f 0600 0:0 "new"`, `b f 0644 0:0 "old"`, "c h 0644 0:0 -> b"}},
		{name: "rewriting a hard link leaves its target",
			layers: layers(layer(file("a", "old", 0o644), hardlink("b", "a")), layer(file("b", "new", 0o644))),
			want:   []string{`a f 0644 0:0 "old"`, `b f 0644 0:0 "new"`}},
		{name: "whiteout of a hard link's target leaves the link with the content",
			layers: layers(layer(file("a", "old", 0o644), hardlink("b", "a")), layer(whiteout(".wh.a"))),
			want:   []string{`b f 0644 0:0 "old"`}},
		{name: "hard link to a lower layer's file",
			layers: layers(layer(file("z", "v1", 0o755)), layer(hardlink("a", "z"))),
			want:   []string{`a f 0755 0:0 "v1"`, "z h 0755 0:0 -> a"}}, // the group's first name holds the content
		{name: "hard link takes the target as of that point in its layer",
			layers: layers(layer(file("a", "v1", 0o644)), layer(hardlink("b", "a"), file("a", "v2", 0o644))),
			want:   []string{`a f 0644 0:0 "v2"`, `b f 0644 0:0 "v1"`}},
		{name: "hard link to a lower hard link",
			layers: layers(layer(file("a", "v1", 0o644), hardlink("b", "a")), layer(hardlink("c", "b")), layer(file("a", "v3", 0o644))),
			want:   []string{`a f 0644 0:0 "v3"`, `b f 0644 0:0 "v1"`, "c h 0644 0:0 -> b"}},
		{name: "hard link to a symlink",
			layers: layers(layer(symlink("s", "target")), layer(hardlink("h", "s"))),
			want:   []string{"h l 0777 0:0 -> target", "s h 0777 0:0 -> h"}},
		{name: "devices and fifos over lower entries",
			layers: layers(layer(dir("dev", 0o755), file("dev/null", "x", 0o644), dir("run", 0o755)),
				layer(device("dev/null", tar.TypeChar, 1, 3), hdr{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600})),
			want: []string{"dev d 0755 0:0", "dev/null c 0660 0:0 1:3", "run d 0755 0:0", "run/fifo p 0600 0:0"}},
		{name: "parents first, siblings by byte order",
			layers: layers(layer(file("b", "b", 0o644), dir("a", 0o755), file("a/z", "z", 0o644)), layer(file("a-c", "ac", 0o644), file("a/b", "ab", 0o644))),
			want:   []string{"a d 0755 0:0", `a/b f 0644 0:0 "ab"`, `a/z f 0644 0:0 "z"`, `a-c f 0644 0:0 "ac"`, `b f 0644 0:0 "b"`}},
		{name: "root entry over the implicit root",
			layers: layers(layer(file("a", "a", 0o644)), layer(owned(dir("./", 0o700), 1, 1))),
			want:   []string{". d 0700 1:1", `a f 0644 0:0 "a"`}},
		{name: "one layer",
			layers: layers(layer(dir("etc", 0o755), file("etc/hostname", "h", 0o644))),
			want:   []string{"etc d 0755 0:0", `etc/hostname f 0644 0:0 "h"`}},
		{name: "no layers", want: []string{}},
	}
}

// hostileLayers are stacks of layers an image could ship to write outside
// its tree or to confuse the merge; every one must be refused.
func hostileLayers() []mergeCase {
	base := layer(dir("a", 0o755), file("a/passwd", "p", 0o644), file("f", "f", 0o644))
	return []mergeCase{
		{name: "whiteout escaping with dotdot", layers: layers(base, layer(whiteout("../.wh.victim"))), refuse: `"../.wh.victim"`},
		{name: "whiteout escaping after a name", layers: layers(base, layer(whiteout("a/../../.wh.victim"))), refuse: `"a/../../.wh.victim"`},
		{name: "absolute whiteout escaping", layers: layers(base, layer(whiteout("/../.wh.victim"))), refuse: `"/../.wh.victim"`},
		{name: "whiteout of dotdot", layers: layers(base, layer(whiteout("a/.wh..."))), refuse: `"a/.wh..."`},
		{name: "whiteout of dot", layers: layers(base, layer(whiteout("a/.wh.."))), refuse: `"a/.wh.."`},
		{name: "whiteout of the root", layers: layers(base, layer(whiteout(".wh.."))), refuse: `".wh.."`},
		{name: "whiteout of the root spelled absolute", layers: layers(base, layer(whiteout("/.wh.."))), refuse: `"/.wh.."`},
		{name: "bare whiteout", layers: layers(base, layer(whiteout(".wh."))), refuse: `".wh."`},
		{name: "bare whiteout in a directory", layers: layers(base, layer(whiteout("a/.wh."))), refuse: `"a/.wh."`},
		{name: "aufs hard-link directory", layers: layers(base, layer(dir(".wh..wh.plnk", 0o700))), refuse: `".wh..wh.plnk"`},
		{name: "aufs metadata file", layers: layers(base, layer(whiteout(".wh..wh.aufs"))), refuse: `".wh..wh.aufs"`},
		{name: "whiteout directory", layers: layers(base, layer(dir(".wh.f", 0o755))), refuse: `".wh.f"`},
		{name: "whiteout with content", layers: layers(base, layer(file(".wh.f", "x", 0o644))), refuse: `".wh.f"`},
		{name: "whiteout symlink", layers: layers(base, layer(symlink("a/.wh.passwd", escape+"/file"))), refuse: `"a/.wh.passwd"`},
		{name: "whiteout hard link", layers: layers(base, layer(file("g", "g", 0o644), hardlink(".wh.f", "g"))), refuse: `".wh.f"`},
		{name: "whiteout device", layers: layers(base, layer(device("dev/.wh.f", tar.TypeChar, 1, 3))), refuse: `"dev/.wh.f"`},
		{name: "whiteout with an xattr", layers: layers(base, layer(withPAX(whiteout(".wh.f"), "SCHILY.xattr.user.x", "y"))), refuse: `".wh.f"`},
		{name: "whiteout with a trusted xattr", layers: layers(base, layer(withPAX(whiteout(".wh.f"), "SCHILY.xattr.trusted.overlay.x", "y"))), refuse: `".wh.f"`},
		{name: "whiteout owner out of range", layers: layers(base, layer(owned(whiteout(".wh.f"), -1, 0))), refuse: `".wh.f"`},
		{name: "whiteout then an entry of the same name", layers: layers(base, layer(whiteout(".wh.f"), file("f", "new", 0o644))), refuse: `"f"`},
		{name: "entry then a whiteout of the same name", layers: layers(base, layer(file("f", "new", 0o644), whiteout(".wh.f"))), refuse: `".wh.f"`},
		{name: "duplicate whiteout", layers: layers(base, layer(whiteout(".wh.f"), whiteout("./.wh.f"))), refuse: `"./.wh.f"`},
		{name: "duplicate opaque marker", layers: layers(base, layer(dir("a", 0o755), whiteout("a/.wh..wh..opq"), whiteout("a/.wh..wh..opq"))), refuse: `"a/.wh..wh..opq"`},
		{name: "whiteout under a file of its layer", layers: layers(base, layer(file("g", "g", 0o644), whiteout("g/.wh.x"))), refuse: `"g/.wh.x"`},
		{name: "whiteout under a lower symlink", layers: layers(base, layer(symlink("s", escape)), layer(whiteout("s/.wh.file"))), refuse: `whiteout "s/file"`},
		{name: "opaque marker under a lower symlink",
			layers: layers(base, layer(symlink("a", "/etc")), layer(whiteout("a/.wh..wh..opq"))), refuse: `opaque marker in "a"`},
		{name: "opaque marker two levels under a lower symlink",
			layers: layers(base, layer(symlink("s", escape)), layer(whiteout("s/dir/.wh..wh..opq"))), refuse: `"s" is a symlink`},
		{name: "opaque marker under a symlink its own layer made",
			layers: layers(base, layer(symlink("s", escape), whiteout("s/.wh..wh..opq"))), refuse: `"s/.wh..wh..opq"`},
		{name: "directory becomes a symlink, then a file is written through it",
			layers: layers(base, layer(symlink("a", "/etc")), layer(file("a/passwd", "root::0:0::/:/bin/sh\n", 0o644))), refuse: `entry "a/passwd": parent "a" is a symlink from layer 2`},
		{name: "write through a relative symlink to the victim",
			layers: layers(base, layer(symlink("v", escape)), layer(file("v/file", "pwned", 0o644))), refuse: `"v/file"`},
		{name: "write two levels through a symlink",
			layers: layers(base, layer(symlink("r", "/")), layer(dir("r/etc", 0o755), file("r/etc/passwd", "x", 0o644))), refuse: `"r/etc"`},
		{name: "directory through a symlink", layers: layers(base, layer(symlink("s", escape)), layer(dir("s/dir", 0o777))), refuse: `"s/dir"`},
		{name: "hard link through a symlink", layers: layers(base, layer(symlink("s", "a")), layer(hardlink("h", "s/passwd"))), refuse: `"h"`},
		{name: "symlink and write through it in one layer", layers: layers(base, layer(symlink("s", escape), file("s/file", "pwned", 0o644))), refuse: `"s/file"`},
		{name: "entry whose parent no layer has", layers: layers(base, layer(file("nodir/x", "x", 0o644))), refuse: `"nodir/x"`},
		{name: "entry whose parent a whiteout removed", layers: layers(base, layer(whiteout(".wh.a"), file("a/passwd", "x", 0o644))), refuse: `"a/passwd"`},
		{name: "entry under a lower file", layers: layers(base, layer(file("f/x", "x", 0o644))), refuse: `parent "f" is not a directory`},
		{name: "hard link to a name its own layer whited out",
			layers: layers(base, layer(whiteout(".wh.f"), hardlink("h", "f"))), refuse: `layer 2: entry "h": hard link to "f", which a whiteout in layer 2 removed`},
		{name: "hard link to a name a lower whiteout removed",
			layers: layers(base, layer(whiteout(".wh.f")), layer(hardlink("h", "f"))), refuse: `layer 3: entry "h": hard link to "f", which a whiteout in layer 2 removed`},
		{name: "hard link to a name an opaque marker hid",
			layers: layers(base, layer(whiteout("a/.wh..wh..opq"), hardlink("h", "a/passwd"))), refuse: `entry "h": hard link to "a/passwd", which a whiteout`},
		{name: "hard link to a name in a subtree a whiteout removed",
			layers: layers(base, layer(whiteout(".wh.a")), layer(hardlink("h", "a/passwd"))), refuse: `which a whiteout in layer 2 removed`},
		{name: "hard link to a lower directory", layers: layers(base, layer(hardlink("h", "a"))), refuse: `"h"`},
		{name: "hard link to the root", layers: layers(base, layer(hardlink("h", "."))), refuse: `"h"`},
		{name: "hard link to nothing", layers: layers(base, layer(hardlink("h", "missing"))), refuse: `"h"`},
		{name: "hard link to itself over a lower file", layers: layers(base, layer(hardlink("f", "f"))), refuse: `"f"`},
		{name: "hard link out of the tree", layers: layers(base, layer(hardlink("h", escape+"/file"))), refuse: `"h"`},
		{name: "root replaced by a symlink", layers: layers(base, layer(symlink("./", escape))), refuse: `"./"`},
		{name: "root replaced by a file", layers: layers(base, layer(file(".", "x", 0o644))), refuse: `"."`},
		{name: "duplicate entry in a layer", layers: layers(base, layer(file("g", "1", 0o644), file("./g", "2", 0o644))), refuse: `"./g"`},
		{name: "trusted overlay xattr on a directory", layers: layers(base, layer(withPAX(dir("a", 0o755), "SCHILY.xattr.trusted.overlay.opaque", "y"))), refuse: `"a"`},
		{name: "device outside dev", layers: layers(base, layer(device("a/sda", tar.TypeBlock, 8, 0))), refuse: `"a/sda"`},
		{name: "char device 0:0 (an overlayfs whiteout)", layers: layers(base, layer(dir("dev", 0o755), device("dev/wh", tar.TypeChar, 0, 0))), refuse: `"dev/wh"`},
		{name: "truncated layer", layers: [][]byte{tarball(base...), entries(file("g", "g", 0o644))}, refuse: "end-of-archive"},
	}
}

func TestMerge(t *testing.T) {
	for _, c := range mergeCases() {
		t.Run(c.name, func(t *testing.T) {
			o := objects{}
			ds, err := readDiffs(o, c.layers)
			if err != nil {
				t.Fatalf("refused a good layer: %v", err)
			}
			got, err := snapshot.Merge(ds)
			if err != nil {
				t.Fatalf("refused good layers: %v", err)
			}
			if l := listing(o, got); !slices.Equal(l, c.want) && len(l)+len(c.want) > 0 {
				t.Errorf("merged:\n%s\nwant:\n%s", strings.Join(l, "\n"), strings.Join(c.want, "\n"))
			}
			checkMerged(t, got)
		})
	}
}

func TestHostileLayers(t *testing.T) {
	for _, c := range hostileLayers() {
		t.Run(c.name, func(t *testing.T) {
			o := objects{}
			ds, err := readDiffs(o, c.layers)
			var got []snapshot.Entry
			if err == nil {
				got, err = snapshot.Merge(ds)
			}
			if err == nil {
				t.Fatalf("LAYER ATTACK: accepted, merged into:\n%s\nwant a refusal naming %s", strings.Join(listing(o, got), "\n"), c.refuse)
			}
			t.Log(err)
			if !errors.Is(err, snapshot.ErrUnsafeEntry) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("error %q does not wrap %q", err, snapshot.ErrUnsafeEntry)
			}
			if msg := err.Error(); !strings.Contains(msg, c.refuse) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line containing %s", msg, c.refuse)
			}
		})
	}
}

// TestLayerRefusesWhatExtractRefuses runs every archive the flattened
// import refuses as the top layer over a plain base: each must be refused
// as a layer too, except the whiteouts a layer may hold. Refusals the
// builder makes (a malformed capability) are the object store's, which
// the fake here is not.
func TestLayerRefusesWhatExtractRefuses(t *testing.T) {
	legit := map[string]bool{"whiteout": true, "opaque whiteout": true}
	seed := env{dir: "/nonexistent", victim: "/nonexistent/victim"}
	n := 0
	for _, c := range tarCases() {
		if c.refuse == "" || legit[c.name] || (c.is != nil && c.is != io.ErrUnexpectedEOF && c.is != tar.ErrHeader) {
			continue
		}
		n++
		t.Run(c.name, func(t *testing.T) {
			o := objects{}
			ds, err := readDiffs(o, [][]byte{tarball(file("base", "b", 0o644)), c.tar(seed)})
			var got []snapshot.Entry
			if err == nil {
				got, err = snapshot.Merge(ds)
			}
			if err == nil {
				t.Fatalf("LAYER ATTACK: accepted as a layer, merged into:\n%s", strings.Join(listing(o, got), "\n"))
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
	if n < 40 {
		t.Fatalf("only %d refused archives", n)
	}
}

func TestCheckLayerCount(t *testing.T) {
	if err := snapshot.CheckLayerCount(3, 3); err != nil {
		t.Errorf("3 layers, 3 diffIDs: %v", err)
	}
	for _, c := range [][2]int{{2, 3}, {3, 2}, {0, 1}} {
		err := snapshot.CheckLayerCount(c[0], c[1])
		if err == nil {
			t.Errorf("LAYER ATTACK: %d layers against %d diffIDs accepted", c[0], c[1])
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("%d layers", c[0])) || !strings.Contains(msg, fmt.Sprintf("%d diffIDs", c[1])) {
			t.Errorf("error %q does not name both counts", msg)
		}
	}
}

// checkMerged checks what every merge result must be: clean unique names
// in parents-first order, each under a directory listed before it (or
// the root), hard links to an earlier regular file or symlink, objects
// for regular files only.
func checkMerged(t *testing.T, es []snapshot.Entry) {
	t.Helper()
	kinds := map[string]cache.Kind{".": cache.KindDir}
	for i, e := range es {
		if path.Clean(e.Name) != e.Name || strings.HasPrefix(e.Name, "/") || e.Name == ".." || strings.HasPrefix(e.Name, "../") {
			t.Errorf("entry %q: name is not clean", e.Name)
		}
		if e.Name == "." && i != 0 {
			t.Errorf("root listed at %d", i)
		}
		if _, dup := kinds[e.Name]; dup && e.Name != "." {
			t.Errorf("entry %q listed twice", e.Name)
		}
		if e.Name != "." && kinds[path.Dir(e.Name)] != cache.KindDir {
			t.Errorf("LAYER ATTACK: entry %q: parent is %q, not an earlier directory", e.Name, kinds[path.Dir(e.Name)])
		}
		if i > 0 && e.Name != "." && es[i-1].Name != "." && strings.HasPrefix(es[i-1].Name, e.Name+"/") {
			t.Errorf("entry %q listed after its child %q", e.Name, es[i-1].Name)
		}
		switch k := kinds[e.Linkname]; {
		case e.Kind == cache.KindHardlink && k != cache.KindFile && k != cache.KindSymlink:
			t.Errorf("hard link %q to %q, not an earlier regular file or symlink", e.Name, e.Linkname)
		case (e.Kind == cache.KindFile) != (e.Object != ""):
			t.Errorf("entry %q of kind %c has object %q", e.Name, e.Kind, e.Object)
		}
		kinds[e.Name] = e.Kind
		if e.Kind == cache.KindHardlink {
			kinds[e.Name] = kinds[e.Linkname]
		}
	}
}

// layerSep splits a fuzz input into layer archives.
var layerSep = []byte("\x00--next layer--\x00")

// FuzzMerge reads arbitrary bytes as up to eight layer archives and merges
// them, seeded with the merge and hostile-layer tables. Whatever the
// input, a refusal is one line, and an accepted merge is well formed
// (checkMerged: nothing under a non-directory, so nothing reached through
// a symlink) and the same when merged again.
func FuzzMerge(f *testing.F) {
	for _, c := range append(mergeCases(), hostileLayers()...) {
		f.Add(bytes.Join(c.layers, layerSep))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		parts := bytes.SplitN(data, layerSep, 8)
		o := objects{}
		ds, err := readDiffs(o, parts)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			return
		}
		got, err := snapshot.Merge(ds)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			return
		}
		checkMerged(t, got)
		again, err := snapshot.Merge(ds)
		if err != nil || !slices.Equal(listing(o, got), listing(o, again)) {
			t.Errorf("a second merge differs: %v", err)
		}
	})
}
