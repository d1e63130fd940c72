#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the `slurm` tests.
#
# Meant to be SOURCED by .ci/run (which runs under `set -euo pipefail`):
#     . .ci/slurm-up.sh          # installs, configures and starts munged/slurmctld/slurmd
#     trap slurm_down EXIT       # stops what this script started, by pid
# It exports SLURM_CONF and GRU_SWEEP_SLURM_PARTITION for the tests (and puts /usr/sbin, where
# the daemons live, on PATH). Running it a second time restarts the
# daemons on a fresh config. Executed instead of sourced: `.ci/slurm-up.sh` starts the cluster
# and leaves it running; `.ci/slurm-up.sh down` stops it.
#
# Needs root on Debian 12 (apt-get, munge key, daemons running as root). Everything it writes
# lives under $GRU_SWEEP_SLURM_DIR (default /var/tmp/gru_sweep-slurm), except the munge key
# (/etc/munge/munge.key, created only if missing) and /etc/slurm/slurm.conf, which is written
# only if absent or written by this script earlier (so plain `sinfo` works in any shell).

GRU_SWEEP_SLURM_DIR=${GRU_SWEEP_SLURM_DIR:-/var/tmp/gru_sweep-slurm}
GRU_SWEEP_SLURM_PARTITION=${GRU_SWEEP_SLURM_PARTITION:-debug}
_SLURM_MARK="# written by gru_sweep .ci/slurm-up.sh"
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH=$PATH:/usr/sbin ;; esac

_slurm_log() { echo "slurm-up: $*" >&2; }

_slurm_fail() {
    _slurm_log "ERROR: $*"
    return 1
}

# Stop one daemon by the pid in its pid file (TERM, bounded wait, then KILL).
_slurm_stop_pidfile() {
    local pidfile=$1 name=$2 pid i
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null && grep -q "$name" "/proc/$pid/comm" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pidfile"
    return 0
}

slurm_down() {
    local dir=${GRU_SWEEP_SLURM_DIR:-/var/tmp/gru_sweep-slurm}
    _slurm_stop_pidfile "$dir/run/slurmd.pid" slurmd
    _slurm_stop_pidfile "$dir/run/slurmctld.pid" slurmctld
    # munged only if this script started it (a system munged is left alone).
    if [ -e "$dir/run/munged.ours" ]; then
        _slurm_stop_pidfile /run/munge/munged.pid munged
        rm -f "$dir/run/munged.ours"
    fi
    return 0
}

_slurm_install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || _slurm_fail "installing slurm-wlm and munge needs root" || return 1
    command -v apt-get >/dev/null || _slurm_fail "apt-get not found (Debian/Ubuntu expected)" || return 1
    _slurm_log "installing slurm-wlm and munge"
    # No service starts during the install: this script starts the daemons itself, on its own
    # config (a systemd-started slurmctld would hold the ports).
    local own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || rc=$?
    if [ "$rc" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            slurm-wlm munge >/dev/null || rc=$?
    fi
    [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || _slurm_fail "apt-get install slurm-wlm munge failed (exit $rc)" || return 1
}

_slurm_start_munge() {
    local dir=$1 i
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0  # a munged is already serving (ours from an earlier run, or the system's)
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        _slurm_log "creating /etc/munge/munge.key"
        install -d -o munge -g munge -m 0700 /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged || _slurm_fail "munged did not start (see /var/log/munge/munged.log)" || return 1
    touch "$dir/run/munged.ours"
    for i in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    _slurm_fail "munged started but munge -n | unmunge fails (see /var/log/munge/munged.log)"
}

_slurm_write_conf() {
    local dir=$1 host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    # RealMemory must not exceed what slurmd detects, or the node is drained.
    mem=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    cat > "$dir/slurm.conf" <<EOF
$_SLURM_MARK
ClusterName=gru_sweep_ci
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobRequeue=1
ReturnToService=2
KillWait=10
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$GRU_SWEEP_SLURM_PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF=$dir/slurm.conf
    if [ ! -e /etc/slurm/slurm.conf ] || grep -qF "$_SLURM_MARK" /etc/slurm/slurm.conf; then
        install -d /etc/slurm
        cp "$dir/slurm.conf" /etc/slurm/slurm.conf
    fi
}

_slurm_up() {
    local dir=$GRU_SWEEP_SLURM_DIR t0 i state
    t0=$(date +%s)
    [ "$(id -u)" = 0 ] || _slurm_fail "needs root (SlurmUser=root, munge key)" || return 1
    _slurm_install || return 1
    slurm_down  # a second run starts over on a fresh config
    mkdir -p "$dir/state" "$dir/spool" "$dir/run" "$dir/log"
    _slurm_start_munge "$dir" || return 1
    _slurm_write_conf "$dir"
    # -c: forget jobs of an earlier run; the tests want an empty queue.
    slurmctld -c -f "$SLURM_CONF" || _slurm_fail "slurmctld did not start (see $dir/log/slurmctld.log)" || return 1
    slurmd -c -f "$SLURM_CONF" || _slurm_fail "slurmd did not start (see $dir/log/slurmd.log)" || return 1
    state=
    for i in $(seq 120); do
        state=$(sinfo -h -N -p "$GRU_SWEEP_SLURM_PARTITION" -o '%T' 2>/dev/null | head -n1) || true
        [ "$state" = idle ] && break
        sleep 0.5
    done
    if [ "$state" != idle ]; then
        _slurm_log "node state after 60 s: '${state:-no answer}'"
        tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
        slurm_down
        _slurm_fail "the SLURM node did not become idle within 60 s"
        return 1
    fi
    export GRU_SWEEP_SLURM_PARTITION
    _slurm_log "cluster up in $(( $(date +%s) - t0 )) s: partition $GRU_SWEEP_SLURM_PARTITION," \
        "node $(hostname -s), SLURM_CONF=$SLURM_CONF"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    # Executed, not sourced.
    set -euo pipefail
    case "${1:-up}" in
        up) _slurm_up ;;
        down) slurm_down ;;
        *) echo "usage: $0 [up|down]" >&2; exit 2 ;;
    esac
else
    _slurm_up
fi
