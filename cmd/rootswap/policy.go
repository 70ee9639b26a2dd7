package main

import (
	"context"
	"fmt"

	"github.com/rootswap/rootswap/index"
	"github.com/rootswap/rootswap/policy"
	"github.com/rootswap/rootswap/snapshot"
)

// signed is an image's content that can read the signatures attached to
// it (a registry image: snapshot/registry).
type signed interface {
	Signatures(ctx context.Context) ([]policy.Signature, error)
}

// admit returns the signature policy's check of an image to import, for
// snapshot.ImportOptions.Admit: nil when there is no policy file (the
// default one missing), so everything is admitted as before. A policy
// named by --policy or ROOTSWAP_POLICY must exist; a malformed one is an
// error naming it.
//
// The second function re-checks a stored tree offline against the
// policy, from how it was admitted at import (snapshot.ImportOptions.Readmit).
func (g *globals) admit() (func(context.Context, snapshot.Image) (string, error), func(snapshot.Image, index.Tree) error, error) {
	p, err := g.loadPolicy()
	if err != nil || p == nil {
		return nil, nil, err
	}
	readmit := func(img snapshot.Image, t index.Tree) error {
		_, err := p.Recheck(policyImage(img), t.Admitted)
		return err
	}
	return func(ctx context.Context, img snapshot.Image) (string, error) {
		in := policyImage(img)
		sigs := func(ctx context.Context) ([]policy.Signature, error) {
			sc, ok := img.Content.(signed)
			if !ok {
				return nil, fmt.Errorf("image %s: its source reads no signatures", img.Ref)
			}
			return sc.Signatures(ctx)
		}
		a, err := p.Check(ctx, in, sigs)
		if err != nil {
			return "", err
		}
		g.log.Debug("admitted by policy", "image", img.Ref.String(), "policy", p.File, "scope", a.Scope, "how", a.How)
		return a.String(), nil
	}, readmit, nil
}

// defaultPolicyFile is the policy read unless --policy or ROOTSWAP_POLICY
// name one (a variable for tests).
var defaultPolicyFile = policy.DefaultFile

// loadPolicy reads the signature policy: nil when there is none (the
// default file missing).
func (g *globals) loadPolicy() (*policy.Policy, error) {
	explicit := g.flags.Changed("policy")
	if explicit && g.policyFile == "" {
		return nil, usage("%s: empty (give the policy file)", g.given("policy", g.policyFile))
	}
	file := g.policyFile
	if file == "" {
		file = defaultPolicyFile
	}
	return policy.Load(file, explicit)
}

// noticeNoPolicy says once, when a unit for image is installed, that no
// signature policy restricts what it will run; a malformed policy is an
// error now rather than at the unit's first start.
func (g *globals) noticeNoPolicy(image string) error {
	p, err := g.loadPolicy()
	if err == nil && p == nil {
		g.log.Info("no signature policy restricts the image: any image its reference names will run (see Trust in the README)", "image", image, "policy", defaultPolicyFile)
	}
	return err
}

// policyImage is what the policy is asked about img.
func policyImage(img snapshot.Image) policy.Image {
	in := policy.Image{Transport: string(img.Ref.Transport), Ref: img.Ref.String(), Manifest: img.Manifest}
	if img.Ref.Transport == snapshot.Docker {
		in.Name = img.Ref.Name
	}
	return in
}
