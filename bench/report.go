package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Results is everything one benchmark run measured; results.json is this
// value and results.md is rendered from it.
type Results struct {
	Machine Machine     `json:"machine"`
	Config  Config      `json:"config"`
	Images  []*imageSet `json:"images"`
	Floor   *Floor      `json:"floor,omitempty"`
	Series  []Series    `json:"series"`
	Growth  []Growth    `json:"growth"`
	RSS     []RSS       `json:"rss"`
	// Pulls are the registry scenarios (pull-cold, pull-upgrade, pull-hit).
	Pulls []Pull `json:"pulls,omitempty"`
	// Downtime is the downtime scenario (Podman's restart and upgrade).
	Downtime []Downtime `json:"downtime,omitempty"`
	Targets  []Target   `json:"targets"`
	// NotMeasured lists scenarios skipped, each with the reason.
	NotMeasured []string `json:"not_measured"`
}

// Machine describes where the numbers come from.
type Machine struct {
	Date       time.Time `json:"date"`
	NProc      int       `json:"nproc"`
	CPU        string    `json:"cpu"`
	MemoryKiB  int64     `json:"memory_kib"`
	Kernel     string    `json:"kernel"`
	Docker     string    `json:"docker_server"`
	GoVersion  string    `json:"go"`
	Tar        string    `json:"tar"`
	FileSystem string    `json:"file_system"` // type and mount options of the work directory
	Rootswap   string    `json:"rootswap"`    // git describe of the tree the binary was built from
	LoadStart  string    `json:"load_start"`  // 1-minute load average
	LoadEnd    string    `json:"load_end"`
}

// Config is how the run was invoked.
type Config struct {
	Quick  bool     `json:"quick"`
	Runs   int      `json:"runs"`
	Images []string `json:"images"`
	Settle string   `json:"settle"`
	Work   string   `json:"work_dir"`
}

// Stats summarises one approach's samples in one series.
type Stats struct {
	Command   string    `json:"command"`
	SamplesMS []float64 `json:"samples_ms"`
	MedianMS  float64   `json:"median_ms"`
	MinMS     float64   `json:"min_ms"`
	MaxMS     float64   `json:"max_ms"`
	// SyncAfterMS is the median time of a sync right after the step: what
	// it would have cost to make its writes durable (rootswap already
	// does inside its own time).
	SyncAfterMS float64 `json:"sync_after_median_ms"`
	MaxRSSKiB   int64   `json:"max_rss_kib,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func newStats(command string, ss []sample) Stats {
	st := Stats{Command: command}
	var syncs []float64
	for _, s := range ss {
		st.SamplesMS = append(st.SamplesMS, ms(s.Wall))
		syncs = append(syncs, ms(s.SyncAfter))
		st.MaxRSSKiB = max(st.MaxRSSKiB, s.MaxRSS)
	}
	st.MedianMS, st.MinMS, st.MaxMS = median(st.SamplesMS), slices.Min(st.SamplesMS), slices.Max(st.SamplesMS)
	st.SyncAfterMS = median(syncs)
	return st
}

// median of a non-empty sample; the mean of the middle two for an even count.
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Series is one scenario on one image: both approaches, alternating.
type Series struct {
	Scenario string `json:"scenario"`
	Image    string `json:"image"`
	Regime   string `json:"regime"`
	Old      *Stats `json:"old_chain,omitempty"`
	New      Stats  `json:"rootswap"`
	// Order is which approach ran first in each round: O (old chain) or
	// N (rootswap).
	Order string `json:"order"`
	// Ratio is rootswap's median time over the old chain's.
	Ratio float64 `json:"ratio"`
	Runs  int     `json:"runs"`
	Note  string  `json:"note,omitempty"`
	// ExportOnly is `docker export` of the same image into /dev/null,
	// measured in the old chain's turns: no import through the Docker API
	// can be faster.
	ExportOnly *Stats `json:"export_only,omitempty"`
	// Load is the 1-minute load average at the start and end of the series.
	Load string `json:"load"`
}

// Pull is one registry scenario on one image: every tool in the same
// rounds, rotating which goes first.
type Pull struct {
	Scenario string     `json:"scenario"`
	Image    string     `json:"image"`
	Regime   string     `json:"regime"`
	Ref      string     `json:"ref"`
	Tools    []PullTool `json:"tools"`
	// Order is which tool went first in each round (R rootswap, D docker,
	// P podman, S skopeo, F floor).
	Order string `json:"order"`
	Runs  int    `json:"runs"`
	Note  string `json:"note,omitempty"`
	Load  string `json:"load"`
	// LayerBytes is the compressed size of the pulled image's layers,
	// NewLayerBytes of those the node lacked: what an ideal pull fetches.
	LayerBytes    int64 `json:"layer_bytes"`
	NewLayerBytes int64 `json:"new_layer_bytes"`
}

// PullTool is one tool's numbers in a Pull.
type PullTool struct {
	Key     string `json:"key"`
	Name    string `json:"name"`
	Command string `json:"command"`
	// NotMeasured says why there are no numbers (Total is nil then).
	NotMeasured string `json:"not_measured,omitempty"`
	Total       *Stats `json:"total,omitempty"`
	// Parts are the steps of Total, each timed alone, when there are several.
	Parts []Stats `json:"parts,omitempty"`
	// After is a step timed right after the pull, not part of it: podman
	// run's start of the pulled image.
	After *Stats `json:"after,omitempty"`
	// BlobBytes and BlobGets are what the registry's access log shows of
	// blob GETs during the timed part, one value per round.
	BlobBytes []int64 `json:"blob_bytes,omitempty"`
	BlobGets  []int   `json:"blob_gets,omitempty"`
}

func (r *Results) pull(scenario, image string) *Pull {
	for i := range r.Pulls {
		if r.Pulls[i].Scenario == scenario && r.Pulls[i].Image == image {
			return &r.Pulls[i]
		}
	}
	return nil
}

func (p *Pull) tool(key string) *PullTool {
	for i := range p.Tools {
		if p.Tools[i].Key == key {
			return &p.Tools[i]
		}
	}
	return nil
}

// Growth is what importing v2 next to v1 cost the store.
type Growth struct {
	Image string `json:"image"`
	// V2FileBytes is the content of the files v2 adds or changes.
	V2FileBytes int64 `json:"v2_file_bytes"`
	// NewBytes is new_bytes of the v2 tree (rootswap images --json).
	NewBytes []int64 `json:"new_bytes"`
	// StoreGrowth is du of the store after the v2 import minus before it:
	// allocated blocks, hard links counted once.
	StoreGrowth         []int64 `json:"store_growth_bytes"`
	StoreGrowthApparent []int64 `json:"store_growth_apparent_bytes"`
	StoreGrowthInodes   []int64 `json:"store_growth_inodes"`
	// TreeDirBytes is what the v2 tree's own directories take (a tree of
	// hard links still needs directories of its own), ManifestBytes its
	// manifest: the two parts of the growth that are not file content.
	TreeDirBytes  []int64 `json:"tree_dir_bytes"`
	ManifestBytes []int64 `json:"manifest_bytes"`
	// Ratio is the median store growth over V2FileBytes.
	Ratio float64 `json:"ratio"`
}

// RSS is the peak memory of one `rootswap import`.
type RSS struct {
	Image     string  `json:"image"`
	Ref       string  `json:"ref"`
	Files     int64   `json:"files"`
	Bytes     int64   `json:"bytes"`
	MaxRSSKiB int64   `json:"max_rss_kib"`
	WallMS    float64 `json:"wall_ms"`
}

// Target is one goal from the issue with its verdict; Pass is nil when
// it could not be measured.
type Target struct {
	Name     string `json:"name"`
	Want     string `json:"want"`
	Measured string `json:"measured"`
	Pass     *bool  `json:"pass"`
}

func (t Target) verdict() string {
	switch {
	case t.Pass == nil:
		return "n/a"
	case *t.Pass:
		return "PASS"
	}
	return "MISS"
}

func (r *Results) series(scenario, image string) *Series {
	for i := range r.Series {
		if r.Series[i].Scenario == scenario && r.Series[i].Image == image {
			return &r.Series[i]
		}
	}
	return nil
}

// evaluate fills in Targets. base is the image the per-image targets are
// quoted for first (debian, or quick with --quick); every measured image
// gets its own line.
func (r *Results) evaluate() {
	r.Targets = nil
	add := func(name, want, measured string, pass *bool) {
		r.Targets = append(r.Targets, Target{name, want, measured, pass})
	}
	notMeasured := func(name, want, why string) { add(name, want, "not measured: "+why, nil) }
	verdict := func(ok bool) *bool { return &ok }
	images := r.Config.Images
	if len(images) == 0 {
		return
	}
	base := images[0]
	r.pullTargets(add, notMeasured, verdict)
	r.downtimeTargets(add, notMeasured, verdict)
	if len(r.Series) == 0 && len(r.RSS) == 0 {
		return // only the registry scenarios ran
	}

	want := "≥ 200× faster"
	if s := r.series("restart", base); s != nil && s.Old != nil {
		speed := s.Old.MedianMS / s.New.MedianMS
		measured := fmt.Sprintf("%.0f× (%s vs %s)", speed, fmtMS(s.New.MedianMS), fmtMS(s.Old.MedianMS))
		if f := r.Floor; f != nil && f.DockerClientMS > 0 {
			measured += fmt.Sprintf("; a Go program linking the Docker client, doing nothing: %.0f× (%s)", s.Old.MedianMS/f.DockerClientMS, fmtMS(f.DockerClientMS))
		}
		add("cache-hit prepare vs old chain, "+base, want, measured, verdict(speed >= 200))
	} else {
		notMeasured("cache-hit prepare vs old chain, "+base, want, "restart series missing")
	}
	want = "≤ 2× of " + base
	if s, b := r.series("restart", "big"), r.series("restart", base); s != nil && b != nil && base != "big" {
		f := s.New.MedianMS / b.New.MedianMS
		add("cache-hit prepare, big vs "+base, want,
			fmt.Sprintf("%.2f× (%s vs %s)", f, fmtMS(s.New.MedianMS), fmtMS(b.New.MedianMS)), verdict(f <= 2))
	} else {
		notMeasured("cache-hit prepare, big vs "+base, want, "needs the big image")
	}
	for _, img := range images {
		ratioTarget := func(scenario, label string, limit float64) {
			want := fmt.Sprintf("≤ %.1f× the old chain", limit)
			if scenario == "gc" {
				want = fmt.Sprintf("≤ %.1f× rm -rf", limit)
			}
			s := r.series(scenario, img)
			if s == nil || s.Old == nil {
				why := "series missing"
				if scenario == "gc" {
					why = "gc not available"
				}
				notMeasured(label+", "+img, want, why)
				return
			}
			measured := fmt.Sprintf("%.2f× (%s vs %s)", s.Ratio, fmtMS(s.New.MedianMS), fmtMS(s.Old.MedianMS))
			if e := s.ExportOnly; e != nil {
				measured += fmt.Sprintf("; docker export alone: %.2f× (%s)", e.MedianMS/s.Old.MedianMS, fmtMS(e.MedianMS))
			}
			add(label+", "+img, want, measured, verdict(s.Ratio <= limit))
		}
		ratioTarget("cold", "cold prepare", 1.0)
		ratioTarget("upgrade", "upgrade v1 → v2", 0.5)
		want := "≤ 1.1× new bytes"
		if g := r.growth(img); g != nil {
			measured := fmt.Sprintf("%.2f× (%s for %s of new/changed files)", g.Ratio, fmtBytes(medianInt(g.StoreGrowth)), fmtBytes(g.V2FileBytes))
			if len(g.TreeDirBytes) > 0 {
				dirs := medianInt(g.TreeDirBytes)
				measured += fmt.Sprintf("; v2's directories alone: %s, %.2f×", fmtBytes(dirs), float64(dirs)/float64(g.V2FileBytes))
			}
			add("store growth for v2, "+img, want, measured, verdict(g.Ratio <= 1.1))
		} else {
			notMeasured("store growth for v2, "+img, want, "upgrade series missing")
		}
		want = "≤ 10 ms"
		if s := r.series("rollback", img); s != nil {
			measured := fmtMS(s.New.MedianMS)
			if f := r.Floor; f != nil && f.GoHelloMS > 0 {
				measured += fmt.Sprintf(" (Go hello world %s, Go + Docker client %s)", fmtMS(f.GoHelloMS), fmtMS(f.DockerClientMS))
			}
			add("rollback, "+img, want, measured, verdict(s.New.MedianMS <= 10))
		} else {
			notMeasured("rollback, "+img, want, "series missing")
		}
		ratioTarget("gc", "gc of a stale tree", 1.0)
	}
	want = "≤ 64 MiB"
	largest := images[len(images)-1]
	if x := r.rss(largest); x != nil {
		add("peak RSS of rootswap import, "+largest, want, fmtBytes(x.MaxRSSKiB<<10), verdict(x.MaxRSSKiB <= 64<<10))
	} else {
		notMeasured("peak RSS of rootswap import, "+largest, want, "import series missing")
	}
}

// pullTargets adds the registry targets of issue 13 for every image that
// has the registry scenarios.
func (r *Results) pullTargets(add func(name, want, measured string, pass *bool), notMeasured func(name, want, why string), verdict func(bool) *bool) {
	if len(r.Pulls) == 0 {
		return
	}
	ratio := func(scenario, img, label string, limit float64, strict bool) {
		want := fmt.Sprintf("≤ %.1f× docker pull + old chain, and ", limit)
		if strict {
			want += "faster than podman pull"
		} else {
			want += "no slower than podman pull"
		}
		name := label + ", " + img
		p := r.pull(scenario, img)
		if p == nil {
			notMeasured(name, want, "series missing")
			return
		}
		rs, dk, pm := p.tool("rootswap"), p.tool("docker"), p.tool("podman")
		var floor string
		if f := p.tool("floor"); f != nil && f.Total != nil {
			floor = fmt.Sprintf("; floor %s", fmtMS(f.Total.MedianMS))
		}
		if rs == nil || rs.Total == nil || dk == nil || dk.Total == nil || pm == nil || pm.Total == nil {
			why := "a tool has no numbers"
			if rs != nil && rs.NotMeasured != "" {
				why = "rootswap n/a (its row above says why)"
			}
			var peers []string
			for _, t := range []*PullTool{dk, pm} {
				if t != nil && t.Total != nil {
					peers = append(peers, t.Key+" "+fmtMS(t.Total.MedianMS))
				}
			}
			if len(peers) > 0 {
				why += " (" + strings.Join(peers, ", ") + floor + ")"
			}
			notMeasured(name, want, why)
			return
		}
		vd, vp := rs.Total.MedianMS/dk.Total.MedianMS, rs.Total.MedianMS/pm.Total.MedianMS
		ok := vd <= limit && (vp < 1 || !strict && vp <= 1)
		add(name, want, fmt.Sprintf("%.2f× docker, %.2f× podman (%s vs %s vs %s%s)", vd, vp,
			fmtMS(rs.Total.MedianMS), fmtMS(dk.Total.MedianMS), fmtMS(pm.Total.MedianMS), floor), verdict(ok))
	}
	seen := map[string]bool{}
	for _, p := range r.Pulls {
		if seen[p.Image] {
			continue
		}
		seen[p.Image] = true
		if r.pull("pull-upgrade", p.Image) != nil {
			ratio("pull-upgrade", p.Image, "registry upgrade v1 → v2", 0.2, true)
		}
		if r.pull("pull-cold", p.Image) != nil {
			ratio("pull-cold", p.Image, "registry cold pull", 0.6, false)
		}
		if h := r.pull("pull-hit", p.Image); h != nil {
			want := "≤ 2× cache-hit prepare without --pull"
			a, b := h.tool("rootswap-pull"), h.tool("rootswap")
			f := a.Total.MedianMS / b.Total.MedianMS
			add("cache-hit prepare --pull, "+p.Image, want, fmt.Sprintf("%.2f× (%s vs %s; blobs fetched %s)", f,
				fmtMS(a.Total.MedianMS), fmtMS(b.Total.MedianMS), fmtBytes(medianInt(a.BlobBytes))), verdict(f <= 2))
		}
	}
	want := "≤ 64 MiB"
	var cold *Pull
	for i := range r.Pulls {
		if r.Pulls[i].Scenario == "pull-cold" {
			cold = &r.Pulls[i] // the largest image comes last
		}
	}
	if cold == nil {
		return
	}
	name := "peak RSS of rootswap pulling from the registry, " + cold.Image
	if t := cold.tool("rootswap"); t != nil && t.Total != nil {
		add(name, want, fmtBytes(t.Total.MaxRSSKiB<<10), verdict(t.Total.MaxRSSKiB <= 64<<10))
	} else {
		why := "rootswap has no numbers"
		if t != nil && t.NotMeasured != "" {
			why = "rootswap n/a (its row above says why)"
		}
		notMeasured(name, want, why)
	}
}

func (r *Results) growth(image string) *Growth {
	for i := range r.Growth {
		if r.Growth[i].Image == image {
			return &r.Growth[i]
		}
	}
	return nil
}

func (r *Results) rss(image string) *RSS {
	for i := range r.RSS {
		if r.RSS[i].Image == image {
			return &r.RSS[i]
		}
	}
	return nil
}

func medianInt(xs []int64) int64 {
	f := make([]float64, len(xs))
	for i, x := range xs {
		f[i] = float64(x)
	}
	return int64(median(f))
}

func fmtMS(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v >= 10000:
		return fmt.Sprintf("%.1f s", v/1000)
	case v >= 1000:
		return fmt.Sprintf("%.2f s", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}

func fmtBytes(n int64) string {
	f := float64(n)
	switch {
	case math.Abs(f) >= 1<<30:
		return fmt.Sprintf("%.2f GiB", f/(1<<30))
	case math.Abs(f) >= 1<<20:
		return fmt.Sprintf("%.1f MiB", f/(1<<20))
	case math.Abs(f) >= 1<<10:
		return fmt.Sprintf("%.1f KiB", f/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func fmtRange(s *Stats) string {
	if s == nil {
		return "–"
	}
	return fmt.Sprintf("%s (%s–%s)", fmtMS(s.MedianMS), fmtMS(s.MinMS), fmtMS(s.MaxMS))
}

// scenarioTitles orders and names the scenarios in the tables.
var scenarioTitles = []struct{ key, title string }{
	{"restart", "1. restart, unchanged image"},
	{"cold", "2. first start, cold store"},
	{"upgrade", "3. upgrade v1 → v2"},
	{"rollback", "4. rollback v2 → v1"},
	{"gc", "5. gc of a stale tree vs rm -rf"},
	{"gc-shared", "5b. gc of v1 after upgrade (shared objects) vs rm -rf"},
	{"nspawn", "6. start to exit of /bin/true under nspawn"},
}

// writeMarkdown renders results.md.
func (r *Results) writeMarkdown(w io.Writer) error {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "# rootswap vs docker export | tar\n\n")
	fmt.Fprintf(&b, "%s · %d CPUs (%s) · %s RAM · kernel %s · Docker %s · %s · %s\n\n",
		m.Date.Format("2006-01-02 15:04 MST"), m.NProc, m.CPU, fmtBytes(m.MemoryKiB<<10), m.Kernel, m.Docker, m.GoVersion, m.Tar)
	fmt.Fprintf(&b, "Work directory file system: %s. rootswap %s. Load average %s at the start, %s at the end. %d runs per approach", m.FileSystem, m.Rootswap, m.LoadStart, m.LoadEnd, r.Config.Runs)
	if r.Config.Quick {
		b.WriteString(" (--quick)")
	}
	b.WriteString(".\n\n")
	if f := r.Floor; f != nil {
		fmt.Fprintf(&b, "Floor of any command here: `/bin/true` %s; a Go hello world %s; a Go program that only links "+
			"github.com/docker/docker/client %s; `rootswap activate` (a usage error) %s: process start and Go initialisation; "+
			"one Docker API round trip in process %s (ping) / %s (image inspect). A cache-hit prepare cannot be faster than "+
			"the Docker-client program plus two round trips; a rollback not faster than the Go hello world.\n\n",
			fmtMS(f.TrueMS), fmtMS(f.GoHelloMS), fmtMS(f.DockerClientMS), fmtMS(f.StartMS), fmtMS(f.PingMS), fmtMS(f.InspectMS))
	}

	b.WriteString("## Images\n\n| image | v1 files | v1 bytes | v2 adds/changes |\n|---|---:|---:|---:|\n")
	for _, s := range r.Images {
		fmt.Fprintf(&b, "| %s (`%s`) | %d | %s | %d files, %s |\n", s.Name, s.V1, s.Files, fmtBytes(s.Bytes), s.V2Files, fmtBytes(s.V2FileBytes))
	}

	b.WriteString("\n## Times\n\nMedian (min–max) wall time of the whole command, process start to exit. Ratio = rootswap / old chain.\n\n")
	b.WriteString("| scenario | image | old chain | rootswap | ratio | old chain + sync | runs | load |\n|---|---|---:|---:|---:|---:|---:|---|\n")
	var notes []string
	for _, st := range scenarioTitles {
		for _, img := range r.Config.Images {
			s := r.series(st.key, img)
			if s == nil {
				continue
			}
			ratio, synced := "–", "–"
			if s.Old != nil {
				ratio = fmt.Sprintf("%.3g×", s.Ratio)
				if s.Ratio < 0.01 {
					ratio = fmt.Sprintf("1/%.0f", 1/s.Ratio)
				}
				synced = fmtMS(s.Old.MedianMS + s.Old.SyncAfterMS)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %d | %s |\n", st.title, img, fmtRange(s.Old), fmtRange(&s.New), ratio, synced, s.Runs, s.Load)
			if s.Note != "" {
				notes = append(notes, fmt.Sprintf("- %s, %s: %s\n", st.title, img, s.Note))
			}
			if e := s.ExportOnly; e != nil && s.Old != nil {
				notes = append(notes, fmt.Sprintf("- %s, %s: `docker export` alone into /dev/null took %s, %.2f× the old chain: the floor of any import through the Docker API\n",
					st.title, img, fmtRange(e), e.MedianMS/s.Old.MedianMS))
			}
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n" + strings.Join(notes, ""))
	}
	b.WriteString("\n\"old chain + sync\" adds a sync(2) right after the chain: the old chain never makes its tree durable, rootswap does (syncfs) inside its own time.\n")

	if len(r.Growth) > 0 {
		b.WriteString("\n## Store growth for v2 (v1 already in the store)\n\n")
		b.WriteString("| image | new/changed file bytes in v2 | new_bytes (rootswap images) | du growth (allocated) | du growth (apparent) | new inodes | of the growth: v2's directories | v2's manifest | ratio du / file bytes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, g := range r.Growth {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d | %s | %s | %.2f× |\n", g.Image, fmtBytes(g.V2FileBytes), fmtBytes(medianInt(g.NewBytes)),
				fmtBytes(medianInt(g.StoreGrowth)), fmtBytes(medianInt(g.StoreGrowthApparent)), medianInt(g.StoreGrowthInodes),
				fmtBytes(medianInt(g.TreeDirBytes)), fmtBytes(medianInt(g.ManifestBytes)), g.Ratio)
		}
		b.WriteString("\nA tree of hard links still has directories of its own, each at least one file system block (4 KiB on ext4 without inline_data): " +
			"the growth can not get below new file bytes + v2's directories + its manifest.\n")
	}
	if len(r.RSS) > 0 {
		b.WriteString("\n## Peak RSS of `rootswap import` (wait4 ru_maxrss), fresh store\n\n| image | files | bytes | peak RSS | wall |\n|---|---:|---:|---:|---:|\n")
		for _, x := range r.RSS {
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", x.Image, x.Files, fmtBytes(x.Bytes), fmtBytes(x.MaxRSSKiB<<10), fmtMS(x.WallMS))
		}
	}

	r.writePulls(&b)
	r.writeDowntime(&b)

	b.WriteString("\n## Targets\n\n| target | want | measured | |\n|---|---|---|---|\n")
	for _, t := range r.Targets {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.Name, t.Want, t.Measured, t.verdict())
	}
	if len(r.NotMeasured) > 0 {
		b.WriteString("\nNot measured:\n\n")
		for _, n := range r.NotMeasured {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}

	b.WriteString("\n## Regimes\n\n")
	b.WriteString("Every series alternates the two approaches (old chain first in even rounds, rootswap first in odd ones). " +
		"Each run writes into a new directory or store under one series directory; nothing is deleted inside a series " +
		"(this ext4 has no journal and is mounted with discard: creating many files right after deleting many is 2–6× slower), " +
		"and a series directory is deleted only after its series, followed by a sync and a settle pause of " + r.Config.Settle + ". " +
		"The page cache is warm (Docker's layers are read from memory after the first export). A sync(2) runs, untimed, before every timed step.\n\n")
	seen := map[string]bool{}
	for _, st := range scenarioTitles {
		for _, img := range r.Config.Images {
			if s := r.series(st.key, img); s != nil && !seen[st.key] {
				seen[st.key] = true
				fmt.Fprintf(&b, "- **%s**: %s\n  - old chain: `%s`\n  - rootswap: `%s`\n", st.title, s.Regime, oldCommand(s), s.New.Command)
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func oldCommand(s *Series) string {
	if s.Old == nil {
		return "–"
	}
	return s.Old.Command
}

// write stores results.json, results.md and chart.svg in dir.
func (r *Results) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("results %s: %w", dir, err)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("results %s: %w", dir, err)
	}
	var md strings.Builder
	if err := r.writeMarkdown(&md); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md.String()), 0o644); err != nil {
		return fmt.Errorf("results %s: %w", dir, err)
	}
	var svg strings.Builder
	if err := r.writeChart(&svg); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "chart.svg"), []byte(svg.String()), 0o644); err != nil {
		return fmt.Errorf("results %s: %w", dir, err)
	}
	return nil
}

var pullTitles = []struct{ key, title string }{
	{"pull-cold", "cold pull (v1, nothing local)"},
	{"pull-upgrade", "upgrade v1 → v2 (same tag)"},
	{"pull-hit", "cache hit (tag unchanged)"},
}

// writePulls renders the registry scenarios: one table per scenario and
// image, every tool's median wall time, its parts, blob bytes fetched and
// ratios against docker pull + the old chain and against podman pull.
func (r *Results) writePulls(b *strings.Builder) {
	if len(r.Pulls) == 0 {
		return
	}
	b.WriteString("\n## From a registry on 127.0.0.1 (docker-registry 2.8)\n\n" +
		"Median (min–max) wall time from the start of the pull to a tree ready to start; blob bytes from the registry's access log " +
		"(blob GETs during the timed part, median of the rounds). Ratios are the tool's median over docker pull + the old chain's and over podman pull's. " +
		"All tools run in every round, round i starting with the i-th tool (order: R rootswap, D docker, P podman, S skopeo, F floor), a sync(2) untimed before every timed part. " +
		"The floor is what any pull must do here, measured in the same rounds: fetch what the node lacks, decompress and hash it, create its files.\n")
	for _, st := range pullTitles {
		for _, img := range r.Config.Images {
			p := r.pull(st.key, img)
			if p == nil {
				continue
			}
			fmt.Fprintf(b, "\n### %s, %s\n\n`%s`; %d runs, order %s, load %s; layers %s", st.title, img, p.Ref, p.Runs, p.Order, p.Load, fmtBytes(p.LayerBytes))
			if st.key == "pull-upgrade" {
				fmt.Fprintf(b, ", of them new in v2 %s", fmtBytes(p.NewLayerBytes))
			}
			b.WriteString(".\n\n| tool | time | parts | blob bytes (GETs) | vs docker pull + old chain | vs podman pull | peak RSS |\n|---|---:|---|---:|---:|---:|---:|\n")
			dk, pm := p.tool("docker"), p.tool("podman")
			for _, t := range p.Tools {
				if t.Total == nil {
					fmt.Fprintf(b, "| %s | n/a | %s | | | | |\n", t.Name, strings.ReplaceAll(t.NotMeasured, "|", "/"))
					continue
				}
				var parts []string
				for _, s := range t.Parts {
					parts = append(parts, fmt.Sprintf("%s %s", s.Command, fmtMS(s.MedianMS)))
				}
				if t.After != nil {
					parts = append(parts, fmt.Sprintf("then %s: %s", t.After.Command, fmtMS(t.After.MedianMS)))
				}
				vs := func(o *PullTool) string {
					if o == nil || o.Total == nil || o.Key == t.Key {
						return "–"
					}
					return fmt.Sprintf("%.2f×", t.Total.MedianMS/o.Total.MedianMS)
				}
				blobs := "–"
				if len(t.BlobBytes) > 0 {
					blobs = fmt.Sprintf("%s (%d)", fmtBytes(medianInt(t.BlobBytes)), medianInt(intsToInt64(t.BlobGets)))
				}
				rss := "–"
				if t.Total.MaxRSSKiB > 0 {
					rss = fmtBytes(t.Total.MaxRSSKiB << 10)
				}
				fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", t.Name, fmtRange(t.Total), strings.Join(parts, "; "), blobs, vs(dk), vs(pm), rss)
			}
			if p.Note != "" {
				fmt.Fprintf(b, "\n%s\n", p.Note)
			}
		}
	}
	seen := map[string]bool{}
	b.WriteString("\n")
	for _, st := range pullTitles {
		for _, p := range r.Pulls {
			if p.Scenario == st.key && !seen[st.key] {
				seen[st.key] = true
				fmt.Fprintf(b, "- **%s**: %s\n", st.title, p.Regime)
				for _, t := range p.Tools {
					fmt.Fprintf(b, "  - %s: `%s`\n", t.Name, t.Command)
				}
			}
		}
	}
}

func intsToInt64(xs []int) []int64 {
	out := make([]int64, len(xs))
	for i, x := range xs {
		out[i] = int64(x)
	}
	return out
}
