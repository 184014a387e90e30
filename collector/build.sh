#!/usr/bin/env bash
# Build the poolwatch collector distribution (poolwatch-otelcol) from
# manifest.yaml with the official OpenTelemetry Collector builder, once per
# machine, and print the path of the binary as the last line on stdout.
#
# The binary is cached under
#   ${POOLWATCH_CACHE_DIR:-$HOME/.cache/poolwatch}/otelcol-<key>/poolwatch-otelcol
# where <key> is derived from the sha256 of manifest.yaml and the builder
# version, so it is rebuilt only when one of them changes. Progress and build
# output go to stderr (and to build.log next to the binary).
#
# Needs only a Go toolchain (on PATH, in $GO, or in the default install
# location of the official Go tarball) and access to the Go module proxy.
#
# Environment:
#   POOLWATCH_CACHE_DIR        cache root (default: $HOME/.cache/poolwatch)
#   POOLWATCH_OTELCOL_REBUILD  set to 1 to ignore the cached binary
#   GO                         go executable to use
#   GOMAXPROCS, GOGC           passed through to the compiler if set
set -euo pipefail

# Keep in step with the versions in manifest.yaml (checked below).
BUILDER_VERSION=v0.145.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
manifest="$here/manifest.yaml"

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -f "$manifest" ]] || die "manifest not found: $manifest"

# Every collector module in the manifest must be at the builder's release,
# otherwise the builder resolves a mix of versions and fails late (or worse,
# builds something nobody tested).
mismatched="$(grep -E '^\s*-\s*gomod:\s*\S+\s+v0\.' "$manifest" | grep -v -- " $BUILDER_VERSION\s*$" || true)"
[[ -z "$mismatched" ]] || die "manifest modules not at $BUILDER_VERSION:
$mismatched"

# --- locate go ----------------------------------------------------------------
go_bin="${GO:-}"
if [[ -z "$go_bin" ]]; then
    if command -v go >/dev/null 2>&1; then
        go_bin="$(command -v go)"
    elif [[ -x /usr/local/go/bin/go ]]; then
        go_bin=/usr/local/go/bin/go
    else
        die "no Go toolchain found (install Go or set GO=/path/to/go)"
    fi
fi
go_dir="$(dirname "$go_bin")"
export PATH="$go_dir:$PATH"

# --- cache key ------------------------------------------------------------------
if command -v sha256sum >/dev/null 2>&1; then
    sha() { sha256sum | cut -d' ' -f1; }
else
    sha() { shasum -a 256 | cut -d' ' -f1; }
fi
key="$( { cat "$manifest"; printf '\nbuilder=%s\n' "$BUILDER_VERSION"; } | sha | cut -c1-16)"

cache_root="${POOLWATCH_CACHE_DIR:-${HOME:?HOME is not set}/.cache/poolwatch}"
mkdir -p "$cache_root"
cache_root="$(cd "$cache_root" && pwd)"
dir="$cache_root/otelcol-$key"
bin="$dir/poolwatch-otelcol"
mkdir -p "$dir"

if [[ "${POOLWATCH_OTELCOL_REBUILD:-0}" != 1 && -x "$bin" ]]; then
    echo "$bin"
    exit 0
fi

# Serialise concurrent builds of the same key (two test sessions, CI steps).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$dir/.lock"
    flock 9
    # Someone else may have finished the build while we waited.
    if [[ "${POOLWATCH_OTELCOL_REBUILD:-0}" != 1 && -x "$bin" ]]; then
        echo "$bin"
        exit 0
    fi
fi

start=$SECONDS
log "building poolwatch-otelcol (builder $BUILDER_VERSION, key $key) into $dir"

# Reproducible, path-free build: the builder itself passes -trimpath and
# -ldflags="-s -w"; buildvcs would try to stamp from whatever repository the
# cache happens to live in.
export GOFLAGS="-buildvcs=false"
export CGO_ENABLED=0
export GOWORK=off

# --- builder --------------------------------------------------------------------
builder_dir="$cache_root/builder-$BUILDER_VERSION"
builder="$builder_dir/builder"
if [[ ! -x "$builder" ]]; then
    log "installing go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION"
    GOBIN="$builder_dir" go install "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION" >&2
fi

# --- generate + compile -----------------------------------------------------------
work="$dir/work"
rm -rf "$work"
mkdir -p "$work"
cp "$manifest" "$work/manifest.yaml"

# The manifest's output_path (./_build) is relative to the working directory.
if ! (cd "$work" && "$builder" --config=manifest.yaml --skip-strict-versioning=false) 2>&1 \
        | tee "$dir/build.log" >&2; then
    die "builder failed; full log: $dir/build.log"
fi

built="$work/_build/poolwatch-otelcol"
[[ -x "$built" ]] || die "builder finished but $built is missing; see $dir/build.log"
"$built" --version >/dev/null || die "built binary does not run: $built"

mv -f "$built" "$bin.tmp"
mv -f "$bin.tmp" "$bin"
rm -rf "$work"

log "built in $((SECONDS - start))s: $("$bin" --version)"
echo "$bin"
