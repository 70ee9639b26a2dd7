#!/usr/bin/env bash
# The rootswap demo: build a tiny image locally, prepare a machine from it,
# run it, upgrade it to v2, roll back. Run it as root through `make demo`,
# which builds bin/rootswap and points DOCKER_HOST at the private daemon.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" -eq 0 ] || { echo "demo.sh: must be run as root (make demo)" >&2; exit 1; }
[ -x bin/rootswap ] || { echo "demo.sh: bin/rootswap missing; run make demo" >&2; exit 1; }
docker version >/dev/null 2>&1 || {
	echo "demo.sh: no Docker daemon at DOCKER_HOST=${DOCKER_HOST:-}; run make demo" >&2
	exit 1
}

# The store lives here and starts empty on every run, so the generations
# shown are this run's.
root=${ROOTSWAP_DEMO_ROOT:-/var/lib/rootswap-demo}
image=rootswap-demo
export PATH="$PWD/bin:$PATH" DOCKER_BUILDKIT=0

# Commands are shown in bold on a terminal.
bold='' plain=''
if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; fi

# show: print a command, quoted so it can be pasted, then run it.
show() {
	local a line='$'
	for a in "$@"; do
		if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
			line+=" $a"
		else
			line+=" '${a//\'/\'\\\'\'}'"
		fi
	done
	printf '\n%s%s%s\n' "$bold" "$line" "$plain"
	"$@"
}

# show_sh: the same for a shell pipeline given as one string.
show_sh() {
	printf '\n%s$ %s%s\n' "$bold" "$1" "$plain"
	bash -o pipefail -c "$1"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "==> building $image:v1: a static busybox and a few applet links, imported from a tarball"
# systemd-nspawn refuses a tree without /usr.
mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/etc" "$tmp/rootfs/tmp" "$tmp/rootfs/usr"
cp /bin/busybox "$tmp/rootfs/bin/busybox"
for a in sh cat date echo ls sleep; do ln -s busybox "$tmp/rootfs/bin/$a"; done
echo "v1" >"$tmp/rootfs/etc/demo-version"
chmod 1777 "$tmp/rootfs/tmp"
show_sh "tar --numeric-owner --owner=0 --group=0 -C $tmp/rootfs -cf - . |
    docker import --change 'CMD [\"/bin/sh\", \"-c\", \"for i in 1 2 3; do date; sleep 1; done\"]' - $image:v1"

rm -rf "$root"
show rootswap --root "$root" prepare demo "$image:v1"
show rootswap --root "$root" run demo /bin/sh -c 'for i in 1 2 3; do date; sleep 1; done'

echo
echo "==> building $image:v2 FROM $image:v1 with one RUN step"
mkdir "$tmp/v2"
printf 'FROM %s:v1\nRUN echo v2 > /etc/demo-version\n' "$image" >"$tmp/v2/Dockerfile"
show cat "$tmp/v2/Dockerfile"
show docker build -q --network none -t "$image:v2" "$tmp/v2"
show rootswap --root "$root" prepare demo "$image:v2"
show rootswap --root "$root" run demo cat /etc/demo-version
show rootswap --root "$root" history demo
show rootswap --root "$root" rollback demo
show rootswap --root "$root" run demo cat /etc/demo-version
show rootswap --root "$root" list
show rootswap --root "$root" images
