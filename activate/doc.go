// Package activate manages machines: named pointers to trees.
//
// Vocabulary:
//   - a machine is a name (letters, digits, "_", ".", "-"; 1–64 bytes; not
//     starting with "." or "-") with a current tree;
//   - machines/NAME/current is a symlink to ../../trees/sha256/<hex>; it is
//     replaced atomically (symlink to a temporary name, rename(2) over it,
//     fsync of the directory), so a reader sees the old tree or the new one;
//   - a generation is one activation: number, digest, image ref, time and
//     reason. Rollback moves current back along the generations without
//     adding one; a new activation appends one;
//   - prepare makes a machine run an image ref from a source (see
//     snapshot.Source): it resolves the ref to an image digest, reads the
//     machine's link and records once, and lets a pure policy (decide)
//     choose one action: a cache hit, an import and activation, a rollback
//     of a crash-looping generation, declining a digest that failed there
//     before, or starting from the cached tree when the source is
//     unreachable. It reports one Outcome, which the CLI prints.
//
// The symlink is flipped before the generation is recorded, so the index
// never claims a flip that did not happen. If a crash falls between the
// two, the next operation on the machine notices that the symlink and the
// index disagree and records the symlink's tree as the current generation
// (reason "recovered").
package activate
