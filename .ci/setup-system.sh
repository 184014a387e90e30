#!/usr/bin/env bash
# Install the Debian packages the poolwatch test suite relies on.
#
#   postgresql, postgresql-client  -> initdb / pg_ctl / postgres / psql
#   prometheus                     -> promtool
#   prometheus-alertmanager        -> amtool
#   tmux                           -> terminal-level tests
#   pgbouncer                      -> PgBouncer in front of the test PostgreSQL
#
# Idempotent: when every package is already installed nothing is fetched and
# `apt-get update` is not run. Safe to run as root without a TTY (CI).
# Package maintainer scripts are prevented from starting services (the distro
# PostgreSQL cluster, prometheus, alertmanager): tests start their own
# throwaway servers and need nothing running in the background.
set -euo pipefail

PACKAGES=(
  postgresql
  postgresql-client
  prometheus
  prometheus-alertmanager
  tmux
  pgbouncer
)

export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_MODE=a

log() { printf '[setup-system] %s\n' "$*" >&2; }

if [[ "$(id -u)" -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo -n env DEBIAN_FRONTEND=noninteractive)
else
  log "must run as root (or with passwordless sudo)"
  exit 1
fi

is_installed() {
  local status
  status="$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)"
  [[ "$status" == "installed" ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! is_installed "$pkg"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  log "all packages already installed: ${PACKAGES[*]}"
else
  log "missing packages: ${missing[*]}"

  # Keep package installs from starting daemons. invoke-rc.d and
  # deb-systemd-invoke consult /usr/sbin/policy-rc.d; exit code 101 means
  # "action forbidden". An existing policy file is left untouched.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e "$policy" ]]; then
    "${SUDO[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' > '$policy' && chmod 0755 '$policy'"
    created_policy=1
  fi
  cleanup_policy() {
    if ((created_policy)); then
      "${SUDO[@]}" rm -f "$policy"
    fi
  }
  trap cleanup_policy EXIT

  apt_opts=(
    -y -q
    --no-install-recommends
    -o DPkg::Lock::Timeout=300
    -o Dpkg::Options::=--force-confdef
    -o Dpkg::Options::=--force-confold
  )
  "${SUDO[@]}" apt-get update -q
  "${SUDO[@]}" apt-get install "${apt_opts[@]}" "${missing[@]}"

  cleanup_policy
  created_policy=0
  trap - EXIT
fi

# The PostgreSQL server binaries live outside PATH on Debian; the test helper
# finds them under /usr/lib/postgresql/*/bin, but check they are really there.
pg_bin=""
while IFS= read -r dir; do
  if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
    pg_bin="$dir"  # the list is version-sorted, so the newest one wins
  fi
done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -V || true)
if [[ -z "$pg_bin" ]] && ! command -v initdb >/dev/null 2>&1; then
  log "initdb not found after installing postgresql"
  exit 1
fi

for tool in promtool amtool tmux psql pgbouncer; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    log "$tool is not on PATH after installation"
    exit 1
  fi
done

log "versions:"
if [[ -n "$pg_bin" ]]; then
  "$pg_bin/postgres" --version
else
  initdb --version
fi
psql --version
promtool --version 2>&1 | head -n 1
amtool --version 2>&1 | head -n 1
tmux -V
pgbouncer --version | head -n 1
