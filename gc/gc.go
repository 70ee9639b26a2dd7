package gc

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Graph is what Mark needs to know about a store. The store side fills it
// from the index, the disk and /proc; Mark itself reads nothing.
type Graph struct {
	Trees    []Tree
	Machines []Machine
	Pins     []digest.Digest
	InUse    map[digest.Digest]string // tree → which process uses it, and how
	Leases   []Lease
}

// Tree is one tree the store has, on disk or in the index.
type Tree struct {
	Digest   digest.Digest
	Indexed  bool      // false: a directory under trees/ without a record, left by a crash
	LastUsed time.Time // zero when not indexed
}

// Machine is one machine as the index and its symlink describe it.
type Machine struct {
	Name        string
	Link        digest.Digest // where machines/NAME/current points; "" if nowhere
	Current     uint64        // the generation the index calls current
	Generations []Generation  // in any order
}

// Generation is one activation of a machine.
type Generation struct {
	Number uint64
	Digest digest.Digest
}

// Lease is an import's claim on the store.
type Lease struct {
	ID      string
	Expires time.Time
}

// Policy says how much Mark keeps beyond the roots that are always kept.
type Policy struct {
	Keep      int           // trees of each machine's Keep highest-numbered generations are roots
	UnusedFor time.Duration // > 0: an unreachable tree used more recently than this is kept
	Now       time.Time
}

// Marked is Mark's verdict on every tree of the graph: each one is in
// exactly one of Kept and Stale, both ordered by digest.
type Marked struct {
	Kept          []Kept
	Stale         []Stale
	ExpiredLeases []string // ordered by id
}

// Kept is a tree Mark keeps, and every reason why.
type Kept struct {
	Digest digest.Digest
	Why    []string
}

// Stale is a tree Mark collects, and why it is garbage.
type Stale struct {
	Digest digest.Digest
	Reason string
}

// Mark decides which trees are garbage. The roots are every machine's
// current tree (by its symlink and by the index), the trees of its
// p.Keep highest-numbered generations, pinned trees and trees a process
// uses. A tree found on disk without an index record is garbage unless it
// is a root. With p.UnusedFor, an indexed tree that is no root is still
// kept while its last use is more recent than that.
//
// Leases protect no tree: see the package documentation. Mark only lists
// the expired ones, which the sweep deletes.
func Mark(g Graph, p Policy) Marked {
	roots := rootsOf(g, p.Keep)
	trees := append([]Tree(nil), g.Trees...)
	sort.Slice(trees, func(i, j int) bool { return trees[i].Digest < trees[j].Digest })
	var out Marked
	for i, t := range trees {
		if i > 0 && trees[i-1].Digest == t.Digest {
			continue
		}
		if why, ok := roots[t.Digest]; ok {
			out.Kept = append(out.Kept, Kept{t.Digest, dedupe(why)})
			continue
		}
		if why, keep := judge(t, p); keep {
			out.Kept = append(out.Kept, Kept{t.Digest, []string{why}})
		} else {
			out.Stale = append(out.Stale, Stale{t.Digest, why})
		}
	}
	for _, l := range g.Leases {
		if !l.Expires.After(p.Now) {
			out.ExpiredLeases = append(out.ExpiredLeases, l.ID)
		}
	}
	sort.Strings(out.ExpiredLeases)
	return out
}

// rootsOf returns every root of g with why it is one: machines' current
// trees, their keep highest-numbered generations, pins and trees in use.
func rootsOf(g Graph, keep int) map[digest.Digest][]string {
	roots := map[digest.Digest][]string{}
	root := func(d digest.Digest, why string) {
		if d != "" {
			roots[d] = append(roots[d], why)
		}
	}
	for _, m := range g.Machines {
		root(m.Link, fmt.Sprintf("machine %s: current", m.Name))
		gens := append([]Generation(nil), m.Generations...)
		sort.Slice(gens, func(i, j int) bool { return gens[i].Number > gens[j].Number })
		for i, gen := range gens {
			switch {
			case gen.Number == m.Current && gen.Digest != m.Link:
				// The index lags the symlink (a crash between flip and
				// record) or leads it: keep both until they agree.
				root(gen.Digest, fmt.Sprintf("machine %s: generation %d (current in the index)", m.Name, gen.Number))
			case i < keep:
				root(gen.Digest, fmt.Sprintf("machine %s: generation %d", m.Name, gen.Number))
			}
		}
	}
	for _, d := range g.Pins {
		root(d, "pinned")
	}
	for d, why := range g.InUse {
		root(d, "in use: "+why)
	}
	return roots
}

// judge decides tree t, which is no root: kept (with why) only while
// p.UnusedFor covers its last use; else stale, with why.
func judge(t Tree, p Policy) (why string, keep bool) {
	switch {
	case !t.Indexed:
		return "unindexed", false
	case p.UnusedFor <= 0:
		return "unreachable", false
	}
	age := p.Now.Sub(t.LastUsed)
	if age < p.UnusedFor {
		return fmt.Sprintf("used %s ago, within --unused-for %s", roundAge(age), p.UnusedFor), true
	}
	return fmt.Sprintf("unreachable, unused for %s", roundAge(age)), false
}

func dedupe(why []string) []string {
	seen := map[string]bool{}
	out := why[:0:0]
	for _, w := range why {
		if !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}

func roundAge(d time.Duration) time.Duration {
	if d > time.Hour {
		return d.Round(time.Minute)
	}
	return d.Round(time.Second)
}

// Object is one file under objects/ as the sweep will find it: Links is
// its link count now (its own name plus one per tree name linking it).
type Object struct {
	Digest digest.Digest
	Links  uint64
	Size   int64
}

// Orphans returns the objects that no tree will link once the stale trees
// are gone and no kept layer lists: dropped counts, per object, the names
// in stale trees (and dead staging) that link it; layers holds the objects
// the kept layers list. An object whose only name is its own is an orphan
// already (a crash left it, or only a dropped layer listed it) unless a
// kept layer lists it. The order of objs is kept.
func Orphans(objs []Object, dropped map[digest.Digest]uint64, layers map[digest.Digest]bool) []Object {
	var out []Object
	for _, o := range objs {
		if o.Links <= 1+dropped[o.Digest] && !layers[o.Digest] {
			out = append(out, o)
		}
	}
	return out
}

// String joins a Kept's reasons for printing.
func (k Kept) String() string { return strings.Join(k.Why, "; ") }
