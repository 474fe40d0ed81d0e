#!/usr/bin/env bash
# Stop the single-node CI SLURM cluster started by start_cluster.sh:
# cancels all jobs, then stops slurmd, slurmctld and munged by PID
# (no systemctl). Safe to run when nothing is running.
set -uo pipefail

RUN_DIR="${SLURM_CI_RUN_DIR:-/run/slurm-ci}"
MUNGE_PID=/run/munge/munged.pid
log() { echo "[stop_cluster] $*"; }

if [ "$(id -u)" -ne 0 ]; then echo "[stop_cluster] ERROR: must run as root" >&2; exit 1; fi

stop_pidfile() { # name pidfile
    local name=$1 pidfile=$2 pid
    if [ -s "$pidfile" ] && pid=$(cat "$pidfile") && kill -0 "$pid" 2>/dev/null; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name did not exit after 15s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
    else
        log "$name not running"
    fi
    rm -f "$pidfile" "${pidfile%.pid}.conf.sha256"
}

# cancel jobs while the controller is still up, give slurmd time to kill them
if command -v scontrol >/dev/null && scontrol ping 2>/dev/null | grep -q "is UP"; then
    JOBS=$(squeue -h -o '%i' 2>/dev/null | tr '\n' ' ')
    if [ -n "${JOBS// /}" ]; then
        log "cancelling jobs: $JOBS"
        scancel $JOBS 2>/dev/null || true
        for _ in $(seq 1 30); do
            [ -z "$(squeue -h -t RUNNING,COMPLETING,CONFIGURING -o '%i' 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
fi

stop_pidfile slurmd "$RUN_DIR/slurmd.pid"
stop_pidfile slurmctld "$RUN_DIR/slurmctld.pid"
stop_pidfile munged "$MUNGE_PID"

# A stopped cluster should say so at once: the SLURM executor plugin runs
# `scontrol show config` at every snakemake start, and against a controller
# that is gone that waits 9 s (10 s MessageTimeout) -- for every later test's
# snakemake. start_cluster.sh rewrites slurm.conf, which drops this line again.
CONF=/etc/slurm/slurm.conf
if [ -f "$CONF" ] && grep -q "^ClusterName=unseen-ci" "$CONF" && ! grep -q "^MessageTimeout=" "$CONF"; then
    echo "MessageTimeout=1  # stopped by stop_cluster.sh" >>"$CONF"
fi
log "done"
