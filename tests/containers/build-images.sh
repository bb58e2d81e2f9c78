#!/usr/bin/env bash
# Builds the three images with podman from the repo root, as docs/deployment.md ("The images") says, on a
# machine without Docker Hub: the base image is the local stand-in (base-image.sh), and the worker's PyTorch
# is the CPU wheel `make install` uses, served to the build from a folder rather than from PyTorch's index.
# Pip inside the builds reaches PyPI through the host's network (--network host); the host's own pip
# settings (local mirrors, wheel folders) are not visible inside a build, on purpose: the images install what
# any machine with PyPI would. The host's CA bundle is lent to the builds (a mount, never part of an image):
# machines whose egress re-signs TLS, as the CI machines' does, trust that proxy only through it.
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${ROOT_DIR}/.containers"
TAG="${MSAAS_TAG:-0.1.0}"
PYTHON="${PYTHON:-${ROOT_DIR}/.venv/bin/python}"
cd "${ROOT_DIR}"

bash tests/containers/base-image.sh

# A one-package index holding the CPU torch wheel, for the worker's TORCH_INDEX_URL build argument. The host's
# pip finds the wheel where `make install` finds it (its index, or a local wheel folder); a CUDA build
# (no +cpu in its name) is refused rather than baked in with gigabytes of CUDA libraries.
torch_pin="$(grep -E '^torch==' requirements/worker.txt)"
torch_index="${CACHE}/torch-index"
if ! compgen -G "${torch_index}/torch/torch-*+cpu-*.whl" >/dev/null; then
    rm -rf "${torch_index}" && mkdir -p "${torch_index}/torch"
    "${PYTHON}" -m pip download --quiet --no-deps --only-binary=:all: -d "${torch_index}/torch" "${torch_pin}"
fi
wheel="$(basename "$(compgen -G "${torch_index}/torch/torch-*.whl" | head -n 1)")"
case "${wheel}" in
    *+cpu-*) ;;
    *) echo "found ${wheel}, not a CPU build of ${torch_pin}: refusing to put CUDA into the image" >&2; exit 1 ;;
esac
printf '<!DOCTYPE html><html><body><a href="%s">%s</a></body></html>\n' "${wheel}" "${wheel}" \
    >"${torch_index}/torch/index.html"
# torchvision (audio-separator's, for the RoFormer engine) from the same index, the version constraints.txt pins:
# a build for this torch, which the worker's Dockerfile installs beside it with --no-deps.
vision_pin="$(grep -E '^torchvision==' constraints.txt)"
if ! compgen -G "${torch_index}/torchvision/torchvision-${vision_pin#torchvision==}-*.whl" >/dev/null; then
    rm -rf "${torch_index}/torchvision" && mkdir -p "${torch_index}/torchvision"
    "${PYTHON}" -m pip download --quiet --no-deps --only-binary=:all: -d "${torch_index}/torchvision" "${vision_pin}"
fi
vision="$(basename "$(compgen -G "${torch_index}/torchvision/torchvision-*.whl" | head -n 1)")"
printf '<!DOCTYPE html><html><body><a href="%s">%s</a></body></html>\n' "${vision}" "${vision}" \
    >"${torch_index}/torchvision/index.html"

common=(--network host --layers)
host_cas=/etc/ssl/certs/ca-certificates.crt
if [ -s "${host_cas}" ]; then
    common+=(--volume "${host_cas}:${host_cas}:ro")
fi

for service in rest logs worker; do
    extra=()
    if [ "${service}" = worker ]; then
        extra=(--volume "${torch_index}:/torch-index:ro" --build-arg TORCH_INDEX_URL=file:///torch-index)
    fi
    echo "building msaas-${service}:${TAG}"
    podman build "${common[@]}" "${extra[@]}" -f "${service}/Dockerfile" -t "msaas-${service}:${TAG}" .
done
