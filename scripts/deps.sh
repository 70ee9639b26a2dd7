#!/usr/bin/env bash
# Install what the integration tests and the demo need: a Docker engine (to
# build and export test images), systemd-nspawn (to run them), a static
# busybox (the test images' only binary, so they run without a libc), GNU
# tar and debootstrap (for the systemd test bed, integration/sdbed_test.go),
# Debian's docker-registry (distribution 2.8: the registry the integration
# tests start on 127.0.0.1 themselves, integration/registry_test.go) and
# htpasswd from apache2-utils (the bcrypt password file of its auth tests)
# and tmux (the terminal of the narrow-terminal progress test).
# Idempotent and quiet when everything is already there.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: must be run as root (it may apt-get install packages)" >&2
	exit 1
fi

have() { command -v "$1" >/dev/null 2>&1; }

# /bin/busybox must be busybox-static: the test images copy it into rootfs
# trees that have no dynamic loader. ldd fails on a static binary.
static_busybox() { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; }

gnu_tar() { have tar && tar --version 2>/dev/null | head -n1 | grep -q 'GNU tar'; }

if have dockerd && have docker && have systemd-nspawn && static_busybox && gnu_tar && have debootstrap &&
	have docker-registry && have htpasswd && have tmux; then
	exit 0
fi

# Keep apt's maintainer scripts from starting a system-wide dockerd or
# containerd (tests use a private daemon, see dockerd.sh). Only if the admin
# has no policy of their own; ours is removed again on exit.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 0755 "$policy"
	trap 'rm -f "$policy"' EXIT
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
registry_was_installed=false
installed docker-registry && registry_was_installed=true

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# tar is Essential on Debian; naming it repairs a replaced one and is a no-op
# otherwise. busybox-static replaces (conflicts with) the dynamic busybox.
apt-get install -y -qq docker.io systemd-container busybox-static tar debootstrap \
	docker-registry apache2-utils tmux >/dev/null

# docker-registry's postinst starts a system-wide registry on :5000 through
# invoke-rc.d (the policy above denies it) or, under systemd,
# deb-systemd-invoke (which asks the same policy), and enables it at boot.
# The tests only want the binary: if this run installed the package, undo
# the boot-time enabling too, so a reboot does not bring up a listener.
if ! $registry_was_installed; then
	update-rc.d docker-registry disable >/dev/null 2>&1 || true
	deb-systemd-helper disable docker-registry.service >/dev/null 2>&1 || true
fi

if ! static_busybox; then
	echo "deps.sh: /bin/busybox is still not a static binary after installing busybox-static" >&2
	exit 1
fi
