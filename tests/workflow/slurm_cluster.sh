#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on this machine, for tests/workflow/test_slurm.py.
#
#   tests/workflow/slurm_cluster.sh start   # install (apt) if needed, start munged+slurmctld+slurmd
#   tests/workflow/slurm_cluster.sh stop    # stop exactly the daemons `start` started
#   tests/workflow/slurm_cluster.sh status  # exit 0 when our cluster is up and the node is idle
#
# Everything lives under $STREAMVC_SLURM_DIR (default /tmp/streamvc-slurm): slurm.conf, the
# munge key and socket, spool/state dirs, logs and the PID file. The daemons listen on their
# own ports ($STREAMVC_SLURM_PORT and the next one; default 16817/16818) and use their own
# munge socket, so a slurm or munge already on the machine is neither used nor touched.
# Clients must be pointed at the config: `start` ends with two lines, `SLURM_BIN=<dir>` (client
# wrappers that set SLURM_CONF; put it first on PATH) and `SLURM_CONF=<path>`.
#
# Exit codes of `start` (the reason is one line on stderr, prefixed "slurm_cluster.sh: "):
#   0 up (or already up)        10 not root            11 installing slurm-wlm/munge failed
#   12 munged did not start     13 slurmctld did not start   14 slurmd did not start
#   15 the node did not become idle                          16 a port is taken by another process
#   2 usage
set -uo pipefail

DIR=${STREAMVC_SLURM_DIR:-/tmp/streamvc-slurm}
PORT=${STREAMVC_SLURM_PORT:-16817}
CONF=$DIR/etc/slurm.conf
PIDS=$DIR/daemons.pid
SOCKET=$DIR/munge/munge.socket
NODE=$(hostname -s)
export SLURM_CONF=$CONF

STARTING=0
die() { # code, reason; a failed start stops whatever it had started
    echo "slurm_cluster.sh: $2" >&2
    if [ "$STARTING" = 1 ]; then
        stop_daemons slurmd slurmctld munged
        rm -f "$PIDS"
    fi
    exit "$1"
}

log_tail() { # the last meaningful line of a log, for a one-line reason
    [ -f "$1" ] && grep -v '^\s*$' "$1" | tail -n 1 | tr -d '\r' | cut -c1-300
}

# --- PID bookkeeping: only processes we started, verified by name before any signal ---------
pid_of() { # daemon name -> recorded pid, if that pid is still that daemon
    local name=$1 pid comm
    [ -f "$PIDS" ] || return 1
    pid=$(awk -v n="$name" '$1 == n {print $2}' "$PIDS" | tail -n 1)
    [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    case "$comm" in "$name"*) echo "$pid" ;; *) return 1 ;; esac
}

record() { echo "$1 $2" >>"$PIDS"; }

alive() { [ -n "$(pid_of "$1")" ]; }

spawn() { # name logfile command... ; runs it in its own session, detached from our stdio
    local name=$1 logfile=$2
    shift 2
    setsid "$@" </dev/null >>"$logfile" 2>&1 &
    local pid=$!
    record "$name" "$pid"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1; }

is_up() {
    alive munged && alive slurmctld && alive slurmd || return 1
    case "$(node_state)" in idle | mixed | allocated) return 0 ;; esac
    return 1
}

# --- install ----------------------------------------------------------------------------------
install_slurm() {
    local missing=0 tool
    for tool in munged mungekey slurmctld slurmd sinfo sbatch squeue srun scontrol scancel; do
        command -v "$tool" >/dev/null 2>&1 || missing=1
    done
    [ "$missing" = 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die 11 "slurm-wlm/munge are missing and there is no apt-get to install them"
    mkdir -p "$DIR"
    local apt_log=$DIR/apt.log
    export DEBIAN_FRONTEND=noninteractive
    local opts=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    # Package lists may be missing or stale on a fresh machine: update first (a failing extra
    # source need not stop the install), then install.
    { apt-get update -q || true; apt-get install "${opts[@]}" slurm-wlm munge; } >"$apt_log" 2>&1 ||
        die 11 "apt-get install slurm-wlm munge failed ($(log_tail "$apt_log"); full log: $apt_log)"
}

# --- configuration ----------------------------------------------------------------------------
write_config() {
    local cpus mem_kb mem_mb margin
    cpus=$(nproc)
    mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    mem_mb=$((mem_kb / 1024))
    margin=$((mem_mb / 20 > 512 ? mem_mb / 20 : 512)) # 5%, at least 512 MB, for the OS and daemons
    mkdir -p "$DIR"/{etc,state,spool,log,munge}
    chmod 0755 "$DIR" "$DIR"/etc "$DIR"/log
    chmod 0700 "$DIR"/munge
    : >"$DIR/etc/plugstack.conf"
    cat >"$CONF" <<EOF
# Written by tests/workflow/slurm_cluster.sh; a single-node test cluster, regenerated on start.
ClusterName=streamvc-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pidfile
SlurmdPidFile=$DIR/slurmd.pidfile
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
PlugStackConfig=$DIR/etc/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
SwitchType=switch/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
DisableRootJobs=NO
# squeue is the status command (no accounting database): keep finished jobs visible long enough.
MinJobAge=600
InactiveLimit=0
KillWait=5
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
TmpFS=/tmp
MailProg=/bin/true
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$((mem_mb - margin)) State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

# Client wrappers that carry SLURM_CONF themselves. snakemake's slurm-jobstep executor strips
# every SLURM_* variable (SLURM_CONF included) before its nested `srun`, so inside a job only
# the default /etc/slurm/slurm.conf would be found; rather than write that system file, the
# clients on $DIR/bin (put it first on PATH) point at our config.
write_wrappers() {
    local tool real dir path=""
    local IFS=:
    for dir in $PATH; do [ "$dir" = "$DIR/bin" ] || path=${path:+$path:}$dir; done
    unset IFS
    mkdir -p "$DIR/bin"
    for tool in sbatch srun squeue scancel sinfo scontrol salloc sacct; do
        real=$(PATH=$path command -v "$tool") || continue
        printf '#!/bin/sh\nSLURM_CONF=%q exec %q "$@"\n' "$CONF" "$real" >"$DIR/bin/$tool.tmp"
        chmod 0755 "$DIR/bin/$tool.tmp"
        mv -f "$DIR/bin/$tool.tmp" "$DIR/bin/$tool"
    done
}

# --- daemons ----------------------------------------------------------------------------------
wait_for() { # seconds, daemon name, test command...
    local deadline=$((SECONDS + $1)) name=$2
    shift 2
    while [ $SECONDS -lt $deadline ]; do
        "$@" && return 0
        alive "$name" || return 1
        sleep 0.2
    done
    return 1
}

munge_ok() { munge -S "$SOCKET" -n 2>/dev/null | unmunge -S "$SOCKET" >/dev/null 2>&1; }

start_munged() {
    alive munged && munge_ok && return 0
    local key=$DIR/munge/munge.key
    if [ ! -s "$key" ]; then
        mungekey --create --keyfile="$key" >/dev/null 2>&1 ||
            dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
    fi
    chmod 0600 "$key"
    rm -f "$SOCKET" "$SOCKET.lock"
    spawn munged "$DIR/log/munged.out" munged --foreground --force --socket="$SOCKET" --key-file="$key" \
        --log-file="$DIR/log/munged.log" --pid-file="$DIR/munge/munged.pid" --seed-file="$DIR/munge/munged.seed"
    wait_for 20 munged munge_ok ||
        die 12 "munged did not start: $(log_tail "$DIR/log/munged.log" || log_tail "$DIR/log/munged.out")"
}

ctld_ok() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

start_slurmctld() {
    alive slurmctld && ctld_ok && return 0
    # -c: a fresh controller state every start (no jobs or node states left from an earlier run).
    spawn slurmctld "$DIR/log/slurmctld.out" slurmctld -D -c -f "$CONF"
    wait_for 30 slurmctld ctld_ok ||
        die 13 "slurmctld did not start: $(log_tail "$DIR/log/slurmctld.log" || log_tail "$DIR/log/slurmctld.out")"
}

start_slurmd() {
    if ! alive slurmd; then
        spawn slurmd "$DIR/log/slurmd.out" slurmd -D -f "$CONF" -N "$NODE"
    fi
    local deadline=$((SECONDS + 60)) state
    while [ $SECONDS -lt $deadline ]; do
        state=$(node_state)
        case "$state" in idle | mixed | allocated) return 0 ;; esac
        alive slurmd || die 14 "slurmd did not start: $(log_tail "$DIR/log/slurmd.log" || log_tail "$DIR/log/slurmd.out")"
        sleep 0.5
    done
    die 15 "node $NODE is '${state:-unknown}', not idle, 60 s after slurmd started: $(sinfo -h -N -o '%T %E' 2>&1 | head -n 1)"
}

stop_daemons() { # TERM all of ours at once (each takes ~2 s to exit), KILL what is left after 10 s
    local name pid i left
    for name in "$@"; do
        pid=$(pid_of "$name") && kill -TERM "$pid" 2>/dev/null
    done
    for i in $(seq 100); do
        left=""
        for name in "$@"; do alive "$name" && left="$left $name"; done
        [ -z "$left" ] && return 0
        sleep 0.1
    done
    for name in $left; do # re-checked by name: never a recycled PID
        pid=$(pid_of "$name") && kill -KILL "$pid" 2>/dev/null
    done
}

cmd_start() {
    [ "$(id -u)" = 0 ] || die 10 "needs root (installs packages and runs slurmd/slurmctld/munged as root); running as $(id -un)"
    install_slurm
    if [ -f "$PIDS" ] && is_up; then
        write_wrappers
        echo "already running (config $CONF)"
        echo "SLURM_BIN=$DIR/bin"
        echo "SLURM_CONF=$CONF"
        return 0
    fi
    # Anything half up from an earlier start is ours: stop it and start clean.
    [ -f "$PIDS" ] && cmd_stop >/dev/null
    local port
    for port in "$PORT" $((PORT + 1)); do
        port_busy "$port" && die 16 "port $port (SlurmctldPort=$PORT, SlurmdPort=$((PORT + 1))) is taken by another process; set STREAMVC_SLURM_PORT to a free pair"
    done
    mkdir -p "$DIR"
    : >"$PIDS"
    STARTING=1
    write_config
    write_wrappers
    local t0=$SECONDS
    start_munged
    start_slurmctld
    start_slurmd
    STARTING=0
    echo "started munged, slurmctld, slurmd in $((SECONDS - t0)) s; node $NODE idle (pids: $(tr '\n' ' ' <"$PIDS"))"
    echo "SLURM_BIN=$DIR/bin"
    echo "SLURM_CONF=$CONF"
}

cmd_stop() {
    if [ ! -f "$PIDS" ]; then
        echo "nothing to stop (no $PIDS)"
        return 0
    fi
    # Cancel our cluster's jobs first so their slurmstepd processes exit with them.
    if alive slurmctld; then
        local jobs
        jobs=$(squeue -h -o '%i' 2>/dev/null | tr '\n' ' ')
        [ -n "${jobs// /}" ] && scancel $jobs 2>/dev/null && sleep 1
    fi
    stop_daemons slurmd slurmctld munged
    rm -f "$PIDS"
    echo "stopped"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) if [ -f "$PIDS" ] && is_up; then echo "up: SLURM_CONF=$CONF"; else echo "down"; exit 1; fi ;;
*) die 2 "usage: $0 start|stop|status" ;;
esac
