// Package registry is the image source for images that are not in a
// Docker daemon: a registry (docker://HOST/REPO:TAG, docker://HOST/REPO@sha256:…),
// an OCI image layout (oci:PATH[:TAG]) and a `docker save` tarball
// (docker-archive:PATH[:REF]), named as containers-transports(5) names
// them. It is the one home of go-containerregistry and of the
// decompressors.
//
// Vocabulary, on top of snapshot's:
//   - a manifest digest (snapshot.Image.Manifest) is what a registry names
//     a manifest by: the digest a tag points at (perhaps of an index, a
//     manifest list) or a digest ref names; for a layout, the digest its
//     index.json lists. It is not the image digest: that is the digest of
//     the image's config, whatever source it came from;
//   - a blob is a layer as a source stores it, compressed (gzip, zstd) or
//     not; its digest is what the manifest lists, and the layer's diffID
//     (the config lists it) is the digest of the uncompressed tar stream;
//   - the ref cache (RefCache, kept by cache.Store) remembers which
//     manifest and image digest a registry ref was last stored at, so that
//     Resolve needs no network once a ref was imported, and a Pull whose
//     tag has not moved costs one manifest HEAD. This package only reads
//     it: an image it resolved afresh asks to be recorded
//     (snapshot.Image.Record), and the importer records it once the
//     image's tree is stored.
//
// Every byte a source reads is verified before it is trusted: a manifest
// against the digest that named it (a digest ref, a HEAD's
// Docker-Content-Digest, an index entry) and its size; a config against
// the manifest's config descriptor; a blob against its digest and size
// once read to its end, when the layer's Open stream ends.
package registry
