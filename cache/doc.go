// Package cache is rootswap's content-addressed store.
//
// Vocabulary:
//   - An image digest (digest.Digest) names an image: the Docker image ID, or
//     the sha256 of a rootfs tar stream. It is the store key of a tree.
//   - An object is one published file under objects/sha256/<hex>. Its name is
//     the sha256 of a canonical header (type, mode with setuid/setgid/sticky,
//     uid, gid, mtime, kept xattrs) followed by the content, so a hard link to
//     it can never merge two files that differ in anything tar records.
//     Objects are never written once published.
//   - A tree is what an image digest's container runs, under
//     trees/sha256/<hex>/, in one of two forms that its index record
//     tells apart (Tree.Stack), never its contents: a stack (every
//     layered import from this version on), a directory holding only the
//     links layer@0, layer@1, … (bottom first, systemd.mstack(7)'s
//     layout) to layer directories, which run mounts with overlayfs
//     (StackOf says how); or a plain tree (imported before stacks), one
//     immutable rootfs of directories, symlinks, device nodes, empty
//     files, and hard links to objects.
//   - A layer directory (layerdirs/sha256/<chain ID>/) is one layer as a
//     directory overlayfs stacks: its entries as the layer means them
//     over the layers below (snapshot.LayerDirs), files hard links to
//     objects, whiteouts as 0:0 character devices, opaque directories
//     marked trusted.overlay.opaque=y. It is named by the layer's chain
//     ID (ChainIDs), since what it holds depends on the layers under it,
//     and published once (PublishLayerDir): images that share a base
//     share its directories, and an upgrade that adds a layer builds
//     one. Its record keeps the digest of its entry list, a layer
//     manifest under layers/.
//   - A manifest (manifests/sha256/<hex>, gzip) lists a tree's entries; the
//     digest of its uncompressed lines is recorded in the tree's index
//     record. A stack's manifest lists what the mounted stack shows (its
//     layers merged), so Files, Bytes and the manifest mean the same for
//     both forms of tree.
//   - A Builder stages one tree under tmp/ and commits it: from an export
//     stream (Add: each file's content becomes an object), or from a list
//     of entries whose files are objects the store has (AddStored,
//     BuildFromList: a manifest's lines, or layers merged into one).
//   - A layer is one image layer held as data, keyed by its diffID (the
//     sha256 of its uncompressed tar): a LayerWriter stores its regular
//     files as objects (Put, the shape of snapshot.PutFunc) and commits
//     its layer manifest and index record (Commit); ReadLayer reads it
//     back as a LayerManifest. A layer manifest (layers/sha256/<hex>,
//     gzip, named by the sha256 of its lines, which the record keeps) has
//     a tree manifest's line per entry in archive order, then a line of
//     kind 'x' per xattr of the entry before it, and a line of kind 'w'
//     (or 'o', opaque) per whiteout. Layers are a cache: gc keeps one
//     while a tree it keeps names it in Tree.Layers, and an object a kept
//     layer lists is no leftover even when no tree links it.
//   - A lease marks an import in progress; gc treats it as a root.
//   - The ref cache records which image digest and manifest digest an
//     image reference was last stored at (LookupRef, RecordRef over the
//     index's Ref records): a source reads it to resolve a ref offline,
//     the importer writes it once the image's tree is stored.
//   - A machine is a name with a current tree (machines/NAME/current, a
//     symlink) and a list of generations, each one activation.
//   - Verify checks the store against itself and returns a VerifyReport:
//     its problems (index, tree, object, machine) and unreferenced
//     leftovers, and with repair what it mended.
//
// On disk:
//
//	index.db                   bbolt: the only authority on what is complete
//	lock                       store lock: shared for imports and activation, exclusive for gc
//	locks/                     per-tree import locks, per-layer-directory locks and per-machine locks
//	objects/sha256/<hex>       objects
//	trees/sha256/<hex>/        trees: stacks (layer@N → ../../../layerdirs/sha256/<chain hex>) or plain trees
//	layerdirs/sha256/<hex>/    layer directories, by chain ID (made on first use in older stores)
//	manifests/sha256/<hex>     tree manifests
//	layers/sha256/<hex>        layer and layer directory manifests, by the digest of their lines (made on first use in older stores)
//	machines/NAME/current      symlink → ../../trees/sha256/<hex>
//	tmp/<id>.lock, tmp/<id>/   staging; removed by the next command once its lock is free
//
// The index (index.db) is package index: its records, its bucket layout and
// its contracts are drawn there. Store.View and Store.Update run one
// transaction of it.
//
// Write order, so that a crash leaves only unreferenced garbage: objects and
// the tree are built in tmp/, the file system is synced, the manifest and
// the tree are renamed into place, the index record is committed, and only
// then may a machine's symlink point at the tree. The index and the symlinks
// may lag the disk, never lead it. A layer follows the same order:
// objects, syncfs, its manifest renamed in, then its index record; so
// does a layer directory (built in tmp/, syncfs, its manifest and the
// directory renamed in, its record), and a stack is published like any
// tree, after the records of every layer directory it names: a stack
// never names a layer directory the index lacks. Removal runs the other
// way (remove.go): record first, then the directory, renamed aside.
package cache
