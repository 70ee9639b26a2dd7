package activate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/rootswap/rootswap/internal/pid1"
)

// An image's USER is resolved the way Docker (runc's libcontainer/user)
// does it, against the image's own /etc/passwd and /etc/group, because
// nspawn's --user asks getent inside the container, which a FROM scratch
// or distroless image does not have, and takes no numeric uid:gid
// without it. rootswap's init then switches to the result.

// execUser is who a payload runs as.
type execUser struct {
	creds pid1.Creds
	name  string // the passwd entry's name; "" when the entry was not found
	home  string // the entry's home, or "/"
}

// maxIDFile bounds what rootswap reads of an image's /etc/passwd or
// /etc/group: they come from the image, and a few thousand lines is
// already a lot.
const maxIDFile = 4 << 20

// idEntry is one line of /etc/passwd or /etc/group, as libcontainer reads
// it: fields by colon, a number that does not parse is 0.
type idEntry struct {
	name    string
	id, gid int64  // passwd: uid and gid; group: gid in id
	home    string // passwd
	members []string
}

// readIDFile reads /etc/passwd (isGroup false) or /etc/group from the
// image's root. A missing file has no entries; anything else than a
// regular file, or one over maxIDFile, is refused.
func readIDFile(root fs.FS, name string, isGroup bool) ([]idEntry, error) {
	fi, err := fs.Stat(root, name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("image /%s: %w", name, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxIDFile {
		return nil, fmt.Errorf("image /%s: not a regular file of at most %d bytes", name, maxIDFile)
	}
	b, err := fs.ReadFile(root, name)
	if err != nil {
		return nil, fmt.Errorf("image /%s: %w", name, err)
	}
	var out []idEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), maxIDFile)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		f := strings.Split(line, ":")
		field := func(i int) string {
			if i < len(f) {
				return f[i]
			}
			return ""
		}
		num := func(i int) int64 { n, _ := strconv.ParseInt(field(i), 10, 64); return n }
		e := idEntry{name: f[0], id: num(2)}
		if isGroup {
			if m := field(3); m != "" {
				e.members = strings.Split(m, ",")
			}
		} else {
			e.gid, e.home = num(3), field(5)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("image /%s: %w", name, err)
	}
	return out, nil
}

// parseID reads a numeric user or group ID as Docker accepts them:
// 0..2^31-1.
func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > math.MaxInt32 {
		return 0, false
	}
	return uint32(n), true
}

// resolveUser resolves spec, an image's USER ("", NAME, UID, NAME:GROUP,
// UID:GID, …), against root's /etc/passwd and /etc/group:
//   - "" is uid 0;
//   - a name or uid in /etc/passwd takes that entry's uid, gid and home;
//     a uid that is not there is that uid with gid 0 and home "/"; a
//     name that is not there is an error (Docker: "unable to find user");
//   - a GROUP, by name or gid, from /etc/group replaces the gid; a gid not
//     there is that gid, a name not there an error;
//   - without a GROUP, a user found by name or uid gets as supplementary
//     groups every group of /etc/group that lists its name;
//   - the primary group is always the first supplementary group.
//
// With no /etc/passwd at all, only numeric users (and groups) resolve.
func resolveUser(spec string, root fs.FS) (u execUser, err error) {
	userArg, groupArg, hasGroup := strings.Cut(spec, ":")
	if hasGroup && groupArg == "" {
		return execUser{}, fmt.Errorf("image USER %q: empty group", spec)
	}
	u = execUser{home: "/"}
	uid, numeric := parseID(userArg)
	if userArg == "" {
		uid, numeric = 0, true
	} else if !numeric && strings.Trim(userArg, "0123456789") == "" {
		return execUser{}, fmt.Errorf("image USER %q: uid out of range 0-%d", spec, math.MaxInt32)
	}
	passwd, err := readIDFile(root, "etc/passwd", false)
	if err != nil {
		return execUser{}, err
	}
	found := false
	for _, e := range passwd {
		if (numeric && e.id == int64(uid)) || (!numeric && e.name == userArg) {
			u.name, u.home, found = e.name, e.home, true
			u.creds.UID, u.creds.GID = uint32(e.id), uint32(e.gid)
			break
		}
	}
	if !found {
		if !numeric {
			what := "no such user in the image's /etc/passwd"
			if passwd == nil {
				what = "the image has no /etc/passwd (give a numeric UID[:GID])"
			}
			return execUser{}, fmt.Errorf("image USER %q: %s", spec, what)
		}
		u.creds.UID = uid
	}
	// Every return below: the primary group is a supplementary group
	// too, first, as Docker (containerd's WithAdditionalGIDs) gives it.
	defer func() { u.creds.Groups = withPrimary(u.creds.GID, u.creds.Groups) }()
	if !hasGroup && u.name == "" {
		return u, nil
	}
	groups, err := readIDFile(root, "etc/group", true)
	if err != nil {
		return execUser{}, err
	}
	if !hasGroup {
		for _, g := range groups {
			for _, m := range g.members {
				if m == u.name {
					u.creds.Groups = append(u.creds.Groups, uint32(g.id))
					break
				}
			}
		}
		return u, nil
	}
	gid, gnumeric := parseID(groupArg)
	for _, g := range groups {
		if (gnumeric && g.id == int64(gid)) || (!gnumeric && g.name == groupArg) {
			u.creds.GID = uint32(g.id)
			return u, nil
		}
	}
	if !gnumeric {
		return execUser{}, fmt.Errorf("image USER %q: no such group in the image's /etc/group", spec)
	}
	u.creds.GID = gid
	return u, nil
}

// withPrimary is groups with gid in front, once.
func withPrimary(gid uint32, groups []uint32) []uint32 {
	out := []uint32{gid}
	for _, g := range groups {
		if !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	return out
}
