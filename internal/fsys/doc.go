// Package fsys is the one home of golang.org/x/sys/unix in rootswap: the
// few Linux file-system calls the store needs that package os does not offer.
//
// Vocabulary:
//   - a Dir is a directory handle that confines every name it is given to
//     the directory beneath it: names are resolved with openat2(2) and
//     RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, so no entry, however hostile, can
//     reach outside it or through a symlink;
//   - a Lock is an flock(2) on a lock file, taken with a deadline, whose
//     contention error names the processes holding it.
//   - a TempName is a prefix and random hex: the name of something made
//     beside its final place and renamed into it;
//   - a StagedLink is a symlink made under a TempName beside the link it
//     replaces with one rename(2).
package fsys
