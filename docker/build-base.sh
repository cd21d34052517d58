#!/usr/bin/env bash
# Build a Debian bookworm + Python 3.11 base image locally, for machines that can reach a Debian
# package mirror but no image registry (air-gapped CI, a registry mirror outage).
#
#   docker/build-base.sh [TAG]      default TAG: autoe2e/base:bookworm-python3.11
#
# It makes a minimal root file system with debootstrap (--variant=minbase), adds python3, venv
# and CA certificates, and loads it with `docker import`. Needs root, debootstrap and a Docker
# daemon (DOCKER_HOST or the default socket). The mirror is DEBIAN_MIRROR, or else the first
# Debian mirror in this machine's apt sources. Prints the tag on its last line.
set -euo pipefail

tag=${1:-autoe2e/base:bookworm-python3.11}
docker_cli=${DOCKER:-docker}
suite=bookworm

die() { echo "build-base: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "debootstrap needs root; run as root or pull a Python 3.11 image instead"
command -v debootstrap >/dev/null || die "debootstrap not found; apt-get install debootstrap"

mirror=${DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
  # deb822 (.sources) and one-line (.list) formats; the first plain Debian archive wins.
  mirror=$(grep -hoE '^(URIs:|deb)[[:space:]]+[^[:space:]]+/debian/?([[:space:]]|$)' \
    /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
    2>/dev/null | awk '{print $2}' | head -n1 || true)
fi
[[ -n $mirror ]] || die "no Debian mirror found in /etc/apt sources; set DEBIAN_MIRROR=<mirror URL>"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

echo "build-base: debootstrap $suite from $mirror" >&2
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }

# Slim it the way the official slim images are: no apt lists, caches, docs or man pages.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/var/log/*.log "$rootfs"/tmp/*

tar --numeric-owner -C "$rootfs" -c . |
  "$docker_cli" import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --message "debootstrap $suite minbase + python3 (docker/build-base.sh)" \
    - "$tag" >/dev/null
"$docker_cli" run --rm "$tag" python3 -c 'import sys, venv; assert sys.version_info[:2] == (3, 11)'
echo "$tag"
