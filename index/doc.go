// Package index is rootswap's index: the one bbolt file, index.db, that is
// the only authority on which trees are complete and what each machine's
// history is. It is the only package that imports bbolt.
//
// Vocabulary: a record is one JSON value under a key. Tree, Machine,
// Generation (with its Health), Lease, pins, Layer (an image layer held
// as data, by diffID), LayerDir (a layer as a directory, by chain ID), the blob → diffID map, Ref (what an image
// reference resolved to) and an image's config (raw bytes) are the
// record kinds; a Tx reads and writes them
// through typed accessors and exposes nothing of bbolt.
//
// Layout (bbolt buckets):
//
//	meta          "version" → "1"
//	trees         <image digest> → Tree (JSON)
//	machines      <name> → Machine (JSON)
//	generations   <name>/ (nested bucket) → <uint64 big-endian> → Generation (JSON)
//	leases        <id> → Lease (JSON)
//	pins          <image digest> → ""
//	layers        <diffID> → Layer (JSON)                  (added; see below)
//	blobs         <compressed blob digest> → <diffID>       (added)
//	refs          <image reference> → Ref (JSON)            (added)
//	configs       <image digest> → the image config, as its source gave it (added; deleted with the tree)
//	layerdirs     <chain ID> → LayerDir (JSON)              (added)
//
// The added buckets came after indexes were already written: an index
// without them is sound, not damaged. A View reads a missing added bucket
// as empty; every Update creates those missing first. Only a missing
// bucket of the first six is damage.
//
// Contracts:
//   - A DB holds no descriptor. Every View and Update opens the file,
//     takes bbolt's flock with the DB's timeout (an error wrapping
//     ErrLocked that names the holder when it runs out), runs one
//     transaction and closes the file. Nothing slow belongs inside one.
//   - Update's effects are durable when it returns nil, and absent when
//     it returns an error.
//   - A damaged file (missing, empty, truncated, a bad meta, freelist or
//     b+tree page, a missing bucket, a fault on the mapping) is a one-line
//     error wrapping ErrDamaged that names the file and says to run
//     `rootswap verify --repair`: never a panic, a hang or a stack
//     overflow. The checks that make this so read the file before bbolt
//     maps it, under the flock bbolt then keeps, so they never see a
//     commit of another process or goroutine half written. Once seen, the
//     process answers every later transaction on that file with the same
//     error, without opening it again, until a transaction that was
//     already running succeeds.
//   - An accessor's error for a missing record wraps ErrNotFound; a record
//     that does not decode is an error of its own, never "not found".
//   - Create and Replace build a new file under a temporary name, sync it
//     and rename it into place: the path never names a half-made index.
package index
