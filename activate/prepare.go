package activate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/snapshot"
)

// PrepareOptions tune Prepare; the zero value means no pull and the
// default health policy.
type PrepareOptions struct {
	Pull         bool
	Force        bool              // activate a digest even if it failed before
	HealthyAfter time.Duration     // a run this long makes a generation healthy
	MaxFailures  int               // failed short runs in a row that make a crash loop
	Progress     snapshot.Progress // shown while an import streams; may be nil
	Platform     string            // the OS/ARCH[/VARIANT] an image must be for; "" this host's
	// Admit is the signature policy's check of an image to import
	// (snapshot.ImportOptions.Admit); nil admits every image.
	Admit func(ctx context.Context, img snapshot.Image) (string, error)
	// Readmit re-checks a stored tree against the policy before it is
	// activated (snapshot.ImportOptions.Readmit); nil admits every tree.
	Readmit func(img snapshot.Image, t index.Tree) error
}

func (p *PrepareOptions) defaults() {
	if p.HealthyAfter <= 0 {
		p.HealthyAfter = DefaultHealthyAfter
	}
	if p.MaxFailures <= 0 {
		p.MaxFailures = DefaultMaxFailures
	}
}

// Change is what Prepare did to a machine.
type Change int

const (
	Unchanged          Change = iota // the machine already ran the image
	Activated                        // current moved to a tree the store had
	Imported                         // the tree was imported, then activated
	FromCache                        // the source was unreachable: the current tree stays
	Declined                         // the image's digest failed before: the current tree stays
	RolledBack                       // current was crash-looping and was rolled back (and the image activated)
	RolledBackDeclined               // rolled back, and the image's digest is the one that failed
)

// Outcome says what Prepare did and what the machine runs now.
type Outcome struct {
	Change     Change
	Digest     digest.Digest // the tree machines/NAME/current names now
	Generation uint64        // its generation; 0 if the index could not say (FromCache)
	Source     string        // the source's name, for FromCache
	Gone       bool          // FromCache: the source answered, but no longer has the image
}

// String is the outcome as `prepare` prints it after the machine's name.
func (o Outcome) String() string {
	what := [...]string{
		Unchanged:          "unchanged",
		Activated:          "activated",
		Imported:           "imported, activated",
		FromCache:          "cached, " + o.Source + " unreachable",
		Declined:           "image declined: it failed before",
		RolledBack:         "rolled back from a crash loop",
		RolledBackDeclined: "rolled back from a crash loop; new image declined",
	}[o.Change]
	if o.Change == FromCache && o.Gone {
		what = "cached, image gone from the " + o.Source
	}
	if o.Generation == 0 {
		return fmt.Sprintf("%s (%s)", o.Digest, what)
	}
	return fmt.Sprintf("generation %d %s (%s)", o.Generation, o.Digest, what)
}

// Prepare makes machine name run image ref from src: resolve, import if
// the store lacks the tree, activate. When ref already names the current
// tree (and it is not crash-looping) it costs one resolve, one readlink
// and one index read, and writes nothing.
//
// Around that: with Pull, a failed pull is a warning. When the source is
// unreachable and the machine has a current tree, it warns and keeps it.
// When the current generation is crash-looping, it rolls back to the last
// healthy one and marks the bad digest failed; a failed digest is declined
// (warning, no error) until ref names another digest or Force is set.
// An index record that cannot be read is an error, never a new machine.
func Prepare(ctx context.Context, s *cache.Store, src snapshot.Source, log *slog.Logger, name string, ref snapshot.Ref, opt PrepareOptions) (_ Outcome, err error) {
	opt.defaults()
	if err := ValidName(name); err != nil {
		return Outcome{}, err
	}
	defer func() { err = noSpace(s, name, fmt.Sprintf("prepare %s %s", name, ref), err) }()
	p := &preparation{s: s, src: src, log: log, name: name, ref: ref, opt: opt}
	st, err := p.observe(ctx)
	if err != nil {
		return Outcome{}, err
	}
	// Each action but the last changes the view it was decided on; the
	// loop ends because a rollback and a forget each happen at most once.
	for {
		o, done, err := p.do(ctx, decide(st, opt), &st)
		if err != nil || done {
			if err == nil {
				p.rememberRef(st)
			}
			return o, err
		}
	}
}

// rememberRef records ref as the image the machine follows (what update
// resolves), if its record names another. An activation records it with
// the generation; this covers a prepare that activated nothing. Best
// effort: the machine runs either way.
func (p *preparation) rememberRef(st view) {
	ref := p.ref.String()
	if st.m.Name == "" || st.m.Image == ref {
		return
	}
	err := p.s.Update(func(tx *index.Tx) error {
		m, err := tx.Machine(p.name)
		if err != nil || m.Image == ref {
			return err
		}
		m.Image = ref
		return tx.PutMachine(m)
	})
	if err != nil {
		p.log.Debug("could not record the machine's image", "machine", p.name, "image", ref, "err", err)
	}
}

// view is what Prepare decides on, read once by observe and then kept up
// to date by the actions that change it.
type view struct {
	unreachable error            // the source cannot give the image now (see observe); resolved may be ""
	gone        bool             // unreachable is a source that no longer has the image
	img         snapshot.Image   // the image ref names now
	resolved    digest.Digest    // its digest
	treeOK      bool             // the store has tree resolved, not marked broken
	tree        index.Tree       // its record, when the store has it
	hasConfig   bool             // the store has its image config
	platform    ocispec.Platform // what that config names; zero without one
	link        digest.Digest    // what machines/NAME/current names; "" if none
	m           index.Machine    // the machine's record; zero for a new machine
	cur         index.Generation // generation m.Current; zero if none
	rolledBack  bool             // this prepare rolled a crash loop back
	noHealthy   bool             // a crash loop with no healthy generation to go to
}

// agree reports whether the index's current generation is the link's tree.
func (st view) agree() bool {
	return st.m.Current != 0 && st.link != "" && st.cur.Digest == st.link
}

// action is one step of a prepare.
type action int

const (
	noCache        action = iota // source unreachable, nothing cached: fail
	startFromCache               // source unreachable: keep the current tree
	rollback                     // move off a crash-looping generation, then decide again
	decline                      // the digest failed here before: keep the current tree
	forget                       // --force: forget that the digest failed, then decide again
	hit                          // the machine runs the image already
	otherPlatform                // the machine runs the image already, cached for another platform: refuse
	install                      // import if need be, then activate
)

// decide is the policy of Prepare: a pure function of what it read.
func decide(st view, opt PrepareOptions) action {
	failed := slices.Contains(st.m.Failed, st.resolved)
	switch {
	case st.unreachable != nil && st.link == "":
		return noCache
	case st.unreachable != nil:
		return startFromCache
	case st.agree() && crashLooping(st.cur, opt) && !opt.Force && !st.rolledBack && !st.noHealthy:
		return rollback
	case failed && !opt.Force:
		return decline
	case failed:
		return forget
	case st.link == st.resolved && st.treeOK && st.agree() && !st.rolledBack:
		// Only when the index agrees with the link: otherwise Activate's
		// load reconciles them. A tree cached for another platform
		// (imported with --platform) is refused as its import would be
		// (the install path's import checks a stored tree too).
		if snapshot.CheckPlatform("", st.platform, opt.Platform) != nil {
			return otherPlatform
		}
		return hit
	}
	return install
}

// preparation is one Prepare call: what it works on.
type preparation struct {
	s    *cache.Store
	src  snapshot.Source
	log  *slog.Logger
	name string
	ref  snapshot.Ref
	opt  PrepareOptions
}

// observe pulls if asked, resolves ref and reads the machine's link and
// records: all that decide looks at.
//
// A source that cannot give the image now makes the machine start from
// its cached tree, with one warning, only if ref resolved here before (a
// unit whose IMAGE was changed to a wrong name is no registry that is
// down) and the source is unreachable or no longer has the image (a
// registry that lost the tag, an oci: or docker-archive: file that is
// gone). Anything else is an error: the source's own, not a warning
// about a local image that does not exist.
func (p *preparation) observe(ctx context.Context) (view, error) {
	var st view
	var pullErr, resolveErr, err error
	pulled := false
	if p.opt.Pull {
		if st.img, pullErr = p.src.Pull(ctx, p.ref); pullErr == nil {
			pulled = true
		}
	}
	ref := p.ref.String() // as records and messages spell it
	if !pulled {
		st.img, resolveErr = p.src.Resolve(ctx, p.ref)
	}
	st.resolved = st.img.Digest
	if st.link, err = CurrentTree(p.s, p.name); err != nil && !errors.Is(err, cache.ErrNotFound) {
		return st, err
	}
	indexErr := p.readIndex(&st)
	if resolveErr == nil {
		switch {
		case errors.Is(pullErr, snapshot.ErrUnreachable) && st.link != "":
			// A source that resolves without being reached (a
			// registry's recorded refs) is down all the same: a machine
			// that has a tree keeps it, as when Resolve itself cannot
			// reach the source. A new machine takes what the ref last
			// resolved to.
			st.unreachable = pullErr
		case pullErr != nil && ctx.Err() == nil:
			p.log.Warn("pull failed; using the local image", "image", ref, "digest", st.resolved, "err", pullErr)
		}
		if st.unreachable == nil {
			return st, indexErr
		}
		// The link is what runs: a damaged index must not keep the
		// machine from starting from cache while the source is down.
		// Only the generation number goes missing from the outcome.
		return st, nil
	}
	cause := resolveErr // what to say: the pull's failure when it was a refusal
	if pullErr != nil && !errors.Is(pullErr, snapshot.ErrUnreachable) {
		cause = pullErr
	}
	unreachable := errors.Is(resolveErr, snapshot.ErrUnreachable)
	gone := errors.Is(resolveErr, snapshot.ErrImageNotFound)
	switch {
	case ctx.Err() != nil:
		return st, resolveErr
	case !unreachable && !gone:
		return st, p.hint(ref, cause)
	case st.link == "" && unreachable:
		st.unreachable = resolveErr // noCache says so
		return st, p.hint(ref, nil)
	case st.link == "":
		return st, p.hint(ref, cause)
	}
	if err := p.hint(ref, nil); err != nil {
		return st, err
	}
	if before, err := p.resolvedBefore(ref); err == nil && !before {
		return st, fmt.Errorf("%w; %s never resolved on this store, so machine %s does not start from the cached tree of another image", cause, ref, p.name)
	}
	// indexErr (and resolvedBefore's error) are ignored as above: the
	// link is what runs.
	st.unreachable, st.gone = cause, gone
	return st, nil
}

// resolvedBefore reports whether ref named an image on this store before:
// a recorded ref, a tree imported under it, or a generation of the
// machine activated from it.
func (p *preparation) resolvedBefore(ref string) (bool, error) {
	var found bool
	err := p.s.View(func(tx *index.Tx) error {
		if _, err := tx.Ref(ref); err == nil {
			found = true
			return nil
		} else if !errors.Is(err, cache.ErrNotFound) {
			return err
		}
		gens, err := tx.Generations(p.name)
		if err != nil && !errors.Is(err, cache.ErrNotFound) {
			return err
		}
		for _, g := range gens {
			if g.Image == ref {
				found = true
				return nil
			}
		}
		trees, err := tx.Trees()
		if err != nil {
			return err
		}
		for _, t := range trees {
			if slices.Contains(t.Refs, ref) {
				found = true
				return nil
			}
		}
		return nil
	})
	return found, err
}

// hint is err, unless ref is a digest ref whose digest is one this store
// knows as an image digest (a config's: the digest rootswap prints) and
// no manifest's: then it is an error saying which digest to use. A source
// cannot resolve such a ref (a registry answers 404 or 500), so with err
// nil a known image digest is an error too.
func (p *preparation) hint(ref string, err error) error {
	i := strings.LastIndex(ref, "@")
	if i < 0 {
		return err
	}
	d, perr := digest.Parse(ref[i+1:])
	if perr != nil {
		return err
	}
	var image bool
	_ = p.s.View(func(tx *index.Tx) error { // unreadable: no hint, the error stands
		if _, err := tx.Tree(d); err == nil {
			image = true
		}
		return nil
	})
	if !image {
		return err
	}
	return fmt.Errorf("image %s: that is an image (config) digest; use the manifest digest: rootswap images --digests", ref)
}

// readIndex reads the tree's and the machine's records in one
// transaction. Only ErrNotFound means "none": any other error is the
// caller's, or a record that fails to decode would turn off crash-loop
// rollback without a word.
func (p *preparation) readIndex(st *view) error {
	return p.s.View(func(tx *index.Tx) error {
		if st.resolved != "" {
			t, err := tx.Tree(st.resolved)
			if err != nil && !errors.Is(err, cache.ErrNotFound) {
				return err
			}
			st.treeOK = err == nil && !t.Broken
			if err == nil {
				st.tree = t
				raw, cerr := tx.Config(st.resolved)
				if cerr != nil && !errors.Is(cerr, index.ErrNotFound) {
					return cerr
				}
				st.hasConfig = cerr == nil
				if st.hasConfig {
					if st.platform, cerr = snapshot.ConfigPlatform(raw); cerr != nil {
						return fmt.Errorf("tree %s: %w", st.resolved, cerr)
					}
				}
			}
		}
		m, err := tx.Machine(p.name)
		if errors.Is(err, cache.ErrNotFound) {
			return nil // a new machine
		}
		if err != nil {
			return fmt.Errorf("machine %s: %w", p.name, err)
		}
		st.m = m
		if m.Current == 0 {
			return nil
		}
		// A missing current generation is the index behind the link
		// (see flip): Activate's load reconciles it.
		if st.cur, err = tx.Generation(p.name, m.Current); err != nil && !errors.Is(err, cache.ErrNotFound) {
			return fmt.Errorf("machine %s: generation %d: %w", p.name, m.Current, err)
		}
		return nil
	})
}

// do carries out a and reports whether Prepare is done; the actions that
// are not final update st.
func (p *preparation) do(ctx context.Context, a action, st *view) (Outcome, bool, error) {
	switch a {
	case noCache:
		return Outcome{}, true, fmt.Errorf("%w; machine %s has no cached tree to start from", st.unreachable, p.name)
	case startFromCache:
		msg := "image source unreachable; keeping the cached tree"
		if st.gone {
			msg = "image source no longer has the image; keeping the cached tree"
		}
		p.log.Warn(msg, "machine", p.name, "digest", st.link, "err", st.unreachable)
		o := Outcome{Change: FromCache, Digest: st.link, Source: p.src.String(), Gone: st.gone}
		if st.agree() {
			o.Generation = st.m.Current
		}
		return o, true, nil
	case rollback:
		return Outcome{}, false, p.rollback(ctx, st)
	case decline:
		if st.link != "" && !st.agree() {
			// Keeping the current tree means keeping what the link
			// names: the index follows it first (see flip).
			m, cur, err := reconcile(ctx, p.s, p.name)
			if err != nil {
				return Outcome{}, true, err
			}
			st.m, st.cur = m, cur
		}
		p.log.Warn("image digest failed on this machine before; keeping the current tree (use --force to try it again)",
			"machine", p.name, "image", p.ref.String(), "digest", st.resolved, "current", st.link, "why", DeclinedWhy(st.m, st.resolved))
		o := Outcome{Change: Declined, Digest: st.link, Generation: st.m.Current}
		if st.rolledBack {
			o.Change = RolledBackDeclined
		}
		return o, true, nil
	case forget:
		st.m.Forgive(st.resolved)
		return Outcome{}, false, clearFailed(p.s, p.name, st.resolved)
	case otherPlatform:
		return Outcome{}, true, snapshot.CheckPlatform(p.ref.String(), st.platform, p.opt.Platform)
	case hit:
		// The machine runs the image already: a ref the source resolved
		// afresh is recorded now, as an import would have.
		if err := snapshot.RecordRef(p.s, st.img); err != nil {
			return Outcome{}, true, err
		}
		p.readmitCurrent(*st)
		// A tree imported before configs were recorded gets its config
		// now; a failure (the source unreachable) is a warning.
		// observe read whether it has one: a hit reads the index once.
		if err := p.recordConfig(ctx, *st); err != nil {
			p.log.Warn("the image's config is not recorded: run follows the COMMAND given", "machine", p.name, "digest", st.resolved, "err", err)
		}
		return Outcome{Change: Unchanged, Digest: st.resolved, Generation: st.m.Current}, true, nil
	}
	o, err := p.importAndActivate(ctx, *st)
	if errors.Is(err, snapshot.ErrUnreachable) && ctx.Err() == nil && st.unreachable == nil {
		// The source went away while the import streamed (a registry
		// that stopped sending a blob): decide again, as if Resolve had
		// found it so. A machine with a tree starts from it.
		st.unreachable = err
		return Outcome{}, false, nil
	}
	return o, true, err
}

// rollback moves the machine off its crash-looping generation, if it has
// a healthy one to go to, and records in st where it went.
func (p *preparation) rollback(ctx context.Context, st *view) error {
	bad := st.cur
	good, ok, err := autoRollback(ctx, p.s, p.log, p.name, bad, p.opt)
	if err != nil {
		return err
	}
	if !ok {
		st.noHealthy = true
		return nil
	}
	st.rolledBack = true
	st.link, st.cur, st.m.Current = good.Digest, good, good.Number
	st.m.Decline(bad.Digest, "crash loop")
	return nil
}

// recordConfig records the image config of a tree imported before
// configs were recorded, unless observe found it there.
func (p *preparation) recordConfig(ctx context.Context, st view) error {
	if st.hasConfig {
		return nil
	}
	return snapshot.RecordConfig(ctx, p.s, st.img)
}

// readmitCurrent warns when the signature policy (opt.Readmit) no longer
// admits the tree the machine runs already: it keeps running it, as a
// machine keeps its tree when a new image is refused; the operator hears
// of it here and from verify.
func (p *preparation) readmitCurrent(st view) {
	if p.opt.Readmit == nil {
		return
	}
	if err := p.opt.Readmit(st.img, st.tree); err != nil {
		p.log.Warn("the signature policy no longer admits the machine's current tree; keeping it", "machine", p.name, "digest", st.resolved, "err", err)
	}
}

// importAndActivate imports the tree if the store lacks it and makes it
// current.
func (p *preparation) importAndActivate(ctx context.Context, st view) (Outcome, error) {
	// Between the import's commit and the activation the tree is no gc
	// root yet: the shared store lock keeps gc's sweep out until the
	// symlink makes it one.
	lock, err := p.s.Lock(ctx, false)
	if err != nil {
		return Outcome{}, err
	}
	defer lock.Unlock()
	d := st.resolved
	_, created, err := snapshot.ImportImage(ctx, p.s, st.img, snapshot.ImportOptions{Progress: p.opt.Progress, Log: p.log, Platform: p.opt.Platform, Admit: p.opt.Admit, Readmit: p.opt.Readmit})
	if err != nil {
		return Outcome{}, err
	}
	gen, changed, err := Activate(ctx, p.s, p.name, d, p.ref.String(), "prepare")
	if err != nil {
		return Outcome{}, err
	}
	o := Outcome{Change: Unchanged, Digest: d, Generation: gen.Number}
	switch {
	case st.rolledBack:
		o.Change = RolledBack
	case created:
		o.Change = Imported
	case changed:
		o.Change = Activated
	}
	return o, nil
}

// noSpaceError is a command that found the disk full: one line saying
// what failed, on which store, and what the machine runs now.
type noSpaceError struct {
	what, store string
	cur         digest.Digest
	err         error
}

func (e *noSpaceError) Error() string {
	still := "the machine has no current tree"
	if e.cur != "" {
		still = "the machine still runs " + string(e.cur)
	}
	return fmt.Sprintf("%s: no space left on device (store %s): %s", e.what, e.store, still)
}

func (e *noSpaceError) Unwrap() error { return e.err }

// noSpace turns an error caused by a full disk into a noSpaceError about
// what, and leaves any other error alone. What the machine runs is read
// from its link after the failure: the link is what runs.
func noSpace(s *cache.Store, name, what string, err error) error {
	if !errors.Is(err, syscall.ENOSPC) {
		return err
	}
	var inner *noSpaceError
	if errors.As(err, &inner) {
		err = inner.err // a prepare's activation: say it once, as the prepare
	}
	cur, _ := CurrentTree(s, name)
	return &noSpaceError{what: what, store: s.Root(), cur: cur, err: err}
}
