#!/usr/bin/env bash
# `make image-test`: builds the image from the Dockerfile, then tests/test_image.py runs it and checks it
# (real containers, real requests). Prints the build time and the image size, and writes the image's SBOM
# to build/sbom.cdx.json (its log to build/image-build.log). Removes every container, volume and image it made, except a base image it
# pulled or made (kept so that the next run skips that step; WMA_IMAGE_KEEP_BASE=0 removes it too).
#
# The engine: docker when a Docker engine answers, podman otherwise (WMA_ENGINE=docker|podman chooses),
# installed with apt-get when missing and this is root (like `make chromium`). The base: the official
# python:3.11-slim-bookworm when it is present or can be pulled, else one made from Debian packages
# (deploy/image/base.sh; root, mmdebstrap, installed the same way). Measured on a busy 2-CPU machine:
# 10.5 minutes from a fresh one, 7 with podman and the base there (docs/deployment.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${WMA_IMAGE_OUT:-build}
mkdir -p "$OUT"
BASE=python:3.11-slim-bookworm
TAG=localhost/whatsmyage:image-test
RUN_LABEL=whatsmyage.image-test=$$   # on every container and volume the checks make, to find leftovers

as_root_with_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }
apt_install() {
    echo "image-test: installing $* (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"; } > "$OUT/apt.log" 2>&1 \
        || { tail -n 20 "$OUT/apt.log"; exit 1; }
}

ENGINE=${WMA_ENGINE:-}
if [ -z "$ENGINE" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker; else ENGINE=podman; fi
fi
if ! command -v "$ENGINE" >/dev/null; then
    as_root_with_apt || { echo "image-test: needs a running Docker engine, or podman (apt-get install podman)"; exit 1; }
    # podman's machines are likely the ones without Docker Hub: mmdebstrap for the base in the same go
    apt_install "$ENGINE" $([ "$ENGINE" = podman ] && echo runc mmdebstrap)
fi

# podman as root on machines that lack CAP_SYS_RESOURCE refuses its default rlimits for root
# (nofile=1048576), and crun refuses hybrid cgroups ("cgroups in hybrid mode not supported"): the CI
# machines are such. Only when the machine has no podman configuration yet; an ordinary host needs neither.
if [ "$ENGINE" = podman ] && [ "$(id -u)" = 0 ] && [ ! -e /etc/containers/containers.conf ]; then
    nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
    nproc=$(ulimit -Hu); { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
    mkdir -p /etc/containers
    {
        echo "# written by whatsmyage's deploy/image/test.sh: rlimits this machine allows, and runc"
        echo "[containers]"
        echo "default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]"
        if command -v runc >/dev/null; then printf '[engine]\nruntime = "runc"\n'; fi
    } > /etc/containers/containers.conf
    echo "image-test: wrote /etc/containers/containers.conf (rlimits $nofile/$nproc, runc)"
fi

images() { "$ENGINE" images -aq --no-trunc | sort -u; }
has_base() {
    if [ "$ENGINE" = podman ]; then podman image exists "localhost/$BASE" || podman image exists "docker.io/library/$BASE"
    else docker image inspect "$BASE" >/dev/null 2>&1; fi
}
before=$(images)
base_made=
cleanup() {
    local ids
    ids=$("$ENGINE" ps -aq --filter "label=$RUN_LABEL")
    [ -z "$ids" ] || "$ENGINE" rm -f $ids >/dev/null 2>&1 || true
    ids=$("$ENGINE" volume ls -q --filter "label=$RUN_LABEL")
    [ -z "$ids" ] || "$ENGINE" volume rm -f $ids >/dev/null 2>&1 || true
    # the image and the build stage's intermediate image(s): whatever appeared since the start, but the base
    local keep=""
    if [ "${WMA_IMAGE_KEEP_BASE:-1}" = 1 ] && has_base; then
        keep=$("$ENGINE" image inspect --format '{{.Id}}' "$([ "$ENGINE" = podman ] && echo localhost/)$BASE" \
               2>/dev/null || "$ENGINE" image inspect --format '{{.Id}}' "$BASE" 2>/dev/null || true)
    fi
    for id in $(comm -13 <(echo "$before") <(images)); do
        [ "${id#sha256:}" = "${keep#sha256:}" ] || "$ENGINE" rmi -f "$id" >/dev/null 2>&1 || true
    done
    "$ENGINE" rmi -f "$TAG" >/dev/null 2>&1 || true
}
trap cleanup EXIT

if ! has_base; then
    echo "image-test: pulling $BASE"
    if ! timeout 180 "$ENGINE" pull -q "docker.io/library/$BASE" >/dev/null 2>&1; then
        echo "image-test: $BASE cannot be pulled here: making one from Debian packages (deploy/image/base.sh)"
        command -v mmdebstrap >/dev/null || { as_root_with_apt && apt_install mmdebstrap; }
        start=$(date +%s)
        deploy/image/base.sh "$ENGINE"
        echo "image-test: base made in $(( $(date +%s) - start )) s"
    fi
fi

# --network host: pip in the build reaches PyPI as this machine does (its proxy and CA included).
# --format docker keeps the HEALTHCHECK (the OCI format has no such field).
build=("$ENGINE" build --network host -t "$TAG")
[ "$ENGINE" = podman ] && build+=(--pull=never --format docker)
start=$(date +%s)
nice -n 10 "${build[@]}" . > "$OUT/image-build.log" 2>&1 \
    || { tail -n 40 "$OUT/image-build.log"; echo "image-test: the build failed"; exit 1; }
seconds=$(( $(date +%s) - start ))
bytes=$("$ENGINE" image inspect --format '{{.Size}}' "$TAG")
echo "image-test: built $TAG with $ENGINE in $seconds s: $(( bytes / 1000000 )) MB"

"$ENGINE" run --rm --network none --entrypoint cat "$TAG" /usr/share/doc/whatsmyage/sbom.cdx.json \
    > "$OUT/sbom.cdx.json" 2>/dev/null
echo "image-test: SBOM of its Python packages in $OUT/sbom.cdx.json" \
     "($("$PY" -c "import json, sys; print(len(json.load(open(sys.argv[1]))['components']))" "$OUT/sbom.cdx.json") components)"

WMA_IMAGE="$TAG" WMA_ENGINE="$ENGINE" WMA_IMAGE_LABEL="$RUN_LABEL" \
    "$PY" -m pytest -m container tests/test_image.py -v -s ${PYTEST_ARGS:-}  # -s: the timings it prints
