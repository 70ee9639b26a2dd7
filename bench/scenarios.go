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

// bench runs the scenarios and collects their results.
type bench struct {
	r      *runner
	work   string // series directories are created here
	runs   int
	settle time.Duration
	keep   bool // keep series directories (debugging)
	res    *Results
	gc     []string // rootswap gc arguments; nil when the binary has none
	nspawn bool
	note   string         // why the last series' rounds ended early, if they did
	load   string         // load average when the current series started
	reg    *registryState // the registry scenarios' registry, once started
}

// Regimes, as results.md explains them.
const (
	regimeHit = "rootswap: the store already holds the tree (imported once before the series); a cache hit writes nothing, so all runs share one store. " +
		"Old chain: a fresh NAME_new each run; the previous NAME_running is renamed away untimed (the real unit's rm -rf of it is not counted)."
	regimeCold = "rootswap: a new, empty store per run (import + activate). Old chain: a fresh NAME_new each run."
	regimeUpg  = "rootswap: a new store per run, v1 prepared into it untimed just before, then `prepare` of v2 timed. " +
		"Old chain: a full export of v2 into a fresh NAME_new (it has no other way to upgrade)."
	regimeRoll = "rootswap: right after the upgrade run, `rollback` to v1 (one symlink flip and one index write). " +
		"Old chain: what the old unit has to do to go back, a full export of v1 into a fresh NAME_new."
	regimeGC = "rootswap: a new store per run holding only v1, imported with `rootswap import` and referenced by no machine; `gc` removes the tree and all its objects. " +
		"Old chain: rm -rf of a plain extracted v1 tree. Trees are created and synced untimed before each timed deletion."
	regimeGCShared = "rootswap: a new store per run with v1 imported (no machine) and v2 prepared; `gc` removes v1's tree and the few objects v2 does not share. " +
		"Old chain: rm -rf of a plain extracted v1 tree."
	regimeNspawn = "restart regime (store already holds the tree): `prepare` + `run` summed; rootswap runs nspawn with --volatile=overlay. " +
		"Old chain: the chain into a fresh NAME_new, then systemd-nspawn on NAME_running."
)

func (b *bench) add(s Series) {
	s.Runs, s.Note, s.Load = len(s.Order), b.note, b.load+" → "+loadavg()
	if s.Old != nil {
		// A copy: callers build several series from one scope.
		o := *s.Old
		s.Old = &o
		s.Ratio = s.New.MedianMS / s.Old.MedianMS
	}
	b.res.Series = append(b.res.Series, s)
	old := "–"
	if s.Old != nil {
		old = fmtRange(s.Old)
	}
	logf("  %s/%s: old chain %s, rootswap %s", s.Scenario, s.Image, old, fmtRange(&s.New))
}

// series runs fn in a new directory and deletes it afterwards (see
// removeAll for why deletion waits until the series is over).
func (b *bench) series(name string, fn func(dir string) error) error {
	dir := filepath.Join(b.work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("series %s: %w", name, err)
	}
	b.load = loadavg()
	logf("series %s (load %s)", name, b.load)
	err := fn(dir)
	if b.keep {
		return err
	}
	if rerr := removeAll(dir, b.settle); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("series %s: %w", name, err)
	}
	return nil
}

// arm is one approach of a series: letter names it in Series.Order and
// step runs it once in round i.
type arm struct {
	letter string
	step   func(i int) error
}

// rounds runs b.runs rounds of every arm, round i starting with arm
// i mod len(arms) and going on in order, so that drift within the series
// (page cache, write-back, the daemon warming up) hits all arms alike;
// with two arms they simply alternate. It returns the order, the first
// arm's letter of each round. need is the disk space one round takes:
// when the disk runs short after at least one round, the series ends
// early and the last series note says so.
func (b *bench) rounds(need int64, arms ...arm) (string, error) {
	var order []string
	b.note = ""
	for i := 0; i < b.runs; i++ {
		if err := room(b.work, need); err != nil {
			if i == 0 {
				return "", err
			}
			b.note = fmt.Sprintf("cut short after %d of %d runs: %v", i, b.runs, err)
			logf("  %s", b.note)
			break
		}
		order = append(order, arms[i%len(arms)].letter)
		for k := range arms {
			if err := arms[(i+k)%len(arms)].step(i); err != nil {
				return "", fmt.Errorf("round %d: %w", i, err)
			}
		}
	}
	return strings.Join(order, ""), nil
}

// alternate is rounds of the old chain (O) and rootswap (N).
func (b *bench) alternate(need int64, old, new func(i int) error) (string, error) {
	return b.rounds(need, arm{"O", old}, arm{"N", new})
}

// oldChainArm is the old chain of image into dir each round; with
// exports, also docker export alone in the same turn.
func (b *bench) oldChainArm(ctx context.Context, dir, image string, olds, exports *[]sample) func(int) error {
	return func(i int) error {
		s, err := b.r.oldChain(ctx, dir, image, i)
		*olds = append(*olds, s)
		if err != nil || exports == nil {
			return err
		}
		s, err = b.r.exportOnly(ctx, image)
		*exports = append(*exports, s)
		return err
	}
}

// prepareArm is a timed `rootswap prepare NAME image` into store(i) that
// must say want.
func (b *bench) prepareArm(ctx context.Context, store func(int) string, image, want string, news *[]sample) func(int) error {
	return func(i int) error {
		s, out, err := b.r.rootswap(ctx, store(i), "prepare", machine, image)
		if err == nil {
			err = expect(out, want)
		}
		*news = append(*news, s)
		return err
	}
}

// reserve is the free space every round leaves to everybody else.
const reserve = 3 << 30

// room reports an error if dir's file system has less than need bytes
// free beyond the reserve.
func room(dir string, need int64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	if free := int64(st.Bavail) * st.Bsize; free < need+reserve {
		return fmt.Errorf("disk: %s free, a round needs %s and %s stay free", fmtBytes(free), fmtBytes(need), fmtBytes(reserve))
	}
	return nil
}

func oldChainCommand(image string) string {
	return "docker create " + image + "; docker export ID | tar -x -C NAME_new; docker rm ID; mv NAME_new NAME_running"
}

// prepareImported runs an untimed prepare that must import.
func (b *bench) prepareImported(ctx context.Context, store, image string) error {
	_, out, err := b.r.exec(ctx, b.r.rs, "--root", store, "prepare", machine, image)
	if err == nil {
		err = expect(out, "imported, activated")
	}
	return err
}

// restart: scenario 1, and the image's file counts from its first import.
func (b *bench) restart(ctx context.Context, set *imageSet) error {
	return b.series(set.Name+"-restart", func(dir string) error {
		store := filepath.Join(dir, "store")
		if err := b.prepareImported(ctx, store, set.V1); err != nil {
			return err
		}
		rows, err := b.r.images(ctx, store)
		if err != nil {
			return err
		}
		set.Files, set.Bytes = rows[set.V1ID].Files, rows[set.V1ID].Bytes
		oldDir := filepath.Join(dir, "old")
		if err := os.Mkdir(oldDir, 0o755); err != nil {
			return err
		}
		var olds, news []sample
		order, err := b.alternate(set.size(1), b.oldChainArm(ctx, oldDir, set.V1, &olds, nil),
			b.prepareArm(ctx, func(int) string { return store }, set.V1, "unchanged", &news))
		if err != nil {
			return err
		}
		o := newStats(oldChainCommand(set.V1), olds)
		b.add(Series{Scenario: "restart", Image: set.Name, Regime: regimeHit, Old: &o,
			New: newStats("rootswap prepare NAME "+set.V1, news), Order: order})
		return nil
	})
}

// cold: scenario 2.
func (b *bench) cold(ctx context.Context, set *imageSet) error {
	return b.series(set.Name+"-cold", func(dir string) error {
		oldDir := filepath.Join(dir, "old")
		if err := os.Mkdir(oldDir, 0o755); err != nil {
			return err
		}
		var olds, news, exports []sample
		store := func(i int) string { return filepath.Join(dir, fmt.Sprintf("store-%d", i)) }
		order, err := b.alternate(set.size(2), b.oldChainArm(ctx, oldDir, set.V1, &olds, &exports),
			b.prepareArm(ctx, store, set.V1, "imported, activated", &news))
		if err != nil {
			return err
		}
		o := newStats(oldChainCommand(set.V1), olds)
		e := newStats("docker export ID >/dev/null", exports)
		b.add(Series{Scenario: "cold", Image: set.Name, Regime: regimeCold, Old: &o, ExportOnly: &e,
			New: newStats("rootswap prepare NAME "+set.V1+" (empty store)", news), Order: order})
		return nil
	})
}

// upgrade: scenarios 3 and 4, and the store growth for v2.
func (b *bench) upgrade(ctx context.Context, set *imageSet) error {
	return b.series(set.Name+"-upgrade", func(dir string) error {
		oldV2, oldV1 := filepath.Join(dir, "old-v2"), filepath.Join(dir, "old-v1")
		for _, d := range []string{oldV2, oldV1} {
			if err := os.Mkdir(d, 0o755); err != nil {
				return err
			}
		}
		var oldUp, newUp, oldBack, newBack, exports []sample
		g := Growth{Image: set.Name, V2FileBytes: set.V2FileBytes}
		upOld, backOld := b.oldChainArm(ctx, oldV2, set.V2, &oldUp, &exports), b.oldChainArm(ctx, oldV1, set.V1, &oldBack, nil)
		order, err := b.alternate(set.size(3), func(i int) error {
			if err := upOld(i); err != nil {
				return err
			}
			return backOld(i)
		}, func(i int) error {
			store := filepath.Join(dir, fmt.Sprintf("store-%d", i))
			if err := b.prepareImported(ctx, store, set.V1); err != nil {
				return err
			}
			before, err := du(store)
			if err != nil {
				return err
			}
			s, out, err := b.r.rootswap(ctx, store, "prepare", machine, set.V2)
			if err == nil {
				err = expect(out, "imported, activated")
			}
			newUp = append(newUp, s)
			if err != nil {
				return err
			}
			after, err := du(store)
			if err != nil {
				return err
			}
			rows, err := b.r.images(ctx, store)
			if err != nil {
				return err
			}
			g.NewBytes = append(g.NewBytes, rows[set.V2ID].NewBytes)
			g.StoreGrowth = append(g.StoreGrowth, after.Blocks-before.Blocks)
			g.StoreGrowthApparent = append(g.StoreGrowthApparent, after.Apparent-before.Apparent)
			g.StoreGrowthInodes = append(g.StoreGrowthInodes, after.Inodes-before.Inodes)
			hex := strings.TrimPrefix(set.V2ID, "sha256:")
			tree, err := du(filepath.Join(store, "trees", "sha256", hex))
			if err != nil {
				return err
			}
			g.TreeDirBytes = append(g.TreeDirBytes, tree.DirBlocks)
			mf, err := os.Stat(filepath.Join(store, "manifests", "sha256", hex))
			if err != nil {
				return err
			}
			g.ManifestBytes = append(g.ManifestBytes, mf.Size())
			s, out, err = b.r.rootswap(ctx, store, "rollback", machine)
			if err == nil && !strings.Contains(out, set.V1ID) {
				err = fmt.Errorf("rollback said %q, want %s", strings.TrimSpace(out), set.V1ID)
			}
			newBack = append(newBack, s)
			return err
		})
		if err != nil {
			return err
		}
		g.Ratio = float64(medianInt(g.StoreGrowth)) / float64(g.V2FileBytes)
		b.res.Growth = append(b.res.Growth, g)
		up := newStats(oldChainCommand(set.V2), oldUp)
		e := newStats("docker export ID >/dev/null", exports)
		b.add(Series{Scenario: "upgrade", Image: set.Name, Regime: regimeUpg, Old: &up, ExportOnly: &e,
			New: newStats("rootswap prepare NAME "+set.V2+" (v1 in the store)", newUp), Order: order})
		back := newStats(oldChainCommand(set.V1), oldBack)
		b.add(Series{Scenario: "rollback", Image: set.Name, Regime: regimeRoll, Old: &back,
			New: newStats("rootswap rollback NAME", newBack), Order: order})
		logf("  store growth for v2: %s for %s of new/changed files (%.2f×), new_bytes %s",
			fmtBytes(medianInt(g.StoreGrowth)), fmtBytes(g.V2FileBytes), g.Ratio, fmtBytes(medianInt(g.NewBytes)))
		return nil
	})
}

// nspawnStart: scenario 6.
func (b *bench) nspawnStart(ctx context.Context, set *imageSet) error {
	return b.series(set.Name+"-nspawn", func(dir string) error {
		store := filepath.Join(dir, "store")
		if err := b.prepareImported(ctx, store, set.V1); err != nil {
			return err
		}
		oldDir := filepath.Join(dir, "old")
		if err := os.Mkdir(oldDir, 0o755); err != nil {
			return err
		}
		var olds, news []sample
		order, err := b.alternate(set.size(1), func(i int) error {
			s, err := b.r.oldChain(ctx, oldDir, set.V1, i)
			if err != nil {
				return err
			}
			n, _, err := b.r.timed(ctx, "systemd-nspawn", "--register=no", "--keep-unit", "-D", filepath.Join(oldDir, machine+"_running"), "/bin/true")
			olds = append(olds, s.plus(n))
			return err
		}, func(i int) error {
			s, out, err := b.r.rootswap(ctx, store, "prepare", machine, set.V1)
			if err == nil {
				err = expect(out, "unchanged")
			}
			if err != nil {
				return err
			}
			n, _, err := b.r.rootswap(ctx, store, "run", machine, "/bin/true")
			news = append(news, s.plus(n))
			return err
		})
		if err != nil {
			return err
		}
		o := newStats(oldChainCommand(set.V1)+" && systemd-nspawn --register=no --keep-unit -D NAME_running /bin/true", olds)
		b.add(Series{Scenario: "nspawn", Image: set.Name, Regime: regimeNspawn, Old: &o,
			New: newStats("rootswap prepare NAME "+set.V1+" && rootswap run NAME /bin/true", news), Order: order})
		return nil
	})
}

// collect: scenario 5. shared selects the variant where v2, prepared,
// shares most objects with the stale v1.
func (b *bench) collect(ctx context.Context, set *imageSet, shared bool) error {
	scenario, regime := "gc", regimeGC
	if shared {
		scenario, regime = "gc-shared", regimeGCShared
	}
	return b.series(set.Name+"-"+scenario, func(dir string) error {
		var olds, news []sample
		order, err := b.alternate(set.size(3), func(i int) error {
			old := filepath.Join(dir, fmt.Sprintf("old-%d", i))
			if err := os.Mkdir(old, 0o755); err != nil {
				return err
			}
			if _, err := b.r.oldChain(ctx, old, set.V1, 0); err != nil {
				return err
			}
			s, _, err := b.r.timed(ctx, "rm", "-rf", filepath.Join(old, machine+"_running"))
			olds = append(olds, s)
			return err
		}, func(i int) error {
			store := filepath.Join(dir, fmt.Sprintf("store-%d", i))
			if _, _, err := b.r.exec(ctx, b.r.rs, "--root", store, "import", set.V1); err != nil {
				return err
			}
			if shared {
				if err := b.prepareImported(ctx, store, set.V2); err != nil {
					return err
				}
			}
			s, _, err := b.r.rootswap(ctx, store, b.gc...)
			news = append(news, s)
			if err != nil {
				return err
			}
			rows, err := b.r.images(ctx, store)
			if err != nil {
				return err
			}
			if _, ok := rows[set.V1ID]; ok {
				return fmt.Errorf("rootswap %s left the stale tree %s in the store", strings.Join(b.gc, " "), set.V1ID)
			}
			return nil
		})
		if err != nil {
			return err
		}
		o := newStats("rm -rf NAME_running (a plain extracted v1)", olds)
		b.add(Series{Scenario: scenario, Image: set.Name, Regime: regime, Old: &o,
			New: newStats("rootswap "+strings.Join(b.gc, " "), news), Order: order})
		return nil
	})
}

// importRSS: scenario 7, one `rootswap import` into an empty store.
func (b *bench) importRSS(ctx context.Context, set *imageSet) error {
	return b.series(set.Name+"-import", func(dir string) error {
		store := filepath.Join(dir, "store")
		s, _, err := b.r.rootswap(ctx, store, "import", set.V1)
		if err != nil {
			return err
		}
		rows, err := b.r.images(ctx, store)
		if err != nil {
			return err
		}
		row := rows[set.V1ID]
		if set.Files == 0 {
			set.Files, set.Bytes = row.Files, row.Bytes
		}
		b.res.RSS = append(b.res.RSS, RSS{Image: set.Name, Ref: set.V1, Files: row.Files, Bytes: row.Bytes, MaxRSSKiB: s.MaxRSS, WallMS: ms(s.Wall)})
		logf("  import %s: peak RSS %s, %s", set.Name, fmtBytes(s.MaxRSS<<10), fmtMS(ms(s.Wall)))
		return nil
	})
}

func haveNspawn() bool {
	_, err := exec.LookPath("systemd-nspawn")
	return err == nil
}
