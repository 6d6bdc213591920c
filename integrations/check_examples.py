"""Runs every `pipeline` invocation of the three CI examples through the real
binary's argument parser, offline. Called by integrations/validate.sh, which
puts a `pipeline` wrapper first on PATH: it runs $PIPELINE_BIN with `--help`
added (before any `--`), so clap parses the subcommand and flags and exits 0
without doing anything, and logs each call to $PIPELINE_CALLS.

- CircleCI: each `pipeline/<job>` of example-workflow.yml is expanded through
  orb.yml (job parameters, then the orb commands it calls) and its `run`
  steps are executed with bash, their `environment` set.
- GitHub: each step that uses this action runs the action's own composite
  steps (action.yml) with the step's `with:` inputs.
- Jenkins: Groovy is not run here; each pipelineStep(...) call of the
  Jenkinsfile is turned into the argv vars/pipelineStep.groovy builds (the
  same rules, restated below) and executed.
Also checks the structure CircleCI's config schema does not: the orb has the
commands and jobs this project promises, every `<< parameters.x >>` is
declared, and the example passes each orb job only parameters it declares.
"""

import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALLS = os.environ["PIPELINE_CALLS"]
PARAM = re.compile(r"<<\s*parameters\.([\w-]+)\s*>>")
failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}", file=sys.stderr)


def load(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return yaml.safe_load(f)


def calls():
    with open(CALLS) as f:
        return len(f.readlines())


def job_env(example, aws):
    """What the wrapper logs beside each call: which example, and whether
    the job it runs in has AWS credentials (the e2e suite gives it only those)."""
    return {"PIPELINE_EXAMPLE": example, "PIPELINE_JOB_AWS": "1" if aws else "0"}


def run(where, script, env=None):
    """Runs `script` with bash; each must call the wrapper at least once."""
    before = calls()
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script],
                          env={**os.environ, **(env or {})},
                          capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"{where}: exit {proc.returncode}: {script!r}\n{proc.stderr}")
    elif calls() == before:
        fail(f"{where}: never ran pipeline: {script!r}")
    else:
        print(f"ok   {where}")


def subst(value, params, where):
    def one(m):
        if m.group(1) not in params:
            fail(f"{where}: << parameters.{m.group(1)} >> is not declared")
            return ""
        return str(params[m.group(1)])
    if isinstance(value, str):
        return PARAM.sub(one, value)
    if isinstance(value, dict):
        return {k: subst(v, params, where) for k, v in value.items()}
    if isinstance(value, list):
        return [subst(v, params, where) for v in value]
    return value


def bind(declared, given, where):
    """Parameter values: `given` checked against `declared`, defaults filled."""
    for k in given:
        if k not in declared:
            fail(f"{where}: parameter {k!r} is not declared")
    out = {}
    for k, spec in (declared or {}).items():
        if k in given:
            out[k] = given[k]
        elif "default" in spec:
            out[k] = spec["default"]
        else:
            fail(f"{where}: required parameter {k!r} not given")
    return out


def expand(steps, params, orb, where):
    """The `run` steps (command, environment) that `steps` amount to."""
    for step in steps:
        name, args = (step, {}) if isinstance(step, str) else next(iter(step.items()))
        args = subst(args, params, where)
        if name == "run":
            args = {"command": args} if isinstance(args, str) else args
            yield args["command"], args.get("environment", {})
        elif name in orb["commands"]:
            spec = orb["commands"][name]
            inner = bind(spec.get("parameters", {}), args, f"{where} > {name}")
            yield from expand(spec["steps"], inner, orb, f"{where} > {name}")
        elif name != "checkout":
            fail(f"{where}: unknown step {name!r}")


def circleci():
    orb = load("integrations/circleci/orb.yml")
    wanted = {"install", "test", "build", "deploy", "promote", "rollback"}
    for kind in ("commands", "jobs"):
        missing = (wanted - {"install"} if kind == "jobs" else wanted) - set(orb.get(kind, {}))
        if missing:
            fail(f"orb.yml: {kind} missing: {sorted(missing)}")
    for kind in ("commands", "jobs"):
        for name, spec in orb[kind].items():
            declared = set(spec.get("parameters") or {})
            for used in PARAM.findall(yaml.safe_dump(spec["steps"])):
                if used not in declared:
                    fail(f"orb.yml {kind}.{name}: << parameters.{used} >> is not declared")
    # Keys a workflow may give any job, besides the job's own parameters.
    workflow_keys = {"name", "requires", "context", "filters", "matrix", "type",
                     "pre-steps", "post-steps", "serial-group"}
    example = load("integrations/circleci/example-workflow.yml")
    for workflow in example["workflows"].values():
        for entry in workflow["jobs"]:
            job, given = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            given = given or {}
            if not job.startswith("pipeline/"):
                continue
            spec = orb["jobs"].get(job.split("/", 1)[1])
            where = f"circleci {given.get('name', job)}"
            if spec is None:
                fail(f"{where}: the orb has no job {job}")
                continue
            own = {k: v for k, v in given.items() if k not in workflow_keys}
            params = bind(spec.get("parameters", {}), own, where)
            aws = bool(params.get("role-arn"))
            for command, env in expand(spec["steps"], params, orb, where):
                if re.match(r"\s*pipeline\s", command):
                    run(where, command, {**{k: str(v) for k, v in env.items()}, **job_env("circleci", aws)})


def github():
    action = load("action.yml")
    inputs = action["inputs"]
    workflow = load("integrations/github/example-workflow.yml")
    expr = re.compile(r"^\$\{\{\s*inputs\.([\w-]+)\s*\}\}$")
    for job_name, spec in workflow["jobs"].items():
        aws = False
        for step in spec["steps"]:
            uses = step.get("uses", "")
            if uses.startswith("aws-actions/configure-aws-credentials"):
                aws = True
            if not (uses == "./" or re.search(r"/pipeline@", uses)):
                continue
            where = f"github {job_name}"
            given = {k: str(v) for k, v in (step.get("with") or {}).items()}
            values = {k: given.get(k, spec.get("default", "")) for k, spec in inputs.items()}
            for k in given:
                if k not in inputs:
                    fail(f"{where}: the action has no input {k!r}")
            for k, spec in inputs.items():
                if spec.get("required") and k not in given:
                    fail(f"{where}: required input {k!r} not given")
            env = {"GITHUB_ACTION_PATH": ROOT, "GITHUB_SHA": "0" * 40,
                   "GITHUB_OUTPUT": os.devnull, "GITHUB_STEP_SUMMARY": os.devnull}
            for action_step in action["runs"]["steps"]:
                for k, v in (action_step.get("env") or {}).items():
                    m = expr.match(str(v))
                    if not m or m.group(1) not in inputs:
                        fail(f"action.yml: env {k}: only ${{{{ inputs.<input> }}}} is expected, not {v}")
                        continue
                    env[k] = values[m.group(1)]
            # The install step never calls pipeline: run it, then the stage.
            install, stage = action["runs"]["steps"]
            subprocess.run(["bash", "-euo", "pipefail", "-c", install["run"]],
                           env={**os.environ, **env}, check=True, capture_output=True)
            run(where, stage["run"], {**env, **job_env("github", aws)})


def jenkins():
    # vars/pipelineStep.groovy's argv rules, restated: keep the two in step.
    with open(os.path.join(ROOT, "integrations/jenkins/Jenkinsfile.example")) as f:
        text = f.read()
    found = 0
    for m in re.finditer(r"\bpipelineStep\(([^)]*)\)", text):
        opts = dict(re.findall(r"(\w+):\s*'([^']*)'", m.group(1)))
        if "command" not in opts:
            continue  # the comment that mentions the step
        found += 1
        cmd = opts["command"]
        argv = ["pipeline", "--config", opts.get("config", "pipeline.yaml"), "--output", "json", cmd]
        if cmd == "deploy":
            argv += ["--slot", opts["slot"]] if opts.get("slot") else ["--env", opts["env"]]
        if cmd == "promote" and opts.get("to"):
            argv += ["--to", opts["to"]]
        extra = opts.get("args", "").split()
        argv += ["--"] + extra if cmd == "test" else extra
        # The agents' instance role gives every stage AWS credentials.
        run(f"jenkins {cmd} {opts.get('env', opts.get('slot', opts.get('to', '')))}".strip(),
            " ".join(f"'{a}'" for a in argv), job_env("jenkins", True))
    if found < 5:
        fail(f"Jenkinsfile.example: {found} pipelineStep calls, expected test, build, 2 deploys, promote")


circleci()
github()
jenkins()
if failures:
    sys.exit(f"{len(failures)} problem(s) in the CI examples")
