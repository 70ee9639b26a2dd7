package activate

import (
	"context"
	"fmt"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// StopJobRunning reports whether systemd has a stop or restart job running
// for unit: while ExecStopPost runs, that is how systemd says an operator
// (systemctl stop/restart, machinectl terminate, shutdown) ended the run;
// after a crash there is none (Restart= schedules its restart later). It
// is for units whose main process is not `rootswap run`, which records a
// stop itself (systemd-nspawn@NAME.service).
func StopJobRunning(ctx context.Context, unit string) (bool, error) {
	conn, err := sddbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return false, fmt.Errorf("unit %s: systemd: %w", unit, err)
	}
	defer conn.Close()
	jobs, err := conn.ListJobsContext(ctx)
	if err != nil {
		return false, fmt.Errorf("unit %s: systemd jobs: %w", unit, err)
	}
	return operatorStop(jobs, unit), nil
}

// operatorStop is StopJobRunning's decision on systemd's job list.
func operatorStop(jobs []sddbus.JobStatus, unit string) bool {
	for _, j := range jobs {
		if j.Unit == unit {
			switch j.JobType {
			case "stop", "restart", "try-restart", "reload-or-restart":
				return true
			}
		}
	}
	return false
}
