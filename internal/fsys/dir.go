package fsys

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrUnsafePath is returned (wrapped) when a name would leave its Dir or
// pass through a symlink on the way.
var ErrUnsafePath = errors.New("unsafe path")

// Dir is a directory that names are confined to. All creation and metadata
// calls resolve the parent with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
// RESOLVE_NO_MAGICLINKS) and act on the last component with *at calls that
// never follow a symlink. Names are slash-separated, relative and clean.
type Dir struct {
	fd   int
	path string

	// The last parent resolved, kept open: archives list siblings together.
	lastName string
	lastFD   int
}

// OpenDir opens an existing directory as a Dir. The caller must Close it.
func OpenDir(p string) (*Dir, error) {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return &Dir{fd: fd, path: p, lastFD: -1}, nil
}

// Close releases the Dir's descriptors.
func (d *Dir) Close() error {
	if d.lastFD >= 0 {
		unix.Close(d.lastFD)
		d.lastFD = -1
	}
	return unix.Close(d.fd)
}

// parent returns a descriptor for the directory holding name (owned by d,
// not to be closed) and name's last component.
func (d *Dir) parent(name string) (int, string, error) {
	if name == "" || name == "." || strings.HasPrefix(name, "/") || path.Clean(name) != name || name == ".." || strings.HasPrefix(name, "../") {
		return -1, "", fmt.Errorf("%q: %w", name, ErrUnsafePath)
	}
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		return d.fd, base, nil
	}
	if d.lastFD >= 0 && d.lastName == dir {
		return d.lastFD, base, nil
	}
	fd, err := unix.Openat2(d.fd, dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		if err == unix.ELOOP || err == unix.EXDEV || err == unix.ENOTDIR {
			return -1, "", fmt.Errorf("%q: parent is not a directory inside the tree: %w", name, ErrUnsafePath)
		}
		return -1, "", &os.PathError{Op: "openat2", Path: dir, Err: err}
	}
	if d.lastFD >= 0 {
		unix.Close(d.lastFD)
	}
	d.lastFD, d.lastName = fd, dir
	return fd, base, nil
}

// Mkdir creates directory name with mode 0700; the caller applies the
// final mode later (a read-only directory must stay writable while its
// children are created).
func (d *Dir) Mkdir(name string) error {
	pfd, base, err := d.parent(name)
	if err != nil {
		return err
	}
	return wrap("mkdir", name, unix.Mkdirat(pfd, base, 0o700))
}

// Symlink creates name as a symlink to target. The target is stored as
// given: it is never resolved by rootswap.
func (d *Dir) Symlink(target, name string) error {
	pfd, base, err := d.parent(name)
	if err != nil {
		return err
	}
	return wrap("symlink", name, unix.Symlinkat(target, pfd, base))
}

// Link creates name as a hard link to the existing entry old, both inside d.
// A symlink is linked itself, never its target.
func (d *Dir) Link(old, name string) error {
	ofd, obase, err := d.parent(old)
	if err != nil {
		return err
	}
	// parent() caches one descriptor: resolve new's parent separately.
	ofd, err = unix.Dup(ofd)
	if err != nil {
		return wrap("link", name, err)
	}
	defer unix.Close(ofd)
	nfd, nbase, err := d.parent(name)
	if err != nil {
		return err
	}
	return wrap("link", name, unix.Linkat(ofd, obase, nfd, nbase, 0))
}

// Linkat creates the name new in dir to as a hard link to the entry old
// in dir from, each name confined to its Dir as every Dir call is; a
// symlink is linked itself, never its target. The error is unwrapped
// enough for errors.Is(err, os.ErrExist), os.ErrNotExist and
// ErrTooManyLinks.
func Linkat(from *Dir, old string, to *Dir, new string) error {
	if from == to {
		return from.Link(old, new)
	}
	ofd, obase, err := from.parent(old)
	if err != nil {
		return err
	}
	nfd, nbase, err := to.parent(new)
	if err != nil {
		return err
	}
	return wrap("link", new, unix.Linkat(ofd, obase, nfd, nbase, 0))
}

// LinkFrom creates name as a hard link to the file at the absolute path src
// (an object in the store). The error is returned unwrapped enough for
// errors.Is(err, unix.EMLINK) and unix.EEXIST checks.
func (d *Dir) LinkFrom(src, name string) error {
	pfd, base, err := d.parent(name)
	if err != nil {
		return err
	}
	return wrap("link", name, unix.Linkat(unix.AT_FDCWD, src, pfd, base, 0))
}

// LinkOut hard-links the file name inside d to the absolute path dst (the
// store's object). A symlink at name is linked itself, never followed. The
// error is unwrapped enough for errors.Is(err, unix.EEXIST).
func (d *Dir) LinkOut(name, dst string) error {
	pfd, base, err := d.parent(name)
	if err != nil {
		return err
	}
	return wrap("link", name, unix.Linkat(pfd, base, unix.AT_FDCWD, dst, 0))
}

// Remove removes the non-directory name.
func (d *Dir) Remove(name string) error {
	pfd, base, err := d.parent(name)
	if err != nil {
		return err
	}
	return wrap("remove", name, unix.Unlinkat(pfd, base, 0))
}

// Mknod creates a device node or FIFO. mode carries the file type bits.
func (d *Dir) Mknod(name string, mode uint32, dev uint64) error {
	pfd, base, err := d.parent(name)
	if err != nil {
		return err
	}
	return wrap("mknod", name, unix.Mknodat(pfd, base, mode, int(dev)))
}

// Mkdev is the device number of major:minor, as Mknod takes it.
func Mkdev(major, minor uint32) uint64 { return unix.Mkdev(major, minor) }

// Chmod sets the permission bits of name. Linux cannot chmod a symlink
// itself, so name must not be one: callers use it on special files they
// have just made, which cannot be opened safely to fchmod.
func (d *Dir) Chmod(name string, mode uint32) error {
	pfd, base, err := d.parent(name)
	if err != nil {
		return err
	}
	return wrap("chmod", name, unix.Fchmodat(pfd, base, mode, 0))
}

// Create creates name as a new regular file (it must not exist), opened for
// writing with mode 0600. The caller closes it.
func (d *Dir) Create(name string) (*os.File, error) {
	pfd, base, err := d.parent(name)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, wrap("create", name, err)
	}
	return os.NewFile(uintptr(fd), path.Join(d.path, name)), nil
}

// OpenDirFD opens the directory name itself (never through a symlink) for
// metadata calls. The caller closes it.
func (d *Dir) OpenDirFile(name string) (*os.File, error) {
	p := name
	fd := -1
	var err error
	if name == "." {
		fd, err = unix.Openat(d.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	} else {
		var pfd int
		pfd, p, err = d.parent(name)
		if err != nil {
			return nil, err
		}
		fd, err = unix.Openat(pfd, p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, wrap("open", name, err)
	}
	return os.NewFile(uintptr(fd), path.Join(d.path, name)), nil
}

// Lchown sets the owner of name without following a symlink.
func (d *Dir) Lchown(name string, uid, gid int) error {
	pfd, base, err := d.parent(name)
	if err != nil {
		return err
	}
	return wrap("lchown", name, unix.Fchownat(pfd, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW))
}

// Lchtimes sets atime and mtime of name (to mtime) without following a
// symlink.
func (d *Dir) Lchtimes(name string, mtime time.Time) error {
	pfd, base, err := d.parent(name)
	if err != nil {
		return err
	}
	ts := unix.NsecToTimespec(mtime.UnixNano())
	return wrap("utimes", name, unix.UtimesNanoAt(pfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW))
}

// Lstat returns name's metadata without following a symlink.
func (d *Dir) Lstat(name string) (Stat, error) {
	var st Stat
	pfd, base, err := d.parent(name)
	if err != nil {
		return st, err
	}
	return st, wrap("lstat", name, unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW))
}

func wrap(op, name string, err error) error {
	if err == nil {
		return nil
	}
	return &os.PathError{Op: op, Path: name, Err: err}
}

// SetMeta applies owner, mode, xattrs and mtime to an open file, in the only
// order that keeps them all: chown clears setuid/setgid bits and file
// capabilities, so it goes first; mtime goes last.
func SetMeta(f *os.File, uid, gid int, mode uint32, xattrs map[string][]byte, mtime time.Time) error {
	fd := int(f.Fd())
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return &os.PathError{Op: "chown", Path: f.Name(), Err: err}
	}
	if err := unix.Fchmod(fd, mode&0o7777); err != nil {
		return &os.PathError{Op: "chmod", Path: f.Name(), Err: err}
	}
	for k, v := range xattrs {
		if err := unix.Fsetxattr(fd, k, v, 0); err != nil {
			return &os.PathError{Op: "setxattr " + k, Path: f.Name(), Err: err}
		}
	}
	if err := futimens(fd, mtime); err != nil {
		return &os.PathError{Op: "utimes", Path: f.Name(), Err: err}
	}
	return nil
}

// SetXattr sets one extended attribute of an open file.
func SetXattr(f *os.File, name string, value []byte) error {
	if err := unix.Fsetxattr(int(f.Fd()), name, value, 0); err != nil {
		return &os.PathError{Op: "setxattr " + name, Path: f.Name(), Err: err}
	}
	return nil
}

// futimens sets fd's atime and mtime: utimensat(fd, NULL, ...), which
// x/sys does not wrap (its Futimes goes through /proc/self/fd).
func futimens(fd int, mtime time.Time) error {
	ts := [2]unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// Xattrs lists the extended attributes of an open file.
func Xattrs(f *os.File) (map[string][]byte, error) {
	fd := int(f.Fd())
	buf := make([]byte, 4096)
	n, err := unix.Flistxattr(fd, buf)
	if err == unix.ERANGE {
		sz, err2 := unix.Flistxattr(fd, nil)
		if err2 != nil {
			return nil, err2
		}
		buf = make([]byte, sz)
		n, err = unix.Flistxattr(fd, buf)
	}
	if err != nil {
		if err == unix.ENOTSUP {
			return nil, nil
		}
		return nil, err
	}
	var out map[string][]byte
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		sz, err := unix.Fgetxattr(fd, name, nil)
		if err != nil {
			return nil, err
		}
		v := make([]byte, sz)
		if sz > 0 {
			if _, err := unix.Fgetxattr(fd, name, v); err != nil {
				return nil, err
			}
		}
		if out == nil {
			out = map[string][]byte{}
		}
		out[name] = v
	}
	return out, nil
}

// Stat is what lstat(2) and fstat(2) say of a file: the type bits of Mode
// (masked with syscall.S_IFMT) and its permissions, Ino, Nlink, Uid, Gid,
// Mtim.
type Stat = unix.Stat_t

// Lstat returns p's metadata without following a symlink. The error is
// the bare errno: callers that report it name the path themselves.
func Lstat(p string) (Stat, error) {
	var st Stat
	err := unix.Lstat(p, &st)
	return st, err
}

// Fstat returns the metadata of the open file f; the error is the bare
// errno.
func Fstat(f *os.File) (Stat, error) {
	var st Stat
	err := unix.Fstat(int(f.Fd()), &st)
	return st, err
}

// ErrTooManyLinks is link(2)'s EMLINK (errors.Is matches it): the file is
// at its file system's link limit, 65000 on ext4.
var ErrTooManyLinks error = unix.EMLINK

// Syncfs flushes the whole file system holding path: one call instead of
// an fsync per file of a freshly extracted tree.
func Syncfs(p string) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	return wrap("syncfs", p, unix.Syncfs(fd))
}

// SyncDir fsyncs a directory so that renames and links inside it are durable.
func SyncDir(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// RenameNoReplace renames old to new, failing with EEXIST (wrapped) instead
// of replacing new.
func RenameNoReplace(old, new string) error {
	return wrap("rename", new, unix.Renameat2(unix.AT_FDCWD, old, unix.AT_FDCWD, new, unix.RENAME_NOREPLACE))
}
