// Command bench measures rootswap against the chain it replaces, side by
// side in one run: the old unit's ExecStartPre chain (docker create,
// docker export | tar -x, docker rm, mv) and rootswap prepare, rollback,
// gc and run. It builds its images locally (no registry), alternates the
// two approaches within every series, and writes results.md, results.json
// and chart.svg.
//
//	go run ./bench [--quick] [--runs N] [--out DIR]
//
// DOCKER_HOST selects the daemon (scripts/bench.sh points it at the
// private one). --quick uses a small generated image so that the whole
// run takes seconds; the default builds debian (debootstrap minbase,
// ~200 MB) and big (~1 GB, ~50k files) and takes the better part of an
// hour.
//
// --profile-import IMAGE skips the benchmark and imports IMAGE into an
// empty store in-process through snapshot.ImportImage, writing a CPU
// profile, so a missed target can be traced to code without touching the
// CLI.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

type options struct {
	quick       bool
	runs        int
	out         string
	work        string
	cache       string
	images      string
	scenarios   string
	settle      time.Duration
	keep        bool
	verbose     bool
	rootswap    string
	mirror      string
	profile     string
	profileBase string
	render      string
}

func main() {
	var o options
	flag.BoolVar(&o.quick, "quick", false, "small generated image only, 3 runs: a smoke test of the benchmark itself")
	flag.IntVar(&o.runs, "runs", 0, "runs per approach and series (default 5, --quick 3)")
	flag.StringVar(&o.out, "out", "", "results directory (default bench/results in the module)")
	flag.StringVar(&o.work, "work", "/var/tmp/rootswap-bench", "directory for the series' trees and stores")
	flag.StringVar(&o.cache, "cache", "/var/cache/rootswap-bench", "where the debootstrap tarball is kept between runs")
	flag.StringVar(&o.images, "images", "debian,big", "image sizes to measure, smallest first (quick, debian, big)")
	flag.StringVar(&o.scenarios, "scenarios", "restart,cold,upgrade,nspawn,gc,import", "scenarios to run")
	flag.DurationVar(&o.settle, "settle", 15*time.Second, "pause after deleting a series directory (--quick: 0)")
	flag.BoolVar(&o.keep, "keep", false, "keep series directories")
	flag.BoolVar(&o.verbose, "v", false, "log every command")
	flag.StringVar(&o.rootswap, "rootswap", "", "rootswap binary to measure (default: go build ./cmd/rootswap)")
	flag.StringVar(&o.mirror, "mirror", "", "Debian mirror for debootstrap (default: apt's bookworm source)")
	flag.StringVar(&o.profile, "profile-import", "", "profile an in-process import of `IMAGE` instead of benchmarking")
	flag.StringVar(&o.profileBase, "profile-base", "", "with --profile-import: import `IMAGE` first, unprofiled (an upgrade)")
	flag.StringVar(&o.render, "render", "", "re-render results.md and chart.svg from `DIR`/results.json, measuring nothing")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case o.render != "":
		err = render(o.render)
	case o.profile != "":
		err = profileImport(ctx, o)
	default:
		err = run(ctx, o)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func moduleDir(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func run(ctx context.Context, o options) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (tar -x keeps owners, systemd-nspawn)")
	}
	if o.quick {
		o.images = "quick"
		if o.runs == 0 {
			o.runs = 3
		}
		if !flagSet("settle") {
			o.settle = 0
		}
	}
	if o.runs == 0 {
		o.runs = 5
	}
	if o.runs < 1 {
		return fmt.Errorf("--runs %d: need at least 1", o.runs)
	}
	mod, err := moduleDir(ctx)
	if err != nil {
		return err
	}
	if o.out == "" {
		o.out = filepath.Join(mod, "bench", "results")
	}
	if o.mirror == "" {
		o.mirror = debianMirror()
	}
	if _, err := docker(ctx, nil, "version"); err != nil {
		return fmt.Errorf("Docker daemon unreachable (DOCKER_HOST=%q; scripts/bench.sh starts a private one): %w", os.Getenv("DOCKER_HOST"), err)
	}

	tmp, err := os.MkdirTemp("", "rootswap-bench-bin")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if o.rootswap == "" {
		logf("building rootswap")
		if o.rootswap, err = buildRootswap(ctx, tmp); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(o.work, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp(o.work, time.Now().Format("20060102-150405-"))
	if err != nil {
		return err
	}
	defer os.Remove(work)

	// Images, smallest first.
	var sets []*imageSet
	var debian *imageSet
	for _, name := range strings.Split(o.images, ",") {
		var set *imageSet
		switch name {
		case "quick":
			set, err = quickImages(ctx)
		case "debian":
			set, err = debianImages(ctx, o.cache, o.mirror)
			debian = set
		case "big":
			if debian == nil {
				debian, err = debianImages(ctx, o.cache, o.mirror)
				if err != nil {
					return err
				}
			}
			set, err = bigImages(ctx, debian)
		default:
			return fmt.Errorf("--images: unknown image %q (quick, debian, big)", name)
		}
		if err != nil {
			return err
		}
		sets = append(sets, set)
	}

	for _, set := range sets {
		if out, err := docker(ctx, nil, "image", "inspect", "-f", "{{.Size}}", set.V1); err == nil {
			set.DockerSize, _ = strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		}
	}

	r := &runner{rs: o.rootswap, verbose: o.verbose}
	if r.hello, err = buildCommand(ctx, tmp, "./bench/floor/hello"); err != nil {
		return err
	}
	if r.dockerClient, err = buildCommand(ctx, tmp, "./bench/floor/dockerclient"); err != nil {
		return err
	}
	res := &Results{
		Machine: machineInfo(ctx, mod, work),
		Config:  Config{Quick: o.quick, Runs: o.runs, Settle: o.settle.String(), Work: o.work},
		Images:  sets,
	}
	for _, s := range sets {
		res.Config.Images = append(res.Config.Images, s.Name)
	}
	measureFloor := func() {
		f, err := r.floor(ctx, sets[0].V1)
		if err != nil {
			logf("floor: %v", err)
			return
		}
		logf("floor: /bin/true %s, Go hello world %s, Go + Docker client %s, rootswap start-up %s, Docker ping %s, inspect %s",
			fmtMS(f.TrueMS), fmtMS(f.GoHelloMS), fmtMS(f.DockerClientMS), fmtMS(f.StartMS), fmtMS(f.PingMS), fmtMS(f.InspectMS))
		if res.Floor != nil {
			// Measured before and after the series: the lower of the two
			// is the less disturbed by whatever else the machine does.
			f = f.min(*res.Floor)
		}
		res.Floor = &f
	}
	measureFloor()
	b := &bench{r: r, work: work, runs: o.runs, settle: o.settle, keep: o.keep, res: res, gc: r.gcCommand(ctx), nspawn: haveNspawn()}
	want := map[string]bool{}
	for _, s := range strings.Split(o.scenarios, ",") {
		want[s] = true
	}
	if want["gc"] && b.gc == nil {
		res.NotMeasured = append(res.NotMeasured, "5. gc: not measured: gc not available (`rootswap gc --help` fails)")
	}
	if want["nspawn"] && !b.nspawn {
		res.NotMeasured = append(res.NotMeasured, "6. nspawn: not measured: systemd-nspawn not found")
	}

	// Deletion-heavy series (gc) run last, after every creation-heavy one.
	steps := []struct {
		scenario string
		fn       func(context.Context, *imageSet) error
		ok       bool
	}{
		{"restart", b.restart, true},
		{"cold", b.cold, true},
		{"upgrade", b.upgrade, true},
		{"nspawn", b.nspawnStart, b.nspawn},
		{"import", b.importRSS, true},
	}
	var failed []string
	for _, set := range sets {
		for _, st := range steps {
			if !want[st.scenario] || !st.ok {
				continue
			}
			if err := st.fn(ctx, set); err != nil {
				if ctx.Err() != nil {
					return err
				}
				logf("FAILED: %v", err)
				failed = append(failed, err.Error())
				res.NotMeasured = append(res.NotMeasured, fmt.Sprintf("%s on %s: failed: %v", st.scenario, set.Name, err))
			}
		}
	}
	if want["gc"] && b.gc != nil {
		variants := []bool{false, true}
		if o.quick {
			variants = variants[:1] // the shared variant adds a third of the run time
		}
		for _, set := range sets {
			for _, shared := range variants {
				if err := b.collect(ctx, set, shared); err != nil {
					if ctx.Err() != nil {
						return err
					}
					logf("FAILED: %v", err)
					failed = append(failed, err.Error())
					res.NotMeasured = append(res.NotMeasured, fmt.Sprintf("gc on %s: failed: %v", set.Name, err))
				}
			}
		}
	}

	measureFloor()
	res.Machine.LoadEnd = loadavg()
	res.evaluate()
	if err := res.write(o.out); err != nil {
		return err
	}
	md, _ := os.ReadFile(filepath.Join(o.out, "results.md"))
	fmt.Println(string(md))
	logf("results in %s", o.out)
	for _, t := range res.Targets {
		fmt.Printf("%-5s %-45s %-22s %s\n", t.verdict(), t.Name, t.Want, t.Measured)
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d series failed; see results.md", len(failed))
	}
	return nil
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func machineInfo(ctx context.Context, mod, work string) Machine {
	m := Machine{Date: time.Now(), NProc: runtime.NumCPU(), GoVersion: runtime.Version(), LoadStart: loadavg()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			m.MemoryKiB, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	if out, err := docker(ctx, nil, "version", "--format", "{{.Server.Version}}"); err == nil {
		m.Docker = strings.TrimSpace(out)
	}
	if out, err := exec.CommandContext(ctx, "tar", "--version").Output(); err == nil {
		m.Tar, _, _ = strings.Cut(string(out), "\n")
	}
	if out, err := exec.CommandContext(ctx, "findmnt", "-no", "FSTYPE,OPTIONS", "-T", work).Output(); err == nil {
		m.FileSystem = strings.Join(strings.Fields(string(out)), " ")
	}
	cmd := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty")
	cmd.Dir = mod
	if out, err := cmd.Output(); err == nil {
		m.Rootswap = strings.TrimSpace(string(out))
	}
	return m
}

// loadavg is the 1-minute load average: other work on the machine makes
// every figure noisier, and the alternation only evens it out.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// render rewrites a results directory from its results.json, so a change
// to the report needs no new hour of measurements.
func render(dir string) error {
	data, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return err
	}
	var res Results
	if err := json.Unmarshal(data, &res); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "results.json"), err)
	}
	res.evaluate()
	return res.write(dir)
}
