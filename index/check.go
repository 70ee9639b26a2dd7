package index

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"os"

	bolt "go.etcd.io/bbolt"
)

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

// checkIndexFile catches, before bbolt maps the file f, the damage on
// which bbolt would crash or hang rather than fail: an empty file (which
// bbolt would quietly make a new, bucketless database of), a file shorter
// than its two meta pages, no valid meta page, and a meta page that
// records more pages than the file has (a truncation: reading them is
// SIGBUS). It returns why the file is damaged, or "" if it looks sound.
// The caller holds f's flock: pages read while another writer commits are
// not the file's state, and would look damaged.
func checkIndexFile(f *os.File) string {
	fi, err := f.Stat()
	if err != nil {
		return "" // bolt.Open reports it, with its cause
	}
	size := fi.Size()
	if size == 0 {
		return "the file is empty"
	}
	best, why := newestMeta(f)
	if why != "" {
		return why
	}
	if why := checkMeta(best, size); why != "" {
		return why
	}
	if best.freelist != noFreelist {
		if why := checkFreelist(f, best); why != "" {
			return why
		}
	}
	return checkTree(f, best)
}

// newestMeta returns the valid meta page with the higher txid, or why
// neither is valid.
func newestMeta(f *os.File) (boltMeta, string) {
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
	if !best.valid {
		return best, "no valid meta page: " + metas[0].invalidReason
	}
	return best, ""
}

// checkMeta checks what meta page m says against the file's size.
func checkMeta(m boltMeta, size int64) string {
	switch {
	case m.pageSize < 1024 || m.pageSize > 65536 || m.pageSize&(m.pageSize-1) != 0:
		return fmt.Sprintf("page size %d", m.pageSize)
	case size < 2*int64(m.pageSize):
		return fmt.Sprintf("%d bytes: shorter than its two meta pages", size)
	case m.pgid < 3 || m.pgid > uint64(size)/uint64(m.pageSize):
		return fmt.Sprintf("truncated: %d bytes hold %d pages of %d, the index uses %d", size, size/int64(m.pageSize), m.pageSize, m.pgid)
	case m.root < 2 || m.root >= m.pgid:
		return fmt.Sprintf("root page %d outside the file's %d pages", m.root, m.pgid)
	case m.freelist != noFreelist && (m.freelist < 2 || m.freelist >= m.pgid):
		return fmt.Sprintf("freelist page %d outside the file's %d pages", m.freelist, m.pgid)
	}
	return ""
}

// checkTree walks the b+trees from the root page the way bbolt will, with
// bounds checks bbolt does not make: every page it reaches is within the
// file, says it is that page, is a branch or leaf whose elements fit in
// it, and is reached once. A cycle of pages would send bbolt into endless
// recursion, a stack overflow no recover catches.
func checkTree(f *os.File, m boltMeta) string {
	w := pageWalk{ps: uint64(m.pageSize), pgid: m.pgid, seen: make([]bool, m.pgid)}
	w.data = make([]byte, m.pgid*w.ps)
	if _, err := f.ReadAt(w.data, 0); err != nil {
		return "reading the pages: " + err.Error()
	}
	return w.visit(m.root, 0)
}

// pageWalk is checkTree's state: the file's pages and which were reached.
type pageWalk struct {
	data     []byte
	ps, pgid uint64
	seen     []bool
}

var le = binary.LittleEndian

// visit checks page id, reached at depth, and the pages below it; it
// returns why the tree is damaged, or "".
func (w *pageWalk) visit(id uint64, depth int) string {
	switch {
	case id < 2 || id >= w.pgid:
		return fmt.Sprintf("a page refers to page %d, outside the file's %d pages", id, w.pgid)
	case w.seen[id]:
		return fmt.Sprintf("page %d is referred to twice", id)
	case depth > 64:
		return "the b+tree is deeper than any bbolt writes"
	}
	w.seen[id] = true
	p := w.data[id*w.ps:]
	flags, count, overflow := le.Uint16(p[8:]), uint64(le.Uint16(p[10:])), uint64(le.Uint32(p[12:]))
	size := (overflow + 1) * w.ps
	if le.Uint64(p) != id || id+overflow >= w.pgid {
		return fmt.Sprintf("page %d: bad header", id)
	}
	if flags != 0x01 && flags != 0x02 {
		return fmt.Sprintf("page %d: neither branch nor leaf (flags %#x)", id, flags)
	}
	for j := id + 1; j <= id+overflow; j++ {
		w.seen[j] = true
	}
	if pageHeaderSize+count*16 > size {
		return fmt.Sprintf("page %d: %d elements do not fit", id, count)
	}
	for i := range count {
		var why string
		if flags == 0x01 {
			why = w.branch(p, size, id, i, depth)
		} else {
			why = w.leaf(p, size, id, i, depth)
		}
		if why != "" {
			return why
		}
	}
	return ""
}

// branch checks element i of branch page p (id, size bytes): pos, ksize,
// pgid; then the page it points at.
func (w *pageWalk) branch(p []byte, size, id, i uint64, depth int) string {
	e := p[pageHeaderSize+i*16:]
	pos, ksize := uint64(le.Uint32(e)), uint64(le.Uint32(e[4:]))
	if pageHeaderSize+i*16+pos+ksize > size {
		return fmt.Sprintf("page %d: element %d runs past the page", id, i)
	}
	return w.visit(le.Uint64(e[8:]), depth+1)
}

// leaf checks element i of leaf page p (id, size bytes): flags, pos,
// ksize, vsize; a bucket's value starts with its root page (0: inline,
// with no buckets of its own), which is visited.
func (w *pageWalk) leaf(p []byte, size, id, i uint64, depth int) string {
	e := p[pageHeaderSize+i*16:]
	eflags, pos, ksize, vsize := le.Uint32(e), uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
	start := pageHeaderSize + i*16 + pos
	if start+ksize+vsize > size {
		return fmt.Sprintf("page %d: element %d runs past the page", id, i)
	}
	if eflags&0x01 == 0 {
		return ""
	}
	if vsize < 16 {
		return fmt.Sprintf("page %d: element %d: short bucket header", id, i)
	}
	if root := le.Uint64(p[start+ksize:]); root != 0 {
		return w.visit(root, depth+1)
	}
	return ""
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
