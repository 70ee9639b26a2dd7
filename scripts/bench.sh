#!/usr/bin/env bash
# Benchmark rootswap against the docker export | tar chain it replaces
# (bench/), then run the Go benchmarks of the hot paths in benchstat format.
#
#   scripts/bench.sh [--quick] [--runs N] [--out DIR] [other bench flags]
#
# Results land in bench/results/ (or --out): results.md, results.json,
# chart.svg and gobench.txt. A DOCKER_HOST that answers is used as it is;
# otherwise the private daemon of scripts/dockerd.sh, started for the run
# and stopped again only if this run started it. The full run builds a
# Debian image with debootstrap and a 1 GB one and takes the better part of
# an hour; --quick takes well under a minute once its image is built.
# The registry scenarios (docker-registry on 127.0.0.1; rootswap's
# registry source against docker pull + the old chain, podman pull and
# skopeo copy + umoci unpack) are part of the full run; on the small
# image alone: scripts/bench.sh --quick --scenarios pull (about a minute).
# The downtime scenario (the gap in a 20 ms ticker's output for podman
# restart, podman's upgrade — stop + rm + run of a version pulled
# beforehand — and, under the integration tests' systemd bed, systemctl
# restart and rootswap update) is part of the full run too; on the small
# image alone: scripts/bench.sh --quick --scenarios downtime.
# BENCH_GO=0 skips the Go benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "bench.sh: must be run as root (tar -x keeps owners; systemd-nspawn)" >&2
	exit 1
fi

quick=0 out=bench/results scenarios=
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
	case "${args[i]}" in
	--quick | -quick) quick=1 ;;
	--out | -out) out=${args[i + 1]:-$out} ;;
	--out=* | -out=*) out=${args[i]#*=} ;;
	--scenarios | -scenarios) scenarios=${args[i + 1]:-} ;;
	--scenarios=* | -scenarios=*) scenarios=${args[i]#*=} ;;
	esac
done

# The bench's own packages, not CI's (scripts/deps.sh): debootstrap for
# the Debian image, and the peers of the registry scenarios (which the
# full run includes and --quick only with --scenarios pull... or downtime).
need=()
[ "$quick" -eq 0 ] && need+=(debootstrap)
if { [ "$quick" -eq 0 ] && [ -z "$scenarios" ]; } || [[ $scenarios == *pull* || $scenarios == *downtime* ]]; then
	need+=(podman skopeo umoci)
fi
scripts/deps.sh
missing=()
for p in "${need[@]}"; do
	command -v "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi

if [ -n "${DOCKER_HOST:-}" ] && docker version >/dev/null 2>&1; then
	go run ./bench "$@"
else
	scripts/dockerd.sh run go run ./bench "$@"
fi

if [ "$quick" -eq 0 ] && [ "${BENCH_GO:-1}" != 0 ]; then
	mkdir -p "$out"
	go test -run x -bench . -count 5 ./cache ./activate | tee "$out/gobench.txt"
fi
