// Command bench measures rootswap against the chain it replaces, side by
// side in one run: the old unit's ExecStartPre chain (docker create,
// docker export | tar -x, docker rm, mv) and rootswap prepare, rollback,
// gc and run. It builds its images locally, alternates the two
// approaches within every series, and writes results.md, results.json
// and chart.svg.
//
// The registry scenarios (pull-cold, pull-upgrade, pull-hit; pull.go)
// push the images to a docker-registry on 127.0.0.1 and measure, in the
// same rounds, rootswap's registry source, docker pull + the old chain,
// podman pull, skopeo copy + umoci unpack and an in-process floor, with
// the blob bytes each fetched. They are part of the default full run and
// run on the quick image with --quick --scenarios pull.
//
// The downtime scenario (downtime.go, update.go) runs a payload printing
// a line every 20 ms under podman and, in the same rounds, as a rootswap
// unit under the systemd of the integration tests' bed (bed.go), and
// measures the longest gap in its output for `podman restart`, Podman's
// upgrade (pull beforehand, then stop + rm + run), `systemctl restart`,
// today's restart after the tag moved and `rootswap update`: issue 18's
// downtime comparison. Part of the full run; on the small image: --quick
// --scenarios downtime.
//
//	go run ./bench [--quick] [--runs N] [--out DIR] [--scenarios LIST]
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
	flag.StringVar(&o.scenarios, "scenarios", "", "scenarios to run, comma-separated (default "+daemonScenarios+", and without --quick "+registryScenarios+","+podmanScenarios+"; pull means the three pull-*)")
	flag.DurationVar(&o.settle, "settle", 65*time.Second, "pause after deleting a series directory and syncing: ext4 without a journal allocates slowly for 60 s after deleting (--quick: 0)")
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

// Scenario lists: the daemon-path scenarios, and the registry ones
// (issue 13), which need podman, skopeo and umoci (scripts/bench.sh
// installs them) and so are not part of --quick's default, which
// `make test` runs.
const (
	daemonScenarios   = "restart,cold,upgrade,nspawn,gc,import"
	registryScenarios = "pull-cold,pull-upgrade,pull-hit"
	// downtime (issue 18): Podman's restart and upgrade beside rootswap's
	// restart and update under the bed's systemd, the gap in a 20 ms
	// ticker's output; needs podman and docker-registry (and the bed,
	// else the rootswap arms are n/a).
	podmanScenarios = "downtime"
)

// normalise fills in the defaults that depend on other options.
func (o *options) normalise() error {
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
	if o.scenarios == "" {
		o.scenarios = daemonScenarios
		if !o.quick {
			o.scenarios += "," + registryScenarios + "," + podmanScenarios
		}
	}
	var list []string
	for _, sc := range strings.Split(o.scenarios, ",") {
		if sc == "pull" {
			sc = registryScenarios
		}
		list = append(list, sc)
	}
	o.scenarios = strings.Join(list, ",")
	if o.mirror == "" {
		o.mirror = debianMirror()
	}
	return nil
}

// loadImages builds (or finds) the image sets o names, smallest first.
func loadImages(ctx context.Context, o options) ([]*imageSet, error) {
	var sets []*imageSet
	var debian *imageSet
	for _, name := range strings.Split(o.images, ",") {
		var set *imageSet
		var err error
		switch name {
		case "quick":
			set, err = quickImages(ctx)
		case "debian":
			set, err = debianImages(ctx, o.cache, o.mirror)
			debian = set
		case "big":
			if debian == nil {
				if debian, err = debianImages(ctx, o.cache, o.mirror); err != nil {
					return nil, err
				}
			}
			set, err = bigImages(ctx, debian)
		default:
			return nil, fmt.Errorf("--images: unknown image %q (quick, debian, big)", name)
		}
		if err != nil {
			return nil, err
		}
		if out, err := docker(ctx, nil, "image", "inspect", "-f", "{{.Size}}", set.V1); err == nil {
			set.DockerSize, _ = strconv.ParseInt(strings.TrimSpace(out), 10, 64)
		}
		sets = append(sets, set)
	}
	return sets, nil
}

// step is one scenario of the run, applied to each image it is for.
type step struct {
	scenario string
	fn       func(context.Context, *imageSet) error
	ok       bool                 // available on this machine
	images   func(*imageSet) bool // nil: every image
}

func run(ctx context.Context, o options) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (tar -x keeps owners, systemd-nspawn)")
	}
	if err := o.normalise(); err != nil {
		return err
	}
	mod, err := moduleDir(ctx)
	if err != nil {
		return err
	}
	if o.out == "" {
		o.out = filepath.Join(mod, "bench", "results")
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
	sets, err := loadImages(ctx, o)
	if err != nil {
		return err
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
	b := &bench{r: r, work: work, runs: o.runs, settle: o.settle, keep: o.keep, res: res, gc: r.gcCommand(ctx), nspawn: haveNspawn()}
	defer b.stopRegistry()
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
	notBig := func(s *imageSet) bool { return s.Name != "big" }
	pullScenario := func(name string) func(context.Context, *imageSet) error {
		return func(ctx context.Context, s *imageSet) error { return b.pullSeries(ctx, s, name) }
	}
	missing := missingPullTools()
	if missing != "" && (want["pull-cold"] || want["pull-upgrade"]) {
		res.NotMeasured = append(res.NotMeasured, "registry scenarios: not measured: "+missing)
	}
	missingDowntime := missingDowntimeTools()
	if missingDowntime != "" && want["downtime"] {
		res.NotMeasured = append(res.NotMeasured, "downtime: not measured: "+missingDowntime)
	}
	// Deletion-heavy series (gc) run last, after every creation-heavy one.
	steps := []step{
		{"restart", b.restart, true, nil},
		{"cold", b.cold, true, nil},
		{"upgrade", b.upgrade, true, nil},
		{"nspawn", b.nspawnStart, b.nspawn, nil},
		{"import", b.importRSS, true, nil},
		// The big image only for the cold pull and its peak RSS.
		{"pull-cold", pullScenario("pull-cold"), missing == "", nil},
		{"pull-upgrade", pullScenario("pull-upgrade"), missing == "", notBig},
		{"pull-hit", b.pullHit, true, notBig},
		{"downtime", b.downtime, missingDowntime == "", nil},
	}
	if want["gc"] && b.gc != nil {
		steps = append(steps, step{"gc", func(ctx context.Context, s *imageSet) error { return b.collect(ctx, s, false) }, true, nil})
		if !o.quick { // the shared variant adds a third of the run time
			steps = append(steps, step{"gc", func(ctx context.Context, s *imageSet) error { return b.collect(ctx, s, true) }, true, nil})
		}
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
	failed, err := b.runSteps(ctx, steps, sets, want)
	if err != nil {
		return err
	}
	measureFloor()
	return b.finish(o.out, failed)
}

// runSteps runs every wanted step on every image it is for, image by
// image, and the deletion-heavy gc steps last, after every
// creation-heavy one. A failed series is recorded and the run goes on; only a
// cancelled context stops it.
func (b *bench) runSteps(ctx context.Context, steps []step, sets []*imageSet, want map[string]bool) (int, error) {
	failed := 0
	try := func(st step, set *imageSet) error {
		if !want[st.scenario] || !st.ok || st.images != nil && !st.images(set) {
			return nil
		}
		err := st.fn(ctx, set)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		logf("FAILED: %v", err)
		failed++
		b.res.NotMeasured = append(b.res.NotMeasured, fmt.Sprintf("%s on %s: failed: %v", st.scenario, set.Name, err))
		return nil
	}
	for _, gc := range []bool{false, true} {
		for _, set := range sets {
			for _, st := range steps {
				if (st.scenario == "gc") != gc {
					continue
				}
				if err := try(st, set); err != nil {
					return failed, err
				}
			}
		}
	}
	return failed, nil
}

// finish evaluates the targets, writes the results and prints them.
func (b *bench) finish(out string, failed int) error {
	res := b.res
	res.Machine.LoadEnd = loadavg()
	res.evaluate()
	if err := res.write(out); err != nil {
		return err
	}
	md, _ := os.ReadFile(filepath.Join(out, "results.md"))
	fmt.Println(string(md))
	logf("results in %s", out)
	for _, t := range res.Targets {
		fmt.Printf("%-5s %-45s %-22s %s\n", t.verdict(), t.Name, t.Want, t.Measured)
	}
	if failed > 0 {
		return fmt.Errorf("%d series failed; see results.md", failed)
	}
	return nil
}

// missingPullTools names the registry scenarios' tools that are not
// installed ("" when all are).
func missingPullTools() string {
	var missing []string
	for _, t := range []string{"docker-registry", "dockerd", "podman", "skopeo", "umoci"} {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return strings.Join(missing, ", ") + " not installed (scripts/bench.sh installs them)"
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
