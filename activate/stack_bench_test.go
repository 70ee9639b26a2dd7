package activate

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/rootswap/rootswap/internal/fsys"
)

// BenchmarkRunStackMount is what run adds to a start for a stack of 1, 50
// and 100 layers: the read-only overlay on the stack's directory (and for
// one layer the tmpfs it stands on), inside the read-only view of the
// store, as Run makes it. µs/mount is the median mount alone; ns/op includes the
// unmount, which a run never pays (its namespace goes with it). Issue 19:
// at most 2 ms at 50 layers.
func BenchmarkRunStackMount(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (mount namespaces, overlayfs)")
	}
	for _, n := range []int{1, 50, 100} {
		b.Run("layers="+strconv.Itoa(n), func(b *testing.B) {
			s := newStore(b)
			layers := make([][]layerFile, n)
			for i := range layers {
				layers[i] = []layerFile{{Name: "usr", Dir: true}, {Name: fmt.Sprintf("usr/f%d", i), Content: "x"}}
			}
			d := importStack(b, s, layers...)
			dir, lower := stackDir(b, s, d)
			st := &stack{digest: d, dir: dir, lower: lower}
			done := make(chan error)
			go func() { // the view locks this thread; it dies with the goroutine
				if err := fsys.ReadOnlyView(s.Root(), dir); err != nil {
					done <- err
					return
				}
				var mounted []time.Duration
				for b.Loop() {
					start := time.Now()
					if err := st.mount(nil); err != nil {
						done <- err
						return
					}
					mounted = append(mounted, time.Since(start))
					if err := fsys.Unmount(dir); err != nil {
						done <- err
						return
					}
					if st.shim {
						if err := fsys.Unmount(shimDir); err != nil {
							done <- err
							return
						}
						st.shim = false
					}
				}
				b.ReportMetric(median(mounted), "µs/mount")
				done <- nil
			}()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			if names := hostEntries(b, dir); names == "" || names[:6] != "layer@" {
				b.Fatalf("the mount reached the host: %s", filepath.Join(dir, names))
			}
		})
	}
}

// median is the median of ds in µs: on a shared machine the mean follows
// whoever else runs.
func median(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2].Nanoseconds()) / 1e3
}
