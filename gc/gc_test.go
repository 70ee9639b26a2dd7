package gc

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/internal/fsys"
)

var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// trees makes indexed trees last used at now; "name@-48h" sets the last
// use back, "name!" makes a tree found on disk without a record.
func trees(specs ...string) []Tree {
	var out []Tree
	for _, s := range specs {
		t := Tree{Indexed: true, LastUsed: now}
		if name, age, ok := strings.Cut(s, "@"); ok {
			d, err := time.ParseDuration(age)
			if err != nil {
				panic(err)
			}
			s, t.LastUsed = name, now.Add(d)
		}
		if name, ok := strings.CutSuffix(s, "!"); ok {
			s, t.Indexed, t.LastUsed = name, false, time.Time{}
		}
		t.Digest = digest.Digest(s)
		out = append(out, t)
	}
	return out
}

// machine makes a machine whose generations 1, 2, … are the trees given,
// with the symlink and the index both at generation current.
func machine(name string, current uint64, gens ...string) Machine {
	m := Machine{Name: name, Current: current}
	for i, d := range gens {
		m.Generations = append(m.Generations, Generation{uint64(i + 1), digest.Digest(d)})
		if uint64(i+1) == current {
			m.Link = digest.Digest(d)
		}
	}
	return m
}

// verdicts flattens Marked to "keep: why" or "drop: reason" per tree.
func verdicts(m Marked) map[digest.Digest]string {
	out := map[digest.Digest]string{}
	for _, k := range m.Kept {
		out[k.Digest] = "keep: " + k.String()
	}
	for _, s := range m.Stale {
		if _, dup := out[s.Digest]; dup {
			out[s.Digest] = "BOTH KEPT AND STALE"
			continue
		}
		out[s.Digest] = "drop: " + s.Reason
	}
	return out
}

func TestMark(t *testing.T) {
	for _, tc := range []struct {
		name   string
		g      Graph
		p      Policy
		want   map[digest.Digest]string
		leases []string
	}{
		{
			name: "keep 3 of 4 generations",
			g:    Graph{Trees: trees("v1", "v2", "v3", "v4"), Machines: []Machine{machine("web", 4, "v1", "v2", "v3", "v4")}},
			p:    Policy{Keep: 3},
			want: map[digest.Digest]string{
				"v1": "drop: unreachable",
				"v2": "keep: machine web: generation 2",
				"v3": "keep: machine web: generation 3",
				"v4": "keep: machine web: current; machine web: generation 4",
			},
		},
		{
			name: "keep counts the highest numbers, not the current one",
			g:    Graph{Trees: trees("v1", "v2", "v3", "v4"), Machines: []Machine{machine("web", 1, "v1", "v2", "v3", "v4")}},
			p:    Policy{Keep: 2},
			want: map[digest.Digest]string{
				"v1": "keep: machine web: current",
				"v2": "drop: unreachable",
				"v3": "keep: machine web: generation 3",
				"v4": "keep: machine web: generation 4",
			},
		},
		{
			name: "keep 0 keeps only what is current",
			g:    Graph{Trees: trees("v1", "v2"), Machines: []Machine{machine("web", 2, "v1", "v2")}},
			p:    Policy{Keep: 0},
			want: map[digest.Digest]string{"v1": "drop: unreachable", "v2": "keep: machine web: current"},
		},
		{
			name: "a tree activated twice counts once per generation",
			g:    Graph{Trees: trees("a", "b"), Machines: []Machine{machine("web", 4, "a", "b", "a", "b")}},
			p:    Policy{Keep: 1},
			want: map[digest.Digest]string{"a": "drop: unreachable", "b": "keep: machine web: current; machine web: generation 4"},
		},
		{
			name: "machines sharing a tree",
			g: Graph{Trees: trees("base", "web2", "web3"), Machines: []Machine{
				machine("web", 3, "base", "web2", "web3"),
				machine("db", 1, "base"),
			}},
			p: Policy{Keep: 1},
			want: map[digest.Digest]string{
				"base": "keep: machine db: current; machine db: generation 1",
				"web2": "drop: unreachable",
				"web3": "keep: machine web: current; machine web: generation 3",
			},
		},
		{
			name: "the symlink is a root even when the index lags and the tree has no record",
			g: Graph{Trees: trees("v1", "v2", "v3!"), Machines: []Machine{
				{Name: "web", Link: "v3", Current: 2, Generations: []Generation{{1, "v1"}, {2, "v2"}}},
			}},
			p: Policy{Keep: 0},
			want: map[digest.Digest]string{
				"v1": "drop: unreachable",
				"v2": "keep: machine web: generation 2 (current in the index)",
				"v3": "keep: machine web: current",
			},
		},
		{
			name: "a machine with no symlink keeps its index current",
			g:    Graph{Trees: trees("v1"), Machines: []Machine{{Name: "web", Current: 1, Generations: []Generation{{1, "v1"}}}}},
			p:    Policy{Keep: 0},
			want: map[digest.Digest]string{"v1": "keep: machine web: generation 1 (current in the index)"},
		},
		{
			name: "pins",
			g:    Graph{Trees: trees("p", "q"), Pins: []digest.Digest{"p", "gone"}},
			p:    Policy{Keep: 3},
			want: map[digest.Digest]string{"p": "keep: pinned", "q": "drop: unreachable"},
		},
		{
			name: "in use by a process",
			g:    Graph{Trees: trees("old", "new"), Machines: []Machine{machine("web", 2, "old", "new")}, InUse: map[digest.Digest]string{"old": "pid 7 (systemd-nspawn): overlay lowerdir"}},
			p:    Policy{Keep: 1},
			want: map[digest.Digest]string{
				"old": "keep: in use: pid 7 (systemd-nspawn): overlay lowerdir",
				"new": "keep: machine web: current; machine web: generation 2",
			},
		},
		{
			name: "unindexed trees are garbage unless a root",
			g:    Graph{Trees: trees("crash!", "pinned!"), Pins: []digest.Digest{"pinned"}},
			p:    Policy{Keep: 3, UnusedFor: time.Hour},
			want: map[digest.Digest]string{"crash": "drop: unindexed", "pinned": "keep: pinned"},
		},
		{
			name: "unused-for spares recent unreachable trees only",
			g:    Graph{Trees: trees("recent@-1h", "old@-48h", "cur@-1000h"), Machines: []Machine{machine("web", 1, "cur")}},
			p:    Policy{Keep: 3, UnusedFor: 24 * time.Hour},
			want: map[digest.Digest]string{
				"recent": "keep: used 1h0m0s ago, within --unused-for 24h0m0s",
				"old":    "drop: unreachable, unused for 48h0m0s",
				"cur":    "keep: machine web: current; machine web: generation 1",
			},
		},
		{
			name: "leases protect no tree; expired ones are listed",
			g: Graph{Trees: trees("x"), Leases: []Lease{
				{ID: "import-live", Expires: now.Add(time.Minute)},
				{ID: "import-old", Expires: now.Add(-time.Minute)},
				{ID: "import-edge", Expires: now},
			}},
			p:      Policy{Keep: 3},
			want:   map[digest.Digest]string{"x": "drop: unreachable"},
			leases: []string{"import-edge", "import-old"},
		},
		{
			name: "a tree listed twice is judged once",
			g:    Graph{Trees: append(trees("a"), trees("a!")...)},
			p:    Policy{Keep: 3},
			want: map[digest.Digest]string{"a": "drop: unreachable"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.p.Now = now
			m := Mark(tc.g, tc.p)
			if got := verdicts(m); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("verdicts:\n got %v\nwant %v", got, tc.want)
			}
			if n := len(m.Kept) + len(m.Stale); n != len(tc.want) {
				t.Errorf("%d verdicts for %d trees", n, len(tc.want))
			}
			if !reflect.DeepEqual(m.ExpiredLeases, tc.leases) {
				t.Errorf("expired leases %v, want %v", m.ExpiredLeases, tc.leases)
			}
		})
	}
}

func TestMarkDoesNotModifyItsInput(t *testing.T) {
	g := Graph{Trees: trees("b", "a"), Machines: []Machine{{Name: "web", Link: "a", Current: 1, Generations: []Generation{{1, "a"}, {2, "b"}}}}}
	Mark(g, Policy{Keep: 1, Now: now})
	if g.Trees[0].Digest != "b" || g.Machines[0].Generations[0].Number != 1 {
		t.Errorf("Mark reordered its input: %+v", g)
	}
}

func TestOrphans(t *testing.T) {
	objs := []Object{
		{Digest: "shared", Links: 3, Size: 1},       // a stale tree and a live one
		{Digest: "unique", Links: 2, Size: 2},       // only a stale tree
		{Digest: "crashed", Links: 1, Size: 4},      // nobody, already
		{Digest: "hardlinked", Links: 3, Size: 8},   // twice in one stale tree
		{Digest: "two-stale", Links: 3, Size: 16},   // once in each of two stale trees
		{Digest: "live", Links: 2, Size: 32},        // only a live tree
		{Digest: "layer", Links: 1, Size: 64},       // only a kept layer
		{Digest: "layer-stale", Links: 2, Size: 64}, // a stale tree and a kept layer
	}
	dropped := map[digest.Digest]uint64{"shared": 1, "unique": 1, "hardlinked": 2, "two-stale": 2, "layer-stale": 1}
	layers := map[digest.Digest]bool{"layer": true, "layer-stale": true}
	var got []digest.Digest
	for _, o := range Orphans(objs, dropped, layers) {
		got = append(got, o.Digest)
	}
	want := []digest.Digest{"unique", "crashed", "hardlinked", "two-stale"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("orphans %v, want %v", got, want)
	}
}

func TestScanMountinfo(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	other := strings.Repeat("cd", 32)
	sm := storeMount{paths: []string{"/var/lib/rootswap/trees", "/srv/link/trees"}, dev: "254:1", rel: "/rootswap/trees"}
	table := strings.Join([]string{
		// the root file system and the store's own file system
		"26 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
		"30 26 254:1 / /var/lib rw,relatime - ext4 /dev/vdb rw",
		// nspawn --volatile=overlay, seen from inside the container after pivot_root
		"65 42 0:38 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/rootswap/trees/sha256/" + hex + ",upperdir=/tmp/nspawn-volatile-x/upper,workdir=/tmp/nspawn-volatile-x/work",
		// a bind of a directory inside another tree, through the symlinked store path
		"70 42 254:1 /rootswap/trees/sha256/" + other + "/usr /mnt/usr ro - ext4 /dev/vdb rw",
		// same path on another device: not our store
		"71 42 254:9 /rootswap/trees/sha256/" + strings.Repeat("ef", 32) + " /mnt/x rw - ext4 /dev/vdc rw",
		// a name that is no digest
		"72 42 254:1 /rootswap/trees/sha256/nothex /mnt/y rw - ext4 /dev/vdb rw",
		// a mount point inside a tree, with an escaped space in it
		"73 42 0:50 / /srv/link/trees/sha256/" + other + "/a\\040b rw - tmpfs tmpfs rw",
		"garbage line",
	}, "\n")
	got := map[string]bool{}
	for _, u := range scanMountinfo(strings.NewReader(table), sm) {
		got[string(u.digest)+" | "+u.how] = true
	}
	want := map[string]bool{
		"sha256:" + hex + " | overlay lowerdir=/var/lib/rootswap/trees/sha256/" + hex + " at /":     true,
		"sha256:" + other + " | bind mount of /rootswap/trees/sha256/" + other + "/usr at /mnt/usr": true,
		"sha256:" + other + " | tmpfs mounted at /srv/link/trees/sha256/" + other + "/a b":          true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("uses:\n got %v\nwant %v", got, want)
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{`a\040b`: "a b", `a\134b`: `a\b`, `tail\04`: `tail\04`, `plain`: "plain", `\011\012`: "\t\n"} {
		if got := fsys.UnescapeMountinfo(in); got != want {
			t.Errorf("fsys.UnescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
