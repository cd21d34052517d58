#!/usr/bin/env bash
# Start or stop a private Docker daemon under a temp dir (CI, or a machine where none runs).
#
#   eval "$(.ci/docker-daemon.sh start DIR)"   starts dockerd, prints `export DOCKER_HOST=...`
#   .ci/docker-daemon.sh stop DIR              stops it by its pid and removes DIR
#
# Needs root and Debian's docker.io (dockerd, containerd, runc; its 20.10 client has BuildKit
# built in, which the Dockerfile's secret and cache mounts need).
set -euo pipefail
action=${1:?usage: docker-daemon.sh start|stop DIR}
dir=${2:?usage: docker-daemon.sh start|stop DIR}

case $action in
  start)
    mkdir -p "$dir"
    dockerd --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/dockerd.pid" \
      -H "unix://$dir/docker.sock" >"$dir/dockerd.log" 2>&1 &
    for _ in $(seq 1 60); do
      if DOCKER_HOST="unix://$dir/docker.sock" docker info >/dev/null 2>&1; then
        echo "export DOCKER_HOST=unix://$dir/docker.sock"
        exit 0
      fi
      sleep 1
    done
    tail -n 30 "$dir/dockerd.log" >&2
    echo "docker-daemon: dockerd did not come up in 60 s (log above)" >&2
    exit 1
    ;;
  stop)
    if [[ -f $dir/dockerd.pid ]]; then
      pid=$(cat "$dir/dockerd.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    # dockerd leaves mounts behind (e.g. exec/netns/default): unmount them, deepest first,
    # before removing the folder. Never fail: this runs from CI's exit trap.
    if command -v findmnt >/dev/null; then
      findmnt -rn -o TARGET | awk -v d="$dir" 'index($0, d "/") == 1' | sort -r |
        while read -r target; do umount -l "$target" 2>/dev/null || true; done
    fi
    rm -rf "$dir" 2>/dev/null || echo "docker-daemon: could not remove all of $dir" >&2
    ;;
  *)
    echo "usage: docker-daemon.sh start|stop DIR" >&2
    exit 2
    ;;
esac
