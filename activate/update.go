package activate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/internal/failpoint"
	"github.com/rootswap/rootswap/snapshot"
)

// An update brings a new image version to running services: for each
// machine, resolve the image reference it follows; if that names a new
// digest, import it while the service keeps running; then, for a machine
// whose unit runs, flip to the new tree and restart the unit through
// systemd (its ExecStartPre's prepare finds the tree current: a cache
// hit), and hold the restart to a health gate. A failed gate rolls back
// at once. Like Prepare it reads its state first, lets a pure policy
// (decideUpdate) choose one action per machine, and then carries them out.

// UpdateOptions tune Update; the zero value restarts one machine at a
// time with the unit's own healthy time.
type UpdateOptions struct {
	DryRun bool // decide and report; change nothing
	// HealthyAfter is how long a restarted unit must stay up to pass the
	// gate; 0: the unit's ROOTSWAP_HEALTHY_AFTER, else DefaultHealthyAfter.
	HealthyAfter time.Duration
	// Deadline bounds a restart job (prepare, the start, READY=1 of a
	// Type=notify unit); 0: DefaultUpdateDeadline. The gate then lasts
	// HealthyAfter more.
	Deadline    time.Duration
	MaxParallel int // machines restarted at once; 0: 1
	// Systemd connects to systemd; nil: DialSystemd.
	Systemd func(ctx context.Context) (Systemd, error)
	// Progress is shown while an import of ref streams; may be nil.
	Progress func(ref string) snapshot.Progress
	// Platform is the OS/ARCH[/VARIANT] an image must be for (--platform,
	// as prepare has it); "" this host's.
	Platform string
	// Admit is the signature policy's check of an image to import
	// (snapshot.ImportOptions.Admit); nil admits every image.
	Admit func(ctx context.Context, img snapshot.Image) (string, error)
	// Readmit re-checks a stored tree against the policy
	// (snapshot.ImportOptions.Readmit); nil admits every tree.
	Readmit func(img snapshot.Image, t index.Tree) error

	poll time.Duration // the gate's polling interval; 0: gatePoll
}

// DefaultUpdateDeadline bounds a restart job unless UpdateOptions say
// otherwise (as Nomad's healthy_deadline does).
const DefaultUpdateDeadline = 5 * time.Minute

// gatePoll is how often the gate asks systemd about the unit.
const gatePoll = 100 * time.Millisecond

// Sources parses image reference ref, as a machine's record spells it
// (Ref.String), and returns it and the source that resolves it.
type Sources func(ref string) (snapshot.Ref, snapshot.Source, error)

// UpdateAction is what update does to one machine.
type UpdateAction int

const (
	UpToDate      UpdateAction = iota // the machine runs what its reference names
	NoImage                           // the machine follows no reference: fail
	Unresolved                        // the source could not say: fail, nothing restarted
	DeclineUpdate                     // the new digest failed here before: keep the current tree
	Fetch                             // no running unit: fetch; applies at the next start
	FetchOnly                         // systemd unreachable: fetch; the restart is not done
	RestartUnit                       // fetch, flip, restart the unit, health gate
)

func (a UpdateAction) String() string {
	switch a {
	case UpToDate:
		return "up to date"
	case NoImage:
		return "no image to follow"
	case Unresolved:
		return "source failed"
	case DeclineUpdate:
		return "decline"
	case Fetch:
		return "fetch"
	case FetchOnly:
		return "fetch (systemd unreachable)"
	case RestartUnit:
		return "restart"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// updateView is what decideUpdate looks at for one machine.
type updateView struct {
	image      string        // the reference the machine follows; "" if none
	resolveErr error         // the source could not resolve image
	resolved   digest.Digest // what image names now
	running    digest.Digest // the link: what the machine runs
	failed     []digest.Digest
	unit       string // the unit that runs the machine; "" if none runs
	systemdErr error  // systemd could not be asked
	// stale: the unit has run since before the current generation was
	// activated (an update killed between its flip and its restart): it
	// runs an older tree than the link names.
	stale bool
}

// decideUpdate is the policy of Update: a pure function of what it read.
func decideUpdate(v updateView) UpdateAction {
	switch {
	case v.image == "":
		return NoImage
	case v.resolveErr != nil:
		return Unresolved
	case v.resolved == v.running && v.stale && v.unit != "":
		return RestartUnit // apply what the link names
	case v.resolved == v.running:
		return UpToDate
	case slices.Contains(v.failed, v.resolved):
		return DeclineUpdate
	case v.systemdErr != nil:
		return FetchOnly
	case v.unit == "":
		return Fetch
	}
	return RestartUnit
}

// UpdateResult is what Update did to one machine. Failed is set when the
// machine did not end on the new version for a reason that is an error:
// its source failed, the fetch failed, the health gate failed (then it
// was rolled back), the rollout stopped before it.
type UpdateResult struct {
	Name       string        `json:"name"`
	Image      string        `json:"image"`
	Unit       string        `json:"unit,omitempty"`
	Running    digest.Digest `json:"running"`       // what it ran before
	New        digest.Digest `json:"new,omitempty"` // what the image names now
	Action     UpdateAction  `json:"-"`
	Plan       string        `json:"action"`               // Action's name
	Done       string        `json:"result"`               // what happened, as the line says it
	Generation uint64        `json:"generation,omitempty"` // current after the update
	Failed     bool          `json:"failed"`
}

// String is the line `update` prints for the machine.
func (r UpdateResult) String() string { return r.Name + ": " + r.Done }

// update is one Update call.
type updater struct {
	s       *cache.Store
	sources Sources
	// srcs keeps each reference's source and parsed Ref, and images
	// the image each one resolved to: the import reads that image.
	srcs   map[string]refSource
	images map[string]snapshot.Image
	log    *slog.Logger
	opt    UpdateOptions
	sd     Systemd
	sdErr  error
}

// machineUpdate is one machine's view and result while Update runs.
type machineUpdate struct {
	view updateView
	rec  index.Machine // the machine's record as observe read it
	// rollbackTo is what a failed gate goes back to: what ran before.
	rollbackTo digest.Digest
	res        UpdateResult
	hold       time.Duration // the healthy time the unit's environment sets
}

// Update updates the machines named (none: every machine that opted in
// with AutoUpdate) to what their image references name now, and returns
// one result per machine, in name order. The error is for the command as
// a whole (store busy, an unknown machine, an unreadable index); a
// machine that failed is a result with Failed set.
//
// Imports happen before any restart, each digest once however many
// machines follow it. Restarts go MaxParallel at a time; a failed gate
// stops the rollout and the machines not restarted yet keep their
// version (their results say so). A crash at any point leaves each
// machine running its old or its new tree, with its link and index in
// the order flip keeps.
func Update(ctx context.Context, s *cache.Store, sources Sources, log *slog.Logger, names []string, opt UpdateOptions) ([]UpdateResult, error) {
	if opt.Deadline <= 0 {
		opt.Deadline = DefaultUpdateDeadline
	}
	if opt.MaxParallel <= 0 {
		opt.MaxParallel = 1
	}
	if opt.poll <= 0 {
		opt.poll = gatePoll
	}
	if opt.Systemd == nil {
		opt.Systemd = DialSystemd
	}
	for _, n := range names {
		if err := ValidName(n); err != nil {
			return nil, err
		}
	}
	if !opt.DryRun {
		l, err := s.LockUpdate(ctx)
		if err != nil {
			return nil, fmt.Errorf("update: %w", err)
		}
		defer l.Unlock()
	}
	u := &updater{s: s, sources: sources, log: log, opt: opt, srcs: map[string]refSource{}, images: map[string]snapshot.Image{}}
	ms, err := u.observe(ctx, names)
	if u.sd != nil {
		defer u.sd.Close()
	}
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		m.res.Action = decideUpdate(m.view)
		m.res.Plan = m.res.Action.String()
	}
	if opt.DryRun {
		for _, m := range ms {
			m.res.Done = u.plan(m)
		}
		return results(ms), nil
	}
	// The shared store lock keeps gc from sweeping a fetched tree before
	// its activation makes it a root. The units' own prepares take it
	// shared too, so they are not held up.
	lock, err := s.Lock(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	defer lock.Unlock()
	u.fetch(ctx, ms)
	failpoint.Hit("update-fetched")
	u.rollout(ctx, ms)
	return results(ms), nil
}

func results(ms []*machineUpdate) []UpdateResult {
	out := make([]UpdateResult, len(ms))
	for i, m := range ms {
		out[i] = m.res
	}
	return out
}

// observe reads the machines, resolves each reference once and asks
// systemd which unit runs each machine that has a new digest.
func (u *updater) observe(ctx context.Context, names []string) ([]*machineUpdate, error) {
	var hs []index.History
	err := u.s.View(func(tx *index.Tx) (err error) { hs, err = tx.Histories(); return err })
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	byName := map[string]index.History{}
	for _, h := range hs {
		byName[h.Name] = h
	}
	if len(names) == 0 {
		for _, h := range hs {
			if h.AutoUpdate {
				names = append(names, h.Name)
			}
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	var ms []*machineUpdate
	for _, n := range names {
		h, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("update: machine %s: %w", n, cache.ErrNotFound)
		}
		m := &machineUpdate{rec: h.Machine, res: UpdateResult{Name: n}}
		m.view.failed = h.Failed
		m.view.image = followed(h)
		if m.view.running, err = CurrentTree(u.s, n); err != nil && !errors.Is(err, cache.ErrNotFound) {
			return nil, fmt.Errorf("update: %w", err)
		}
		if m.view.image != "" && h.Image == "" && !u.opt.DryRun {
			u.recordImage(n, m.view.image)
		}
		m.res.Image, m.res.Running = m.view.image, m.view.running
		ms = append(ms, m)
	}
	u.resolve(ctx, ms)
	for _, m := range ms {
		if m.view.image == "" || m.view.resolveErr != nil {
			continue
		}
		if u.sd == nil && u.sdErr == nil {
			u.sd, u.sdErr = u.opt.Systemd(ctx)
		}
		if u.sdErr != nil {
			m.view.systemdErr = u.sdErr
			continue
		}
		var since time.Time
		m.view.unit, since, m.hold, m.view.systemdErr = u.runningUnit(ctx, m.res.Name)
		m.res.Unit = m.view.unit
		m.rollbackTo = m.view.running
		if cur, prev := generationsOf(byName[m.res.Name]); m.view.unit != "" && cur.Digest == m.view.running && !since.IsZero() && since.Before(cur.Time) {
			m.view.stale, m.rollbackTo = true, prev.Digest
		}
	}
	return ms, nil
}

// generationsOf returns h's current generation and the one before it.
func generationsOf(h index.History) (cur, prev index.Generation) {
	for _, g := range h.Generations {
		switch {
		case g.Number == h.Current:
			cur = g
		case g.Number < h.Current && g.Number > prev.Number:
			prev = g
		}
	}
	return cur, prev
}

// followed is the reference machine h follows: its record's, or for a
// machine prepared before the record kept one, its newest generation's.
func followed(h index.History) string {
	if h.Image != "" {
		return h.Image
	}
	for i := len(h.Generations) - 1; i >= 0; i-- {
		if h.Generations[i].Image != "" {
			return h.Generations[i].Image
		}
	}
	return ""
}

// recordImage records the reference machine name follows, when only its
// generations knew it. Best effort: update works from what it read.
func (u *updater) recordImage(name, image string) {
	err := u.s.Update(func(tx *index.Tx) error {
		m, err := tx.Machine(name)
		if err != nil || m.Image != "" {
			return err
		}
		m.Image = image
		return tx.PutMachine(m)
	})
	if err != nil {
		u.log.Debug("could not record the machine's image", "machine", name, "image", image, "err", err)
	}
}

// resolve asks each reference's source once, pulling first (a registry's
// recorded tag resolves without a request otherwise), and gives every
// machine following it the answer.
func (u *updater) resolve(ctx context.Context, ms []*machineUpdate) {
	type answer struct {
		d   digest.Digest
		err error
	}
	done := map[string]answer{}
	for _, m := range ms {
		ref := m.view.image
		if ref == "" {
			continue
		}
		a, ok := done[ref]
		if !ok {
			a.d, a.err = u.resolveOne(ctx, ref)
			done[ref] = a
		}
		m.view.resolved, m.view.resolveErr = a.d, a.err
		m.res.New = a.d
	}
}

// refSource is a recorded reference parsed, and its source.
type refSource struct {
	ref snapshot.Ref
	src snapshot.Source
}

// source is the one source of ref for this update.
func (u *updater) source(ref string) (refSource, error) {
	if rs, ok := u.srcs[ref]; ok {
		return rs, nil
	}
	r, src, err := u.sources(ref)
	if err != nil {
		return refSource{}, err
	}
	rs := refSource{r, src}
	u.srcs[ref] = rs
	return rs, nil
}

func (u *updater) resolveOne(ctx context.Context, ref string) (digest.Digest, error) {
	rs, err := u.source(ref)
	if err != nil {
		return "", err
	}
	img, pullErr := rs.src.Pull(ctx, rs.ref)
	switch {
	case errors.Is(pullErr, snapshot.ErrUnreachable):
		return "", pullErr
	case pullErr != nil:
		var err error
		if img, err = rs.src.Resolve(ctx, rs.ref); err != nil {
			// As prepare: no local image, so the pull's failure is the error.
			return "", pullErr
		}
		// As prepare: the local image may still be the newest one.
		u.log.Warn("pull failed; using the local image", "image", ref, "digest", img.Digest, "err", pullErr)
	}
	u.images[ref] = img
	return img.Digest, nil
}

// runningUnit finds the unit that runs machine name, "" if none runs,
// and the healthy time its environment sets.
func (u *updater) runningUnit(ctx context.Context, name string) (string, time.Time, time.Duration, error) {
	for _, unit := range MachineUnits(name) {
		st, err := u.sd.Unit(ctx, unit)
		if err != nil {
			return "", time.Time{}, 0, err
		}
		if st.running() {
			return unit, st.Since, st.envDuration("ROOTSWAP_HEALTHY_AFTER"), nil
		}
	}
	return "", time.Time{}, 0, nil
}

// plan says what the machine's action would do, for --dry-run.
func (u *updater) plan(m *machineUpdate) string {
	switch m.res.Action {
	case UpToDate:
		return "up to date"
	case NoImage:
		return "no image to follow (prepare it, or give it one with unit --auto-update)"
	case Unresolved:
		return "would fail: " + m.view.resolveErr.Error()
	case DeclineUpdate:
		return fmt.Sprintf("would decline %s: %s", m.view.resolved, DeclinedWhy(m.rec, m.view.resolved))
	case Fetch:
		return fmt.Sprintf("would fetch %s; applies at next start (no unit runs it)", m.view.resolved)
	case FetchOnly:
		return fmt.Sprintf("would fetch %s; restart not done: %v", m.view.resolved, m.view.systemdErr)
	}
	return fmt.Sprintf("would fetch %s and restart %s", m.view.resolved, m.view.unit)
}

// fetch imports each new digest once, for the machines that need it,
// and settles every machine that needs no restart.
func (u *updater) fetch(ctx context.Context, ms []*machineUpdate) {
	fetched := map[digest.Digest]error{}
	for _, m := range ms {
		v := &m.view
		switch m.res.Action {
		case UpToDate:
			// The machine runs the image: a reference its source
			// resolved afresh is recorded now, as an import would.
			if err := snapshot.RecordRef(u.s, u.images[v.image]); err != nil {
				u.log.Warn("could not record the image reference", "machine", m.res.Name, "image", v.image, "err", err)
			}
			m.res.Done = fmt.Sprintf("up to date (%s)", v.running)
			continue
		case NoImage:
			m.res.Done, m.res.Failed = "no image to follow: prepare it first, or give it one with unit --auto-update", true
			continue
		case Unresolved:
			m.res.Done, m.res.Failed = fmt.Sprintf("%s: nothing restarted: %v", v.image, v.resolveErr), true
			continue
		case DeclineUpdate:
			m.res.Done = fmt.Sprintf("%s declined: it failed here before (%s); keeping %s (prepare --force takes it)", v.resolved, DeclinedWhy(m.rec, v.resolved), v.running)
			continue
		}
		err, ok := fetched[v.resolved]
		if !ok {
			err = u.importOne(ctx, v.image, v.resolved)
			fetched[v.resolved] = err
		}
		if err != nil {
			m.res.Done, m.res.Failed = fmt.Sprintf("fetch %s: nothing restarted: %v", v.resolved, noSpace(u.s, m.res.Name, "fetch", err)), true
			m.res.Action = Unresolved
			continue
		}
		switch m.res.Action {
		case Fetch:
			m.res.Done = fmt.Sprintf("fetched %s, applies at next start", v.resolved)
		case FetchOnly:
			m.res.Done = fmt.Sprintf("fetched %s; restart not done: %v", v.resolved, v.systemdErr)
			u.log.Warn("update fetched the new image but could not restart the machine", "machine", m.res.Name, "digest", v.resolved, "err", v.systemdErr)
		}
	}
}

// importOne imports the image ref resolved to, d; the import records
// ref at d once the tree is stored.
func (u *updater) importOne(ctx context.Context, ref string, d digest.Digest) error {
	img, ok := u.images[ref]
	if !ok || img.Digest != d {
		return fmt.Errorf("image %s: %s was not resolved by this update", ref, d)
	}
	var p snapshot.Progress
	if u.opt.Progress != nil {
		p = u.opt.Progress(ref)
	}
	_, _, err := snapshot.ImportImage(ctx, u.s, img, snapshot.ImportOptions{Progress: p, Log: u.log, Platform: u.opt.Platform, Admit: u.opt.Admit, Readmit: u.opt.Readmit})
	return err
}

// rollout restarts the machines whose action is RestartUnit,
// MaxParallel at a time, and stops after a batch in which a gate failed.
func (u *updater) rollout(ctx context.Context, ms []*machineUpdate) {
	var todo []*machineUpdate
	for _, m := range ms {
		if m.res.Action == RestartUnit {
			todo = append(todo, m)
		}
	}
	var stoppedBy []string
	for len(todo) > 0 {
		batch := todo[:min(u.opt.MaxParallel, len(todo))]
		todo = todo[len(batch):]
		if len(stoppedBy) > 0 {
			for _, m := range batch {
				m.res.Done, m.res.Failed = fmt.Sprintf("skipped: the rollout stopped after %s failed; still runs %s (%s fetched)",
					strings.Join(stoppedBy, ", "), m.view.running, m.view.resolved), true
			}
			continue
		}
		var wg sync.WaitGroup
		for _, m := range batch {
			wg.Add(1)
			go func() { defer wg.Done(); u.restart(ctx, m) }()
		}
		wg.Wait()
		for _, m := range batch {
			if m.res.Failed {
				stoppedBy = append(stoppedBy, m.res.Name)
			}
		}
	}
}

// restart flips machine m to the new tree, restarts its unit and holds
// it to the gate; a failed gate rolls back.
func (u *updater) restart(ctx context.Context, m *machineUpdate) {
	name, v := m.res.Name, &m.view
	g, _, err := Activate(ctx, u.s, name, v.resolved, v.image, "update")
	if err != nil {
		m.res.Done, m.res.Failed = fmt.Sprintf("activate %s: nothing restarted: %v", v.resolved, err), true
		return
	}
	m.res.Generation = g.Number
	failpoint.Hit("update-activated")
	hold := u.holdFor(m)
	up, err := gate(ctx, u.sd, v.unit, hold, u.opt.Deadline, u.opt.poll)
	if err == nil {
		m.res.Done = fmt.Sprintf("generation %d %s (updated; %s restarted, up %s)", g.Number, v.resolved, v.unit, up.Round(time.Millisecond))
		u.log.Info("updated", "machine", name, "generation", g.Number, "digest", v.resolved, "unit", v.unit, "image", v.image)
		return
	}
	m.res.Failed = true
	why := fmt.Sprintf("update health gate: %v", err)
	u.log.Warn("update failed its health gate; rolling back", "machine", name, "digest", v.resolved, "unit", v.unit, "why", err.Error(), "rollback_to", m.rollbackTo)
	if m.rollbackTo == "" || m.rollbackTo == v.resolved {
		m.res.Done = fmt.Sprintf("%s failed its health gate (%v); no earlier tree to roll back to", v.resolved, err)
		return
	}
	back, rerr := rollbackFor(context.WithoutCancel(ctx), u.s, name, m.rollbackTo.String(), why)
	if rerr != nil {
		m.res.Done = fmt.Sprintf("%s failed its health gate (%v); rollback failed: %v", v.resolved, err, rerr)
		return
	}
	m.res.Generation = back.Number
	failpoint.Hit("update-rolled-back")
	m.res.Done = fmt.Sprintf("rolled back to generation %d %s: %s %v", back.Number, back.Digest, v.resolved, err)
	// The old version comes back through the unit's own prepare, which
	// now declines the new digest.
	if _, oerr := gate(context.WithoutCancel(ctx), u.sd, v.unit, min(hold, time.Second), u.opt.Deadline, u.opt.poll); oerr != nil {
		m.res.Done += fmt.Sprintf("; the old version did not come up again: %v", oerr)
		u.log.Error("the rolled-back version did not come up again", "machine", name, "digest", back.Digest, "unit", v.unit, "err", oerr)
		return
	}
	u.log.Warn("rolled back a failed update", "machine", name, "generation", back.Number, "digest", back.Digest,
		"failed_digest", v.resolved, "why", err.Error())
}

// holdFor is the healthy time the gate applies to m.
func (u *updater) holdFor(m *machineUpdate) time.Duration {
	switch {
	case u.opt.HealthyAfter > 0:
		return u.opt.HealthyAfter
	case m.hold > 0:
		return m.hold
	}
	return DefaultHealthyAfter
}

// gateError is how a restart failed the health gate.
type gateError struct{ msg string }

func (e *gateError) Error() string { return e.msg }

// gate restarts unit and waits until the restart job is done (for a
// Type=notify unit, after READY=1), within deadline, and the unit has
// then stayed active for hold without stopping or being restarted. It
// returns how long the unit was seen up; an error says how it failed.
func gate(ctx context.Context, sd Systemd, unit string, hold, deadline, poll time.Duration) (time.Duration, error) {
	jctx, cancel := context.WithTimeout(ctx, deadline)
	result, err := sd.Restart(jctx, unit)
	cancel()
	switch {
	case err != nil && jctx.Err() != nil && ctx.Err() == nil:
		return 0, &gateError{fmt.Sprintf("%s did not start within %s", unit, deadline)}
	case err != nil:
		return 0, err
	}
	failpoint.Hit("update-restarted")
	st0, err := sd.Unit(ctx, unit)
	if err != nil {
		return 0, err
	}
	if result != "done" || st0.ActiveState != "active" {
		return 0, &gateError{fmt.Sprintf("restart job %s, unit %s", result, st0.ended())}
	}
	up := time.Now()
	t := time.NewTicker(poll)
	defer t.Stop()
	// At least one look after the first, however short hold is.
	for first := true; first || time.Since(up) < hold; first = false {
		select {
		case <-ctx.Done():
			return time.Since(up), context.Cause(ctx)
		case <-t.C:
		}
		st, err := sd.Unit(ctx, unit)
		if err != nil {
			return time.Since(up), err
		}
		ran := time.Since(up).Round(10 * time.Millisecond)
		switch {
		case st.Invocation != st0.Invocation || st.NRestarts != st0.NRestarts:
			return time.Since(up), &gateError{fmt.Sprintf("restarted after %s (%s)", ran, st.ended())}
		case st.ActiveState != "active":
			return time.Since(up), &gateError{fmt.Sprintf("stopped after %s (%s)", ran, st.ended())}
		}
	}
	return time.Since(up), nil
}

// SetAutoUpdate records whether machine name is one `update` without a
// NAME updates, and (when image is not "") the image it follows: what
// `unit --auto-update NAME IMAGE` stores. A machine that has never run
// gets a record without a generation, which its first prepare fills.
func SetAutoUpdate(s *cache.Store, name, image string, on bool) error {
	if err := ValidName(name); err != nil {
		return err
	}
	return s.Update(func(tx *index.Tx) error {
		m, err := tx.Machine(name)
		if errors.Is(err, cache.ErrNotFound) {
			m, err = index.Machine{Name: name}, nil
		}
		if err != nil {
			return err
		}
		m.AutoUpdate = on
		if image != "" {
			m.Image = image
		}
		return tx.PutMachine(m)
	})
}
