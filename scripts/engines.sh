#!/usr/bin/env bash
# Install and start the container engines bty-lab's integration tests drive:
# dockerd (Debian docker.io) on /var/run/docker.sock and Podman's
# Docker-compatible API on /run/podman/podman.sock, plus docker-compose
# (compose validation) and docker-registry (the pull-path test).
#
# These machines run no systemd (PID 1 is not systemd), so the daemons are
# started in the background here and their logs go to /tmp/bty-engines/.
# Idempotent: a daemon whose socket already answers is left alone.
#
# Usage: scripts/engines.sh [docker] [podman]   (default: both)
set -euo pipefail

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(docker podman)
logdir=/tmp/bty-engines
mkdir -p "$logdir"

need_pkgs=()
for w in "${want[@]}"; do
  case "$w" in
    docker) need_pkgs+=(docker.io) ;;
    # catatonit: the pause binary of `podman kube play`'s pods.
    podman) need_pkgs+=(podman runc catatonit) ;;
    *) echo "engines.sh: unknown engine '$w' (docker|podman)" >&2; exit 2 ;;
  esac
done
need_pkgs+=(docker-compose docker-registry)

missing=()
for p in "${need_pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >"$logdir/apt.log" 2>&1 \
    || { echo "engines.sh: apt-get install ${missing[*]} failed:" >&2; tail -20 "$logdir/apt.log" >&2; exit 1; }
fi
# docker-registry's package starts nothing here (no systemd); tests start
# their own instance on 127.0.0.1 with their own config.

wait_sock() { # path seconds
  local i
  for i in $(seq 1 "$2"); do
    [ -S "$1" ] && curl -fsS --unix-socket "$1" http://x/_ping >/dev/null 2>&1 && return 0
    sleep 1
  done
  return 1
}

for w in "${want[@]}"; do
  case "$w" in
  docker)
    if ! wait_sock /var/run/docker.sock 1; then
      # containerd comes with docker.io; dockerd starts its own if none runs.
      nohup dockerd --host unix:///var/run/docker.sock >"$logdir/dockerd.log" 2>&1 &
      echo $! >"$logdir/dockerd.pid"
      wait_sock /var/run/docker.sock 60 \
        || { echo "engines.sh: dockerd did not come up:" >&2; tail -30 "$logdir/dockerd.log" >&2; exit 1; }
    fi
    echo "docker: /var/run/docker.sock ready"
    ;;
  podman)
    # crun fails on these machines (rlimits, hybrid cgroups): see
    # shared/design/TESTING.md.
    if ! grep -q 'runtime = "runc"' /etc/containers/containers.conf 2>/dev/null; then
      mkdir -p /etc/containers
      cat >/etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
CONF
    fi
    if ! wait_sock /run/podman/podman.sock 1; then
      mkdir -p /run/podman
      nohup podman system service --time=0 unix:///run/podman/podman.sock \
        >"$logdir/podman.log" 2>&1 &
      echo $! >"$logdir/podman.pid"
      wait_sock /run/podman/podman.sock 60 \
        || { echo "engines.sh: podman system service did not come up:" >&2; tail -30 "$logdir/podman.log" >&2; exit 1; }
    fi
    echo "podman: /run/podman/podman.sock ready"
    ;;
  esac
done
