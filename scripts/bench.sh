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
# BENCH_GO=0 skips the Go benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "bench.sh: must be run as root (tar -x keeps owners; systemd-nspawn)" >&2
	exit 1
fi

quick=0 out=bench/results
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
	case "${args[i]}" in
	--quick | -quick) quick=1 ;;
	--out | -out) out=${args[i + 1]:-$out} ;;
	--out=* | -out=*) out=${args[i]#*=} ;;
	esac
done

scripts/deps.sh
if [ "$quick" -eq 0 ] && ! command -v debootstrap >/dev/null 2>&1; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
		{ apt-get update -qq >/dev/null && apt-get install -y -qq debootstrap >/dev/null; }
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
