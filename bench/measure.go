package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// sample is one timed step.
type sample struct {
	Wall time.Duration
	// MaxRSS is the peak resident set of the measured process in KiB, as
	// wait4 reports it; 0 where the step is a shell pipeline.
	MaxRSS int64
	// SyncAfter is how long a sync(2) right after the step took: the cost
	// of making the step's writes durable, which rootswap pays inside
	// Wall and the old chain never pays. Not part of Wall.
	SyncAfter time.Duration
}

func (s sample) plus(o sample) sample {
	return sample{Wall: s.Wall + o.Wall, MaxRSS: max(s.MaxRSS, o.MaxRSS), SyncAfter: s.SyncAfter + o.SyncAfter}
}

// machine is the machine name both approaches use.
const machine = "bench"

// oldChainScript is the old unit's ExecStartPre chain, one line per
// ExecStartPre, run by bash so that the pipe is a real pipe. $1 is the
// image, $2 the directory holding NAME_new and NAME_running, $3 NAME.
const oldChainScript = `set -euo pipefail
id=$(docker create "$1")
trap 'docker rm -f "$id" >/dev/null 2>&1' EXIT
mkdir "$2/$3_new"
docker export "$id" | tar -x -C "$2/$3_new"
docker rm "$id" >/dev/null
trap - EXIT
mv "$2/$3_new" "$2/$3_running"
`

// runner executes and times the commands of both approaches.
type runner struct {
	rs      string // the rootswap binary
	verbose bool
	// The floor programs (bench/floor/...): a Go hello world and one that
	// only links the Docker client package.
	hello, dockerClient string
}

// exec runs argv and returns its output; a non-zero exit is an error
// that carries the tail of stderr.
func (r *runner) exec(ctx context.Context, argv ...string) (sample, string, error) {
	return r.execEnv(ctx, nil, argv...)
}

// execEnv is exec with the environment env (nil: this process's).
func (r *runner) execEnv(ctx context.Context, env []string, argv ...string) (sample, string, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	s := sample{Wall: time.Since(start)}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			s.MaxRSS = ru.Maxrss
		}
	}
	if r.verbose {
		logf("  %s: %s", strings.Join(argv, " "), s.Wall.Round(time.Microsecond))
	}
	if err != nil {
		return s, stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, lastLines(stderr.String(), 5))
	}
	return s, stdout.String(), nil
}

// timed syncs the file system (so that no step pays for the previous
// one's write-back), runs argv, and measures a sync right after it.
func (r *runner) timed(ctx context.Context, argv ...string) (sample, string, error) {
	return r.timedEnv(ctx, nil, argv...)
}

// timedEnv is timed with the environment env (nil: this process's).
func (r *runner) timedEnv(ctx context.Context, env []string, argv ...string) (sample, string, error) {
	syscall.Sync()
	s, out, err := r.execEnv(ctx, env, argv...)
	start := time.Now()
	syscall.Sync()
	s.SyncAfter = time.Since(start)
	return s, out, err
}

// rootswap runs the binary on store with args, timed.
func (r *runner) rootswap(ctx context.Context, store string, args ...string) (sample, string, error) {
	return r.timed(ctx, append([]string{r.rs, "--root", store}, args...)...)
}

// oldChain runs the old unit's chain for image into dir. A NAME_running
// left by the previous run is renamed away first, untimed: the real unit
// deleted it (rm -rf, not counted here, which favours the old chain).
func (r *runner) oldChain(ctx context.Context, dir, image string, run int) (sample, error) {
	running := filepath.Join(dir, machine+"_running")
	if _, err := os.Lstat(running); err == nil {
		if err := os.Rename(running, filepath.Join(dir, fmt.Sprintf("%s_prev-%d", machine, run))); err != nil {
			return sample{}, err
		}
	}
	s, _, err := r.timed(ctx, "bash", "-c", oldChainScript, "old-chain", image, dir, machine)
	s.MaxRSS = 0 // bash's, not the pipeline's
	return s, err
}

// exportOnly times `docker export` of a created container of image into
// /dev/null, the container made and removed untimed: the floor of any
// import that reads the image's files through the Docker API.
func (r *runner) exportOnly(ctx context.Context, image string) (sample, error) {
	_, out, err := r.exec(ctx, "docker", "create", image)
	if err != nil {
		return sample{}, err
	}
	id := strings.TrimSpace(out)
	defer r.exec(context.WithoutCancel(ctx), "docker", "rm", "-f", id)
	s, _, err := r.timed(ctx, "bash", "-c", `docker export "$1" >/dev/null`, "export-only", id)
	s.MaxRSS = 0
	return s, err
}

// diskUsage is what du(1) reports for a directory tree: allocated blocks,
// each inode counted once however many links it has, and the apparent
// size of those inodes.
type diskUsage struct {
	Blocks   int64 `json:"bytes_allocated"`
	Apparent int64 `json:"bytes_apparent"`
	Inodes   int64 `json:"inodes"`
	// DirBlocks is the part of Blocks that directories take.
	DirBlocks int64 `json:"dir_bytes_allocated"`
}

func du(dir string) (diskUsage, error) {
	var u diskUsage
	type ino struct{ dev, ino uint64 }
	seen := map[ino]bool{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("du %s: no stat", p)
		}
		k := ino{uint64(st.Dev), st.Ino}
		if seen[k] {
			return nil
		}
		seen[k] = true
		u.Blocks += st.Blocks * 512
		if d.IsDir() {
			u.DirBlocks += st.Blocks * 512
		}
		u.Apparent += st.Size
		u.Inodes++
		return nil
	})
	if err != nil {
		return u, fmt.Errorf("du %s: %w", dir, err)
	}
	return u, nil
}

// imageRow is the part of `rootswap images --json` the benchmark reads.
type imageRow struct {
	Digest   string `json:"digest"`
	Files    int64  `json:"files"`
	Bytes    int64  `json:"bytes"`
	NewBytes int64  `json:"new_bytes"`
}

func (r *runner) images(ctx context.Context, store string) (map[string]imageRow, error) {
	_, out, err := r.exec(ctx, r.rs, "--root", store, "images", "--json")
	if err != nil {
		return nil, err
	}
	var rows []imageRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		return nil, fmt.Errorf("rootswap images --json: %w", err)
	}
	m := map[string]imageRow{}
	for _, row := range rows {
		m[row.Digest] = row
	}
	return m, nil
}

// expect checks that a prepare did what the scenario needs, so a cache
// miss is never timed as a hit (or the reverse).
func expect(out, want string) error {
	if !strings.Contains(out, "("+want+")") {
		return fmt.Errorf("rootswap prepare said %q, want %q", strings.TrimSpace(out), want)
	}
	return nil
}

// gcCommand is the argument list of `rootswap gc` that removes every tree
// no machine uses, or nil if the binary has no gc command.
func (r *runner) gcCommand(ctx context.Context) []string {
	_, out, err := r.exec(ctx, r.rs, "gc", "--help")
	if err != nil || !strings.Contains(out, "rootswap gc") {
		return nil
	}
	args := []string{"gc"}
	// A grace period for recently used trees would keep the stale tree
	// the benchmark has just imported.
	if strings.Contains(out, "--unused-for") {
		args = append(args, "--unused-for=0s")
	}
	return args
}

// buildRootswap builds the CLI from the module that holds this program.
func buildRootswap(ctx context.Context, dir string) (string, error) {
	return buildCommand(ctx, dir, "./cmd/rootswap")
}

// buildCommand builds the main package pkg of this module into dir, as
// `make build` does: static (CGO_ENABLED=0), since rootswap's own binary
// is the payload's init in every container `run` starts, whatever C
// library the image has; the floor programs are built alike.
func buildCommand(ctx context.Context, dir, pkg string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m: %w", err)
	}
	bin := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	cmd.Dir = strings.TrimSpace(string(out))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v: %s", pkg, err, lastLines(string(out), 10))
	}
	return bin, nil
}

// removeAll deletes a series directory after the series and waits for the
// file system to settle: this ext4 is mounted with discard and has no
// journal, and creating many files right after deleting many is several
// times slower. The reason is ext4's inode allocator: without a journal it
// skips every free inode deleted less than 60 s ago (recently_deleted in
// fs/ext4/ialloc.c; 360 s while its inode table block is dirty, hence the
// sync), reading its inode to learn so. A settle of more than 60 s after
// the sync therefore gives the next series a file system that allocates at
// its normal speed; perf showed a third of an upgrade's time in
// recently_deleted with the old 15 s.
func removeAll(dir string, settle time.Duration) error {
	start := time.Now()
	err := os.RemoveAll(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	syscall.Sync()
	if settle > 0 {
		time.Sleep(settle)
	}
	if took := time.Since(start); took > time.Second {
		logf("removed %s in %s (settle %s included)", dir, took.Round(100*time.Millisecond), settle)
	}
	return nil
}
