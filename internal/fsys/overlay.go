package fsys

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// MaxLowers is how many lower directories one overlayfs stacks (the
// kernel's OVL_MAX_STACK).
const MaxLowers = 500

// ErrTooManyLayers is MountOverlay's error (wrapped) for a stack the
// kernel cannot mount: more than MaxLowers lower directories, or more
// than mount(2)'s one page of options holds on a kernel without the new
// mount API's lowerdir+.
var ErrTooManyLayers = errors.New("too many layers for overlayfs")

// Overlay describes an overlayfs: lower directories named relative to Dir
// (short names such as a stack directory's "layer@3": the kernel limits
// what mount(2)'s options hold) or absolute, topmost first, and for a writable one an
// upper and a work directory (absolute, on one file system; both empty for
// a read-only overlay). Without an upper directory overlayfs needs two
// lower ones: a lone lower is stacked on Empty, an empty directory
// (absolute), which a read-only overlay of one layer must name.
type Overlay struct {
	Dir         string
	Lower       []string
	Upper, Work string
	Empty       string
}

// legacyOverlay makes MountOverlay skip the new mount API, as on kernels
// before 6.8 (no lowerdir+); tests set it to cover that path.
var legacyOverlay = false

// LegacyOverlayEnv, set to 1, does what legacyOverlay does for a whole
// process: tests of other packages and of the built binary cover the
// mount(2) path with it.
const LegacyOverlayEnv = "ROOTSWAP_OVERLAY_MOUNT2"

// MountOverlay mounts o at target, read-only when o has no upper
// directory. It uses the new mount API, one fsconfig(lowerdir+) per
// layer, where the kernel has it (6.8 and later); elsewhere mount(2) with
// the lower directories relative to o.Dir, which needs the calling
// goroutine locked to its thread (as ReadOnlyView leaves it): the thread
// gets a working directory of its own for the call and has it back
// after. A stack the kernel cannot hold is refused, before any mount,
// with an error wrapping ErrTooManyLayers that says how many it can.
//
// The mount's source (mountinfo's field after the "-") is o.Dir: the
// lower directories there may be relative names, which say nothing of
// which stack a process runs.
func MountOverlay(target string, o Overlay) error {
	switch {
	case len(o.Lower) == 0:
		return fmt.Errorf("overlay at %s: no lower directory", target)
	case len(o.Lower) > MaxLowers:
		return fmt.Errorf("overlay at %s: %d layers, overlayfs stacks at most %d: %w", target, len(o.Lower), MaxLowers, ErrTooManyLayers)
	case (o.Upper == "") != (o.Work == ""):
		return fmt.Errorf("overlay at %s: an upper directory needs a work directory, and the other way round", target)
	case len(o.Lower) == 1 && o.Upper == "":
		if o.Empty == "" {
			return fmt.Errorf("overlay at %s: a read-only overlay of one layer needs an empty directory below it", target)
		}
		o.Lower = []string{o.Lower[0], o.Empty}
	}
	for _, p := range append([]string{o.Dir, o.Upper, o.Work}, o.Lower...) {
		// Both APIs parse these as option values: ',' ':' and '\'
		// would need escapes, and the store never makes such names.
		if strings.ContainsAny(p, ",:\\\n") {
			return fmt.Errorf("overlay at %s: path %q holds a character overlayfs options cannot carry plainly", target, p)
		}
	}
	if !legacyOverlay && os.Getenv(LegacyOverlayEnv) != "1" {
		err := mountOverlayNew(target, o)
		if !errors.Is(err, errNoLowerdirPlus) {
			return err
		}
	}
	return mountOverlayLegacy(target, o)
}

// errNoLowerdirPlus says the kernel lacks the new mount API or overlayfs's
// lowerdir+ key.
var errNoLowerdirPlus = errors.New("no lowerdir+")

func mountOverlayNew(target string, o Overlay) error {
	fd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if errors.Is(err, unix.ENOSYS) {
		return errNoLowerdirPlus
	}
	if err != nil {
		return fmt.Errorf("overlay at %s: fsopen: %w", target, err)
	}
	defer unix.Close(fd)
	if err := unix.FsconfigSetString(fd, "source", o.Dir); err != nil {
		return fmt.Errorf("overlay at %s: source: %w", target, err)
	}
	for i, l := range o.Lower {
		if !filepath.IsAbs(l) {
			l = filepath.Join(o.Dir, l)
		}
		err := unix.FsconfigSetString(fd, "lowerdir+", l)
		if i == 0 && errors.Is(err, unix.EINVAL) {
			// An unknown key is EINVAL (before 6.8); a bad directory is
			// ENOENT or ENOTDIR.
			return errNoLowerdirPlus
		}
		if err != nil {
			return fmt.Errorf("overlay at %s: lower %s: %w", target, l, err)
		}
	}
	attr := 0
	if o.Upper != "" {
		if err := unix.FsconfigSetString(fd, "upperdir", o.Upper); err != nil {
			return fmt.Errorf("overlay at %s: upper %s: %w", target, o.Upper, err)
		}
		if err := unix.FsconfigSetString(fd, "workdir", o.Work); err != nil {
			return fmt.Errorf("overlay at %s: work %s: %w", target, o.Work, err)
		}
	} else {
		attr = unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.FsconfigCreate(fd); err != nil {
		return fmt.Errorf("overlay at %s: create: %w", target, err)
	}
	mfd, err := unix.Fsmount(fd, unix.FSMOUNT_CLOEXEC, attr)
	if err != nil {
		return fmt.Errorf("overlay at %s: fsmount: %w", target, err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("overlay at %s: move_mount: %w", target, err)
	}
	return nil
}

// mountOverlayLegacy mounts o with mount(2), the lower directories named
// relative to o.Dir from a working directory of this thread's own.
func mountOverlayLegacy(target string, o Overlay) error {
	opts := "lowerdir=" + strings.Join(o.Lower, ":")
	flags := uintptr(0)
	if o.Upper != "" {
		opts += ",upperdir=" + o.Upper + ",workdir=" + o.Work
	} else {
		flags = unix.MS_RDONLY
	}
	// The kernel copies one page of options; the lower names share it.
	if page := os.Getpagesize(); len(opts) >= page {
		return fmt.Errorf("overlay at %s: %d layers need %d bytes of mount options, more than the %d mount(2) takes (kernels from 6.8 stack up to %d): %w",
			target, len(o.Lower), len(opts)+1, page, MaxLowers, ErrTooManyLayers)
	}
	abs, err := filepath.Abs(target)
	if err != nil {
		return fmt.Errorf("overlay at %s: %w", target, err)
	}
	// CLONE_FS: the working directory is this thread's alone from here
	// on, so the chdir below moves no other goroutine's.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("overlay at %s: unshare fs: %w", target, err)
	}
	old, err := os.Open(".")
	if err != nil {
		return fmt.Errorf("overlay at %s: %w", target, err)
	}
	defer old.Close()
	if err := unix.Chdir(o.Dir); err != nil {
		return fmt.Errorf("overlay at %s: chdir %s: %w", target, o.Dir, err)
	}
	err = unix.Mount(o.Dir, abs, "overlay", flags, opts)
	if cerr := unix.Fchdir(int(old.Fd())); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("overlay at %s: mount: %w", target, err)
	}
	return nil
}
