#!/usr/bin/env bash
# Install what the integration tests and the demo need: a Docker engine (to
# build and export test images), systemd-nspawn (to run them), a static
# busybox (the test images' only binary, so they run without a libc), GNU
# tar and debootstrap (for the systemd test bed, integration/sdbed_test.go).
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

if have dockerd && have docker && have systemd-nspawn && static_busybox && gnu_tar && have debootstrap; then
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

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# tar is Essential on Debian; naming it repairs a replaced one and is a no-op
# otherwise. busybox-static replaces (conflicts with) the dynamic busybox.
apt-get install -y -qq docker.io systemd-container busybox-static tar debootstrap >/dev/null

if ! static_busybox; then
	echo "deps.sh: /bin/busybox is still not a static binary after installing busybox-static" >&2
	exit 1
fi
