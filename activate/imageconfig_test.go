package activate

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/rootswap/rootswap/internal/pid1"
)

// An image's /etc, in busybox's shape: root is in some groups, app in one.
var testEtc = fstest.MapFS{
	"etc/passwd": {Data: []byte("root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n\nbroken\n")},
	"etc/group":  {Data: []byte("root:x:0:\nwheel:x:10:root\nstaff:x:50:app,other\napp:x:1000:\naudio:x:29:app\n")},
}

// TestPlanImage: the config field by field, as docker run takes it, and
// what the user's options and COMMAND change.
func TestPlanImage(t *testing.T) {
	cfg := func(c ocispec.ImageConfig) *ocispec.ImageConfig { return &c }
	root := func(groups ...uint32) *pid1.Creds { return &pid1.Creds{Groups: append([]uint32{0}, groups...)} }
	for _, tc := range []struct {
		name    string
		cfg     *ocispec.ImageConfig
		etc     fstest.MapFS
		user    []string // nspawn options and COMMAND
		opt     RunOptions
		command string
		setenv  string // space-separated
		chdir   string
		signal  string
		creds   *pid1.Creds
		err     string
	}{
		{name: "no config: the command as given", cfg: nil, user: []string{"/bin/sh"}, command: "/bin/sh"},
		{name: "no config, no command: nspawn's shell", cfg: nil},
		{name: "entrypoint and cmd", cfg: cfg(ocispec.ImageConfig{Entrypoint: []string{"/ep.sh"}, Cmd: []string{"a", "b"}}),
			command: "/ep.sh a b", setenv: "PATH=" + dockerPath + " HOME=/root", creds: root(10)},
		{name: "COMMAND replaces cmd", cfg: cfg(ocispec.ImageConfig{Entrypoint: []string{"/ep.sh"}, Cmd: []string{"a"}}),
			user: []string{"--", "x", "y"}, command: "/ep.sh x y", setenv: "PATH=" + dockerPath + " HOME=/root", creds: root(10)},
		{name: "cmd only", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"sh", "-c", "x"}}),
			command: "sh -c x", setenv: "PATH=" + dockerPath + " HOME=/root", creds: root(10)},
		{name: "--entrypoint drops cmd", cfg: cfg(ocispec.ImageConfig{Entrypoint: []string{"/ep.sh"}, Cmd: []string{"a"}}),
			opt: RunOptions{Entrypoint: "/bin/sh", EntrypointSet: true}, command: "/bin/sh", setenv: "PATH=" + dockerPath + " HOME=/root", creds: root(10)},
		{name: "--entrypoint with COMMAND", cfg: cfg(ocispec.ImageConfig{Entrypoint: []string{"/ep.sh"}, Cmd: []string{"a"}}),
			user: []string{"--", "-c", "x"}, opt: RunOptions{Entrypoint: "/bin/sh", EntrypointSet: true}, command: "/bin/sh -c x",
			setenv: "PATH=" + dockerPath + " HOME=/root", creds: root(10)},
		{name: "--entrypoint clears it", cfg: cfg(ocispec.ImageConfig{Entrypoint: []string{"/ep.sh"}, Cmd: []string{"a"}}),
			opt: RunOptions{EntrypointSet: true}, err: "no ENTRYPOINT or CMD: give a COMMAND"},
		{name: "nothing to run", cfg: cfg(ocispec.ImageConfig{}), err: "no ENTRYPOINT or CMD: give a COMMAND"},
		{name: "env in order, PATH kept", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, Env: []string{"B=2", "PATH=/opt/bin", "A=x=y", "NOVALUE", "=bad"}}),
			command: "x", setenv: "B=2 PATH=/opt/bin A=x=y HOME=/root", creds: root(10)},
		{name: "--setenv wins", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, Env: []string{"B=2", "HOME=/h"}}),
			user: []string{"-E", "B=3", "--setenv=PATH=/p", "-EHOME=/mine", "x"}, command: "x", creds: root(10)},
		{name: "workdir", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, WorkingDir: "/srv/app"}),
			command: "x", setenv: "PATH=" + dockerPath + " HOME=/root", chdir: "/srv/app", creds: root(10)},
		{name: "--chdir wins", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, WorkingDir: "/srv/app"}),
			user: []string{"--chdir=/tmp", "x"}, command: "x", setenv: "PATH=" + dockerPath + " HOME=/root", creds: root(10)},
		{name: "relative workdir", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, WorkingDir: "app"}), err: `image WORKDIR "app": not an absolute path`},
		{name: "stop signal", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, StopSignal: "SIGQUIT"}),
			command: "x", setenv: "PATH=" + dockerPath + " HOME=/root", signal: "SIGQUIT", creds: root(10)},
		{name: "stop signal by number", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, StopSignal: "2"}),
			command: "x", setenv: "PATH=" + dockerPath + " HOME=/root", signal: "SIGINT", creds: root(10)},
		{name: "--kill-signal wins", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, StopSignal: "SIGQUIT"}),
			user: []string{"--kill-signal=SIGUSR1", "x"}, command: "x", setenv: "PATH=" + dockerPath + " HOME=/root", creds: root(10)},
		{name: "bad stop signal", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, StopSignal: "SIGNOPE"}), err: `image STOPSIGNAL "SIGNOPE": not a signal`},
		{name: "user by name", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, User: "app"}), command: "x",
			setenv: "PATH=" + dockerPath + " HOME=/home/app USER=app LOGNAME=app", creds: &pid1.Creds{UID: 1000, GID: 1000, Groups: []uint32{1000, 50, 29}}},
		{name: "user by uid in passwd", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, User: "1000"}), command: "x",
			setenv: "PATH=" + dockerPath + " HOME=/home/app USER=app LOGNAME=app", creds: &pid1.Creds{UID: 1000, GID: 1000, Groups: []uint32{1000, 50, 29}}},
		{name: "uid not in passwd", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, User: "4242"}), command: "x",
			setenv: "PATH=" + dockerPath + " HOME=/", creds: &pid1.Creds{UID: 4242, Groups: []uint32{0}}},
		{name: "uid:gid", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, User: "4242:4343"}), command: "x",
			setenv: "PATH=" + dockerPath + " HOME=/", creds: &pid1.Creds{UID: 4242, GID: 4343, Groups: []uint32{4343}}},
		{name: "name:group", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, User: "app:staff"}), command: "x",
			setenv: "PATH=" + dockerPath + " HOME=/home/app USER=app LOGNAME=app", creds: &pid1.Creds{UID: 1000, GID: 50, Groups: []uint32{50}}},
		{name: "name:gid not in group", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, User: "daemon:777"}), command: "x",
			setenv: "PATH=" + dockerPath + " HOME=/usr/sbin USER=daemon LOGNAME=daemon", creds: &pid1.Creds{UID: 1, GID: 777, Groups: []uint32{777}}},
		{name: "no such user", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, User: "nobody"}), err: `image USER "nobody": no such user in the image's /etc/passwd`},
		{name: "no such group", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, User: "app:nogroup"}), err: `image USER "app:nogroup": no such group`},
		{name: "uid out of range", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, User: "2147483648"}), err: "uid out of range"},
		{name: "no /etc/passwd, numeric", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, User: "65532:65532"}), etc: fstest.MapFS{},
			command: "x", setenv: "PATH=" + dockerPath + " HOME=/", creds: &pid1.Creds{UID: 65532, GID: 65532, Groups: []uint32{65532}}},
		{name: "no /etc/passwd, root", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}}), etc: fstest.MapFS{},
			command: "x", setenv: "PATH=" + dockerPath + " HOME=/", creds: &pid1.Creds{Groups: []uint32{0}}},
		{name: "no /etc/passwd, name", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, User: "app"}), etc: fstest.MapFS{},
			err: `image USER "app": the image has no /etc/passwd (give a numeric UID[:GID])`},
		{name: "a passwd that is no file", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, User: "app"}),
			etc: fstest.MapFS{"etc/passwd": {Mode: 0o755 | 1<<31}}, err: "image /etc/passwd: not a regular file"},
		{name: "--user wins", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, User: "app"}), user: []string{"-u", "other", "x"},
			command: "x", setenv: "PATH=" + dockerPath},
		{name: "-b boots: the config's command is not used", cfg: cfg(ocispec.ImageConfig{Cmd: []string{"x"}, User: "app"}), user: []string{"-b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			etc := tc.etc
			if etc == nil {
				etc = testEtc
			}
			o := scanOptions("web", tc.user)
			_, command := splitCommand(tc.user, tc.user, o)
			r, err := planImage(tc.cfg, etc, o, command, tc.opt)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(r.command, " "); got != tc.command {
				t.Errorf("command %q, want %q", got, tc.command)
			}
			if got := strings.Join(r.setenv, " "); got != tc.setenv {
				t.Errorf("setenv %q, want %q", got, tc.setenv)
			}
			if r.chdir != tc.chdir || r.killSignal != tc.signal {
				t.Errorf("chdir %q, kill signal %q; want %q, %q", r.chdir, r.killSignal, tc.chdir, tc.signal)
			}
			switch {
			case (r.user == nil) != (tc.creds == nil):
				t.Errorf("user %+v, want creds %+v", r.user, tc.creds)
			case r.user != nil && (r.user.creds.UID != tc.creds.UID || r.user.creds.GID != tc.creds.GID || !slices.Equal(r.user.creds.Groups, tc.creds.Groups)):
				t.Errorf("creds %+v, want %+v", r.user.creds, *tc.creds)
			}
		})
	}
}

func TestNspawnSignal(t *testing.T) {
	for in, want := range map[string]string{"SIGTERM": "SIGTERM", "TERM": "SIGTERM", "sigquit": "SIGQUIT", "3": "SIGQUIT",
		"SIGRTMIN+3": "SIGRTMIN+3", "RTMIN": "SIGRTMIN", "SIGRTMAX-2": "SIGRTMAX-2", "37": "SIGRTMIN+3", "SIGIOT": "SIGABRT"} {
		if got, err := nspawnSignal(in); err != nil || got != want {
			t.Errorf("nspawnSignal(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "32", "65", "SIG", "SIGFOO", "RTMIN-1", "RTMAX+1", "RTMIN+31", "RTMIN+x", "-3"} {
		if got, err := nspawnSignal(bad); err == nil {
			t.Errorf("nspawnSignal(%q) = %q, want an error", bad, got)
		}
	}
}

// TestPayloadUser: the image's user reaches the init, which switches to
// it; without the init, the binary switches and execs (nspawn's --user
// would need getent in the image); plain root needs no binary then.
func TestPayloadUser(t *testing.T) {
	app := &execUser{creds: pid1.Creds{UID: 1000, GID: 1000, Groups: []uint32{50}}}
	plainRoot := &execUser{}
	const base = "--machine web --directory /t --volatile=overlay --register=no --keep-unit --kill-signal=SIGTERM"
	for _, tc := range []struct {
		opt  RunOptions
		user *execUser
		want string
	}{
		{RunOptions{}, app, base + " --setenv=A=1 --chdir=/w --bind-ro=/bin/rs:/run/rootswap-init -- /run/rootswap-init container-init --user 1000:1000:50 -- x"},
		{RunOptions{NoInit: true}, app, base + " --setenv=A=1 --chdir=/w --bind-ro=/bin/rs:/run/rootswap-init -- /run/rootswap-init container-init --user 1000:1000:50 --exec -- x"},
		{RunOptions{}, plainRoot, base + " --setenv=A=1 --chdir=/w --bind-ro=/bin/rs:/run/rootswap-init -- /run/rootswap-init container-init --user 0:0 -- x"},
		{RunOptions{NoInit: true}, plainRoot, base + " --setenv=A=1 --chdir=/w -- x"},
	} {
		args, o, _ := nspawnArgs("web", "/t", nil, false)
		ir := imageRun{command: []string{"x"}, setenv: []string{"A=1"}, chdir: "/w", user: tc.user}
		got, _, err := payloadArgs(args, nil, o, tc.opt, ir, func() (string, string, error) { return "/bin/rs", "", nil })
		if err != nil {
			t.Fatal(err)
		}
		if g := strings.Join(got, " "); g != tc.want {
			t.Errorf("%+v %+v:\ngot  %s\nwant %s", tc.opt, tc.user, g, tc.want)
		}
	}
}
