package activate

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// Systemd is what update asks of systemd: a unit's state, and a restart
// that waits for its job. Satisfied by DialSystemd's connection over
// go-systemd's D-Bus API; unit tests pass a fake.
type Systemd interface {
	// Unit returns the state of unit (a full name). A unit systemd does
	// not know is LoadState "not-found", not an error.
	Unit(ctx context.Context, unit string) (UnitState, error)
	// Restart queues a restart job of unit (mode "replace") and waits for
	// its result: "done", "failed", "canceled", "timeout", "dependency"
	// or "skipped". ctx bounds the wait; the job stays queued.
	Restart(ctx context.Context, unit string) (string, error)
	Close()
}

// UnitState is a unit as systemd describes it (org.freedesktop.systemd1
// Unit and Service properties).
type UnitState struct {
	LoadState   string    // loaded, not-found, masked, …
	ActiveState string    // active, activating, deactivating, inactive, failed, reloading
	SubState    string    // running, auto-restart, exited, …
	Invocation  string    // InvocationID: new for every start
	Since       time.Time // ActiveEnterTimestamp: when it last became active
	NRestarts   uint32    // automatic restarts (Restart=) since the last manual start
	Result      string    // the service's last result: success, exit-code, signal, …
	ExitCode    int32     // ExecMainCode: 1 exited, 2 killed, 3 dumped
	ExitStatus  int32     // ExecMainStatus: the exit status or the signal number
	Environment []string
}

// running reports whether the unit runs or is starting: a unit update
// restarts rather than leaving to its next start.
func (u UnitState) running() bool {
	switch u.ActiveState {
	case "active", "activating", "reloading":
		return true
	}
	return false
}

// ended says how the unit's last run ended, for a failed health gate.
func (u UnitState) ended() string {
	how := fmt.Sprintf("%s/%s", u.ActiveState, u.SubState)
	switch u.ExitCode {
	case 1:
		how += fmt.Sprintf(", exit status %d", u.ExitStatus)
	case 2, 3:
		how += fmt.Sprintf(", signal %d", u.ExitStatus)
	}
	if u.Result != "" && u.Result != "success" {
		how += ", result " + u.Result
	}
	return how
}

// envDuration is the duration unit's Environment= gives name, or 0.
func (u UnitState) envDuration(name string) time.Duration {
	for _, e := range u.Environment {
		if v, ok := strings.CutPrefix(e, name+"="); ok {
			if d, err := time.ParseDuration(v); err == nil && d > 0 {
				return d
			}
		}
	}
	return 0
}

// DialSystemd connects to systemd: its private socket (root), or the
// system bus. The error says systemd could not be reached.
func DialSystemd(ctx context.Context) (Systemd, error) {
	conn, err := sddbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		if conn, err = sddbus.NewSystemConnectionContext(ctx); err != nil {
			return nil, fmt.Errorf("systemd unreachable: %w", err)
		}
	}
	// Without a subscription systemd sends no JobRemoved signal, and a
	// restart's result would never arrive.
	if err := conn.Subscribe(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("systemd unreachable: subscribe: %w", err)
	}
	return dbusSystemd{conn}, nil
}

type dbusSystemd struct{ c *sddbus.Conn }

func (d dbusSystemd) Close() { d.c.Close() }

func (d dbusSystemd) Unit(ctx context.Context, unit string) (UnitState, error) {
	u, err := d.c.GetUnitPropertiesContext(ctx, unit)
	if err != nil {
		return UnitState{}, fmt.Errorf("unit %s: systemd: %w", unit, err)
	}
	st := UnitState{LoadState: str(u["LoadState"]), ActiveState: str(u["ActiveState"]), SubState: str(u["SubState"])}
	if b, ok := u["InvocationID"].([]byte); ok {
		st.Invocation = hex.EncodeToString(b)
	}
	if us, ok := u["ActiveEnterTimestamp"].(uint64); ok && us > 0 {
		st.Since = time.UnixMicro(int64(us))
	}
	if st.LoadState == "not-found" || !strings.HasSuffix(unit, ".service") {
		return st, nil
	}
	svc, err := d.c.GetUnitTypePropertiesContext(ctx, unit, "Service")
	if err != nil {
		return UnitState{}, fmt.Errorf("unit %s: systemd: %w", unit, err)
	}
	st.NRestarts, _ = svc["NRestarts"].(uint32)
	st.Result = str(svc["Result"])
	st.ExitCode, _ = svc["ExecMainCode"].(int32)
	st.ExitStatus, _ = svc["ExecMainStatus"].(int32)
	st.Environment, _ = svc["Environment"].([]string)
	return st, nil
}

func str(v any) string { s, _ := v.(string); return s }

func (d dbusSystemd) Restart(ctx context.Context, unit string) (string, error) {
	// Buffered: go-systemd's dispatcher sends the result once, and must
	// not block on a reader that gave up at its deadline.
	ch := make(chan string, 1)
	if _, err := d.c.RestartUnitContext(ctx, unit, "replace", ch); err != nil {
		return "", fmt.Errorf("unit %s: restart: %w", unit, err)
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return "", fmt.Errorf("unit %s: restart job not done: %w", unit, context.Cause(ctx))
	}
}

// MachineUnits are the units that can run machine name, in the order
// update looks for the one that runs: rootswap-NAME.service (`unit`) and
// systemd-nspawn@NAME.service (`unit --nspawn-file`).
func MachineUnits(name string) []string {
	return []string{"rootswap-" + name + ".service", "systemd-nspawn@" + name + ".service"}
}
