// Package snapshot turns an image into a tree in the store that shows,
// mounted, exactly what `docker export | tar -x --same-owner --xattrs`
// would lay out, but streaming, deduplicated and safe against hostile
// archives.
//
// Vocabulary:
//   - an image ref (Ref) is what a user names an image by, parsed once
//     where it enters (cmd/rootswap's table of transports) into a
//     transport (containers-transports(5): docker://, oci:, docker-archive:,
//     docker-daemon: or a bare REF for the daemon) and that transport's
//     parts; Ref.String gives back what records, units and messages hold;
//   - an image digest is the digest of an image's config (for Docker the
//     image ID, sha256:…), whatever the source, or for a tar stream the
//     sha256 of the stream's bytes: the store key;
//   - a manifest digest is the digest of the manifest a ref named (an
//     index's for a multi-platform tag); the daemon has none;
//   - a source (Source) resolves an image ref to an Image: Resolve answers
//     from what the source recorded if it can (a registry's ref cache),
//     Pull asks it afresh. Sources live in subpackages (snapshot/docker:
//     the Docker daemon; snapshot/registry: registries, OCI layouts,
//     docker-archives); what they stream is validated here, the same for
//     every source;
//   - an image (Image) is one resolved image as a value: its ref, image
//     digest and manifest digest, and its Content, which reads its config
//     (Config: the document and its OCI reading) and its layers: tar
//     streams, lowest first. Nothing depends on an earlier call of the
//     source having seen the image;
//   - an export is the flattened rootfs tar stream of a created (never
//     started) container: the one layer the Docker source yields;
//   - an admission is how the signature policy (package policy, asked
//     through ImportOptions.Admit) let an image in: decided after the
//     image is resolved and before any layer is fetched, and recorded with
//     its tree (index.Tree.Admitted); a tree the store already has is
//     re-checked from that record, offline (ImportOptions.Readmit).
//
// ImportImage imports an image from a source, ImportTar a tar stream.
//
// An image of several layers is data before it is files: ReadDiff
// validates one layer's tar stream into a Diff (entries, each regular file
// as an object digest, and its whiteouts kept as whiteouts), and Merge
// flattens Diffs in order with overlay semantics into the entry list of
// the image's tree, refusing anything that would write through a symlink
// or link to what a whiteout removed. ImportImage takes a source's layers
// that way whenever they name their diffIDs (snapshot/registry's do): each
// missing layer is read through ReadDiff into the store's objects and
// checked against its diffID, then recorded (cache.LayerWriter); the
// recorded entry lists are merged, which tells what each layer's
// directory must hold over the layers below it (LayerDirs); the layer
// directories the store lacks are published by chain ID and the tree is a
// stack of them (publishStack). A flattened export (the Docker daemon's,
// or `import --tar`) is one layer of that same path: read as a layer
// (readFlat, which also refuses whiteouts and invents missing parents as
// tar does), recorded under the sha256 of the stream, and published as a
// one-layer stack. There is one build path, one entry validator (the
// diffReader) and one object writer (cache.LayerWriter.Put).
//
// The tar stream is hostile input. ReadDiff validates every entry before it
// reaches the store: names are cleaned and must stay inside the tree (a
// leading "/" is stripped, as tar does; any ".." component is refused);
// duplicate names, entries under a non-directory, hard links that do not
// name an earlier regular file or symlink, owners outside 0..2^32-2,
// device nodes outside dev/ or with numbers Linux cannot hold, sparse
// entries (Docker never exports them; expanding one could fill the disk),
// mtimes outside 1678–2262, a stream that ends without its end-of-archive
// block, capabilities on anything but a regular file, whiteouts and
// trusted.* xattrs are refused.
// Of the xattrs, security.capability and user.* are kept exactly;
// security.selinux and system.* (ACLs, which tar only restores with --acls)
// are dropped, as they describe the exporting host rather than the image.
// The store then creates every entry relative to the tree root without
// following symlinks (see internal/fsys), so even a check missed here
// cannot write outside the tree.
package snapshot
