package activate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
)

// A stop record says that the run of a machine's generation was asked to
// stop (run got SIGTERM or SIGINT), so that report, which sees only how
// nspawn ended, records a stop and not a failure. It is a small file
// under /run/rootswap/stop rather than a field in the index: run writes it the moment
// the signal arrives, and neither a busy nor a damaged index may lose it.
// /run is a tmpfs, so no record outlives a boot; report consumes it.

// stopDir holds the stop records of every store on this host (a variable
// for unit tests only).
var stopDir = "/run/rootswap/stop"

// stopRecord identifies the one run it is about: the generation and the
// start that run recorded (Generation.LastStart), so a record left by a
// run nobody reported never turns a later crash into a stop.
type stopRecord struct {
	Generation uint64    `json:"generation"`
	Started    time.Time `json:"started"`
	Signal     string    `json:"signal"`
	At         time.Time `json:"at"`
	PID        int       `json:"pid"`
}

// stopPath is the record file for machine name in store s: keyed by the
// store's real path, since two stores may have machines of one name.
func stopPath(s *cache.Store, name string) string {
	root := s.Root()
	if r, err := filepath.EvalSymlinks(root); err == nil {
		root = r
	}
	h := sha256.Sum256([]byte(root))
	return filepath.Join(stopDir, hex.EncodeToString(h[:8])+"-"+name+".json")
}

// writeStop records that the run (generation, started) of machine name
// was asked to stop by sig. It replaces the file atomically.
func writeStop(s *cache.Store, name string, rec stopRecord) error {
	p := stopPath(s, name)
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("stop record %s: %w", p, err)
	}
	tmp := fmt.Sprintf("%s.%d.tmp", p, os.Getpid())
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("stop record %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("stop record %s: %w", p, err)
	}
	return nil
}

// readStop returns machine name's stop record; ok is false when there is
// none. A record that cannot be parsed is no record (and is removed with
// the next consumeStop).
func readStop(s *cache.Store, name string) (rec stopRecord, ok bool, err error) {
	b, err := os.ReadFile(stopPath(s, name))
	if errors.Is(err, fs.ErrNotExist) {
		return stopRecord{}, false, nil
	}
	if err != nil {
		return stopRecord{}, false, fmt.Errorf("stop record %s: %w", stopPath(s, name), err)
	}
	if json.Unmarshal(b, &rec) != nil {
		return stopRecord{}, false, nil
	}
	return rec, true, nil
}

// removeStop deletes machine name's stop record, if any.
func removeStop(s *cache.Store, name string) {
	os.Remove(stopPath(s, name))
}

// matches reports whether the record is about the run that g's LastStart
// describes.
func (rec stopRecord) matches(g index.Generation) bool {
	return rec.Generation == g.Number && !g.LastStart.IsZero() && rec.Started.Equal(g.LastStart)
}

// A unit whose main process is not `rootswap run` (systemd-nspawn@NAME.service
// with rootswap's drop-in: nspawn is the main process) leaves no stop
// record. There systemd itself says what ended the run: while ExecStopPost
// runs, a stop job of the unit is running for `systemctl stop`, `machinectl
// terminate` and a shutdown, and a restart job for `systemctl restart`;
// after the run's own end (a payload's exit, a kill, a container that
// did not start) there is none, and Restart= queues its restart only after
// ExecStopPost, once RestartSec= has passed. (Measured in the systemd test
// bed, systemd 252.)

// jobLister is the one systemd call StopJobRunning needs, satisfied by
// go-systemd's *dbus.Conn.
type jobLister interface {
	ListJobsContext(ctx context.Context) ([]sddbus.JobStatus, error)
}

// StopJobRunning reports whether systemd has a stop or restart job of unit
// (a full unit name: systemd-nspawn@web.service) in its queue: when asked
// from the unit's ExecStopPost, whether an operator or a shutdown ended the
// run. It talks to systemd's private socket (root), or the system bus. An
// error means systemd could not be asked; the answer is then false.
func StopJobRunning(ctx context.Context, unit string) (bool, error) {
	conn, err := sddbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		if conn, err = sddbus.NewSystemConnectionContext(ctx); err != nil {
			return false, fmt.Errorf("unit %s: systemd: %w", unit, err)
		}
	}
	defer conn.Close()
	return stopJob(ctx, conn, unit)
}

// stopJob is StopJobRunning on the jobs c lists.
func stopJob(ctx context.Context, c jobLister, unit string) (bool, error) {
	jobs, err := c.ListJobsContext(ctx)
	if err != nil {
		return false, fmt.Errorf("unit %s: systemd jobs: %w", unit, err)
	}
	return operatorStop(jobs, unit), nil
}

// operatorStop reports whether jobs hold a job that stops unit: stop, or
// one of the restarts (systemctl restart, try-restart, reload-or-restart).
// Another unit's job, or a start of this one, says nothing about it.
func operatorStop(jobs []sddbus.JobStatus, unit string) bool {
	for _, j := range jobs {
		if j.Unit != unit {
			continue
		}
		switch j.JobType {
		case "stop", "restart", "try-restart", "reload-or-restart":
			return true
		}
	}
	return false
}
