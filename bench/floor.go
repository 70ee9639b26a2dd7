package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Floor is what any command costs on this machine before doing work,
// the lower of two measurements (before and after the series): a
// cache-hit prepare or a rollback cannot be faster than starting a
// process and asking the daemon one question, so these explain the
// absolute numbers of the fast paths.
type Floor struct {
	// TrueMS is the median wall time of /bin/true: fork, exec, exit.
	TrueMS float64 `json:"bin_true_ms"`
	// GoHelloMS is a Go hello world (bench/floor/hello): the Go runtime's
	// start-up, the floor of any Go command here.
	GoHelloMS float64 `json:"go_hello_ms"`
	// DockerClientMS is a Go program that only links the Docker client
	// package rootswap must use (bench/floor/dockerclient): the floor of
	// any command built on it, before it does anything.
	DockerClientMS float64 `json:"go_docker_client_ms"`
	// StartMS is `rootswap activate` without arguments, a usage error:
	// process start-up and Go package initialisation of the rootswap
	// binary, no store and no Docker.
	StartMS float64 `json:"rootswap_start_ms"`
	// PingMS and InspectMS are one Docker API round trip each, in process
	// over a kept-alive connection (the CLI pays a new connection too).
	PingMS    float64 `json:"docker_ping_ms"`
	InspectMS float64 `json:"docker_inspect_ms"`
}

const floorRuns = 15

// min keeps, field by field, the lower of two measurements.
func (f Floor) min(o Floor) Floor {
	return Floor{TrueMS: min(f.TrueMS, o.TrueMS), GoHelloMS: min(f.GoHelloMS, o.GoHelloMS),
		DockerClientMS: min(f.DockerClientMS, o.DockerClientMS), StartMS: min(f.StartMS, o.StartMS),
		PingMS: min(f.PingMS, o.PingMS), InspectMS: min(f.InspectMS, o.InspectMS)}
}

func (r *runner) floor(ctx context.Context, image string) (Floor, error) {
	var f Floor
	times := func(wantExit int, argv ...string) (float64, error) {
		var xs []float64
		for i := 0; i < floorRuns; i++ {
			s, _, err := r.exec(ctx, argv...)
			var ee *exec.ExitError
			if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == wantExit) {
				return 0, err
			}
			xs = append(xs, ms(s.Wall))
		}
		return median(xs), nil
	}
	var err error
	if f.TrueMS, err = times(0, "/bin/true"); err != nil {
		return f, err
	}
	if f.GoHelloMS, err = times(0, r.hello); err != nil {
		return f, err
	}
	if f.DockerClientMS, err = times(0, r.dockerClient); err != nil {
		return f, err
	}
	// A usage error: parsed and refused before any store or Docker call.
	if f.StartMS, err = times(2, r.rs, "activate"); err != nil {
		return f, err
	}
	c, base, err := dockerHTTP()
	if err != nil {
		return f, err
	}
	get := func(path string) (float64, error) {
		var xs []float64
		for i := 0; i < floorRuns; i++ {
			start := time.Now()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
			if err != nil {
				return 0, err
			}
			resp, err := c.Do(req)
			if err != nil {
				return 0, fmt.Errorf("docker API %s: %w", path, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return 0, fmt.Errorf("docker API %s: %s", path, resp.Status)
			}
			xs = append(xs, ms(time.Since(start)))
		}
		return median(xs), nil
	}
	if f.PingMS, err = get("/_ping"); err != nil {
		return f, err
	}
	f.InspectMS, err = get("/images/" + url.PathEscape(image) + "/json")
	return f, err
}

// dockerHTTP is a plain HTTP client for the daemon at DOCKER_HOST (unix
// sockets only, as the private daemon uses).
func dockerHTTP() (*http.Client, string, error) {
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		host = "unix:///var/run/docker.sock"
	}
	sock, ok := strings.CutPrefix(host, "unix://")
	if !ok {
		return nil, "", fmt.Errorf("DOCKER_HOST %q: only unix sockets are measured", host)
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, "http://docker", nil
}
