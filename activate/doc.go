// Package activate manages machines: named pointers to trees.
//
// Vocabulary:
//   - a machine is a name nspawn and machined accept (hostname rules:
//     labels of letters, digits and "-" joined by single dots; 1–64 bytes)
//     with a current tree;
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
//   - prepare makes a machine run an image ref from a source (see
//     snapshot.Source): it resolves the ref to an image (snapshot.Image:
//     pulled afresh with --pull), reads the machine's link and records
//     once, and lets a pure policy (decide)
//     choose one action: a cache hit, an import and activation, a rollback
//     of a crash-looping generation, declining a digest that failed there
//     before, or starting from the cached tree when the source is
//     unreachable. It reports one Outcome, which the CLI prints. A ref
//     is recorded at a new digest only by an import that stored it or a
//     cache hit (prepare's or update's), never by a declined or refused
//     image.
//   - a declined digest is one the machine was rolled back from (a crash
//     loop, a failed update, an operator's rollback): the machine record
//     lists it with why, and prepare and update keep the current tree
//     while the machine's image reference names it.
//   - update brings running machines to what their image reference (the
//     machine record's, set by prepare) names now: resolve once per
//     reference, fetch once per digest while the services run, then per
//     machine a pure policy (decideUpdate) picks: up to date, decline,
//     fetch only (no running unit, or no systemd), or flip + restart the
//     unit through systemd's D-Bus API (Systemd) + health gate, rolling
//     back at once when the gate fails.
//
// A flip stages the new link under a temporary name, commits the
// generation and the machine's current to the index, and only then renames
// the link over current. If a crash falls between the commit and the
// rename, the index is one step ahead of the link: the next operation on
// the machine notices that they disagree, trusts the link (it is what
// runs) and makes the index follow it; a link the index has never heard
// of is recorded as a generation with reason "recovered".
package activate
