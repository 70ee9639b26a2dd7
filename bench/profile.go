package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/snapshot"
	dockersource "github.com/rootswap/rootswap/snapshot/docker"
)

// profileImport imports o.profile into a new store in this process,
// exactly as `rootswap import` does, with the CPU profiler running; with
// o.profileBase, that image is imported first, unprofiled. The CPU profile
// and a heap profile land in o.out.
func profileImport(ctx context.Context, o options) error {
	if o.out == "" {
		mod, err := moduleDir(ctx)
		if err != nil {
			return err
		}
		o.out = filepath.Join(mod, "bench", "results")
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(o.work, 0o755); err != nil {
		return err
	}
	dir, err := os.MkdirTemp(o.work, "profile-")
	if err != nil {
		return err
	}
	defer removeAll(dir, 0)
	s, err := cache.Open(ctx, filepath.Join(dir, "store"), cache.Options{})
	if err != nil {
		return err
	}
	c, err := dockersource.NewClient()
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	defer c.Close()
	src := dockersource.New(c, nil)
	daemonRef := func(name string) snapshot.Ref {
		return snapshot.Ref{Transport: snapshot.DockerDaemon, Name: name, Bare: true}
	}
	if o.profileBase != "" {
		// The upgrade case: the base image's objects are in the store.
		base := daemonRef(o.profileBase)
		bimg, err := src.Resolve(ctx, base)
		if err != nil {
			return err
		}
		if _, _, err := snapshot.ImportImage(ctx, s, bimg, snapshot.ImportOptions{}); err != nil {
			return err
		}
	}
	ref := daemonRef(o.profile)
	img, err := src.Resolve(ctx, ref)
	if err != nil {
		return err
	}
	cpu := filepath.Join(o.out, "cpu-import.pprof")
	f, err := os.Create(cpu)
	if err != nil {
		return err
	}
	defer f.Close()
	syscall.Sync()
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	if err := pprof.StartCPUProfile(f); err != nil {
		return err
	}
	// The heap profile is taken when the heap is largest, not at the end
	// when the import's state is garbage.
	var peak bytes.Buffer
	var peakHeap uint64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peakHeap {
				peakHeap = m.HeapAlloc
				peak.Reset()
				pprof.Lookup("heap").WriteTo(&peak, 0)
			}
		}
	}()
	start := time.Now()
	t, _, err := snapshot.ImportImage(ctx, s, img, snapshot.ImportOptions{})
	took := time.Since(start)
	pprof.StopCPUProfile()
	close(done)
	<-sampled
	if err != nil {
		return err
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpuTime := func(ru syscall.Rusage) (time.Duration, time.Duration) {
		return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
	}
	u0, s0 := cpuTime(before)
	u1, s1 := cpuTime(after)
	heap := filepath.Join(o.out, "heap-import.pprof")
	if err := os.WriteFile(heap, peak.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Printf("import %s: %d files, %s, new %s in %s (user %s, system %s, peak RSS %s, peak heap %s)\n",
		o.profile, t.Files, fmtBytes(t.Bytes), fmtBytes(t.NewBytes), took.Round(time.Millisecond),
		(u1 - u0).Round(time.Millisecond), (s1 - s0).Round(time.Millisecond), fmtBytes(after.Maxrss<<10), fmtBytes(int64(peakHeap)))
	fmt.Printf("profiles: %s, %s\n  go tool pprof -top %s\n", cpu, heap, cpu)
	return nil
}
