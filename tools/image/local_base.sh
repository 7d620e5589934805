#!/usr/bin/env bash
# Builds a Python 3.10 base image locally, for machines that can run podman but reach no image registry.
#
# The Dockerfile's default base is the official python:3.10-slim (Debian bookworm). Without a registry we
# make an equivalent: a minimal bookworm root from the Debian mirror apt already uses (debootstrap), plus
# this machine's own Python 3.10 build copied in at the same path (same glibc 2.36, so it runs unchanged).
#
# Idempotent: an image that already exists under the name is kept (delete it with `podman rmi` to rebuild).
#   usage: tools/image/local_base.sh [IMAGE_NAME]       (prints the image name on its last line)
set -euo pipefail

NAME=${1:-localhost/dxpipe-base:py3.10-bookworm}
PY=${PYTHON_PREFIX:-$(python3.10 -c 'import sys; print(sys.base_prefix)' 2>/dev/null || ls -d "$HOME"/.pyenv/versions/3.10* | tail -1)}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${DXPIPE_IMAGE_CACHE:-/var/cache/dxpipe-image}

if podman image exists "$NAME"; then
  echo "$NAME"
  exit 0
fi
test -x "$PY/bin/python3.10" || { echo "error: no Python 3.10 at $PY (set PYTHON_PREFIX)" >&2; exit 1; }
ROOT="$CACHE/bookworm-minbase"
mkdir -p "$CACHE"
if [ ! -f "$ROOT/.complete" ]; then
  rm -rf "$ROOT" "$ROOT.tmp"
  # libsqlite3-0 and the other libraries are what Python's extension modules link against (minbase lacks
  # them); ca-certificates so the image can verify TLS by itself.
  debootstrap --variant=minbase \
    --include=ca-certificates,libsqlite3-0,libssl3,libffi8,liblzma5,libbz2-1.0,libreadline8,libuuid1,libgomp1 \
    bookworm "$ROOT.tmp" "$MIRROR" >&2
  mv "$ROOT.tmp" "$ROOT"
  touch "$ROOT/.complete"
fi
STAGE="$CACHE/stage"
rm -rf "$STAGE"
mkdir -p "$STAGE"
# The rootfs is shared by every build; the staged copy adds Python without touching it.
cp -a "$ROOT/." "$STAGE/"
rm -f "$STAGE/.complete"
mkdir -p "$STAGE$PY"
# The host's site-packages may hold machine-specific .pth hooks: the image gets only pip and setuptools.
tar -C "$PY" --exclude='./lib/python3.10/site-packages/*.pth' --exclude='__pycache__' -c . | tar -C "$STAGE$PY" -x
# python3 on PATH, as in the official image (Python follows the links to find its prefix).
for exe in python3.10 python3 python; do ln -sf "$PY/bin/python3.10" "$STAGE/usr/local/bin/$exe"; done
for exe in pip3 pip; do ln -sf "$PY/bin/pip3" "$STAGE/usr/local/bin/$exe"; done
"$STAGE$PY/bin/python3.10" -c 'import sys; assert sys.version_info[:2] == (3, 10)'
tar -C "$STAGE" -c . | podman import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' - "$NAME" >&2
rm -rf "$STAGE"
echo "$NAME"
