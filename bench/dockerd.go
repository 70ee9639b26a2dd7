package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// dockerd is a Docker daemon of the benchmark's own, with its data root
// in one round's fresh directory: a `docker pull` into it really fetches
// and extracts every layer (the shared daemon already holds them, having
// built the images), and nothing is deleted inside a series.
type dockerd struct {
	host   string // unix://…
	cmd    *exec.Cmd
	exited chan struct{}
	log    string
}

// dockerdLimit bounds its start-up and shutdown (a second or two here).
const dockerdLimit = 120 * time.Second

// startDockerd starts dockerd with everything under dir. Its own exec
// root gives it its own containerd; no bridge and no iptables, so it
// leaves the host's network alone.
func startDockerd(ctx context.Context, dir string) (*dockerd, error) {
	// A unix socket path must stay short (108 bytes).
	run, err := os.MkdirTemp("/run", "rootswap-bench-dockerd-")
	if err != nil {
		return nil, err
	}
	d := &dockerd{host: "unix://" + filepath.Join(run, "docker.sock"), exited: make(chan struct{}), log: filepath.Join(dir, "dockerd.log")}
	logf_, err := os.Create(d.log)
	if err != nil {
		return nil, err
	}
	defer logf_.Close()
	ns := "rootswap-bench-" + filepath.Base(run)
	d.cmd = exec.Command("dockerd", "--host", d.host, "--data-root", filepath.Join(dir, "docker"),
		"--exec-root", filepath.Join(run, "exec"), "--pidfile", filepath.Join(run, "docker.pid"),
		"--bridge=none", "--iptables=false", "--ip6tables=false",
		"--containerd-namespace", ns, "--containerd-plugins-namespace", ns+"-plugins")
	d.cmd.Stdout, d.cmd.Stderr = logf_, logf_
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := d.cmd.Start(); err != nil {
		os.RemoveAll(run)
		return nil, fmt.Errorf("dockerd: %w", err)
	}
	go func() {
		d.cmd.Wait()
		os.RemoveAll(run)
		close(d.exited)
	}()
	deadline := time.Now().Add(dockerdLimit)
	for {
		if _, err := d.docker(ctx, "version", "--format", "{{.Server.Version}}"); err == nil {
			return d, nil
		}
		select {
		case <-d.exited:
			return nil, fmt.Errorf("dockerd exited during start-up: %s", d.logTail())
		case <-ctx.Done():
			d.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond): // paces the polling; the deadline decides
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("dockerd did not answer within %v: %s", dockerdLimit, d.logTail())
		}
	}
}

func (d *dockerd) logTail() string {
	b, _ := os.ReadFile(d.log)
	return lastLines(string(b), 5)
}

// docker runs the docker CLI against this daemon.
func (d *dockerd) docker(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", append([]string{"-H", d.host}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, lastLines(string(out), 3))
	}
	return string(out), nil
}

// env is the environment of a command that talks to this daemon.
func (d *dockerd) env() []string { return append(os.Environ(), "DOCKER_HOST="+d.host) }

// stop ends the daemon this benchmark started and waits for it.
func (d *dockerd) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(dockerdLimit):
		d.cmd.Process.Kill()
		<-d.exited
	}
}
