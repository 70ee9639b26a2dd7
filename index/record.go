package index

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// The buckets, as doc.go draws them.
var (
	bucketMeta        = []byte("meta")
	bucketTrees       = []byte("trees")
	bucketMachines    = []byte("machines")
	bucketGenerations = []byte("generations")
	bucketLeases      = []byte("leases")
	bucketPins        = []byte("pins")
	bucketLayers      = []byte("layers")
	bucketBlobs       = []byte("blobs")
	bucketRefs        = []byte("refs")
	bucketConfigs     = []byte("configs")
	bucketLayerDirs   = []byte("layerdirs")

	// requiredBuckets are in every index ever written: one missing is
	// damage.
	requiredBuckets = [][]byte{bucketMeta, bucketTrees, bucketMachines, bucketGenerations, bucketLeases, bucketPins}
	// addedBuckets came later: an index written before them lacks them,
	// reads them as empty, and gets them from its first Update.
	addedBuckets = [][]byte{bucketLayers, bucketBlobs, bucketRefs, bucketConfigs, bucketLayerDirs}
	allBuckets   = append(append([][]byte(nil), requiredBuckets...), addedBuckets...)
)

// Tree is the index record of a complete tree.
type Tree struct {
	Digest   digest.Digest   `json:"digest"`
	Refs     []string        `json:"refs"`
	Files    int64           `json:"files"`     // entries of every kind
	Bytes    int64           `json:"bytes"`     // content bytes of regular files
	NewBytes int64           `json:"new_bytes"` // content bytes this import added to the store
	Created  time.Time       `json:"created"`
	LastUsed time.Time       `json:"last_used"`
	Manifest digest.Digest   `json:"manifest"`
	Broken   bool            `json:"broken,omitempty"` // set by verify --repair: prepare re-imports it
	Layers   []digest.Digest `json:"layers,omitempty"` // diffIDs of the layers it was built from, lowest first
	// Stack, when not empty, makes the tree a stack: its directory holds
	// only layer@N symlinks to these layer directories (chain IDs, lowest
	// first), which overlayfs mounts. Without it the tree is a plain
	// rootfs directory, as every tree imported before stacks is. The
	// record decides, never the directory's contents.
	Stack []digest.Digest `json:"stack,omitempty"`
	// Admitted says how the signature policy admitted the image when it
	// was imported: the requirement met and how (a key's fingerprint),
	// and the scope; "" when no policy applied.
	Admitted string `json:"admitted,omitempty"`
}

// Layer is the index record of one image layer the store holds as data:
// its entries' objects are stored and its layer manifest lists them. It
// is a cache, kept while a kept tree names it in Tree.Layers.
type Layer struct {
	DiffID   digest.Digest   `json:"diff_id"`   // sha256 of the uncompressed layer tar
	Blobs    []digest.Digest `json:"blobs"`     // compressed blob digests seen to hold it
	Manifest digest.Digest   `json:"manifest"`  // sha256 of its layer manifest as read back
	Files    int64           `json:"files"`     // entries and whiteouts
	Bytes    int64           `json:"bytes"`     // content bytes of regular files
	NewBytes int64           `json:"new_bytes"` // content bytes this layer added to the store
	Created  time.Time       `json:"created"`
}

// LayerDir is the index record of one layer directory: what one layer
// means over the layers below it, as a directory overlayfs can stack,
// keyed by the layer's chain ID (which names the layer and everything
// below it). Its entry list is a layer manifest, stored as layers' are.
type LayerDir struct {
	Chain    digest.Digest `json:"chain"`            // chain ID: the key
	DiffID   digest.Digest `json:"diff_id"`          // the layer's own diffID
	Parent   digest.Digest `json:"parent,omitempty"` // chain ID of the layer below, "" for the lowest
	Manifest digest.Digest `json:"manifest"`         // sha256 of its entry list's lines (a layer manifest)
	Files    int64         `json:"files"`            // entries, whiteouts and opaque marks
	Bytes    int64         `json:"bytes"`            // content bytes of its regular files
	Created  time.Time     `json:"created"`
}

// Ref is what an image reference resolved to, and when: what lets a
// later prepare without --pull, or `images`, answer without the network.
type Ref struct {
	Ref      string        `json:"ref"`      // as the user named it, e.g. docker://host/repo:tag
	Digest   digest.Digest `json:"digest"`   // image config digest: the tree key
	Manifest digest.Digest `json:"manifest"` // the registry manifest digest the ref named
	Resolved time.Time     `json:"resolved"`
}

// Machine is the index record of a machine.
type Machine struct {
	Name    string `json:"name"`
	Current uint64 `json:"current"` // the generation `current` points at
	// Failed are the digests the machine was rolled back from (a crash
	// loop, a failed update's health gate, an operator's rollback):
	// prepare and update decline them until the reference names another
	// digest or --force is given. Why says, for each, what happened.
	Failed []digest.Digest          `json:"failed,omitempty"`
	Why    map[digest.Digest]string `json:"failed_why,omitempty"`
	// Image is the image reference the machine follows: the one its
	// last prepare (or activation by prepare) used. update resolves it.
	Image string `json:"image,omitempty"`
	// AutoUpdate marks a machine `update` without a NAME updates
	// (`unit --auto-update`).
	AutoUpdate bool `json:"auto_update,omitempty"`
}

// Decline marks d failed on the machine, saying why; a digest marked
// already keeps its first reason.
func (m *Machine) Decline(d digest.Digest, why string) {
	if slices.Contains(m.Failed, d) {
		return
	}
	m.Failed = append(slices.Clone(m.Failed), d)
	why = strings.TrimSpace(why)
	if why == "" {
		return
	}
	w := make(map[digest.Digest]string, len(m.Why)+1)
	maps.Copy(w, m.Why)
	w[d] = why
	m.Why = w
}

// Forgive forgets that d failed on the machine (--force, or an
// operator's explicit choice of it).
func (m *Machine) Forgive(d digest.Digest) {
	if !slices.Contains(m.Failed, d) {
		return
	}
	m.Failed = slices.DeleteFunc(slices.Clone(m.Failed), func(x digest.Digest) bool { return x == d })
	if _, ok := m.Why[d]; ok {
		w := maps.Clone(m.Why)
		delete(w, d)
		if len(w) == 0 {
			w = nil
		}
		m.Why = w
	}
}

// Generation is one activation of a machine.
type Generation struct {
	Number uint64        `json:"generation"`
	Digest digest.Digest `json:"digest"`
	Image  string        `json:"image"`
	Time   time.Time     `json:"activated"`
	Reason string        `json:"reason"`
	Health
}

// Health is what `run` and `report` learn about a generation's runs.
type Health struct {
	Starts     int           `json:"starts"`                // runs started
	Failures   int           `json:"failures"`              // failed runs since the last success
	LongestRun time.Duration `json:"longest_run"`           // the longest run reported
	LastStart  time.Time     `json:"last_start,omitzero"`   // when the current (or last) run started
	LastResult string        `json:"last_result,omitempty"` // "$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS"
}

// Lease keeps an import's objects and staging alive until it commits or
// expires.
type Lease struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	PID     int       `json:"pid"`
}

// Tx is a read or write transaction on the index. Its methods are the only
// way rootswap reads or writes bbolt; nothing slow happens inside one.
type Tx struct {
	tx *bolt.Tx
}

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("index record %q: %w", key, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}

// Tree returns the record of tree d, or an error wrapping ErrNotFound.
func (t *Tx) Tree(d digest.Digest) (Tree, error) {
	var rec Tree
	ok, err := getJSON(t.tx.Bucket(bucketTrees), []byte(d), &rec)
	if err == nil && !ok {
		err = fmt.Errorf("tree %s: %w", d, ErrNotFound)
	}
	return rec, err
}

// PutTree writes a tree record.
func (t *Tx) PutTree(rec Tree) error {
	return putJSON(t.tx.Bucket(bucketTrees), []byte(rec.Digest), rec)
}

// DeleteTree removes a tree record and the config recorded with it.
func (t *Tx) DeleteTree(d digest.Digest) error {
	if err := t.tx.Bucket(bucketConfigs).Delete([]byte(d)); err != nil {
		return err
	}
	return t.tx.Bucket(bucketTrees).Delete([]byte(d))
}

// Trees returns every tree record, ordered by digest.
func (t *Tx) Trees() ([]Tree, error) {
	var out []Tree
	err := t.tx.Bucket(bucketTrees).ForEach(func(k, v []byte) error {
		var rec Tree
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("index record %q: %w", k, err)
		}
		out = append(out, rec)
		return nil
	})
	return out, err
}

// Machine returns machine name's record, or an error wrapping ErrNotFound.
func (t *Tx) Machine(name string) (Machine, error) {
	var m Machine
	ok, err := getJSON(t.tx.Bucket(bucketMachines), []byte(name), &m)
	if err == nil && !ok {
		err = fmt.Errorf("machine %s: %w", name, ErrNotFound)
	}
	return m, err
}

// PutMachine writes a machine record.
func (t *Tx) PutMachine(m Machine) error {
	return putJSON(t.tx.Bucket(bucketMachines), []byte(m.Name), m)
}

// Machines returns every machine record, ordered by name.
func (t *Tx) Machines() ([]Machine, error) {
	var out []Machine
	err := t.tx.Bucket(bucketMachines).ForEach(func(k, v []byte) error {
		var m Machine
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("index record %q: %w", k, err)
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

// History is a machine's record with its generations, oldest first.
type History struct {
	Machine
	Generations []Generation
}

// Histories returns every machine with its generations.
func (t *Tx) Histories() ([]History, error) {
	ms, err := t.Machines()
	if err != nil {
		return nil, err
	}
	out := make([]History, 0, len(ms))
	for _, m := range ms {
		gens, err := t.Generations(m.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, History{m, gens})
	}
	return out, nil
}

func genKey(n uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], n)
	return k[:]
}

// Generations returns machine name's generations, oldest first.
func (t *Tx) Generations(name string) ([]Generation, error) {
	b := t.tx.Bucket(bucketGenerations).Bucket([]byte(name))
	if b == nil {
		return nil, nil
	}
	var out []Generation
	err := b.ForEach(func(k, v []byte) error {
		var g Generation
		if err := json.Unmarshal(v, &g); err != nil {
			return fmt.Errorf("generation %s/%x: %w", name, k, err)
		}
		out = append(out, g)
		return nil
	})
	return out, err
}

// Generation returns generation n of machine name, or an error wrapping
// ErrNotFound.
func (t *Tx) Generation(name string, n uint64) (Generation, error) {
	var g Generation
	b := t.tx.Bucket(bucketGenerations).Bucket([]byte(name))
	if b == nil {
		return g, fmt.Errorf("machine %s: generation %d: %w", name, n, ErrNotFound)
	}
	ok, err := getJSON(b, genKey(n), &g)
	if err == nil && !ok {
		err = fmt.Errorf("machine %s: generation %d: %w", name, n, ErrNotFound)
	}
	return g, err
}

// AppendGeneration records g as machine name's next generation, setting
// g.Number, and returns it.
func (t *Tx) AppendGeneration(name string, g Generation) (Generation, error) {
	b, err := t.tx.Bucket(bucketGenerations).CreateBucketIfNotExists([]byte(name))
	if err != nil {
		return g, err
	}
	g.Number = 1
	if k, _ := b.Cursor().Last(); k != nil {
		g.Number = binary.BigEndian.Uint64(k) + 1
	}
	return g, putJSON(b, genKey(g.Number), g)
}

// PutGeneration rewrites an existing generation of machine name.
func (t *Tx) PutGeneration(name string, g Generation) error {
	b := t.tx.Bucket(bucketGenerations).Bucket([]byte(name))
	if b == nil || b.Get(genKey(g.Number)) == nil {
		return fmt.Errorf("machine %s: generation %d: %w", name, g.Number, ErrNotFound)
	}
	return putJSON(b, genKey(g.Number), g)
}

// AdoptLink makes machine name's record agree with its link to tree d, as
// after a crash between a flip and its index commit: the newest generation
// of d becomes current, or, if there is none, a new generation of d with
// reason "recovered".
func (t *Tx) AdoptLink(name string, d digest.Digest, now time.Time) error {
	m, err := t.Machine(name)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	m.Name = name
	gens, err := t.Generations(name)
	if err != nil {
		return err
	}
	for i := len(gens) - 1; i >= 0; i-- {
		if gens[i].Digest == d {
			m.Current = gens[i].Number
			return t.PutMachine(m)
		}
	}
	g, err := t.AppendGeneration(name, Generation{Digest: d, Time: now, Reason: "recovered"})
	if err != nil {
		return err
	}
	m.Current = g.Number
	return t.PutMachine(m)
}

// PutLease writes a lease.
func (t *Tx) PutLease(l Lease) error {
	return putJSON(t.tx.Bucket(bucketLeases), []byte(l.ID), l)
}

// DeleteLease removes a lease; removing a missing lease is not an error.
func (t *Tx) DeleteLease(id string) error {
	return t.tx.Bucket(bucketLeases).Delete([]byte(id))
}

// Leases returns every lease.
func (t *Tx) Leases() ([]Lease, error) {
	var out []Lease
	err := t.tx.Bucket(bucketLeases).ForEach(func(k, v []byte) error {
		var l Lease
		if err := json.Unmarshal(v, &l); err != nil {
			return fmt.Errorf("lease %q: %w", k, err)
		}
		out = append(out, l)
		return nil
	})
	return out, err
}

// bucket returns bucket name, or nil for one of the addedBuckets that an
// older index lacks, which only a read-only transaction sees (run creates
// them in every Update).
func (t *Tx) bucket(name []byte) *bolt.Bucket { return t.tx.Bucket(name) }

// forEachJSON decodes every record of bucket name into a new T; a missing
// bucket has none.
func forEachJSON[T any](t *Tx, name []byte, what string, fn func(T)) error {
	b := t.bucket(name)
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		var rec T
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("%s %q: %w", what, k, err)
		}
		fn(rec)
		return nil
	})
}

// Layer returns the record of layer diffID, or an error wrapping
// ErrNotFound.
func (t *Tx) Layer(diffID digest.Digest) (Layer, error) {
	var rec Layer
	var ok bool
	var err error
	if b := t.bucket(bucketLayers); b != nil {
		ok, err = getJSON(b, []byte(diffID), &rec)
	}
	if err == nil && !ok {
		err = fmt.Errorf("layer %s: %w", diffID, ErrNotFound)
	}
	return rec, err
}

// PutLayer writes a layer record, and maps each of its blobs to it
// (replacing what a blob mapped to before: the blob's content is the
// layer's, so only one diffID can be right).
func (t *Tx) PutLayer(rec Layer) error {
	if err := putJSON(t.tx.Bucket(bucketLayers), []byte(rec.DiffID), rec); err != nil {
		return err
	}
	for _, b := range rec.Blobs {
		if err := t.tx.Bucket(bucketBlobs).Put([]byte(b), []byte(rec.DiffID)); err != nil {
			return err
		}
	}
	return nil
}

// DeleteLayer removes a layer record and the blob mappings that name it;
// removing a missing layer is not an error.
func (t *Tx) DeleteLayer(diffID digest.Digest) error {
	rec, err := t.Layer(diffID)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		// An undecodable record names no blobs: drop it alone.
		return t.tx.Bucket(bucketLayers).Delete([]byte(diffID))
	}
	blobs := t.tx.Bucket(bucketBlobs)
	for _, b := range rec.Blobs {
		if string(blobs.Get([]byte(b))) == string(diffID) {
			if err := blobs.Delete([]byte(b)); err != nil {
				return err
			}
		}
	}
	return t.tx.Bucket(bucketLayers).Delete([]byte(diffID))
}

// Layers returns every layer record, ordered by diffID.
func (t *Tx) Layers() ([]Layer, error) {
	var out []Layer
	err := forEachJSON(t, bucketLayers, "layer", func(l Layer) { out = append(out, l) })
	return out, err
}

// LayerByBlob returns the diffID of the layer whose compressed blob is
// blob, or an error wrapping ErrNotFound. The layer's own record may
// still be missing (check with Layer).
func (t *Tx) LayerByBlob(blob digest.Digest) (digest.Digest, error) {
	var raw []byte
	if b := t.bucket(bucketBlobs); b != nil {
		raw = b.Get([]byte(blob))
	}
	if raw == nil {
		return "", fmt.Errorf("blob %s: %w", blob, ErrNotFound)
	}
	d, err := digest.Parse(string(raw))
	if err != nil {
		return "", fmt.Errorf("index record blobs/%s: %w", blob, err)
	}
	return d, nil
}

// Ref returns what image reference ref last resolved to, or an error
// wrapping ErrNotFound.
func (t *Tx) Ref(ref string) (Ref, error) {
	var rec Ref
	var ok bool
	var err error
	if b := t.bucket(bucketRefs); b != nil {
		ok, err = getJSON(b, []byte(ref), &rec)
	}
	if err == nil && !ok {
		err = fmt.Errorf("ref %s: %w", ref, ErrNotFound)
	}
	return rec, err
}

// PutRef writes a ref record, replacing what the ref resolved to before.
func (t *Tx) PutRef(rec Ref) error {
	return putJSON(t.tx.Bucket(bucketRefs), []byte(rec.Ref), rec)
}

// DeleteRef removes a ref record; removing a missing one is not an error.
func (t *Tx) DeleteRef(ref string) error {
	return t.tx.Bucket(bucketRefs).Delete([]byte(ref))
}

// Refs returns every ref record, ordered by ref.
func (t *Tx) Refs() ([]Ref, error) {
	var out []Ref
	err := forEachJSON(t, bucketRefs, "ref", func(r Ref) { out = append(out, r) })
	return out, err
}

// Pinned reports whether d is pinned.
func (t *Tx) Pinned(d digest.Digest) bool {
	return t.tx.Bucket(bucketPins).Get([]byte(d)) != nil
}

// Pin and Unpin mark d as a gc root or stop doing so.
func (t *Tx) Pin(d digest.Digest) error   { return t.tx.Bucket(bucketPins).Put([]byte(d), []byte{}) }
func (t *Tx) Unpin(d digest.Digest) error { return t.tx.Bucket(bucketPins).Delete([]byte(d)) }

// Pins returns every pinned digest, whether or not its tree still exists.
func (t *Tx) Pins() ([]digest.Digest, error) {
	var out []digest.Digest
	err := t.tx.Bucket(bucketPins).ForEach(func(k, _ []byte) error {
		out = append(out, digest.Digest(k))
		return nil
	})
	return out, err
}

// Config returns the image config recorded with tree d: the config
// document as its source gave it (whose sha256 is d for a registry, an
// OCI layout or a docker-archive), or the daemon's description of it as
// an OCI config; or an error wrapping ErrNotFound.
func (t *Tx) Config(d digest.Digest) ([]byte, error) {
	var raw []byte
	if b := t.bucket(bucketConfigs); b != nil {
		raw = b.Get([]byte(d))
	}
	if raw == nil {
		return nil, fmt.Errorf("config of %s: %w", d, ErrNotFound)
	}
	return append([]byte(nil), raw...), nil
}

// PutConfig records raw as tree d's image config, replacing any before.
func (t *Tx) PutConfig(d digest.Digest, raw []byte) error {
	return t.tx.Bucket(bucketConfigs).Put([]byte(d), raw)
}

// LayerDir returns the record of the layer directory of chain ID chain,
// or an error wrapping ErrNotFound.
func (t *Tx) LayerDir(chain digest.Digest) (LayerDir, error) {
	var rec LayerDir
	var ok bool
	var err error
	if b := t.bucket(bucketLayerDirs); b != nil {
		ok, err = getJSON(b, []byte(chain), &rec)
	}
	if err == nil && !ok {
		err = fmt.Errorf("layer directory %s: %w", chain, ErrNotFound)
	}
	return rec, err
}

// PutLayerDir writes a layer directory record.
func (t *Tx) PutLayerDir(rec LayerDir) error {
	return putJSON(t.tx.Bucket(bucketLayerDirs), []byte(rec.Chain), rec)
}

// DeleteLayerDir removes a layer directory record; removing a missing one
// is not an error.
func (t *Tx) DeleteLayerDir(chain digest.Digest) error {
	return t.tx.Bucket(bucketLayerDirs).Delete([]byte(chain))
}

// LayerDirs returns every layer directory record, ordered by chain ID.
func (t *Tx) LayerDirs() ([]LayerDir, error) {
	var out []LayerDir
	err := forEachJSON(t, bucketLayerDirs, "layer directory", func(l LayerDir) { out = append(out, l) })
	return out, err
}
