#!/usr/bin/env bash
# Puts the `pipeline` binary of one version on this machine, for the CI
# integrations (the GitHub Action, the CircleCI orb, the Jenkins step), and
# prints its path as the last line of stdout.
#
# 1. The cache: $PIPELINE_CACHE_DIR/<version>/<target>/pipeline, from an
#    earlier job on this machine (or a CI cache restored there), used if
#    its SHA-256 still matches the one recorded beside it.
# 2. The release download: <release-url>/v<version>/pipeline-<target>.tar.gz
#    and its .sha256. The archive's SHA-256 is checked before anything in it
#    is unpacked or run; a mismatch refuses the binary (exit 3) and never
#    falls back to anything else.
# 3. The fallback, when there is no release for this platform (or
#    PIPELINE_INSTALL=cargo): `cargo install --locked` from PIPELINE_SOURCE
#    (a checkout's path, or a git URL built at tag v<version>), into the
#    cache, by version, apart from the releases.
#
# Settings (environment):
#   PIPELINE_VERSION      the version, e.g. 0.1.0 (required: each integration
#                         pins it in one place; PIPELINE_DEFAULT_VERSION is
#                         used when it is empty)
#   PIPELINE_INSTALL      auto (default: cache, download, then build),
#                         download (no build), cargo (build), path (use
#                         `pipeline` on PATH)
#   PIPELINE_RELEASE_URL  where releases are (default the project's GitHub
#                         releases)
#   PIPELINE_SHA256       the archive's SHA-256, if pinned by the caller
#                         (default: the release's .sha256 file)
#   PIPELINE_SOURCE       what the fallback builds (path or git URL)
#   PIPELINE_CACHE_DIR    default ~/.cache/pipeline-bin
#   PIPELINE_LINK_DIR     if set, also links the binary there as `pipeline`
#                         (a directory on the job's PATH)
# `install.sh --target` prints the release target of this machine (empty if
# none is built for it) and exits.
#
# Exit codes: 0 installed; 2 bad settings or an unsupported platform with
# no fallback; 3 the checksum did not match; 1 anything else (download or
# build failed).
set -euo pipefail

# The release target of this machine; empty when no release is built for it.
target() {
  local os arch
  os=$(uname -s)
  arch=$(uname -m)
  case $arch in
    x86_64|amd64) arch=x86_64 ;;
    aarch64|arm64) arch=aarch64 ;;
    *) return 0 ;;
  esac
  case $os in
    Linux) echo "$arch-unknown-linux-musl" ;;
    Darwin) echo "$arch-apple-darwin" ;;
  esac
}

if [ "${1:-}" = --target ]; then
  target
  exit 0
fi

say() { echo "pipeline install: $*" >&2; }
die() { local code=$1; shift; say "$*"; exit "$code"; }

version=${PIPELINE_VERSION:-${PIPELINE_DEFAULT_VERSION:-}}
version=${version#v}
mode=${PIPELINE_INSTALL:-auto}
release_url=${PIPELINE_RELEASE_URL:-https://github.com/your-org/pipeline/releases/download}
cache_root=${PIPELINE_CACHE_DIR:-$HOME/.cache/pipeline-bin}

[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$ ]] \
  || die 2 "PIPELINE_VERSION must be a version such as 0.1.0, not '${PIPELINE_VERSION:-}'"
case $mode in
  auto|download|cargo|path) ;;
  *) die 2 "PIPELINE_INSTALL must be auto, download, cargo or path, not '$mode'" ;;
esac
if [ -n "${PIPELINE_SHA256:-}" ] && ! [[ ${PIPELINE_SHA256} =~ ^[0-9a-fA-F]{64}$ ]]; then
  die 2 "PIPELINE_SHA256 must be 64 hex digits"
fi

if [ "$mode" = path ]; then
  found=$(command -v pipeline) || die 2 "PIPELINE_INSTALL=path, but pipeline is not on PATH"
  echo "$found"
  exit 0
fi

sha256_of() {
  if command -v sha256sum >/dev/null; then
    sha256sum "$1" | cut -d' ' -f1
  else
    shasum -a 256 "$1" | cut -d' ' -f1
  fi
}

fetch() {  # fetch URL FILE: 0 fetched, 4 not there (404), 1 other failure
  local status proto='=https'
  # Plain http only to this machine (a local mirror, the tests' file server).
  case $1 in http://127.0.0.1[:/]*|http://localhost[:/]*) proto='=http' ;; esac
  status=$(curl --silent --show-error --location --proto "$proto" --proto-redir '=https' \
    --retry 3 --connect-timeout 10 --max-time 300 \
    --output "$2" --write-out '%{http_code}' "$1") || return 1
  case $status in
    200) return 0 ;;
    404) return 4 ;;
    *) say "GET $1 answered $status"; return 1 ;;
  esac
}

target=$(target)
done_at() {  # done_at BIN: links it where asked, prints its path
  if [ -n "${PIPELINE_LINK_DIR:-}" ]; then
    mkdir -p "$PIPELINE_LINK_DIR"
    ln -sf "$1" "$PIPELINE_LINK_DIR/pipeline"
  fi
  echo "$1"
}
dir="$cache_root/$version/${target:-none}"
bin="$dir/pipeline"
# What cargo builds is kept apart from the releases (it links what the
# machine has, not musl).
built="$cache_root/$version/source-$(uname -s)-$(uname -m)"

cached() {  # cached DIR: its binary is what was verified into it
  [ -x "$1/pipeline" ] && [ -f "$1/pipeline.sha256" ] \
    && [ "$(sha256_of "$1/pipeline")" = "$(cat "$1/pipeline.sha256")" ]
}

# 1. The cache, if it still is what was verified (cargo: only a build).
if [ "$mode" != cargo ] && cached "$dir"; then
  say "pipeline $version from the cache ($dir)"
  done_at "$bin"
  exit 0
fi

build() {
  if cached "$built"; then
    say "pipeline $version, built earlier, from the cache ($built)"
    done_at "$built/pipeline"
    return
  fi
  local source=${PIPELINE_SOURCE:-}
  [ -n "$source" ] || die 2 "no release of pipeline $version for $(uname -s) $(uname -m), and no PIPELINE_SOURCE to build it from"
  command -v cargo >/dev/null || die 2 "no release of pipeline $version for this platform, and no cargo to build it (use an image with Rust, or a runner with a release)"
  say "building pipeline $version from $source (cached by version in $built)"
  local root; root=$(mktemp -d)
  if [ -d "$source" ]; then
    cargo install --locked --quiet --root "$root" --path "$source/pipeline-ci" \
      || die 1 "cargo could not build pipeline from $source"
  else
    cargo install --locked --quiet --root "$root" --git "$source" --tag "v$version" pipeline-ci \
      || die 1 "cargo could not build pipeline v$version from $source"
  fi
  mkdir -p "$built"
  mv "$root/bin/pipeline" "$built/pipeline.new"
  rm -rf "$root"
  sha256_of "$built/pipeline.new" > "$built/pipeline.sha256"
  mv "$built/pipeline.new" "$built/pipeline"
  done_at "$built/pipeline"
}

if [ "$mode" = cargo ] || [ -z "$target" ]; then
  [ -n "$target" ] || say "no release is built for $(uname -s) $(uname -m)"
  [ "$mode" != download ] || die 2 "PIPELINE_INSTALL=download, but no release is built for $(uname -s) $(uname -m)"
  build
  exit 0
fi

# 2. The release download, verified before it is unpacked.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
archive="pipeline-$target.tar.gz"
url="$release_url/v$version/$archive"
say "downloading pipeline $version for $target"
set +e
fetch "$url" "$work/$archive"
got=$?
set -e
if [ "$got" = 4 ]; then
  [ "$mode" = auto ] || die 1 "$url: no such release (404)"
  say "$url: no such release (404); building instead"
  build
  exit 0
fi
[ "$got" = 0 ] || die 1 "could not download $url"
if [ -n "${PIPELINE_SHA256:-}" ]; then
  want=$(printf %s "$PIPELINE_SHA256" | tr 'A-F' 'a-f')
else
  fetch "$url.sha256" "$work/$archive.sha256" || die 1 "could not download $url.sha256"
  want=$(cut -d' ' -f1 < "$work/$archive.sha256" | tr 'A-F' 'a-f')
fi
have=$(sha256_of "$work/$archive")
if [ "$have" != "$want" ]; then
  die 3 "the SHA-256 of $archive is $have, not $want: refusing to run it (a corrupt or tampered download)"
fi
tar -xzf "$work/$archive" -C "$work" pipeline || die 1 "$archive has no pipeline binary in it"
chmod +x "$work/pipeline"
mkdir -p "$dir"
sha256_of "$work/pipeline" > "$dir/pipeline.sha256"
mv "$work/pipeline" "$bin"
say "pipeline $version verified (sha256 $have) in $dir"
done_at "$bin"
