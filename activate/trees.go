package activate

import (
	"sort"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
)

// TreeStatus is one tree as `images` shows it: its index record joined
// with the machines whose current link points at it and its pin. The
// lists are empty, never nil, so JSON shows [].
type TreeStatus struct {
	Digest   digest.Digest `json:"digest"`
	Refs     []string      `json:"refs"`
	Files    int64         `json:"files"`
	Bytes    int64         `json:"bytes"`
	NewBytes int64         `json:"new_bytes"`
	Created  time.Time     `json:"created"`
	LastUsed time.Time     `json:"last_used"`
	Machines []string      `json:"machines"` // by name, in List's order
	Pinned   bool          `json:"pinned"`
}

// Trees returns every indexed tree, oldest first, read like List without
// taking any lock. A machine counts where its symlink points, as in List.
func Trees(s *cache.Store) ([]TreeStatus, error) {
	ms, err := List(s)
	if err != nil {
		return nil, err
	}
	var trees []index.Tree
	pinned := map[digest.Digest]bool{}
	err = s.View(func(tx *index.Tx) (err error) {
		trees, err = tx.Trees()
		for _, t := range trees {
			pinned[t.Digest] = tx.Pinned(t.Digest)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	out := []TreeStatus{}
	for _, t := range trees {
		r := TreeStatus{t.Digest, t.Refs, t.Files, t.Bytes, t.NewBytes, t.Created, t.LastUsed, []string{}, pinned[t.Digest]}
		if r.Refs == nil {
			r.Refs = []string{}
		}
		for _, m := range ms {
			if m.Digest == t.Digest {
				r.Machines = append(r.Machines, m.Name)
			}
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}
