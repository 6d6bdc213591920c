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
Each integration's install step runs for real (integrations/install.sh,
or the orb's copy of it) against $PIPELINE_RELEASE_URL, a local file server
validate.sh starts, each example in a home directory of its own (under
$PIPELINE_HOMES if set); each install's binary is listed in $PIPELINE_INSTALLS.
With PIPELINE_EXPECT_REFUSAL=1 the server's checksum is wrong: every install
must refuse (exit 3) and no stage may run.
Also checks the structure CircleCI's config schema does not: the orb has the
commands and jobs this project promises, every `<< parameters.x >>` is
declared, the example passes each orb job only parameters it declares, the
orb's scripts are integrations/install.sh and run.sh as they are, and each
integration pins the workspace's version.
"""

import hashlib
import os
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALLS = os.environ["PIPELINE_CALLS"]
INSTALLS = os.environ["PIPELINE_INSTALLS"]
RELEASE_URL = os.environ["PIPELINE_RELEASE_URL"]
REFUSAL = os.environ.get("PIPELINE_EXPECT_REFUSAL") == "1"
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


def version():
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        return re.search(r'^version = "(.*)"$', f.read(), re.M).group(1)


def read(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return f.read()


def install(where, script, env, home):
    """Runs an integration's install step for real, against the local
    release server, in `home` (one per example: later jobs find the cache).
    Returns whether the stages may run."""
    env = {**os.environ, **env, "HOME": home, "PIPELINE_RELEASE_URL": RELEASE_URL}
    env.pop("PIPELINE_CACHE_DIR", None)
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env,
                          capture_output=True, text=True)
    example = where.split()[0]
    if REFUSAL:
        if proc.returncode != 3 or "refusing to run it" not in proc.stderr:
            fail(f"{where}: install did not refuse a wrong checksum (exit {proc.returncode}):\n{proc.stderr}")
        else:
            print(f"ok   {where}: refused")
            with open(INSTALLS, "a") as f:
                f.write(f"{example}|refused|\n")
        return False
    if proc.returncode != 0:
        fail(f"{where}: install failed (exit {proc.returncode}):\n{proc.stderr}")
        return False
    return True


def installed(where, path):
    """Lists the binary an install put in place, with its SHA-256."""
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    with open(INSTALLS, "a") as f:
        f.write(f"{where.split()[0]}|{os.path.realpath(path)}|{digest}\n")


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
            # CircleCI's escape of a literal `<<` in a step.
            yield args.get("name", ""), args["command"].replace("\\<<", "<<"), args.get("environment", {})
        elif name == "when":
            if args.get("condition") not in ("", False, None):
                yield from expand(args["steps"], params, orb, where)
        elif name in ("attach_workspace", "restore_cache", "save_cache"):
            pass  # CircleCI's own; nothing to run here
        elif name in orb["commands"]:
            spec = orb["commands"][name]
            inner = bind(spec.get("parameters", {}), args, f"{where} > {name}")
            yield from expand(spec["steps"], inner, orb, f"{where} > {name}")
        elif name != "checkout":
            fail(f"{where}: unknown step {name!r}")


def circleci():
    orb = load("integrations/circleci/orb.yml")
    wanted = {"commands": {"install", "pipeline"},
              "jobs": {"test", "build", "deploy", "task", "promote", "rollback", "watch", "status"}}
    for kind, names in wanted.items():
        missing = names - set(orb.get(kind, {}))
        if missing:
            fail(f"orb.yml: {kind} missing: {sorted(missing)}")
    for kind in ("commands", "jobs"):
        for name, spec in orb[kind].items():
            declared = set(spec.get("parameters") or {})
            for used in PARAM.findall(yaml.safe_dump(spec["steps"]) + str(spec.get("executor", ""))):
                if used not in declared:
                    fail(f"orb.yml {kind}.{name}: << parameters.{used} >> is not declared")
        for name, spec in orb["jobs"].items():
            for p in ("executor", "attach-workspace", "args"):
                if p not in (spec.get("parameters") or {}):
                    fail(f"orb.yml jobs.{name}: no {p} parameter")
    # The orb carries the two scripts as they are.
    steps = {c: orb["commands"][c]["steps"] for c in ("install", "pipeline")}
    install_step = next(st["run"] for st in steps["install"] if "run" in st)
    run_step = next(st["run"] for st in steps["pipeline"] if "run" in st)
    for script, step in (("integrations/install.sh", install_step), ("integrations/run.sh", run_step)):
        if not step["command"].replace("\\<<", "<<").endswith(read(script)):
            fail(f"orb.yml: the step {step['name']!r} is not {script} as it is: run integrations/sync_copies.py")
    pinned = orb["commands"]["install"]["parameters"]["version"]["default"]
    if pinned != version():
        fail(f"orb.yml: install's version {pinned} is not the workspace's {version()}")
    # Keys a workflow may give any job, besides the job's own parameters.
    workflow_keys = {"name", "requires", "context", "filters", "matrix", "type",
                     "pre-steps", "post-steps", "serial-group"}
    example = load("integrations/circleci/example-workflow.yml")
    home = tempfile.mkdtemp(prefix="pipeline-circleci-", dir=os.environ.get("PIPELINE_HOMES"))
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
            for name, command, env in expand(spec["steps"], params, orb, where):
                env = {k: str(v) for k, v in env.items()}
                if name == "Install pipeline":
                    if not install(where, command, env, home):
                        break
                    installed(where, os.path.join(home, ".local/pipeline/bin/pipeline"))
                elif "PIPELINE_INSTALLED" in command:  # the orb's pipeline command
                    run(where, command, {**env, **job_env("circleci", aws)})


def github():
    action = load("action.yml")
    inputs = action["inputs"]
    workflow = load("integrations/github/example-workflow.yml")
    expr = re.compile(r"^\$\{\{\s*(inputs|steps\.version\.outputs|github)\.([\w-]+)\s*\}\}$")
    home = tempfile.mkdtemp(prefix="pipeline-github-", dir=os.environ.get("PIPELINE_HOMES"))
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
            files = {k: tempfile.mktemp(prefix=f"pipeline-{k}-") for k in
                     ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH")}
            for f in files.values():
                open(f, "w").close()
            base = {"GITHUB_ACTION_PATH": ROOT, "GITHUB_SHA": "0" * 40,
                    "GITHUB_STEP_SUMMARY": os.devnull, **files}
            outputs = {}
            for action_step in action["runs"]["steps"]:
                if "uses" in action_step:
                    continue  # actions/cache: GitHub's own
                env = dict(base)
                for k, v in (action_step.get("env") or {}).items():
                    m = expr.match(str(v))
                    if not m:
                        fail(f"action.yml: env {k}: only inputs, steps.version.outputs or github are expected, not {v}")
                        continue
                    scope, key = m.groups()
                    env[k] = {"inputs": values, "steps.version.outputs": outputs,
                              "github": {"action_repository": "your-org/pipeline"}}[scope].get(key, "")
                if action_step.get("id") == "version":
                    subprocess.run(["bash", "-euo", "pipefail", "-c", action_step["run"]],
                                   env={**os.environ, **env}, check=True)
                    with open(files["GITHUB_OUTPUT"]) as f:
                        outputs = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
                    if outputs.get("version") != version():
                        fail(f"action.yml: the version it pins is {outputs.get('version')}, not {version()}")
                elif action_step.get("name") == "Install pipeline":
                    if not install(where, action_step["run"], env, home):
                        break
                    with open(files["GITHUB_ENV"]) as f:
                        path = dict(line.rstrip("\n").split("=", 1) for line in f)["PIPELINE_INSTALLED"]
                    installed(where, path)
                else:
                    # The stage, through the parser wrapper on PATH.
                    env["GITHUB_OUTPUT"] = os.devnull
                    env["PIPELINE_INSTALLED"] = "pipeline"
                    run(where, action_step["run"], {**env, **job_env("github", aws)})
            for f in files.values():
                os.unlink(f)


def jenkins():
    # vars/pipelineStep.groovy's argv rules, restated: keep the two in step.
    text = read("integrations/jenkins/Jenkinsfile.example")
    step = read("integrations/jenkins/vars/pipelineStep.groovy")
    pinned = re.search(r"String VERSION = '([^']*)'", step).group(1)
    if pinned != version():
        fail(f"pipelineStep.groovy: VERSION {pinned} is not the workspace's {version()}")
    home = tempfile.mkdtemp(prefix="pipeline-jenkins-", dir=os.environ.get("PIPELINE_HOMES"))
    script = read("integrations/jenkins/resources/pipeline/install.sh")
    target = subprocess.run(["bash", "-c", script, "install.sh", "--target"],
                            capture_output=True, text=True, check=True).stdout.strip()
    # Where the step's install leaves the binary (the path it prints last).
    cached = os.path.join(home, ".cache/pipeline-bin", pinned, target, "pipeline")
    if script != read("integrations/install.sh"):
        fail("jenkins resources/pipeline/install.sh is not integrations/install.sh: run integrations/sync_copies.py")
    found = 0
    for m in re.finditer(r"\bpipelineStep\(([^()]*)\)", text):
        body = m.group(1)
        opts = dict(re.findall(r"(\w+):\s*'([^']*)'", body))
        if "command" not in opts:
            continue  # the comment that mentions the step
        found += 1
        cmd = opts["command"]
        where = f"jenkins {cmd} {opts.get('env', opts.get('slot', opts.get('to', '')))}".strip()
        # Each call installs (the first downloads, the others hit the cache).
        if not install(where, script, {"PIPELINE_VERSION": pinned, "PIPELINE_INSTALL": "auto"}, home):
            continue
        installed(where, cached)
        argv = ["pipeline", "--config", opts.get("config", "pipeline.yaml"), "--output", "json", cmd]
        if cmd == "deploy":
            argv += ["--slot", opts["slot"]] if opts.get("slot") else ["--env", opts["env"]]
        if cmd == "promote" and opts.get("to"):
            argv += ["--to", opts["to"]]
        listed = re.search(r"args:\s*\[([^\]]*)\]", body)
        extra = re.findall(r"'([^']*)'", listed.group(1)) if listed else \
            [line for line in opts.get("args", "").splitlines() if line]
        if cmd == "test":
            argv += extra + ["--", "bash", "-c", opts["run"]] if opts.get("run") else ["--"] + extra
        else:
            argv += extra
        # The agents' instance role gives every stage AWS credentials.
        run(where, " ".join("'" + a.replace("'", "'\\''") + "'" for a in argv), job_env("jenkins", True))
    if found < 5:
        fail(f"Jenkinsfile.example: {found} pipelineStep calls, expected test, build, 2 deploys, promote")


circleci()
github()
jenkins()
if failures:
    sys.exit(f"{len(failures)} problem(s) in the CI examples")
