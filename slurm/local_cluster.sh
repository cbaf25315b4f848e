#!/usr/bin/env bash
# A real one-node Slurm cluster on localhost, with accounting (slurmdbd + MariaDB), for tests and CI.
#
#   bash slurm/local_cluster.sh install           # apt-get the Debian packages (root, non-interactive)
#   eval "$(bash slurm/local_cluster.sh up DIR)"  # configs + daemons in DIR; exports SLURM_CONF
#   bash slurm/local_cluster.sh status DIR        # which recorded daemons are alive
#   bash slurm/local_cluster.sh down DIR          # stop them (by recorded PID); safe to call twice
#
# Everything the cluster owns lives in DIR: configs, munge key and socket, MariaDB data, Slurm state
# and spool, logs (DIR/log) and PIDs (DIR/pids). Ports are picked free at `up`, so nothing in /etc is
# touched and no system service is started. Must run as root (munged runs as the munge user, MariaDB
# as mysql, the Slurm daemons as root). `up` writes only the export line (or, on failure, `false`)
# to stdout, so `set -e; eval "$(... up DIR)"` stops the caller when bring-up fails.
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
CLUSTER_NAME=gpvae-local
PARTITION=debug
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)  # start order; stopped in reverse
WAIT_S=${LOCAL_SLURM_WAIT_S:-60}

say() { printf 'local_cluster: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

need_root() { [ "$(id -u)" = 0 ] || die "must run as root (it starts munged, MariaDB and the Slurm daemons)"; }

# ---------------------------------------------------------------------------------------------- install
cmd_install() {
  need_root
  export DEBIAN_FRONTEND=noninteractive
  # keep package scripts from starting system-wide services (munge, mariadb, slurm*): we run our own
  local added_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  local rc=0
  {
    apt-get update -q &&
      apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${PACKAGES[@]}"
  } >&2 || rc=$?
  [ "$added_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || die "apt-get failed (exit $rc)"
  local bin
  for bin in munged mungekey mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacct sacctmgr; do
    command -v "$bin" >/dev/null || die "installed packages but '$bin' is not on PATH"
  done
  say "installed: $(dpkg-query -W -f '${Package} ${Version}, ' "${PACKAGES[@]}" | sed 's/, $//')"
}

# -------------------------------------------------------------------------------------------- helpers
pid_alive() {  # alive and not a zombie (PID 1 in a container may never reap the daemons we orphan)
  local pid=$1 state
  [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

pid_is() {  # pid_alive and it is the daemon named (guards against a reused PID)
  local pid=$1 name=$2  # /proc/PID/comm, not exe: Debian's slurmctld is /usr/sbin/slurmctld-wlm
  pid_alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]
}

# the machine's CPUs: GNU nproc reports $OMP_NUM_THREADS instead when it is set (CI sets it to 1)
cpu_count() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc; }

recorded_pid() { if [ -f "$1/pids/$2.pid" ]; then cat "$1/pids/$2.pid"; fi; }

free_ports() {  # N free TCP ports on 127.0.0.1
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

start_daemon() {  # start_daemon DIR NAME CMD...: in the background, in its own session, PID recorded
  local dir=$1 name=$2
  shift 2
  setsid "$@" </dev/null >>"$dir/log/$name.out" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/pids/$name.pid"
  say "started $name (pid $pid)"
}

wait_for() {  # wait_for DIR NAME DESCRIPTION CHECK...: until CHECK succeeds; fail if NAME died
  local dir=$1 name=$2 what=$3
  shift 3
  local pid deadline=$((SECONDS + WAIT_S))
  pid=$(recorded_pid "$dir" "$name")
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$pid"; then
      say "$name (pid $pid) exited during start-up; last lines of its logs:"
      tail -n 20 "$dir/log/$name".* >&2 2>/dev/null || true
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$name did not become ready ($what) within ${WAIT_S}s; last lines of its logs:"
      tail -n 20 "$dir/log/$name".* >&2 2>/dev/null || true
      return 1
    fi
    sleep 0.2
  done
  say "$name ready ($what) at +$((SECONDS - UP_T0))s"
}

# ------------------------------------------------------------------------------------------------- up
write_configs() {  # write_configs DIR
  local dir=$1 host cpus mem_mb
  host=$(hostname -s)
  cpus=$(cpu_count)
  mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  read -r CTLD_PORT SLURMD_PORT DBD_PORT MYSQL_PORT <<<"$(free_ports 4)"
  DB_PASS=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')

  cat >"$dir/slurm.conf" <<CONF
# generated by slurm/local_cluster.sh for a one-node test cluster; see slurm/README.md
ClusterName=$CLUSTER_NAME
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
MpiDefault=none
MailProg=/bin/true
KillWait=5
MinJobAge=30
JobRequeue=1
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$dir/munge/munge.socket
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

  (umask 077 && cat >"$dir/slurmdbd.conf" <<CONF)
# generated by slurm/local_cluster.sh; must be mode 600 and next to slurm.conf
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
PidFile=$dir/run/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
CONF
  chmod 600 "$dir/slurmdbd.conf"
}

cmd_up() {
  # on any failure, print `false` so that `set -e; eval "$(... up DIR)"` stops the caller
  trap 'rc=$?; [ "$rc" = 0 ] || echo false' EXIT
  need_root
  local dir=${1:-}
  [ -n "$dir" ] || usage
  case "$dir" in *[[:space:]\'\"]*) die "DIR must not contain spaces or quotes: '$dir'" ;; esac
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local name pid running=()
  for name in "${DAEMONS[@]}"; do
    pid=$(recorded_pid "$dir" "$name")
    if [ -n "$pid" ] && pid_is "$pid" "$name"; then running+=("$name=$pid"); fi
  done
  if [ ${#running[@]} -gt 0 ]; then
    die "a cluster is already up in $dir (${running[*]}); run 'down $dir' first"
  fi
  if [ -n "$(ls -A "$dir")" ]; then
    die "$dir is not empty (a stopped cluster?); give 'up' a new or empty folder"
  fi
  for bin in munged mariadbd slurmdbd slurmctld slurmd; do
    command -v "$bin" >/dev/null || die "'$bin' not found; run 'bash $0 install' first"
  done
  UP_T0=$SECONDS
  chmod 755 "$dir"  # munge and mysql must reach their subfolders
  mkdir -p "$dir"/{pids,run,log,state,spool,munge,mysql/data,mysql/run}
  chown -R munge:munge "$dir/munge"
  chmod 700 "$dir/munge"
  chown -R mysql:mysql "$dir/mysql"
  write_configs "$dir"
  export SLURM_CONF=$dir/slurm.conf
  # from here on, a failure stops whatever was started
  trap 'say "bring-up failed; stopping what was started"; cmd_down "$dir" || true' ERR
  set -E

  # munge: own key and socket; as the munge user (munged refuses root: "PRNG seed dir is insecure")
  local M=(setpriv --reuid=munge --regid=munge --init-groups)
  "${M[@]}" mungekey --create --keyfile="$dir/munge/munge.key" >&2
  start_daemon "$dir" munged "${M[@]}" munged --foreground --force \
    --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed"
  wait_for "$dir" munged "credential round trip" \
    bash -c "munge -n -S '$dir/munge/munge.socket' | unmunge -S '$dir/munge/munge.socket'"

  # MariaDB: private instance on a free 127.0.0.1 port; slurmdbd logs in as 'slurm' with a random password
  # a throwaway database: small, and no durability (no doublewrite, no flush per commit)
  local INNODB=(--innodb-buffer-pool-size=64M --innodb-log-file-size=16M --innodb-doublewrite=0
    --innodb-flush-log-at-trx-commit=0 --innodb-lock-wait-timeout=900)
  mariadb-install-db --no-defaults --user=mysql --datadir="$dir/mysql/data" "${INNODB[@]}" \
    --auth-root-authentication-method=socket --skip-test-db --skip-name-resolve \
    >"$dir/log/mariadb-install.log" 2>&1 ||
    { tail -n 20 "$dir/log/mariadb-install.log" >&2; false; }
  start_daemon "$dir" mariadbd mariadbd --no-defaults --user=mysql --datadir="$dir/mysql/data" \
    --socket="$dir/mysql/run/mysqld.sock" --pid-file="$dir/mysql/run/mysqld.pid" \
    --port="$MYSQL_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
    --log-error="$dir/log/mariadbd.log" "${INNODB[@]}"
  wait_for "$dir" mariadbd "ping" mariadb-admin --no-defaults --socket="$dir/mysql/run/mysqld.sock" -u root ping
  mariadb --no-defaults --socket="$dir/mysql/run/mysqld.sock" -u root -e "
    CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

  # slurmdbd, then register the cluster before slurmctld starts
  start_daemon "$dir" slurmdbd slurmdbd -D
  wait_for "$dir" slurmdbd "sacctmgr answers" sacctmgr -n show cluster
  sacctmgr -i add cluster "$CLUSTER_NAME" >&2

  start_daemon "$dir" slurmctld slurmctld -D -i
  wait_for "$dir" slurmctld "scontrol ping" bash -c "scontrol ping | grep -q UP"
  start_daemon "$dir" slurmd slurmd -D -N "$(hostname -s)"
  wait_for "$dir" slurmd "node idle" bash -c "sinfo -h -N -o %T | grep -qx idle"

  trap - ERR
  set +E
  say "up in $((SECONDS - UP_T0))s: cluster $CLUSTER_NAME, partition $PARTITION, $(cpu_count) CPUs; logs in $dir/log"
  echo "export SLURM_CONF=$dir/slurm.conf"
}

# ----------------------------------------------------------------------------------------------- down
stop_pid() {  # stop_pid NAME PID: TERM, wait, KILL
  local name=$1 pid=$2 i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    pid_alive "$pid" || { say "stopped $name (pid $pid)"; return 0; }
    sleep 0.1
  done
  say "$name (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  say "warning: $name (pid $pid) still alive after SIGKILL"
  return 1
}

cmd_down() {
  local dir=${1:-}
  [ -n "$dir" ] || usage
  if [ ! -d "$dir/pids" ]; then
    say "nothing recorded in $dir; nothing to stop"
    return 0
  fi
  dir=$(cd "$dir" && pwd)
  export SLURM_CONF=$dir/slurm.conf
  local ctld rc=0 pid name i
  # cancel jobs first so their slurmstepd processes go away with the cluster
  ctld=$(recorded_pid "$dir" slurmctld)
  if [ -n "$ctld" ] && pid_is "$ctld" slurmctld && [ -n "$(squeue -h -o %A 2>/dev/null)" ]; then
    say "cancelling jobs still in the queue"
    squeue -h -o %A | xargs -r scancel 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
      sleep 0.1
    done
    [ -z "$(squeue -h -o %A 2>/dev/null)" ] || say "warning: jobs still in the queue: $(squeue -h -o '%A %T' | tr '\n' ' ')"
  fi
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    name=${DAEMONS[$i]}
    pid=$(recorded_pid "$dir" "$name")
    [ -n "$pid" ] || continue
    if pid_is "$pid" "$name"; then
      stop_pid "$name" "$pid" || rc=1
    else
      say "$name (pid $pid) is not running"
    fi
    rm -f "$dir/pids/$name.pid"
  done
  return $rc
}

cmd_status() {
  local dir=${1:-} name pid up=0
  [ -n "$dir" ] || usage
  for name in "${DAEMONS[@]}"; do
    pid=$(recorded_pid "$dir" "$name")
    if [ -n "$pid" ] && pid_is "$pid" "$name"; then
      echo "$name: running (pid $pid)"
      up=$((up + 1))
    else
      echo "$name: not running"
    fi
  done
  [ "$up" = ${#DAEMONS[@]} ]
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up "${2:-}" ;;
  down) cmd_down "${2:-}" ;;
  status) cmd_status "${2:-}" ;;
  *) usage ;;
esac
