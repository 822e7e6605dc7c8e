#!/usr/bin/env bash
# The SLURM backend of `cargo xtask sweep`, tested for real: starts a single-node SLURM on this
# machine (munged as the munge user; slurmctld and slurmd as root, with proctrack/linuxproc and
# task/none so no cgroups are needed), submits a two-run subset of the smoke plan with
# `--backend slurm`, requeues one task while it trains (as a preemption would: SIGTERM, then the
# task starts again) and checks that it resumed from its checkpoint, then checks every run's
# results and the report. The daemons it started are stopped on any exit.
#
# Needs root and the Debian packages slurmctld, slurmd, slurm-client and munge (.ci/run installs
# them). Without them it skips with a message, and fails when CI is set.
# Usage: bash xtask/tests/slurm.sh   (NIN_BIN: the nin binary, default target/{release,debug}/nin)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

skip() {
    if [ -n "${CI:-}" ]; then
        echo "slurm test: FAILED: $1 (CI is set, so this test must run)" >&2
        exit 1
    fi
    echo "slurm test: skipped: $1" >&2
    exit 0
}

for cmd in slurmctld slurmd sbatch squeue scontrol munged munge; do
    command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$cmd" >/dev/null 2>&1 ||
        skip "$cmd is not installed (apt-get install slurmctld slurmd slurm-client munge)"
done
export PATH="$PATH:/usr/sbin"
[ "$(id -u)" = 0 ] || skip "slurmctld and slurmd must be started as root"
[ -f ../shared/data/cifar-10-binary.tar.gz ] || skip "no CIFAR-10 archive in ../shared/data"

target=${CARGO_TARGET_DIR:-$root/target}
if [ -z "${NIN_BIN:-}" ]; then
    for candidate in "$target/release/nin" "$target/debug/nin"; do
        if [ -x "$candidate" ]; then NIN_BIN=$candidate; break; fi
    done
fi
[ -n "${NIN_BIN:-}" ] && [ -x "$NIN_BIN" ] || skip "no nin binary (cargo build -p nin-cli)"
export NIN_BIN
cargo build -q -p xtask
xtask="$target/debug/xtask"

work=$(mktemp -d /tmp/nin-slurm-test.XXXXXX)
started_munged=""
cleanup() {
    status=$?
    pids=""
    for daemon in slurmd slurmctld ${started_munged:+munged}; do
        if [ -f "$work/$daemon.pid" ]; then
            pid=$(cat "$work/$daemon.pid")
            kill "$pid" 2>/dev/null && pids="$pids $pid"
        fi
    done
    # Wait (up to 10 s) until the daemons this test started have exited.
    for _ in $(seq 100); do
        alive=""
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && break
        sleep 0.1
    done
    if [ "$status" != 0 ]; then
        echo "slurm test: FAILED (exit $status); daemon logs:" >&2
        tail -n 30 "$work"/slurmctld.log "$work"/slurmd.log 2>/dev/null >&2 || true
        for f in "$work"/runs/smoke-slurm/*/stderr.log "$work"/runs/smoke-slurm/slurm/*.out; do
            [ -f "$f" ] && { echo "== $f" >&2; tail -n 20 "$f" >&2; }
        done
        echo "(files kept in $work)" >&2
    elif [ -z "${SLURM_TEST_VERBOSE:-}" ]; then
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT INT TERM

t0=$(date +%s)
# munge: reuse a running munged, else start one as the munge user.
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    [ -f /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chown munge:munge "$work"
    runuser -u munge -- munged --pid-file="$work/munged.pid" --log-file="$work/munged.log"
    started_munged=1
    for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n </dev/null | unmunge >/dev/null || { echo "munged does not answer" >&2; exit 1; }

host=$(hostname -s)
node=$(slurmd -C | head -n 1 | sed "s/^NodeName=[^ ]*/NodeName=$host/")
mkdir -p "$work/state" "$work/spool"
cat >"$work/slurm.conf" <<EOF
ClusterName=nintest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
KillWait=30
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
$node State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$work/slurm.conf"
slurmctld
slurmd
for _ in $(seq 120); do
    state=$(sinfo -h -o %T 2>/dev/null | head -n 1 || true)
    [ "$state" = idle ] && break
    sleep 0.5
done
[ "$state" = idle ] || { echo "the node did not come up (state '$state')" >&2; exit 1; }
echo "slurm test: single-node SLURM up in $(($(date +%s) - t0)) s"

runs="$work/runs"
# Submit and wait (--wait) in the background, while this script plays the preemption below.
"$xtask" sweep run xtask/tests/slurm-smoke.toml --backend slurm --runs "$runs" --wait \
    >"$work/wait.txt" 2>&1 &
waiter=$!
dir="$runs/smoke-slurm"
job=""
for _ in $(seq 300); do
    job=$(sed -n 's/.*"job_id": "\([0-9]*\)".*/\1/p' "$dir/sweep.json" 2>/dev/null | head -n 1 || true)
    [ -n "$job" ] && break
    sleep 0.1
done
[ -n "$job" ] || { echo "no job id recorded in $dir/sweep.json" >&2; cat "$work/wait.txt" >&2; exit 1; }
echo "slurm test: submitted array job $job at $(($(date +%s) - t0)) s"

# Preemption: once task 0 is training, requeue it; SLURM sends SIGTERM, nin saves a checkpoint
# and the requeued task resumes the run from it.
run0=$(sed -n 's/.*"id": "\([^"]*\)".*/\1/p' "$dir/sweep.json" | head -n 1)
# Its first checkpoint (after 2 steps of 8: checkpoint_every in the plan) says it is training.
for _ in $(seq 1200); do
    [ -f "$dir/$run0/trainer_state.json" ] && break
    sleep 0.1
done
if ! grep -q "^done:" "$dir/$run0/stderr.log"; then
    scontrol requeue "${job}_0"
    # SLURM holds a requeued job back (two minutes) before it may start again: once it is back
    # in the queue, let it start now.
    for _ in $(seq 300); do
        [ "$(squeue -h -j "${job}_0" -o %T)" = PENDING ] && break
        sleep 0.2
    done
    scontrol update JobId="${job}_0" StartTime=now
    echo "slurm test: requeued ${job}_0 while it trained ($(($(date +%s) - t0)) s)"
    requeued=1
else
    echo "slurm test: task 0 finished before it could be requeued; requeue not exercised" >&2
    [ -z "${CI:-}" ] || exit 1
    requeued=""
fi

deadline=$(($(date +%s) + 600))
while [ -n "$(squeue -h -j "$job" -o %i)" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "the SLURM job did not finish in 10 minutes" >&2; exit 1; }
    [ -z "${SLURM_TEST_VERBOSE:-}" ] || squeue -h -r -j "$job" -o "%i %T %r %S" | sed "s/^/  $(($(date +%s) - t0)) s: /"
    sleep 2
done
# `sweep run --wait` returns once the job has left the queue, 0 when every run is done.
wait_status=0
wait "$waiter" || wait_status=$?
[ "$wait_status" = 0 ] || { echo "sweep run --wait exited $wait_status" >&2; cat "$work/wait.txt" >&2; exit 1; }
grep -q "2 runs: 2 done" "$work/wait.txt" || { cat "$work/wait.txt" >&2; exit 1; }
echo "slurm test: the job left the queue at $(($(date +%s) - t0)) s"
"$xtask" sweep status smoke-slurm --runs "$runs" | tee "$work/status.txt"
grep -q "^2 runs: 2 done" "$work/status.txt" || { echo "not every run is done" >&2; exit 1; }

if [ -n "$requeued" ]; then
    grep -q '"attempts": 2' "$dir/$run0/sweep_run.json" ||
        { echo "the requeued run was not started again" >&2; cat "$dir/$run0/sweep_run.json" >&2; exit 1; }
    grep -q "^resuming" "$dir/$run0/stderr.log" ||
        { echo "the requeued run did not resume from its checkpoint" >&2; exit 1; }
    echo "slurm test: the requeued run resumed from its checkpoint"
fi

"$xtask" sweep report smoke-slurm --runs "$runs"
for id in $(sed -n 's/.*"id": "\([^"]*\)".*/\1/p' "$dir/sweep.json"); do
    grep -q "^$id,.*,done,$" "$dir/results.csv" || { echo "run $id is not done in results.csv" >&2; cat "$dir/results.csv" >&2; exit 1; }
    grep -q "\"slurm_job\": \"${job}_" "$dir/$id/sweep_run.json" || { echo "run $id was not run by SLURM" >&2; exit 1; }
done
grep -q "None." "$dir/report.md"
[ -s "$dir/charts/accuracy_vs_params.png" ]
# A second submission has nothing left to do.
"$xtask" sweep run xtask/tests/slurm-smoke.toml --backend slurm --runs "$runs" 2>&1 | tee "$work/resubmit.txt"
grep -q "nothing to submit" "$work/resubmit.txt"
echo "slurm test: ok in $(($(date +%s) - t0)) s"
