#!/usr/bin/env bash
# Makes a stand-in for the official python:3.11-slim-bookworm image from Debian packages, for machines
# that cannot reach Docker Hub: a minimal bookworm (mmdebstrap --variant=minbase) with Debian's
# Python 3.11, imported under the name the Dockerfile's FROM asks for, so that the build with
# --pull=never takes it. Debian's Python is the same 3.11 line; what differs from the official image:
# /usr/bin/python3.11 rather than /usr/local/bin/python, and pip 23.0.1 from ensurepip.
#
#   deploy/image/base.sh [podman|docker]        (root; needs mmdebstrap: apt-get install mmdebstrap)
#
# It uses the machine's own apt sources (so its mirror or proxy), and copies the machine's locally
# added CA certificates in (Debian's pip trusts the system store: a proxy that intercepts TLS needs them).
set -euo pipefail
ENGINE=${1:-podman}
BASE=${WMA_BASE_IMAGE:-python:3.11-slim-bookworm}
[ "$ENGINE" = podman ] && BASE=localhost/$BASE   # podman resolves the short name to localhost/ first

if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    MIRROR=/etc/apt/sources.list.d/debian.sources
else
    MIRROR="deb http://deb.debian.org/debian bookworm main"
fi

# python-is-python3 gives the `python` name the Dockerfile uses; python3-venv brings ensurepip's pip.
# What mmdebstrap and the hooks say goes to a log, shown when it fails (the tarball itself goes to stdout).
LOG=${TMPDIR:-/tmp}/whatsmyage-base.log
trap 'echo "base.sh failed; the last of $LOG:"; tail -n 30 "$LOG"' ERR
nice -n 10 mmdebstrap --quiet --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include=python3,python3-venv,python-is-python3,ca-certificates,netbase,tzdata \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" 2>/dev/null || true' \
    --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm - "$MIRROR" 2> "$LOG" \
  | "$ENGINE" import $([ "$ENGINE" = podman ] && echo --quiet) --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' - "$BASE" >/dev/null
echo "base image $BASE made from Debian packages"
