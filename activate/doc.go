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
//   - nspawn options are checked in one place (run.go's scan, behind
//     NspawnArgs); NspawnOptions are the choices rootswap offers by name,
//     with their command-line (Args) and .nspawn file (Settings) spellings.
//   - List (machines) and Trees (trees with their machines and pins) are
//     the read-only views `list` and `images` print.
//
// The symlink is flipped before the generation is recorded, so the index
// never claims a flip that did not happen. If a crash falls between the
// two, the next operation on the machine notices that the symlink and the
// index disagree and records the symlink's tree as the current generation
// (reason "recovered").
package activate
