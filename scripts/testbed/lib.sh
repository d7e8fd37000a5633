# shellcheck shell=bash
# Helpers shared by scripts/testbed/ssh-hosts and scripts/testbed/slurm.
# Sourced, not run. The caller sets TB_NAME (used in log lines) before sourcing.

# Everything the testbed creates at run time lives below this directory
# (one sub-directory per script); `down` removes it again.
TB_ROOT=${AG_TESTBED_DIR:-/run/actogrid-testbed}

# Say which command failed instead of exiting silently under `set -e`.
set -E
trap 'tb_log "ERROR: \"$BASH_COMMAND\" failed (exit $?) at ${BASH_SOURCE[0]##*/}:$LINENO${FUNCNAME[0]:+ in ${FUNCNAME[0]}}"' ERR

tb_log() { printf '[%s %(%H:%M:%S)T] %s\n' "${TB_NAME:-testbed}" -1 "$*" >&2; }
tb_die() { tb_log "ERROR: $*"; exit 1; }

# Milliseconds since the epoch, without forking `date`.
tb_now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }

tb_require_root() {
    [ "$(id -u)" = 0 ] ||
        tb_die "must run as root (it installs packages, starts daemons and creates namespaces); try: sudo $0 $*"
}

# The state directory must not sit below a world-writable directory: sshd's
# StrictModes rejects keys there, munged rejects its files there.
tb_check_root_dir() {
    case $TB_ROOT in
    /*) ;;
    *) tb_die "AG_TESTBED_DIR must be an absolute path (got '$TB_ROOT')" ;;
    esac
    case $TB_ROOT/ in
    /tmp/* | /var/tmp/* | /dev/shm/*) tb_die "AG_TESTBED_DIR=$TB_ROOT is below a world-writable directory; sshd and munged refuse that" ;;
    esac
}

# Serialise commands that change the testbed (two `up`s racing each other from
# parallel test processes must not both create the same namespace). The lock
# is held on the script file itself, so nothing is left behind.
tb_lock() {
    local self=${BASH_SOURCE[1]:-$0}
    exec {TB_LOCK_FD}<"$self" || tb_die "cannot open $self for locking"
    flock -w "${AG_TESTBED_LOCK_TIMEOUT:-600}" "$TB_LOCK_FD" ||
        tb_die "another '$TB_NAME' command holds the lock on $self for more than ${AG_TESTBED_LOCK_TIMEOUT:-600}s"
}

# tb_daemon CMD...: run CMD (which starts a daemon) without the lock fd, or
# the daemon would hold the lock for as long as it lives.
tb_daemon() {
    if [ -n "${TB_LOCK_FD:-}" ]; then "$@" {TB_LOCK_FD}<&-; else "$@"; fi
}

# tb_alive PID: the process exists and is not a zombie (orphans may be reaped
# late by PID 1, and a zombie still answers `kill -0`).
tb_alive() {
    [ -n "${1:-}" ] && [ -r "/proc/$1/status" ] &&
        ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# tb_wait_gone SECONDS PID...: poll until none of the PIDs is alive.
tb_wait_gone() {
    local deadline=$(($(tb_now_ms) + $1 * 1000)) p any
    shift
    while :; do
        any=0
        for p in "$@"; do tb_alive "$p" && any=1 && break; done
        [ $any = 0 ] && return 0
        [ "$(tb_now_ms)" -ge "$deadline" ] && return 1
        sleep 0.05
    done
}

# tb_stop_pids WHAT PID...: SIGTERM (and SIGCONT, in case a fault left them
# stopped), then SIGKILL whatever is still alive after 3 s.
tb_stop_pids() {
    local what=$1 p left=()
    shift
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    kill -CONT "$@" 2>/dev/null || true
    tb_wait_gone 3 "$@" && return 0
    for p in "$@"; do tb_alive "$p" && left+=("$p"); done
    tb_log "$what: SIGKILL for pids ${left[*]} (ignored SIGTERM for 3 s)"
    kill -KILL "${left[@]}" 2>/dev/null || true
    tb_wait_gone 5 "${left[@]}" || tb_die "$what: pids ${left[*]} survive SIGKILL"
}

# tb_apt_install PKG...: install Debian packages non-interactively, without
# letting their maintainer scripts start the daemons (the testbed starts its
# own, with its own configuration).
tb_apt_install() {
    [ "${AG_TESTBED_NO_INSTALL:-0}" = 1 ] && tb_die "packages missing: $* (not installing: AG_TESTBED_NO_INSTALL=1)"
    command -v apt-get >/dev/null || tb_die "packages missing: $* (and no apt-get to install them)"
    local t0 out rc=0 policy=/usr/sbin/policy-rc.d own_policy=0
    local apt=(apt-get -q -y -o DPkg::Lock::Timeout=300
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    t0=$(tb_now_ms)
    tb_log "installing $* with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    out=$(mktemp)
    if [ ! -e $policy ]; then
        printf '#!/bin/sh\n# temporary, from actogrid scripts/testbed: do not start daemons\nexit 101\n' >$policy
        chmod 755 $policy
        own_policy=1
        trap 'rm -f '"$policy"' '"$out" EXIT
    fi
    # Empty or stale package lists (a 404 on download): update once and retry.
    if ! apt-cache show --no-all-versions "$@" >/dev/null 2>&1; then
        "${apt[@]}" update >>"$out" 2>&1 || rc=$?
    fi
    if [ $rc = 0 ] && ! "${apt[@]}" install --no-install-recommends "$@" >>"$out" 2>&1; then
        rc=0
        { "${apt[@]}" update && "${apt[@]}" install --no-install-recommends "$@"; } >>"$out" 2>&1 || rc=$?
    fi
    if [ $own_policy = 1 ]; then
        rm -f $policy
        trap - EXIT
    fi
    if [ $rc != 0 ]; then
        tail -n 25 "$out" >&2
        rm -f "$out"
        tb_die "apt-get install $* failed (exit $rc; output above)"
    fi
    rm -f "$out"
    tb_log "installed $* in $(($(tb_now_ms) - t0)) ms"
}
