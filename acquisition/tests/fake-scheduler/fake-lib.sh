# Shared code of the fake scheduler commands (sourced, not run).
#
# State lives in $FAKE_SCHED_DIR/jobs/ID/: script, state (Q, R, C or X),
# exit (the script's exit code), pid (the runner, leader of its own process
# group), cancelled. $FAKE_SCHED_MODE selects Grid Engine for qsub, qstat
# and qdel (default: PBS). $FAKE_SCHED_QUEUE_DELAY is how long a job stays
# queued (default 0.3 s).

set -u
: "${FAKE_SCHED_DIR:?FAKE_SCHED_DIR must name the fake scheduler's state directory}"
FAKE_BIN=$(cd "$(dirname "$0")" && pwd)

fake_job_dir() {
    printf '%s/jobs/%s' "$FAKE_SCHED_DIR" "$1"
}

# The values of directive OPTION in script FILE for directive PREFIX,
# unquoted, one per line.
fake_directive() {
    sed -n "s/^$1 $2 //p" "$3" | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'\$/\1/"
}

# Writes $2 into file $1 at once (readers never see it empty).
fake_write() {
    printf '%s\n' "$2" > "$1.tmp.$$" && mv -f "$1.tmp.$$" "$1"
}

# Submits script $2 (kind $1: pbs, sge, lsf, oar); prints the id.
fake_submit() {
    kind=$1
    script=$2
    mkdir -p "$FAKE_SCHED_DIR/jobs"
    n=$(cat "$FAKE_SCHED_DIR/counter" 2>/dev/null || echo 100)
    n=$((n + 1))
    echo "$n" > "$FAKE_SCHED_DIR/counter"
    jd=$(fake_job_dir "$n")
    mkdir -p "$jd"
    cp "$script" "$jd/script"
    fake_write "$jd/state" Q
    echo "$PWD" > "$jd/cwd"
    echo "$kind" > "$jd/kind"
    setsid sh "$FAKE_BIN/fake-run" "$n" < /dev/null > /dev/null 2>&1 &
    echo "$n"
}

# Cancels job $1: kills its process group, marks it cancelled.
fake_cancel() {
    jd=$(fake_job_dir "$1")
    [ -d "$jd" ] || return 1
    touch "$jd/cancelled"
    state=$(cat "$jd/state")
    case $state in
        C|X) return 0 ;;
    esac
    if [ -f "$jd/pid" ]; then
        kill -TERM "-$(cat "$jd/pid")" 2>/dev/null
        sleep 0.1
        kill -KILL "-$(cat "$jd/pid")" 2>/dev/null
    fi
    fake_write "$jd/state" X
    return 0
}

# Prints "STATE EXIT" of job $1, or nothing when unknown.
fake_state() {
    jd=$(fake_job_dir "$1")
    [ -d "$jd" ] || return 1
    printf '%s %s\n' "$(cat "$jd/state")" "$(cat "$jd/exit" 2>/dev/null || echo -)"
}
