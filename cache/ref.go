package cache

import (
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/index"
)

// LookupRef returns what image reference ref was last recorded at: the
// image digest (the tree key) and the manifest digest. ok is false, and
// err nil, when ref has no record. A record whose digests do not parse is
// an error naming ref, never a digest to act on.
func (s *Store) LookupRef(ref string) (d, manifest digest.Digest, ok bool, err error) {
	var r index.Ref
	err = s.View(func(tx *index.Tx) (err error) { r, err = tx.Ref(ref); return err })
	switch {
	case errors.Is(err, ErrNotFound):
		return "", "", false, nil
	case err != nil:
		return "", "", false, fmt.Errorf("ref %s: %w", ref, err)
	case r.Digest.Validate() != nil || r.Manifest.Validate() != nil:
		return "", "", false, fmt.Errorf("ref %s: record holds digests %q, %q: %w", ref, r.Digest, r.Manifest, ErrInvalid)
	}
	return r.Digest, r.Manifest, true, nil
}

// RecordRef records that image reference ref names image d, whose
// manifest digest is manifest, as of now, replacing what ref was
// recorded at before. A record is a promise that a later command may act
// on without asking the source: record a ref only once the store holds
// d's tree.
func (s *Store) RecordRef(ref string, d, manifest digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("ref %s: image digest %q: %w", ref, d, err)
	}
	if err := manifest.Validate(); err != nil {
		return fmt.Errorf("ref %s: manifest digest %q: %w", ref, manifest, err)
	}
	r := index.Ref{Ref: ref, Digest: d, Manifest: manifest, Resolved: time.Now().UTC()}
	return s.Update(func(tx *index.Tx) error { return tx.PutRef(r) })
}
