#!/usr/bin/env bash
# Validates the CI integrations offline (no network, no AWS):
# - the GitHub workflow and action.yml against check-jsonschema's vendored
#   schemas (vendor.github-workflows, vendor.github-actions);
# - the CircleCI orb and example against vendor.circle-ci (the CircleCI
#   *config* schema: there is no orb schema, so check_examples.py also checks
#   the orb's commands, jobs and parameters);
# - `pipeline config check` on a sample config, and every pipeline invocation
#   of the three examples through the binary's own argument parser;
# - each integration's install, for real, from a release of PIPELINE_BIN
#   served on 127.0.0.1 (standing in for the GitHub release download). With
#   PIPELINE_WRONG_CHECKSUM=1 the release's .sha256 does not match, and every
#   install must refuse it.
# Needs: PIPELINE_BIN (the binary), check-jsonschema and python3 with PyYAML
# on PATH (`make venv` installs both into .venv: put .venv/bin first), curl.
# PIPELINE_CALLS_OUT and PIPELINE_INSTALLS_OUT, if set, receive the calls
# (one a line: example|aws|arguments separated by \x1f) and the installs
# (example|binary|sha256, or example|refused|).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PIPELINE_BIN:?set PIPELINE_BIN to the pipeline binary}"

check-jsonschema --builtin-schema vendor.github-workflows \
  integrations/github/example-workflow.yml .github/workflows/release.yml
check-jsonschema --builtin-schema vendor.github-actions action.yml
check-jsonschema --builtin-schema vendor.circle-ci \
  integrations/circleci/orb.yml integrations/circleci/example-workflow.yml

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/pipeline.yaml" <<'YAML'
app: shop
region: us-east-1
state: {bucket: shop-pipeline-state}
build:
  base_image: {owner: self, name: debian-12-amd64-*}
  provision: "#!/bin/sh\npoweroff\n"
environments:
  staging: {count: 1, subnets: [subnet-0a1b2c3d], load_balancer: {classic: shop-staging}}
  prod1: {count: 2, subnets: [subnet-0a1b2c3d], load_balancer: {classic: shop-prod1}}
  prod2: {count: 2, subnets: [subnet-0a1b2c3d], load_balancer: {classic: shop-prod2}}
promote: {hosted_zone: Z0123456789ABCDEFGHIJ, record: www.example.com, slots: [prod1, prod2]}
YAML
"$PIPELINE_BIN" --config "$tmp/pipeline.yaml" config check > /dev/null

# `pipeline` for the examples: the real parser, with --help added before any
# `--` (so a test command after it is never run).
mkdir "$tmp/bin"
cat > "$tmp/bin/pipeline" <<'SH'
#!/usr/bin/env bash
# One line a call: the example, whether its job has AWS credentials, the arguments.
{ printf '%s|%s|' "${PIPELINE_EXAMPLE:-?}" "${PIPELINE_JOB_AWS:-?}"; printf '%s\x1f' "$@"; echo; } >> "$PIPELINE_CALLS"
args=() sep=
for a in "$@"; do
  if [ "$a" = -- ] && [ -z "$sep" ]; then args+=(--help); sep=1; fi
  args+=("$a")
done
[ -n "$sep" ] || args+=(--help)
exec "$PIPELINE_BIN" "${args[@]}" > /dev/null
SH
chmod +x "$tmp/bin/pipeline"

# A release of PIPELINE_BIN, as the release workflow lays it out, on a local
# file server: what each integration's install downloads here.
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
target=$(bash integrations/install.sh --target)
release="$tmp/releases/v$version"
mkdir -p "$release" "$tmp/pack"
cp "$PIPELINE_BIN" "$tmp/pack/pipeline"
tar -czf "$release/pipeline-$target.tar.gz" -C "$tmp/pack" pipeline
if [ "${PIPELINE_WRONG_CHECKSUM:-}" = 1 ]; then
  echo "0000000000000000000000000000000000000000000000000000000000000000  pipeline-$target.tar.gz" > "$release/pipeline-$target.tar.gz.sha256"
else
  (cd "$release" && sha256sum "pipeline-$target.tar.gz" > "pipeline-$target.tar.gz.sha256")
fi
python3 -u -m http.server --bind 127.0.0.1 --directory "$tmp/releases" 0 > "$tmp/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do
  port=$(sed -n 's/.* port \([0-9]*\).*/\1/p' "$tmp/server.log" | head -n1)
  [ -z "$port" ] || break
  sleep 0.05
done
[ -n "$port" ] || { cat "$tmp/server.log" >&2; echo "the release server did not start" >&2; exit 1; }

# The jobs' homes, where the installs cache the binary: the caller's, to run
# the installed binaries afterwards, else ours (removed with $tmp).
export PIPELINE_HOMES="${PIPELINE_HOMES:-$tmp/homes}"
mkdir -p "$PIPELINE_HOMES"
: > "$tmp/calls"
: > "$tmp/installs"
PATH="$tmp/bin:$PATH" PIPELINE_CALLS="$tmp/calls" PIPELINE_INSTALLS="$tmp/installs" \
  PIPELINE_RELEASE_URL="http://127.0.0.1:$port" \
  PIPELINE_EXPECT_REFUSAL="${PIPELINE_WRONG_CHECKSUM:-0}" python3 integrations/check_examples.py
# Hand the calls and the installs to a caller that runs them for real (the
# e2e suite does).
if [ -n "${PIPELINE_CALLS_OUT:-}" ]; then cp "$tmp/calls" "$PIPELINE_CALLS_OUT"; fi
if [ -n "${PIPELINE_INSTALLS_OUT:-}" ]; then cp "$tmp/installs" "$PIPELINE_INSTALLS_OUT"; fi
