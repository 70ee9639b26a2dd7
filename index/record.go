package index

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
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
	allBuckets        = [][]byte{bucketMeta, bucketTrees, bucketMachines, bucketGenerations, bucketLeases, bucketPins}
)

// Tree is the index record of a complete tree.
type Tree struct {
	Digest   digest.Digest `json:"digest"`
	Refs     []string      `json:"refs"`
	Files    int64         `json:"files"`     // entries of every kind
	Bytes    int64         `json:"bytes"`     // content bytes of regular files
	NewBytes int64         `json:"new_bytes"` // content bytes this import added to the store
	Created  time.Time     `json:"created"`
	LastUsed time.Time     `json:"last_used"`
	Manifest digest.Digest `json:"manifest"`
	Broken   bool          `json:"broken,omitempty"` // set by verify --repair: prepare re-imports it
}

// Machine is the index record of a machine.
type Machine struct {
	Name    string          `json:"name"`
	Current uint64          `json:"current"`          // the generation `current` points at
	Failed  []digest.Digest `json:"failed,omitempty"` // digests rolled back from a crash loop: not activated again without --force
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

// DeleteTree removes a tree record.
func (t *Tx) DeleteTree(d digest.Digest) error {
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
