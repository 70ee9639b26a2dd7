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
	Layers   []LayerStatus `json:"layers"` // the layers it was built from, lowest first; [] for an export or tar
	// Manifests are the registry manifests recorded refs resolved to
	// this tree through: the digest to pin in a REPO@sha256:… ref
	// (Digest is the config's). [] for a tree no registry ref names.
	Manifests []ManifestRef `json:"manifests"`
	// Config is what its image config says; absent when none is
	// recorded (a tar).
	Config *ConfigSummary `json:"config,omitempty"`
	// Admitted is how the signature policy admitted the tree at import
	// (index.Tree.Admitted); "" if no policy applied.
	Admitted string `json:"admitted"`
}

// ManifestRef is a registry ref and the manifest digest it resolved to.
type ManifestRef struct {
	Ref      string        `json:"ref"`
	Manifest digest.Digest `json:"manifest"`
}

// LayerStatus is one layer of a tree as `images` shows it: its diffID
// and, while the store keeps its record, what it holds.
type LayerStatus struct {
	DiffID digest.Digest `json:"diff_id"`
	Files  int64         `json:"files"`
	Bytes  int64         `json:"bytes"`
	Cached bool          `json:"cached"` // the store has its record: an upgrade reuses it
}

// Trees returns every indexed tree, oldest first, read like List without
// taking any lock. A machine counts where its symlink points, as in List.
func Trees(s *cache.Store) ([]TreeStatus, error) {
	ms, err := List(s)
	if err != nil {
		return nil, err
	}
	var trees []index.Tree
	var refs []index.Ref
	pinned := map[digest.Digest]bool{}
	layers := map[digest.Digest]index.Layer{}
	configs := map[digest.Digest]*ConfigSummary{}
	err = s.View(func(tx *index.Tx) (err error) {
		if trees, err = tx.Trees(); err != nil {
			return err
		}
		if refs, err = tx.Refs(); err != nil {
			return err
		}
		for _, t := range trees {
			pinned[t.Digest] = tx.Pinned(t.Digest)
			if raw, err := tx.Config(t.Digest); err == nil {
				if sum, err := Summary(raw); err == nil {
					configs[t.Digest] = &sum
				}
			}
		}
		ls, err := tx.Layers()
		for _, l := range ls {
			layers[l.DiffID] = l
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	out := []TreeStatus{}
	for _, t := range trees {
		r := TreeStatus{t.Digest, t.Refs, t.Files, t.Bytes, t.NewBytes, t.Created, t.LastUsed, []string{}, pinned[t.Digest], []LayerStatus{}, []ManifestRef{}, configs[t.Digest], t.Admitted}
		for _, ref := range refs {
			if ref.Digest == t.Digest && ref.Manifest != "" {
				r.Manifests = append(r.Manifests, ManifestRef{ref.Ref, ref.Manifest})
			}
		}
		if r.Refs == nil {
			r.Refs = []string{}
		}
		for _, id := range t.Layers {
			l, ok := layers[id]
			r.Layers = append(r.Layers, LayerStatus{id, l.Files, l.Bytes, ok})
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

// LayerUse is one layer record as `images --layers` shows it, with the
// trees built from it: a layer no tree lists is kept only until gc.
type LayerUse struct {
	DiffID   digest.Digest   `json:"diff_id"`
	Blobs    []digest.Digest `json:"blobs"`
	Files    int64           `json:"files"`
	Bytes    int64           `json:"bytes"`
	NewBytes int64           `json:"new_bytes"`
	Created  time.Time       `json:"created"`
	Trees    []digest.Digest `json:"trees"`
}

// Layers returns every layer record, oldest first, with its trees.
func Layers(s *cache.Store) ([]LayerUse, error) {
	out := []LayerUse{}
	err := s.View(func(tx *index.Tx) error {
		ls, err := tx.Layers()
		if err != nil {
			return err
		}
		trees, err := tx.Trees()
		if err != nil {
			return err
		}
		usedBy := map[digest.Digest][]digest.Digest{}
		for _, t := range trees {
			for _, id := range t.Layers {
				usedBy[id] = append(usedBy[id], t.Digest)
			}
		}
		for _, l := range ls {
			u := LayerUse{l.DiffID, l.Blobs, l.Files, l.Bytes, l.NewBytes, l.Created, usedBy[l.DiffID]}
			if u.Blobs == nil {
				u.Blobs = []digest.Digest{}
			}
			if u.Trees == nil {
				u.Trees = []digest.Digest{}
			}
			out = append(out, u)
		}
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, err
}
