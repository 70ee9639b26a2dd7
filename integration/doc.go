// Package integration drives the built rootswap binary against a real
// Docker daemon and real systemd-nspawn. Its tests run when
// ROOTSWAP_INTEGRATION=1 (make test sets it, with DOCKER_HOST pointing at
// the private daemon that scripts/dockerd.sh starts); without it they skip,
// and with it they fail rather than skip when something is missing.
package integration
