package integration

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestSdbedPullAuthWithoutHome (issue 17, item 4, under a real systemd): a
// unit `rootswap unit` writes for a docker:// image in a registry with
// htpasswd auth has no User=, so systemd sets no $HOME for its prepare.
// Before the login exists the unit's prepare fails with "authentication
// failed" (the bed, which shares the host's network, reaches the test's
// registry on 127.0.0.1, and it asks for credentials); once root's
// /root/.docker/config.json in the bed holds the login, as `docker login`
// writes it, the same unit pulls and its payload runs.
// TestPullAuthWithoutHome checks the same fallback on the host.
func TestSdbedPullAuthWithoutHome(t *testing.T) {
	needIntegration(t)
	const account, password = "rootswap", "test-password-4"
	reg := startRegistry(t, registryOpts{User: account, Password: password})
	src := "docker://" + pushImageAs(t, reg, payloadImage(t, clockScript), "rootswap-test/sdbed-home:v1")
	b := bootBed(t)
	unit := b.install("home", map[string]string{"nolimit.conf": "[Unit]\nStartLimitIntervalSec=0\n"},
		"--restart-sec", "1s", "home", src, "--", "/bin/sh", "/run.sh")
	u := b.ok("systemctl", "cat", unit)
	for _, w := range []string{"User=", "HOME", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE"} {
		if strings.Contains(u, w) {
			t.Fatalf("the unit sets %s; the test wants systemd's environment without HOME:\n%s", w, u)
		}
	}
	if env := b.ok("systemctl", "show", "-p", "Environment", unit); strings.Contains(env, "HOME=") {
		t.Fatalf("systemd gives %s %s", unit, env)
	}

	// No login: the registry refuses the anonymous pull.
	authFailed := func(e journalEntry) bool {
		return strings.Contains(e.Message, reg.Addr()) && strings.Contains(e.Message, "authentication failed")
	}
	b.ok("systemctl", "start", "--no-block", unit)
	b.waitJournal("authentication failures", 1, 2*time.Minute, authFailed, "-u", unit)
	b.ok("systemctl", "stop", unit)
	before := len(b.journal("-u", unit))

	// Root's login, where `docker login` run as root in the bed writes it.
	cfg, err := json.Marshal(map[string]any{"auths": map[string]any{
		reg.Addr(): map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(account + ":" + password))},
	}})
	if err != nil {
		t.Fatal(err)
	}
	b.writeFile("/root/.docker/config.json", string(cfg))
	b.ok("systemctl", "start", "--no-block", unit)
	isDate := func(e journalEntry) bool { return dateLine.MatchString(e.Message) }
	// Three refusals after the login was written are the bug (one could be
	// a late line of the first start's): no need to wait the deadline.
	b.waitFor("a date line from the payload pulled with root's login", 2*time.Minute, func() bool {
		var refused []string
		for _, e := range b.journal("-u", unit)[before:] {
			if isDate(e) {
				return true
			}
			if authFailed(e) {
				refused = append(refused, e.Message)
			}
		}
		if len(refused) >= 3 {
			t.Fatalf("with /root/.docker/config.json in the bed, %d starts: %s", len(refused), refused[len(refused)-1])
		}
		return false
	})
	if got := strings.TrimSpace(b.ok("systemctl", "is-active", unit)); got != "active" {
		t.Errorf("%s is %q after the pull with root's login", unit, got)
	}
	b.ok("systemctl", "stop", unit)
}
