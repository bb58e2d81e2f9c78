#!/usr/bin/env bash
# A local STAND-IN for docker.io/library/python:3.11.14-slim-bookworm, the base every Dockerfile names, for
# machines that cannot reach Docker Hub (the CI machines). Debian bookworm's own python3.11 (3.11.2, in
# /usr/bin) on a debootstrap minbase root, imported under the real image's name so the Dockerfiles build
# unchanged. A build anywhere with Docker Hub pulls the real image instead; nothing here is pushed.
#
# What the Dockerfiles need of it: `python` on PATH with venv and pip, groupadd/useradd, sh/find/grep for
# the probes, CA certificates. The root file system is cached as a tarball under .containers/ (gitignored), so
# a machine that has run this once imports it in seconds instead of bootstrapping again.
set -euo pipefail

IMAGE=docker.io/library/python:3.11.14-slim-bookworm
ROOT_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${ROOT_DIR}/.containers"
# Bumped whenever PACKAGES changes, so a machine that built an older stand-in builds this one.
STANDIN=2
TARBALL="${CACHE}/python-3.11-bookworm-standin-${STANDIN}.tar"
# The archive apt uses on this machine: the first URIs of its Debian sources, else deb.debian.org.
apt_mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
MIRROR="${DEBIAN_MIRROR:-${apt_mirror:-http://deb.debian.org/debian}}"
# libpython3.11-dev: the real image carries Python's headers, which a wheel built from source needs (the worker's
# build stage compiles audio-separator's diffq with gcc).
PACKAGES=python3.11,python3.11-venv,libpython3.11-dev,python3-pip,python-is-python3,passwd,ca-certificates,netbase,tzdata

if podman image exists "${IMAGE}" \
    && podman image inspect --format '{{.Comment}}' "${IMAGE}" | grep -q "stand-in ${STANDIN} "; then
    echo "base image ${IMAGE} is present"
    exit 0
fi

if [ ! -s "${TARBALL}" ]; then
    mkdir -p "${CACHE}"
    rootfs="$(mktemp -d "${CACHE}/rootfs.XXXXXX")"
    trap 'rm -rf "${rootfs}"' EXIT
    debootstrap --variant=minbase --include="${PACKAGES}" bookworm "${rootfs}" "${MIRROR}"
    # What the slim image leaves out too: package lists, apt and dpkg caches, docs.
    chroot "${rootfs}" apt-get clean
    rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/usr/share/doc/* "${rootfs}"/usr/share/man/* \
        "${rootfs}"/var/cache/debconf/*-old "${rootfs}"/var/log/*.log
    tar --numeric-owner -C "${rootfs}" -cf "${TARBALL}.partial" .
    mv "${TARBALL}.partial" "${TARBALL}"
fi

# The real image's environment, as far as the Dockerfiles rely on it.
podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "stand-in ${STANDIN} for python:3.11.14-slim-bookworm: Debian bookworm python3.11 (tests/containers/base-image.sh)" \
    "${TARBALL}" "${IMAGE}"
