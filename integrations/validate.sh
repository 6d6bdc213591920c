#!/usr/bin/env bash
# Validates the CI integrations offline (no network, no AWS):
# - the GitHub workflow and action.yml against check-jsonschema's vendored
#   schemas (vendor.github-workflows, vendor.github-actions);
# - the CircleCI orb and example against vendor.circle-ci (the CircleCI
#   *config* schema: there is no orb schema, so check_examples.py also checks
#   the orb's commands, jobs and parameters);
# - `pipeline config check` on a sample config, and every pipeline invocation
#   of the three examples through the binary's own argument parser.
# Needs: PIPELINE_BIN (the binary), check-jsonschema and python3 with PyYAML
# on PATH (`make venv` installs both into .venv: put .venv/bin first).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PIPELINE_BIN:?set PIPELINE_BIN to the pipeline binary}"

check-jsonschema --builtin-schema vendor.github-workflows integrations/github/example-workflow.yml
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
echo "${PIPELINE_EXAMPLE:-?}|${PIPELINE_JOB_AWS:-?}|$*" >> "$PIPELINE_CALLS"
args=() sep=
for a in "$@"; do
  if [ "$a" = -- ] && [ -z "$sep" ]; then args+=(--help); sep=1; fi
  args+=("$a")
done
[ -n "$sep" ] || args+=(--help)
exec "$PIPELINE_BIN" "${args[@]}" > /dev/null
SH
chmod +x "$tmp/bin/pipeline"
: > "$tmp/calls"
PATH="$tmp/bin:$PATH" PIPELINE_CALLS="$tmp/calls" python3 integrations/check_examples.py
# Hand the calls to a caller that runs them for real (the e2e suite does).
if [ -n "${PIPELINE_CALLS_OUT:-}" ]; then cp "$tmp/calls" "$PIPELINE_CALLS_OUT"; fi
