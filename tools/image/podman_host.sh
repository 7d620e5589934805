#!/usr/bin/env bash
# Makes this machine able to build and run the pipeline image with podman, without Docker (idempotent).
#
# Installs Debian's podman, runc and debootstrap when missing, and sets in containers.conf what this kind
# of sandbox needs: podman's default runtime (crun) fails under cgroups hybrid mode, so `runtime = "runc"`
# under [engine]; the sandbox refuses rlimit changes, so `default_ulimits = []` under [containers].
# A containers.conf that already sets either key is left as it is (the machine's owner chose it).
#   usage: tools/image/podman_host.sh        (as root, or with sudo available)
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

CONF=${CONTAINERS_CONF_PATH:-/etc/containers/containers.conf}
$SUDO mkdir -p "$(dirname "$CONF")"
$SUDO touch "$CONF"
# Adds `key = value` under [section] unless the key is already set anywhere in the file.
ensure() {
  local section=$1 key=$2 value=$3
  if grep -Eq "^[[:space:]]*$key[[:space:]]*=" "$CONF"; then
    return
  fi
  if grep -Eq "^\[$section\]" "$CONF"; then
    $SUDO sed -i "/^\[$section\]/a $key = $value" "$CONF"
  else
    printf '\n[%s]\n%s = %s\n' "$section" "$key" "$value" | $SUDO tee -a "$CONF" >/dev/null
  fi
}
ensure engine runtime '"runc"'
ensure containers default_ulimits '[]'
podman info --format '{{.Host.OCIRuntime.Name}}' >/dev/null
echo "podman ready ($(podman --version), runtime $(podman info --format '{{.Host.OCIRuntime.Name}}'))"
