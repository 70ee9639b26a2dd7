package cache

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/rootswap/rootswap/internal/fsys"
)

var (
	bucketMeta        = []byte("meta")
	bucketTrees       = []byte("trees")
	bucketMachines    = []byte("machines")
	bucketGenerations = []byte("generations")
	bucketLeases      = []byte("leases")
	bucketPins        = []byte("pins")
	allBuckets        = [][]byte{bucketMeta, bucketTrees, bucketMachines, bucketGenerations, bucketLeases, bucketPins}
)

// ErrIndexDamaged is wrapped by every error that says index.db cannot be
// read: Store.Verify with repair rebuilds it from the disk.
var ErrIndexDamaged = errors.New("damaged")

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

// View runs fn in a read-only transaction. The index is opened for the
// call only, so a long command never blocks others. A damaged index.db is
// an error wrapping ErrIndexDamaged, never a panic (see guarded).
func (s *Store) View(fn func(*Tx) error) error {
	return s.guarded(true, func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error { return s.run(tx, fn) })
	})
}

// Update runs fn in a read-write transaction; fn's effects are durable when
// Update returns nil. A damaged index.db is an error wrapping
// ErrIndexDamaged.
func (s *Store) Update(fn func(*Tx) error) error {
	return s.guarded(false, func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error { return s.run(tx, fn) })
	})
}

// run checks that every bucket is there (bbolt hands a fresh, empty file
// back as a database without any) and then runs fn.
func (s *Store) run(tx *bolt.Tx, fn func(*Tx) error) error {
	for _, b := range allBuckets {
		if tx.Bucket(b) == nil {
			return s.damaged(fmt.Sprintf("bucket %q is missing", b))
		}
	}
	return fn(&Tx{tx})
}

// guarded opens the index and runs fn with it, turning what bbolt does on
// a damaged file into an error wrapping ErrIndexDamaged: its panics ("invalid
// freelist page", "page N expected to be ..."), and faults on its mmap (a
// file truncated under a mapping is SIGBUS), which SetPanicOnFault makes
// recoverable panics of this goroutine for the call. Once damage is seen,
// the process answers every later call with the same error without opening
// the file again: a panic inside bolt.Open can leave its flock held.
//
// A panic that is neither a fault nor raised inside bbolt is a bug of the
// caller's fn and is not disguised as damage.
func (s *Store) guarded(readOnly bool, fn func(*bolt.DB) error) (err error) {
	if err := s.knownDamage(); err != nil {
		return err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		_, fault := p.(interface{ Addr() uintptr })
		if !fault && !strings.Contains(string(debug.Stack()), "go.etcd.io/bbolt") {
			panic(p)
		}
		why := fmt.Sprint(p)
		if fault {
			why = "reading the mapped file faulted (truncated, or a disk error): " + why
		}
		err = s.damaged(why)
	}()
	db, err := s.openDB(readOnly)
	if err != nil {
		return err
	}
	defer db.Close()
	return fn(db)
}

// damagedIndexes maps the path of each index.db found damaged by this
// process to the error that says so, until a rebuild replaces it.
var damagedIndexes sync.Map

// damaged records and returns the error for a damaged index.
func (s *Store) damaged(why string) error {
	why = strings.Join(strings.Fields(why), " ")
	err := fmt.Errorf("index %s: %w: %s; run `rootswap verify --repair` to rebuild it from the trees on disk", s.indexPath(), ErrIndexDamaged, why)
	prev, _ := damagedIndexes.LoadOrStore(s.indexPath(), err)
	return prev.(error)
}

func (s *Store) knownDamage() error {
	if err, ok := damagedIndexes.Load(s.indexPath()); ok {
		return err.(error)
	}
	return nil
}

func (s *Store) openDB(readOnly bool) (*bolt.DB, error) {
	if why := checkIndexFile(s.indexPath()); why != "" {
		return nil, s.damaged(why)
	}
	// The freelist is loaded while opening, under the guard, even read-only:
	// bbolt's Check would otherwise load it in a goroutine of its own that
	// no recover reaches. checkIndexFile has read it anyway.
	db, err := bolt.Open(s.indexPath(), 0o600, &bolt.Options{Timeout: s.lockTimeout, ReadOnly: readOnly, PreLoadFreelist: true})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, bolterrors.ErrTimeout):
		f, ferr := os.Open(s.indexPath())
		who := "an unknown process"
		if ferr == nil {
			who = fsys.Holders(f)
			f.Close()
		}
		return nil, fmt.Errorf("index %s: %w after %s: held by %s", s.indexPath(), ErrLocked, s.lockTimeout, who)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum),
		errors.Is(err, bolterrors.ErrVersionMismatch), errors.Is(err, bolterrors.ErrInvalidMapping):
		return nil, s.damaged(err.Error())
	}
	return nil, fmt.Errorf("index %s: %w", s.indexPath(), err)
}

// bbolt's file layout, as far as checkIndexFile reads it: two meta pages
// (page 0 and 1), each a 16-byte page header and then the meta.
const (
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	pageHeaderSize = 16
	metaSize       = 64 // up to and including the checksum
	noFreelist     = ^uint64(0)
)

type boltMeta struct {
	pageSize      int
	root          uint64
	freelist      uint64
	pgid          uint64 // high water mark: pages in use
	txid          uint64
	valid         bool
	invalidReason string
}

func parseMeta(b []byte) boltMeta {
	if len(b) < pageHeaderSize+metaSize {
		return boltMeta{invalidReason: "short"}
	}
	m := b[pageHeaderSize : pageHeaderSize+metaSize]
	le := binary.LittleEndian
	h := fnv.New64a()
	h.Write(m[:56])
	switch {
	case le.Uint32(m[0:]) != boltMagic:
		return boltMeta{invalidReason: "not a bbolt file (bad magic)"}
	case le.Uint32(m[4:]) != boltVersion:
		return boltMeta{invalidReason: fmt.Sprintf("bbolt version %d", le.Uint32(m[4:]))}
	case h.Sum64() != le.Uint64(m[56:]):
		return boltMeta{invalidReason: "meta page checksum mismatch"}
	}
	return boltMeta{pageSize: int(le.Uint32(m[8:])), root: le.Uint64(m[16:]), freelist: le.Uint64(m[32:]),
		pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:]), valid: true}
}

// checkMetaPages reports each of the two meta pages whose page header or
// meta is not what bbolt's Check asserts.
func checkMetaPages(path string, pageSize int) []error {
	f, err := os.Open(path)
	if err != nil {
		return []error{err}
	}
	defer f.Close()
	buf := make([]byte, 2*pageSize)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return []error{fmt.Errorf("reading the meta pages: %w", err)}
	}
	const metaFlag = 0x04
	var errs []error
	for id := 0; id < 2; id++ {
		pg := buf[id*pageSize:]
		m := parseMeta(pg)
		switch {
		case binary.LittleEndian.Uint64(pg) != uint64(id):
			errs = append(errs, fmt.Errorf("meta page %d: its header names page %d", id, binary.LittleEndian.Uint64(pg)))
		case binary.LittleEndian.Uint16(pg[8:]) != metaFlag:
			errs = append(errs, fmt.Errorf("meta page %d: not marked as a meta page (flags %#x)", id, binary.LittleEndian.Uint16(pg[8:])))
		case !m.valid:
			errs = append(errs, fmt.Errorf("meta page %d: %s", id, m.invalidReason))
		}
	}
	return errs
}

// checkIndexFile catches, before bbolt maps the file, the damage on which
// bbolt would crash or hang rather than fail: an empty file (which bbolt
// would quietly make a new, bucketless database of), a file shorter than
// its two meta pages, no valid meta page, and a meta page that records
// more pages than the file has (a truncation: reading them is SIGBUS).
// It returns why the file is damaged, or "" if it looks sound.
func checkIndexFile(path string) string {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return "the file is missing" // Open creates it only in a store without trees
	}
	if err != nil {
		return "" // bolt.Open reports it, with its cause
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	size := fi.Size()
	if size == 0 {
		return "the file is empty"
	}
	buf := make([]byte, 2*65536)
	n, _ := f.ReadAt(buf, 0)
	buf = buf[:n]
	// The page size is in the first meta; if that one is damaged, find the
	// second one at each page size bbolt may have used.
	metas := []boltMeta{parseMeta(buf)}
	if metas[0].valid {
		metas = append(metas, parseMeta(buf[min(len(buf), metas[0].pageSize):]))
	} else {
		for ps := 1024; ps <= 65536; ps *= 2 {
			if m := parseMeta(buf[min(len(buf), ps):]); m.valid && m.pageSize == ps {
				metas = append(metas, m)
				break
			}
		}
	}
	var best boltMeta
	for _, m := range metas {
		if m.valid && (!best.valid || m.txid > best.txid) {
			best = m
		}
	}
	switch {
	case !best.valid:
		return "no valid meta page: " + metas[0].invalidReason
	case best.pageSize < 1024 || best.pageSize > 65536 || best.pageSize&(best.pageSize-1) != 0:
		return fmt.Sprintf("page size %d", best.pageSize)
	case size < 2*int64(best.pageSize):
		return fmt.Sprintf("%d bytes: shorter than its two meta pages", size)
	case best.pgid < 3 || best.pgid > uint64(size)/uint64(best.pageSize):
		return fmt.Sprintf("truncated: %d bytes hold %d pages of %d, the index uses %d", size, size/int64(best.pageSize), best.pageSize, best.pgid)
	case best.root < 2 || best.root >= best.pgid:
		return fmt.Sprintf("root page %d outside the file's %d pages", best.root, best.pgid)
	case best.freelist != noFreelist && (best.freelist < 2 || best.freelist >= best.pgid):
		return fmt.Sprintf("freelist page %d outside the file's %d pages", best.freelist, best.pgid)
	case best.freelist != noFreelist:
		if why := checkFreelist(f, best); why != "" {
			return why
		}
	}
	return checkTree(f, best)
}

// checkTree walks the b+trees from the root page the way bbolt will, with
// bounds checks bbolt does not make: every page it reaches is within the
// file, says it is that page, is a branch or leaf whose elements fit in
// it, and is reached once. A cycle of pages would send bbolt into endless
// recursion, a stack overflow no recover catches.
func checkTree(f *os.File, m boltMeta) string {
	ps := uint64(m.pageSize)
	data := make([]byte, m.pgid*ps)
	if _, err := f.ReadAt(data, 0); err != nil {
		return "reading the pages: " + err.Error()
	}
	le := binary.LittleEndian
	seen := make([]bool, m.pgid)
	var visit func(id uint64, depth int) string
	visit = func(id uint64, depth int) string {
		switch {
		case id < 2 || id >= m.pgid:
			return fmt.Sprintf("a page refers to page %d, outside the file's %d pages", id, m.pgid)
		case seen[id]:
			return fmt.Sprintf("page %d is referred to twice", id)
		case depth > 64:
			return "the b+tree is deeper than any bbolt writes"
		}
		seen[id] = true
		p := data[id*ps:]
		flags, count, overflow := le.Uint16(p[8:]), uint64(le.Uint16(p[10:])), uint64(le.Uint32(p[12:]))
		size := (overflow + 1) * ps
		if le.Uint64(p) != id || id+overflow >= m.pgid {
			return fmt.Sprintf("page %d: bad header", id)
		}
		if flags != 0x01 && flags != 0x02 {
			return fmt.Sprintf("page %d: neither branch nor leaf (flags %#x)", id, flags)
		}
		for j := id + 1; j <= id+overflow; j++ {
			seen[j] = true
		}
		if pageHeaderSize+count*16 > size {
			return fmt.Sprintf("page %d: %d elements do not fit", id, count)
		}
		for i := range count {
			e := p[pageHeaderSize+i*16:]
			if flags == 0x01 { // branch: pos, ksize, pgid
				pos, ksize := uint64(le.Uint32(e)), uint64(le.Uint32(e[4:]))
				if pageHeaderSize+i*16+pos+ksize > size {
					return fmt.Sprintf("page %d: element %d runs past the page", id, i)
				}
				if why := visit(le.Uint64(e[8:]), depth+1); why != "" {
					return why
				}
				continue
			}
			// leaf: flags, pos, ksize, vsize; a bucket's value starts with
			// its root page (0: inline, with no buckets of its own).
			eflags, pos, ksize, vsize := le.Uint32(e), uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
			start := pageHeaderSize + i*16 + pos
			if start+ksize+vsize > size {
				return fmt.Sprintf("page %d: element %d runs past the page", id, i)
			}
			if eflags&0x01 != 0 {
				if vsize < 16 {
					return fmt.Sprintf("page %d: element %d: short bucket header", id, i)
				}
				if root := le.Uint64(p[start+ksize:]); root != 0 {
					if why := visit(root, depth+1); why != "" {
						return why
					}
				}
			}
		}
		return ""
	}
	return visit(m.root, 0)
}

// checkFreelist checks the freelist page as bbolt will read it while
// opening, where a bad one is a panic with the file lock held: a freelist
// page, of a size within the file, listing only pages within the file.
func checkFreelist(f *os.File, m boltMeta) string {
	ps := int64(m.pageSize)
	hdr := make([]byte, pageHeaderSize+8)
	if _, err := f.ReadAt(hdr, int64(m.freelist)*ps); err != nil {
		return fmt.Sprintf("freelist page %d: %v", m.freelist, err)
	}
	le := binary.LittleEndian
	flags, count, overflow := le.Uint16(hdr[8:]), uint64(le.Uint16(hdr[10:])), uint64(le.Uint32(hdr[12:]))
	if le.Uint64(hdr[0:]) != m.freelist || flags != 0x10 {
		return fmt.Sprintf("page %d is not a freelist page", m.freelist)
	}
	if m.freelist+overflow >= m.pgid {
		return fmt.Sprintf("freelist page %d runs past the file's %d pages", m.freelist, m.pgid)
	}
	skip := uint64(0)
	if count == 0xFFFF { // the real count is the first element
		count, skip = le.Uint64(hdr[pageHeaderSize:]), 1
	}
	if (count+skip)*8 > (overflow+1)*uint64(ps)-pageHeaderSize {
		return fmt.Sprintf("freelist page %d lists %d pages, more than it holds", m.freelist, count)
	}
	ids := make([]byte, (count+skip)*8)
	if _, err := f.ReadAt(ids, int64(m.freelist)*ps+pageHeaderSize); err != nil {
		return fmt.Sprintf("freelist page %d: %v", m.freelist, err)
	}
	for i := skip; i < count+skip; i++ {
		if id := le.Uint64(ids[i*8:]); id < 2 || id >= m.pgid {
			return fmt.Sprintf("freelist page %d lists page %d, outside the file's %d pages", m.freelist, id, m.pgid)
		}
	}
	return ""
}

// createIndex makes index.db with all buckets: built under a temporary
// name, synced, then renamed, so a crash never leaves a half-made index.
func createIndex(path string) error {
	if err := writeIndex(path, "", nil); err != nil {
		return fmt.Errorf("create index: %w", err)
	}
	return nil
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

// Check runs bbolt's consistency check over the whole file. bbolt checks
// in a goroutine of its own, where a panic on a damaged page would kill the
// process; so first every page below the high water mark and every bucket,
// key and value is read here, in the caller's guarded goroutine (see
// guarded), and only a file that survives that is handed to bbolt's check,
// which then reads nothing new.
func (t *Tx) Check() []error {
	// bbolt's Check asserts, in a goroutine no recover reaches, that pages
	// 0 and 1 are sound meta pages; Open tolerates one that is not (a torn
	// write: bbolt reads the other), so look before bbolt does.
	if errs := checkMetaPages(t.tx.DB().Path(), t.tx.DB().Info().PageSize); len(errs) > 0 {
		return errs
	}
	for id := 0; ; id++ {
		info, err := t.tx.Page(id)
		if err != nil {
			return []error{err}
		}
		if info == nil {
			break
		}
	}
	var sink byte
	var walk func(b *bolt.Bucket)
	walk = func(b *bolt.Bucket) {
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			for _, x := range k {
				sink ^= x
			}
			if v == nil {
				if nb := b.Bucket(k); nb != nil {
					walk(nb)
				}
				continue
			}
			for _, x := range v {
				sink ^= x
			}
		}
	}
	t.tx.ForEach(func(name []byte, b *bolt.Bucket) error { walk(b); return nil })
	var errs []error
	for err := range t.tx.Check() {
		errs = append(errs, err)
	}
	_ = sink
	return errs
}
