package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
)

// The registry scenarios: every tool pulls the same image from the same
// registry on 127.0.0.1, in the same rounds, each into a fresh directory.

// Regimes of the registry scenarios, as results.md explains them.
const (
	regimePullCold = "Each tool, each round, into a fresh directory (rootswap: an empty store; docker: a new dockerd with an empty data root; " +
		"podman: an empty --root/--runroot; skopeo: an empty OCI layout). The tag points at v1."
	regimePullUpgrade = "Each tool, each round, into a fresh directory holding what it keeps after pulling v1 (pulled untimed through the tag while it pointed at v1); " +
		"then the tag moves to v2 (one manifest PUT) and the pull of the same reference is timed."
	regimePullHit = "One store that already holds the tag's tree (pulled once before the series): `prepare --pull` (one manifest request) against `prepare` with no network."
)

// pullRepo is the registry repository of an image set; v1 and v2 are
// pushed under their own tags and appTag is the tag every tool pulls,
// moved between them.
func pullRepo(set *imageSet) string { return benchRepo + "/" + set.Name }

const appTag = "app"

// pulled is what one tool did in one round: the timed parts in order,
// what it fetched, and optionally a step timed right after (not part of
// the pull: podman run's start).
type pulled struct {
	parts []sample
	after *sample
}

// tool is one approach of the registry scenarios. run gets a fresh
// directory; it prepares it untimed (for an upgrade: pulls v1), calls
// begin (which moves the tag and starts the blob count) and then runs its
// timed parts.
type tool struct {
	key, name string
	letter    string // in Series.Order
	parts     []string
	after     string // what pulled.after measures
	command   string
	na        string // why it is not measured; "" when it is
	run       func(ctx context.Context, dir string, begin func() error) (pulled, error)
}

// registryState is the registry of a run and what was pushed to it.
type registryState struct {
	reg      *registry
	conf     string // containers.conf for podman
	pushed   map[string]*pushedSet
	rootswap string // "" if rootswap can pull from a registry, else why not
	probed   bool
}

type pushedSet struct {
	v1, v2 *manifest
}

// registrySetup starts the registry (once per run) and pushes set's v1
// and v2 (once per set).
func (b *bench) registrySetup(ctx context.Context, set *imageSet) (*pushedSet, error) {
	if b.reg == nil {
		dir := filepath.Join(b.work, "registry")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		reg, err := startRegistry(ctx, dir)
		if err != nil {
			return nil, err
		}
		logf("registry on %s", reg.addr)
		conf := filepath.Join(dir, "containers.conf")
		// podman's default ulimits fail on these hosts; cgroupfs and file
		// events because nothing here runs under systemd as PID 1.
		data := "[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n"
		if err := os.WriteFile(conf, []byte(data), 0o644); err != nil {
			reg.stop()
			return nil, err
		}
		b.reg = &registryState{reg: reg, conf: conf, pushed: map[string]*pushedSet{}}
	}
	if p := b.reg.pushed[set.Name]; p != nil {
		return p, nil
	}
	reg, repo := b.reg.reg, pullRepo(set)
	p := &pushedSet{}
	for _, v := range []struct {
		image, tag string
		m          **manifest
	}{{set.V1, "v1", &p.v1}, {set.V2, "v2", &p.v2}} {
		start := time.Now()
		if err := reg.push(ctx, v.image, repo, v.tag); err != nil {
			return nil, err
		}
		m, err := reg.manifest(ctx, repo, v.tag)
		if err != nil {
			return nil, err
		}
		*v.m = m
		logf("pushed %s as %s/%s:%s in %s (%d layers, %s)", v.image, reg.addr, repo, v.tag, time.Since(start).Round(100*time.Millisecond), len(m.Layers), fmtBytes(m.layerBytes()))
	}
	b.reg.pushed[set.Name] = p
	return p, nil
}

func (m *manifest) layerBytes() int64 { return blobBytes(m.Layers) }

// newLayers are m's layers that base does not have.
func (m *manifest) newLayers(base *manifest) []blob {
	have := map[string]bool{}
	if base != nil {
		for _, l := range base.Layers {
			have[l.Digest] = true
		}
	}
	var out []blob
	for _, l := range m.Layers {
		if !have[l.Digest] {
			out = append(out, l)
		}
	}
	return out
}

func (b *bench) stopRegistry() {
	if b.reg != nil {
		b.reg.reg.stop()
		if !b.keep {
			os.RemoveAll(b.reg.reg.dir)
		}
		b.reg = nil
	}
}

// probeRootswap finds out once whether the binary can prepare from a
// registry: an empty store, one real pull. A failure makes the rootswap
// arm n/a with the binary's own words, never a number.
func (b *bench) probeRootswap(ctx context.Context, set *imageSet) {
	if b.reg.probed {
		return
	}
	b.reg.probed = true
	dir, err := os.MkdirTemp(b.work, "probe-")
	if err != nil {
		b.reg.rootswap = err.Error()
		return
	}
	defer os.RemoveAll(dir)
	src := "docker://" + b.reg.reg.addr + "/" + pullRepo(set) + ":v1"
	cmd := exec.CommandContext(ctx, b.r.rs, "--root", filepath.Join(dir, "store"), "prepare", "--pull", machine, src)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err == nil {
		err = expect(string(out), "imported, activated")
	} else {
		err = fmt.Errorf("%w: %s", err, lastLines(stderr.String(), 1))
	}
	if err != nil {
		b.reg.rootswap = "unsupported source: `rootswap prepare --pull NAME docker://…` failed (" + err.Error() + ")"
		logf("rootswap registry source: n/a: %v", err)
	}
}

// pullTools are the approaches of a registry scenario for ref
// (ADDR/REPO:TAG); upgrade makes each first pull v1 untimed.
func (b *bench) pullTools(ref string, p *pushedSet, upgrade bool) []tool {
	r, conf := b.r, b.reg.conf
	src := "docker://" + ref
	rs := tool{key: "rootswap", name: "rootswap prepare --pull (registry source)", letter: "R", parts: []string{"prepare --pull"},
		command: "rootswap prepare --pull NAME " + src, na: b.reg.rootswap,
		run: func(ctx context.Context, dir string, begin func() error) (pulled, error) {
			store := filepath.Join(dir, "store")
			if upgrade {
				if _, out, err := r.exec(ctx, r.rs, "--root", store, "prepare", "--pull", machine, src); err != nil {
					return pulled{}, err
				} else if err := expect(out, "imported, activated"); err != nil {
					return pulled{}, err
				}
			}
			if err := begin(); err != nil {
				return pulled{}, err
			}
			s, out, err := r.rootswap(ctx, store, "prepare", "--pull", machine, src)
			if err == nil {
				err = expect(out, "imported, activated")
			}
			return pulled{parts: []sample{s}}, err
		}}
	dk := tool{key: "docker", name: "docker pull + the old chain", letter: "D", parts: []string{"docker pull", "old chain"},
		command: "docker pull " + ref + "; " + oldChainCommand(ref),
		run: func(ctx context.Context, dir string, begin func() error) (pulled, error) {
			d, err := startDockerd(ctx, dir)
			if err != nil {
				return pulled{}, err
			}
			defer d.stop()
			old := filepath.Join(dir, "old")
			if err := os.Mkdir(old, 0o755); err != nil {
				return pulled{}, err
			}
			if upgrade {
				if _, err := d.docker(ctx, "pull", "-q", ref); err != nil {
					return pulled{}, err
				}
			}
			if err := begin(); err != nil {
				return pulled{}, err
			}
			s1, _, err := r.timedEnv(ctx, d.env(), "docker", "pull", "-q", ref)
			if err != nil {
				return pulled{}, err
			}
			s2, _, err := r.timedEnv(ctx, d.env(), "bash", "-c", oldChainScript, "old-chain", ref, old, machine)
			s1.MaxRSS, s2.MaxRSS = 0, 0 // the CLI's and bash's, not the daemon's
			return pulled{parts: []sample{s1, s2}}, err
		}}
	pm := tool{key: "podman", name: "podman pull", letter: "P", parts: []string{"podman pull"}, after: "podman run --rm IMAGE /bin/true",
		command: "podman --root DIR --runroot /run/… pull --tls-verify=false " + ref,
		run: func(ctx context.Context, dir string, begin func() error) (pulled, error) {
			env := append(os.Environ(), "CONTAINERS_CONF="+conf)
			// podman refuses a runroot longer than 50 bytes; it belongs on
			// tmpfs anyway, like its default /run/containers/storage.
			run, err := os.MkdirTemp("/run", "rootswap-bench-podman-")
			if err != nil {
				return pulled{}, err
			}
			defer os.RemoveAll(run)
			base := []string{"podman", "--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(run, "run"),
				"--tmpdir", filepath.Join(run, "tmp"), "--storage-driver", "overlay"}
			pull := append(append([]string{}, base...), "pull", "-q", "--tls-verify=false", ref)
			if upgrade {
				if _, _, err := r.execEnv(ctx, env, pull...); err != nil {
					return pulled{}, err
				}
			}
			if err := begin(); err != nil {
				return pulled{}, err
			}
			s, _, err := r.timedEnv(ctx, env, pull...)
			if err != nil {
				return pulled{}, err
			}
			res := pulled{parts: []sample{s}}
			a, _, err := r.timedEnv(ctx, env, append(base, "run", "--rm", "--network", "none", ref, "/bin/true")...)
			if err != nil {
				logf("  podman run: %v", err) // a note, not a failure of the pull
			} else {
				res.after = &a
			}
			return res, nil
		}}
	sk := tool{key: "skopeo", name: "skopeo copy + umoci unpack", letter: "S", parts: []string{"skopeo copy", "umoci unpack"},
		command: "skopeo copy --src-tls-verify=false " + src + " oci:DIR:app && umoci unpack --image DIR:app BUNDLE",
		run: func(ctx context.Context, dir string, begin func() error) (pulled, error) {
			layout := filepath.Join(dir, "oci")
			cp := []string{"skopeo", "copy", "-q", "--src-tls-verify=false", src, "oci:" + layout + ":" + appTag}
			if upgrade {
				if _, _, err := r.exec(ctx, cp...); err != nil {
					return pulled{}, err
				}
			}
			if err := begin(); err != nil {
				return pulled{}, err
			}
			s1, _, err := r.timed(ctx, cp...)
			if err != nil {
				return pulled{}, err
			}
			s2, _, err := r.timed(ctx, "umoci", "unpack", "--image", layout+":"+appTag, filepath.Join(dir, "bundle"))
			return pulled{parts: []sample{s1, s2}}, err
		}}
	target, base := p.v1, (*manifest)(nil)
	if upgrade {
		target, base = p.v2, p.v1
	}
	layers := target.newLayers(base)
	fl := tool{key: "floor", name: "floor: fetch + gunzip + sha256, then tar -x", letter: "F", parts: []string{"fetch + gunzip + sha256", "tar -x"},
		command: fmt.Sprintf("in process: GET the config and the %d layer blob(s) the node lacks at once, gunzip, sha256 of both streams; then tar -x of the uncompressed layers into a fresh directory", len(layers)),
		run: func(ctx context.Context, dir string, begin func() error) (pulled, error) {
			return b.floorPull(ctx, dir, ref, target.Config, layers, begin)
		}}
	return []tool{rs, dk, pm, sk, fl}
}

// floorPull is the least any registry pull does here: fetch the layers
// it lacks (all at once), decompress and hash them both ways, and create
// their files. The second part reads the layers from the registry's own
// storage, decompressed untimed in between, so it is file creation alone.
func (b *bench) floorPull(ctx context.Context, dir, ref string, config blob, layers []blob, begin func() error) (pulled, error) {
	repo := strings.TrimPrefix(ref[:strings.LastIndex(ref, ":")], b.reg.reg.addr+"/")
	if err := begin(); err != nil {
		return pulled{}, err
	}
	syscall.Sync()
	start := time.Now()
	// Any pull reads the config first: it names the diffIDs.
	cfg, err := b.reg.reg.blob(ctx, repo, config.Digest)
	if err != nil {
		return pulled{}, err
	}
	_, err = io.Copy(io.Discard, cfg)
	cfg.Close()
	if err != nil {
		return pulled{}, fmt.Errorf("config %s: %w", config.Digest, err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(layers))
	for i, l := range layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fetchLayer(ctx, b.reg.reg, repo, l, io.Discard)
		}()
	}
	wg.Wait()
	s1 := sample{Wall: time.Since(start)}
	if err := errors.Join(errs...); err != nil {
		return pulled{}, err
	}
	var tars []string
	for i, l := range layers {
		p := filepath.Join(dir, fmt.Sprintf("layer-%d.tar", i))
		if err := decompressStored(b.reg.reg.dir, l.Digest, p); err != nil {
			return pulled{}, err
		}
		tars = append(tars, p)
	}
	tree := filepath.Join(dir, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		return pulled{}, err
	}
	s2, _, err := b.r.timed(ctx, append([]string{"bash", "-c", `t=$1; shift; for f; do tar -x -C "$t" -f "$f"; done`, "floor-tar", tree}, tars...)...)
	s2.MaxRSS = 0
	return pulled{parts: []sample{s1, s2}}, err
}

// fetchLayer GETs one layer blob, gunzips it, and checks the compressed
// digest; the uncompressed stream is hashed too (a diffID check costs that).
func fetchLayer(ctx context.Context, reg *registry, repo string, l blob, out io.Writer) error {
	body, err := reg.blob(ctx, repo, l.Digest)
	if err != nil {
		return err
	}
	defer body.Close()
	compressed := sha256.New()
	zr, err := gzip.NewReader(io.TeeReader(body, compressed))
	if err != nil {
		return fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	var diff hash.Hash = sha256.New()
	if _, err := io.Copy(io.MultiWriter(diff, out), zr); err != nil {
		return fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	io.Copy(compressed, body) // the gzip trailer's padding, if any
	if got := fmt.Sprintf("sha256:%x", compressed.Sum(nil)); got != l.Digest {
		return fmt.Errorf("layer %s: fetched %s", l.Digest, got)
	}
	return nil
}

// decompressStored gunzips blob d from the registry's filesystem storage
// into path, without a request the access log would count.
func decompressStored(regDir, d, path string) error {
	hex := strings.TrimPrefix(d, "sha256:")
	f, err := os.Open(filepath.Join(regDir, "storage", "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data"))
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("layer %s: %w", d, err)
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, zr); err != nil {
		out.Close()
		return fmt.Errorf("layer %s: %w", d, err)
	}
	return out.Close()
}

// pullSeries runs one registry scenario (pull-cold or pull-upgrade) on
// set: every tool in every round, rotating which goes first.
func (b *bench) pullSeries(ctx context.Context, set *imageSet, scenario string) error {
	p, err := b.registrySetup(ctx, set)
	if err != nil {
		return err
	}
	b.probeRootswap(ctx, set)
	upgrade := scenario == "pull-upgrade"
	reg, repo := b.reg.reg, pullRepo(set)
	ref := reg.addr + "/" + repo + ":" + appTag
	regime, want, have := regimePullCold, p.v1, (*manifest)(nil)
	if upgrade {
		regime, want, have = regimePullUpgrade, p.v2, p.v1
	}
	tools := b.pullTools(ref, p, upgrade)
	return b.series(set.Name+"-"+scenario, func(dir string) error {
		results := make([]PullTool, len(tools))
		var arms []arm
		for k, t := range tools {
			results[k] = PullTool{Key: t.key, Name: t.name, Command: t.command, NotMeasured: t.na}
			if t.na != "" {
				continue
			}
			var parts [][]sample
			var after []sample
			arms = append(arms, arm{letter: t.letter, step: func(i int) error {
				d := filepath.Join(dir, fmt.Sprintf("%s-%d", t.key, i))
				if err := os.Mkdir(d, 0o755); err != nil {
					return err
				}
				if err := reg.tag(ctx, repo, appTag, p.v1); err != nil {
					return err
				}
				var before traffic
				begin := func() error {
					if upgrade {
						if err := reg.tag(ctx, repo, appTag, p.v2); err != nil {
							return err
						}
					}
					var err error
					before, err = reg.traffic(ctx)
					return err
				}
				res, err := t.run(ctx, d, begin)
				if err != nil {
					return fmt.Errorf("%s: %w", t.key, err)
				}
				now, err := reg.traffic(ctx)
				if err != nil {
					return err
				}
				got := now.minus(before)
				results[k].BlobBytes = append(results[k].BlobBytes, got.Bytes)
				results[k].BlobGets = append(results[k].BlobGets, got.Gets)
				parts = append(parts, res.parts)
				if res.after != nil {
					after = append(after, *res.after)
				}
				results[k].finish(t, parts, after)
				return nil
			}})
		}
		// Disk per round: compressed blobs and up to two trees per tool,
		// ~8 GB on big, which therefore gets at most 3 rounds.
		if set.Name == "big" && b.runs > 3 {
			defer func(n int) { b.runs = n }(b.runs)
			b.runs = 3
		}
		order, err := b.rounds(set.size(len(arms)*2), arms...)
		if err != nil {
			return err
		}
		pl := Pull{Scenario: scenario, Image: set.Name, Regime: regime, Ref: ref, Order: order, Runs: len(order),
			Note: b.note, Load: b.load + " → " + loadavg(), Tools: results,
			LayerBytes: want.layerBytes(), NewLayerBytes: blobBytes(want.newLayers(have))}
		b.res.Pulls = append(b.res.Pulls, pl)
		for _, t := range pl.Tools {
			if t.Total == nil {
				logf("  %s/%s %s: n/a (%s)", scenario, set.Name, t.Key, t.NotMeasured)
				continue
			}
			logf("  %s/%s %s: %s, blobs %s", scenario, set.Name, t.Key, fmtRange(t.Total), fmtBytes(medianInt(t.BlobBytes)))
		}
		return nil
	})
}

func blobBytes(ls []blob) int64 {
	var n int64
	for _, l := range ls {
		n += l.Size
	}
	return n
}

// finish recomputes the tool's stats from its rounds so far (a series cut
// short keeps the rounds it has).
func (pt *PullTool) finish(t tool, parts [][]sample, after []sample) {
	var totals []sample
	per := make([][]sample, len(t.parts))
	for _, ps := range parts {
		var sum sample
		for j, s := range ps {
			sum = sum.plus(s)
			if j < len(per) {
				per[j] = append(per[j], s)
			}
		}
		totals = append(totals, sum)
	}
	total := newStats(t.command, totals)
	pt.Total = &total
	pt.Parts = nil
	if len(t.parts) > 1 {
		for j, name := range t.parts {
			if len(per[j]) > 0 {
				pt.Parts = append(pt.Parts, newStats(name, per[j]))
			}
		}
	}
	pt.After = nil
	if len(after) > 0 {
		a := newStats(t.after, after)
		pt.After = &a
	}
}

// pullHit: a cache-hit `prepare --pull` against the registry vs a
// cache-hit `prepare` of the same reference without --pull.
func (b *bench) pullHit(ctx context.Context, set *imageSet) error {
	if _, err := b.registrySetup(ctx, set); err != nil {
		return err
	}
	b.probeRootswap(ctx, set)
	if b.reg.rootswap != "" {
		b.res.NotMeasured = append(b.res.NotMeasured, fmt.Sprintf("pull-hit on %s: n/a: %s", set.Name, b.reg.rootswap))
		return nil
	}
	reg, repo := b.reg.reg, pullRepo(set)
	src := "docker://" + reg.addr + "/" + repo + ":" + appTag
	return b.series(set.Name+"-pull-hit", func(dir string) error {
		if err := reg.tag(ctx, repo, appTag, b.reg.pushed[set.Name].v1); err != nil {
			return err
		}
		store := filepath.Join(dir, "store")
		if _, out, err := b.r.exec(ctx, b.r.rs, "--root", store, "prepare", "--pull", machine, src); err != nil {
			return err
		} else if err := expect(out, "imported, activated"); err != nil {
			return err
		}
		var pulls, plains []sample
		var bytes []int64
		var gets []int
		hit := func(dst *[]sample, args ...string) func(int) error {
			return func(int) error {
				before, err := reg.traffic(ctx)
				if err != nil {
					return err
				}
				s, out, err := b.r.rootswap(ctx, store, append(args, machine, src)...)
				if err == nil {
					err = expect(out, "unchanged")
				}
				*dst = append(*dst, s)
				if err != nil {
					return err
				}
				now, err := reg.traffic(ctx)
				if args[len(args)-1] == "--pull" {
					bytes, gets = append(bytes, now.minus(before).Bytes), append(gets, now.minus(before).Gets)
				}
				return err
			}
		}
		order, err := b.rounds(0, arm{"P", hit(&pulls, "prepare", "--pull")}, arm{"N", hit(&plains, "prepare")})
		if err != nil {
			return err
		}
		pt := newStats("rootswap prepare --pull NAME "+src, pulls)
		nt := newStats("rootswap prepare NAME "+src, plains)
		b.res.Pulls = append(b.res.Pulls, Pull{Scenario: "pull-hit", Image: set.Name, Regime: regimePullHit, Ref: src, Order: order, Runs: len(order),
			Note: b.note, Load: b.load + " → " + loadavg(), Tools: []PullTool{
				{Key: "rootswap-pull", Name: "cache-hit prepare --pull", Command: pt.Command, Total: &pt, BlobBytes: bytes, BlobGets: gets},
				{Key: "rootswap", Name: "cache-hit prepare (no --pull)", Command: nt.Command, Total: &nt},
			}})
		logf("  pull-hit/%s: --pull %s, without %s", set.Name, fmtRange(&pt), fmtRange(&nt))
		return nil
	})
}
