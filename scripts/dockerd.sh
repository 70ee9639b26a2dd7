#!/usr/bin/env bash
# A private Docker daemon for rootswap's tests and demo, apart from any other
# daemon on the machine: its own socket, data root, exec root and pidfile, no
# networking, and it only ever stops a daemon that it started itself.
#
#   scripts/dockerd.sh start         start it (no-op if it already answers)
#   scripts/dockerd.sh stop          stop it, if this script started it
#   scripts/dockerd.sh status        exit 0 if it is running and answers
#   scripts/dockerd.sh env           print the DOCKER_HOST export for it
#   scripts/dockerd.sh run CMD...    start it if needed, run CMD with
#                                    DOCKER_HOST set, stop it again if this
#                                    call started it; exits with CMD's status
set -euo pipefail

state=/run/rootswap-dev
sock=$state/docker.sock
host=unix://$sock
pidfile=$state/docker.pid
log=$state/dockerd.log
# Holds the pid of the dockerd that `start` launched; `stop` stops only that.
owned=$state/started-by-script
data=/var/lib/rootswap-dev/docker

# Why each flag:
# - --bridge=none --iptables=false: no docker0 bridge, no NAT or firewall
#   rules; the host network is left alone. Nothing here needs a network: the
#   test images are built from local tarballs (docker build --network none).
# - --containerd-namespace/--containerd-plugins-namespace: dockerd 20.10 uses
#   a system containerd if /run/containerd/containerd.sock exists (there is
#   no flag to force its own). Our own namespaces keep our containers apart
#   from a system dockerd's ("moby") there. Without a system containerd, as
#   on a fresh machine or CI, dockerd starts its own under --exec-root.
# - --cgroup-parent: our containers' cgroups go under /rootswap-dev, not
#   /docker where a system dockerd puts its own.
# No --insecure-registry: Docker already treats 127.0.0.0/8 as insecure
# (docker info: InsecureRegistryCIDRs), so `docker push 127.0.0.1:PORT/…`
# to the tests' plain-http registry (integration/registry_test.go) works.
# The default cgroupfs cgroup driver is right here: there is no systemd as
# PID 1 (so no systemd driver), cgroups are v1 with a v2 "unified" hierarchy
# beside them, and RUN steps of `docker build` work as they are.
flags=(
	--host "$host"
	--data-root "$data"
	--exec-root "$state/exec"
	--pidfile "$pidfile"
	--bridge=none
	--iptables=false
	--containerd-namespace rootswap-dev
	--containerd-plugins-namespace rootswap-dev-plugins
	--cgroup-parent /rootswap-dev
)

die() {
	echo "dockerd.sh: $*" >&2
	exit 1
}

need_root() { [ "$(id -u)" -eq 0 ] || die "must be run as root"; }

answers() { docker -H "$host" version >/dev/null 2>&1; }

# alive PID: the process exists and is not a zombie (nothing may reap a
# daemon whose parent, this script, is gone).
alive() {
	local st
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
	[ "${st:0:1}" != Z ]
}

# ourpid: print the pid in our pidfile if it is a live dockerd serving our
# socket (pids get reused; never signal anything else).
ourpid() {
	local pid cmd
	pid=$(cat "$pidfile" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
	cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	[[ $cmd == *dockerd* && $cmd == *"--host $host "* ]] || return 1
	echo "$pid"
}

start() {
	need_root
	local pid launcher=
	if pid=$(ourpid) && answers; then
		return 0
	fi
	if ! pid=$(ourpid); then
		command -v dockerd >/dev/null || die "dockerd not found; run scripts/deps.sh"
		mkdir -p "$state" "$data"
		# A leftover pidfile whose pid now belongs to another process would
		# make dockerd refuse to start.
		rm -f "$pidfile" "$owned"
		local extra=()
		# --ip6tables exists from Docker 20.10 on; keep it off where it does.
		if dockerd --help 2>&1 | grep -q -- '--ip6tables'; then
			extra+=(--ip6tables=false)
		fi
		# setsid: the daemon outlives this script and is not hit by a ^C
		# meant for make or go test.
		setsid dockerd "${flags[@]}" "${extra[@]}" >"$log" 2>&1 </dev/null &
		launcher=$!
		echo "started private dockerd (log: $log)"
	fi
	local i
	for ((i = 0; i < 120; i++)); do
		if answers && pid=$(ourpid); then
			[ -n "$launcher" ] && echo "$pid" >"$owned"
			return 0
		fi
		if [ -n "$launcher" ] && ! alive "$launcher" && ! ourpid >/dev/null; then
			tail -n 30 "$log" >&2 || true
			die "dockerd exited during startup (full log: $log)"
		fi
		sleep 0.5
	done
	# Record it anyway so that `stop` can clean up what we launched.
	[ -n "$launcher" ] && pid=$(ourpid) && echo "$pid" >"$owned"
	tail -n 30 "$log" >&2 || true
	die "dockerd did not answer on $sock within 60s (full log: $log)"
}

stop() {
	need_root
	local pid i
	if ! pid=$(ourpid); then
		rm -f "$owned"
		return 0
	fi
	if [ "$(cat "$owned" 2>/dev/null)" != "$pid" ]; then
		echo "private dockerd (pid $pid) was not started by dockerd.sh; leaving it running"
		return 0
	fi
	# SIGTERM: dockerd stops its containers and its own containerd, then exits.
	kill -TERM "$pid"
	for ((i = 0; i < 40; i++)); do
		alive "$pid" || break
		sleep 0.5
	done
	if alive "$pid"; then
		echo "dockerd.sh: dockerd (pid $pid) still running after 20s; sending SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$owned"
	echo "stopped private dockerd"
}

run() {
	[ $# -gt 0 ] || die "usage: dockerd.sh run COMMAND [ARGS...]"
	local st=0
	if ! { ourpid >/dev/null && answers; }; then
		start
		# Stop it again however we leave (test failure, ^C, kill).
		trap 'stop' EXIT
		trap 'exit 130' INT
		trap 'exit 143' TERM
	fi
	DOCKER_HOST=$host "$@" || st=$?
	return "$st"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) ourpid >/dev/null && answers ;;
env) echo "export DOCKER_HOST=$host" ;;
run)
	shift
	run "$@"
	;;
*) die "usage: dockerd.sh start|stop|status|env|run COMMAND..." ;;
esac
