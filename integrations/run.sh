#!/usr/bin/env bash
# Runs one `pipeline` command for a CI step (the GitHub Action and the
# CircleCI orb), with `--output json`, and hands its result to the CI.
#
# Settings (environment): COMMAND (required), ENV_NAME, SLOT, TO, COMMIT,
# RUN (test: a shell command line for `bash -c`), ARGS (extra arguments,
# one a line, each passed as it is: no word splitting, no globbing), CONFIG
# (default pipeline.yaml), PIPELINE_INSTALLED (the binary; default
# `pipeline` on PATH).
# On GitHub (GITHUB_OUTPUT set) it sets the outputs ami, slot, kind,
# exit-code and result, and writes the job summary. Exits with the
# command's own exit code; 2 for bad settings.
set -uo pipefail
# CircleCI runs a step with `bash -eo pipefail`: a failing command must not
# end the script before its result is printed.
set +e

COMMAND=${COMMAND:-}
CONFIG=${CONFIG:-pipeline.yaml}
argv=(--config "$CONFIG" --output json "$COMMAND")
extra=()
while IFS= read -r line; do
  [ -z "$line" ] || extra+=("$line")
done <<< "${ARGS:-}"
bad() { echo "pipeline: $*" >&2; [ -z "${GITHUB_OUTPUT:-}" ] || echo "::error::$*"; exit 2; }
case "$COMMAND" in
  deploy) if [ -n "${SLOT:-}" ]; then argv+=(--slot "$SLOT")
          elif [ -n "${ENV_NAME:-}" ]; then argv+=(--env "$ENV_NAME")
          else bad "deploy needs the env or the slot"; fi ;;
  task) [ -n "${ENV_NAME:-}" ] || bad "task needs the env"
        argv+=(--env "$ENV_NAME") ;;
  promote) [ -z "${TO:-}" ] || argv+=(--to "$TO") ;;
  test|build|rollback|watch|status|history|unlock|gc|iam-policy|config) ;;
  *) bad "the command must be one of test, build, deploy, task, promote, rollback, watch, status, history, unlock, gc, iam-policy, config, not '$COMMAND'" ;;
esac
if [ -n "${COMMIT:-}" ] && [[ "$COMMAND" =~ ^(test|build|deploy|task|promote)$ ]]; then
  argv+=(--commit "$COMMIT")
fi
if [ "$COMMAND" = test ]; then
  # ${a[@]+"${a[@]}"}: an empty array under set -u, in macOS's bash 3.2 too.
  if [ -n "${RUN:-}" ]; then argv+=(${extra[@]+"${extra[@]}"} -- bash -c "$RUN")
  else argv+=(-- ${extra[@]+"${extra[@]}"}); fi
else
  argv+=(${extra[@]+"${extra[@]}"})
fi

result=$("${PIPELINE_INSTALLED:-pipeline}" "${argv[@]}"); code=$?
# The result on stdout for the CI's log (and a caller that reads it).
echo "$result"
[ -n "${GITHUB_OUTPUT:-}" ] || exit "$code"

field() {  # field NAME...: the first of these top-level JSON fields that is set
  if command -v jq >/dev/null; then
    jq -r --args 'first($ARGS.positional[] as $k | .[$k] | select(. != null and . != "")) // ""' "$@" <<< "$result"
  else
    python3 -c 'import json,sys; d=json.loads(sys.stdin.read() or "{}"); print(next((str(d[k]) for k in sys.argv[1:] if d.get(k) not in (None, "")), ""))' "$@" <<< "$result"
  fi 2>/dev/null  # a run that failed early may have printed no JSON
}
ami=$(field ami); slot=$(field to live env); error=$(field error); kind=$(field kind)
{
  echo "ami=$ami"; echo "slot=$slot"; echo "kind=$kind"; echo "exit-code=$code"
  delimiter="pipeline-result-$RANDOM$RANDOM"
  echo "result<<$delimiter"; echo "$result"; echo "$delimiter"
} >> "$GITHUB_OUTPUT"
{
  echo "### pipeline $COMMAND: $([ "$code" = 0 ] && echo done || echo "failed (exit $code${kind:+, $kind})")"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| commit | \`${COMMIT:-${GITHUB_SHA:-}}\` |"
  [ -z "$ami" ] || echo "| AMI | \`$ami\` |"
  [ -z "$slot" ] || echo "| slot / environment | $slot |"
  [ -z "$error" ] || echo "| error | $error |"
  echo
  echo '```json'
  echo "$result"
  echo '```'
} >> "${GITHUB_STEP_SUMMARY:-/dev/null}"
exit "$code"
