// Package gc prunes the store: a pure mark over a small graph (Mark,
// Orphans) and a sweep that reads the store into that graph and deletes
// what the mark leaves (Collect).
//
// Vocabulary:
//   - a root is a tree that is never collected: every machine's current
//     tree (where machines/NAME/current points, even if the index lags or
//     the tree has no record, and the generation the index calls current),
//     the trees of each machine's Keep highest-numbered generations
//     (default 3: the current one and two rollbacks), pinned trees, and
//     trees a running process still uses;
//   - a stale tree is any other tree: an indexed one (with --unused-for D,
//     only if its last use is older than D) or a directory under trees/
//     without an index record, which only a crash leaves;
//   - an orphan object is one whose only name will be its own once the
//     stale trees are gone. Trees hard-link objects, so the object's link
//     count says how many tree names use it: with n names in stale trees,
//     an object with st_nlink <= n+1 goes. An object already at 1 is the
//     leftover of a crash, or held by layers only, and goes unless a kept
//     layer lists it;
//   - a layer record (cache.LayerWriter) is a cache whose roots are the
//     kept trees: it is kept while a tree gc keeps names it in
//     Tree.Layers (pins keep trees, so they keep their layers), and so
//     are the objects its manifest lists, even those no tree links (a
//     file an upper layer overwrote). Any other layer record goes, with
//     its manifest, and so does a kept one whose manifest cannot be read;
//     so does a layer committed with no tree built from it yet;
//   - a layer directory (cache.PublishLayerDir) is kept while a kept tree
//     stacks it (names its chain ID in Tree.Stack); any other goes, with
//     its manifest, and so does a directory under layerdirs/ without a
//     record (a crash between its rename and its record). Its files are
//     links to objects, counted as names like a tree's: an object only
//     removed layer directories and stale trees link is an orphan. A
//     stale stack holds nothing but links; a stale plain tree (imported
//     before stacks) is collected as it always was;
//   - the plan is the list of what a run deletes, built one inventory at a
//     time (stale trees, dead staging, stale layer directories, stale
//     layers, orphan objects, lost manifests, dead leases, stale tree and
//     layer directory locks). A dry run and a real run make it
//     with the same function under the same lock; the real run then
//     executes it, so the two cannot differ;
//   - the Result is what a run removed (or, with DryRun, would remove) and
//     the trees it kept, with why.
//
// Leases. An import writes a lease before its first object and drops it
// with its index record (cache.Builder). It also holds the store lock
// shared from NewBuilder to Commit or Abort, and Collect holds it
// exclusively from planning to the end of the sweep, so no import is ever
// half-way while gc looks: every object then on disk is linked by a tree,
// by staging, or by nothing. Leases therefore protect no tree here. What
// an import leaves in tmp/ is protected by its staging lock, which only a
// live process holds; gc removes staging whose lock is free (the store's
// own CleanTmp rule) with its lease, and deletes leases that have expired.
// Any lease gc sees belongs to an import that has finished or died. The
// same holds for layers: a LayerWriter holds the store lock shared from
// NewLayerWriter to Commit or Abort, so the layer plan, made under the
// exclusive lock, never races a commit. A pull that builds a tree from
// layers it committed must hold the shared lock from its first layer to
// the tree's commit: between them, a layer no tree names yet is stale.
//
// Trees in use. A machine's current can move on while systemd-nspawn
// still runs the old tree, so Collect asks the kernel which trees are in
// use, in two ways:
//   - the mount table of every mount namespace (/proc/PID/mountinfo, read
//     once per namespace): a tree path in a file system's options (the
//     lowerdir= of the overlay that --volatile=overlay mounts over the
//     tree), a bind mount whose source is in a tree (--volatile=yes/state
//     and plain binds; matched by device and path below the file system
//     root, because that is all mountinfo records of a bind's source), or
//     anything mounted on or in a tree;
//   - every process's cwd and root (/proc/PID/cwd, /proc/PID/root): a
//     shell cd'd into a tree, or a chroot.
//
// Mount tables are what catch nspawn: inside the container cwd and root
// show the overlay, not the tree, while the overlay's options name the
// tree for as long as anything in the namespace lives. cwd and root catch
// the cases without a mount. Open file descriptors are not scanned (a
// walk over every fd of every process costs far more than it saves; a
// process holding a file open keeps its inode alive after deletion
// anyway). A process that cannot be read is skipped; an unreadable /proc
// fails the run, because the roots would be unknown.
//
// Tree lock files under locks/ of digests the index does not have are
// removed at the end of a run, each only while gc holds it (LockTree is
// taken without the store lock). A process that opened the file before its
// removal finds, once it has the flock, that the path no longer names it,
// and locks the new file instead (fsys.LockFile), so two imports of one
// image never run at once. Machine lock files stay: machines are not
// removed.
//
// The sweep, under the exclusive store lock, in this order; gc decides,
// the store removes (cache's removal functions, the inverse of its
// publish functions: Forget, SetAside, RemoveManifests, RemoveObject), so
// gc renames and unlinks no store path itself:
//  1. one index transaction deletes the stale trees' records, the stale
//     layer directories' records, the dead leases and the stale layer
//     records (cache.Store.Forget);
//  2. dead staging is removed (cache.Store.CleanTmp);
//  3. each stale tree and layer directory is renamed into a fresh gc
//     staging directory under tmp/ (cache.Store.SetAside);
//  4. the stale trees' manifests, manifests of trees that are neither
//     indexed nor on disk, and layer manifests no kept layer or layer
//     directory record names are removed;
//  5. the gc staging is removed and, at the same time (the two halves of
//     the deletion share the disk's work on two cores), the orphan objects,
//     each after checking again that its link count is at most 1 plus its
//     names in what was set aside: names elsewhere keep it, and the
//     removal only lowers the count;
//  6. tree and layer directory lock files that no import holds, of
//     digests not indexed.
//
// What a crash leaves, and who finishes it: after 1, trees and layer
// directories on disk without a record, and layer manifests no record
// names, which the next run collects as unindexed (no machine can
// activate or pin a tree, nor a stack name a layer directory, without
// its record); after 3 has begun, a gc
// staging directory whose lock died with the process, removed by the next
// command that opens the store; after 4, orphan objects, which the next run
// removes. No step leaves a
// record, symlink or pin naming something missing, and no tree is ever
// half-deleted under its own name.
package gc
