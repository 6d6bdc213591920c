//! A moto world per test and a runner for the `pipeline` binary.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_ec2::types::Filter;
use pipeline_fixtures::{Balancers, Call, Moto, Realistic, World};

/// A commit SHA for tests.
pub const SHA: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
/// Another commit SHA.
pub const SHA2: &str = "9c1185a5c5e9fc54612808977ee8f548b2258d31";
/// A third.
pub const SHA3: &str = "1111111111111111111111111111111111111111";

/// A moto server with a seeded world and a scratch directory.
pub struct Env {
    pub moto: Moto,
    pub sdk: SdkConfig,
    pub world: World,
    pub ec2: aws_sdk_ec2::Client,
    /// AWS as it is, in front of moto: when set, the binary talks to it
    /// (the test's own checks still go to moto).
    pub aws: Option<Realistic>,
    dir: PathBuf,
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// The stdout parsed as the one JSON object `--output json` promises.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}):\n{self:#?}"))
    }
}

impl Env {
    pub async fn new() -> Env {
        let moto = tokio::task::spawn_blocking(Moto::start)
            .await
            .unwrap()
            .expect("moto starts (run `make test`, which installs it into .venv)");
        let sdk = moto.sdk_config("e2e-test").await;
        let world = pipeline_fixtures::seed(&sdk).await;
        let ec2 = aws_sdk_ec2::Client::new(&sdk);
        let dir = std::env::temp_dir().join(format!(
            "pipeline-e2e-{}-{}",
            std::process::id(),
            world.vpc_id
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Env {
            moto,
            sdk,
            world,
            ec2,
            aws: None,
            dir,
        }
    }

    /// From now on the binary meets AWS as it is: the realistic proxy in
    /// front of moto, with `settings` (see `fixtures/moto/realistic.py`).
    pub fn meet_aws(&mut self, settings: serde_json::Value) -> &Realistic {
        let proxy = Realistic::start(&self.moto, &settings).expect("the realistic proxy starts");
        self.aws.insert(proxy)
    }

    /// A config for the seeded world; `build_extra` lines are appended to
    /// the `build:` section (indented by two spaces).
    pub fn config(&self, build_extra: &str) -> String {
        let w = &self.world;
        let extra: String = build_extra
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("  {}\n", l.trim_start()))
            .collect();
        format!(
            "app: shop
region: {region}
state:
  bucket: {bucket}
  lock_ttl: 2s
build:
  base_image:
    owner: self
    name: debian-12-amd64-*
  subnet: {subnet}
  security_groups: [{sg}]
  provision: |
    #!/bin/bash
    set -euo pipefail
    apt-get install -y nginx
  timeout: 30s
  image_timeout: 30s
  poll_interval: 100ms
{extra}",
            region = w.region,
            bucket = w.state_bucket,
            subnet = w.subnets[0].id,
            sg = w.security_group_id,
        )
    }

    /// A config with two environments on `balancers`: `staging` behind the
    /// Classic ELB and `prod1` behind the target group, `count` instances each.
    pub fn deploy_config(&self, balancers: &Balancers, count: u32, health_timeout: &str) -> String {
        let w = &self.world;
        let env = |name: &str, balancer: String| {
            format!(
                "  {name}:
    count: {count}
    subnets: [{a}, {b}]
    security_groups: [{sg}]
    load_balancer: {balancer}
    health_timeout: {health_timeout}
    healthy_for: 300ms
    drain_timeout: 5s
    poll_interval: 100ms
    settings: {{ RAILS_ENV: production }}
",
                a = w.subnets[0].id,
                b = w.subnets[1].id,
                sg = w.security_group_id,
            )
        };
        format!(
            "{}environments:\n{}{}",
            self.config(""),
            env("staging", classic(balancers)),
            env("prod1", target_group(balancers)),
        )
    }

    /// One `environments:` entry for the seeded world: 2 instances over both
    /// subnets behind `load_balancer` (YAML, e.g. `{ classic: NAME }`), with
    /// waits short enough for tests.
    pub fn environment(&self, name: &str, load_balancer: &str) -> String {
        let w = &self.world;
        format!(
            "  {name}:\n    count: 2\n    subnets: [{}, {}]\n    load_balancer: {load_balancer}\n    health_timeout: 20s\n    healthy_for: 200ms\n    drain_timeout: 2s\n    poll_interval: 100ms\n",
            w.subnets[0].id, w.subnets[1].id
        )
    }

    /// Instances tagged with this app, `env` and `commit`, not terminated.
    pub async fn live_instances(&self, env: &str, commit: &str) -> Vec<String> {
        self.live(&[("pipeline:env", env), ("pipeline:commit", commit)])
            .await
    }

    /// Instances tagged with this app and `env`, any commit, not terminated.
    pub async fn live_in(&self, env: &str) -> Vec<String> {
        self.live(&[("pipeline:env", env)]).await
    }

    /// Instances of this app with these tags, not terminated, sorted.
    async fn live(&self, tags: &[(&str, &str)]) -> Vec<String> {
        let mut request = self
            .ec2
            .describe_instances()
            .filters(filter("tag:pipeline:app", "shop"));
        for (key, value) in tags {
            request = request.filters(filter(&format!("tag:{key}"), value));
        }
        let out = request.send().await.unwrap();
        let mut ids: Vec<String> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
            .map(|i| i.instance_id().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }

    /// Writes `text` as this test's pipeline.yaml and returns its path.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let path = self.dir.join("pipeline.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs the binary with `args`, pointed at moto and at the config file.
    pub async fn pipeline(&self, args: &[&str]) -> Run {
        self.spawn(args).wait().await
    }

    /// [`Env::pipeline`] with extra environment variables.
    pub async fn pipeline_with(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Run {
        self.spawn_with(args, extra_env).wait().await
    }

    /// [`Env::pipeline_with`] as a CI job runs it: the binary the job
    /// installed (`bin`), with the moto world's AWS credentials only if the
    /// job has some (`aws`).
    pub async fn pipeline_in_job(
        &self,
        bin: &std::path::Path,
        args: &[&str],
        extra_env: &[(&str, &str)],
        aws: bool,
    ) -> Run {
        let mut child = self.command_of(bin, args, extra_env);
        if !aws {
            child
                .env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY");
        }
        Child {
            child: child.spawn().expect("the pipeline binary runs"),
            started: Instant::now(),
        }
        .wait()
        .await
    }

    /// [`Env::pipeline`], which must exit 0.
    pub async fn ok(&self, args: &[&str]) -> Run {
        let run = self.pipeline(args).await;
        assert_eq!(run.code, 0, "{args:?}: {run:#?}");
        run
    }

    /// Builds each of `shas` (test gate skipped), each exiting 0.
    pub async fn build_all(&self, shas: &[&str]) {
        for sha in shas {
            self.ok(&["build", "--skip-test-gate", "--commit", sha])
                .await;
        }
    }

    /// The scratch directory the config lives in, removed with the Env.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Starts the binary without waiting for it.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.spawn_with(args, &[])
    }

    /// Starts the binary with extra environment variables.
    pub fn spawn_with(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Child {
        let mut cmd = self.command(args, extra_env);
        Child {
            child: cmd.spawn().expect("the pipeline binary runs"),
            started: Instant::now(),
        }
    }

    /// The binary with `args`, pointed at moto and run in the scratch
    /// directory with a clean environment and `extra_env`.
    fn command(&self, args: &[&str], extra_env: &[(&str, &str)]) -> tokio::process::Command {
        self.command_of(
            std::path::Path::new(env!("CARGO_BIN_EXE_pipeline")),
            args,
            extra_env,
        )
    }

    /// The command that runs `bin` (a pipeline binary) with `args` in the
    /// scratch directory, with the moto world's environment.
    fn command_of(
        &self,
        bin: &std::path::Path,
        args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(args)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // The OS user, as on a workstation: the ledger's actor.
            .env("USER", "e2e")
            .envs(match &self.aws {
                Some(aws) => aws.env(),
                None => self.moto.env(),
            })
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Calls recorded since the last reset that the pipeline binary made.
    pub fn pipeline_calls(&self) -> Vec<Call> {
        self.moto
            .calls()
            .into_iter()
            .filter(|c| c.made_by("pipeline"))
            .collect()
    }

    /// Calls the pipeline made to AWS resources: all but its own state
    /// bucket's, which must touch only its lock, queue, ledger, test and artifact keys.
    pub fn aws_calls(&self) -> Vec<Call> {
        let (state, aws): (Vec<Call>, Vec<Call>) = self
            .pipeline_calls()
            .into_iter()
            .partition(|c| self.is_state_call(c));
        assert_only_bookkeeping(&state);
        aws
    }

    fn is_state_call(&self, call: &Call) -> bool {
        call.service == "s3"
            && call
                .path
                .starts_with(&format!("/{}/", self.world.state_bucket))
    }

    /// An S3 client (path-style, as moto serves it).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.sdk)
                .force_path_style(true)
                .build(),
        )
    }

    /// Keys under `prefix` in the state bucket.
    pub async fn state_keys(&self, prefix: &str) -> Vec<String> {
        self.s3()
            .list_objects_v2()
            .bucket(&self.world.state_bucket)
            .prefix(prefix)
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .map(|o| o.key().unwrap().to_string())
            .collect()
    }

    /// A state bucket object, parsed as JSON; `None` if there is none.
    pub async fn state_object(&self, key: &str) -> Option<serde_json::Value> {
        let out = self
            .s3()
            .get_object()
            .bucket(&self.world.state_bucket)
            .key(key)
            .send()
            .await
            .ok()?;
        let bytes = out.body.collect().await.unwrap().into_bytes();
        serde_json::from_slice(&bytes).ok()
    }

    /// The app's ledger entries of `stage`, oldest first.
    pub async fn ledger_of(&self, stage: &str) -> Vec<serde_json::Value> {
        let mut entries = self.ledger().await;
        entries.retain(|e| e["stage"] == stage);
        entries
    }

    /// The app's ledger entries, read from S3, oldest first.
    pub async fn ledger(&self) -> Vec<serde_json::Value> {
        let mut entries = Vec::new();
        for key in self.state_keys("ledger/shop/").await {
            entries.push(self.state_object(&key).await.expect("a ledger entry"));
        }
        entries
    }

    /// The AMIs tagged with this app and `commit`, in `region`.
    pub async fn release_images(
        &self,
        region: &str,
        commit: &str,
    ) -> Vec<aws_sdk_ec2::types::Image> {
        let client = self.client_in(region);
        client
            .describe_images()
            .owners("self")
            .filters(filter("tag:pipeline:app", "shop"))
            .filters(filter("tag:pipeline:commit", commit))
            .send()
            .await
            .unwrap()
            .images()
            .to_vec()
    }

    /// Builder instances of this app, any state: (id, state).
    pub async fn builders(&self) -> Vec<(String, String)> {
        let out = self
            .ec2
            .describe_instances()
            .filters(filter("tag:pipeline:role", "builder"))
            .filters(filter("tag:pipeline:app", "shop"))
            .send()
            .await
            .unwrap();
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| {
                (
                    i.instance_id().unwrap().to_string(),
                    i.state().unwrap().name().unwrap().as_str().to_string(),
                )
            })
            .collect()
    }

    /// An EC2 client for another region of the same moto.
    pub fn client_in(&self, region: &str) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::config::Builder::from(&self.sdk)
            .region(aws_config::Region::new(region.to_string()))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `pipeline` process.
pub struct Child {
    pub child: tokio::process::Child,
    started: Instant,
}

impl Child {
    /// Sends a signal (e.g. "INT", "TERM") to the process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Waits for the process (at most two minutes, or
    /// `PIPELINE_E2E_RUN_CAP` seconds: the benchmarks' thousand-instance
    /// runs take longer on moto) and collects its output.
    pub async fn wait(self) -> Run {
        let started = self.started;
        let cap = std::env::var("PIPELINE_E2E_RUN_CAP")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120);
        let out = tokio::time::timeout(Duration::from_secs(cap), self.child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("pipeline finished within {cap} s"))
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        }
    }
}

/// State bucket calls touch only the pipeline's own keys: locks, the
/// deploy queue, the ledger and test verdicts.
fn assert_only_bookkeeping(state: &[Call]) {
    for call in state {
        let key = match call.path.splitn(3, '/').nth(2).unwrap_or_default() {
            // A listing of the bucket: its prefix says what it reads.
            "" => call
                .query
                .split('&')
                .find_map(|pair| pair.strip_prefix("prefix="))
                .unwrap_or_default()
                .replace("%2F", "/"),
            key => key.to_string(),
        };
        assert!(
            ["locks/", "queue/", "ledger/", "tests/", "artifacts/"]
                .iter()
                .any(|dir| key.starts_with(dir)),
            "a state bucket call outside the pipeline's keys: {call:?}"
        );
    }
}

pub fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

/// Polls `check` every 50 ms for up to 20 s until it returns true.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which balancer an environment of [`Env::deploy_config`] uses.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A Classic ELB.
    Classic,
    /// An ALB/NLB target group.
    TargetGroup,
}

impl Kind {
    /// Its environment in [`Env::deploy_config`].
    pub fn env(self) -> &'static str {
        match self {
            Kind::Classic => "staging",
            Kind::TargetGroup => "prod1",
        }
    }
}

/// (id, healthy) of every instance the balancer has registered: one call.
pub async fn balancer_health(env: &Env, balancers: &Balancers, kind: Kind) -> Vec<(String, bool)> {
    health_with(&env.sdk, balancers, kind).await
}

pub async fn health_with(
    sdk: &aws_config::SdkConfig,
    balancers: &Balancers,
    kind: Kind,
) -> Vec<(String, bool)> {
    match kind {
        Kind::Classic => aws_sdk_elasticloadbalancing::Client::new(sdk)
            .describe_instance_health()
            .load_balancer_name(&balancers.classic)
            .send()
            .await
            .unwrap()
            .instance_states()
            .iter()
            .map(|s| {
                (
                    s.instance_id().unwrap().to_string(),
                    s.state() == Some("InService"),
                )
            })
            .collect(),
        Kind::TargetGroup => aws_sdk_elasticloadbalancingv2::Client::new(sdk)
            .describe_target_health()
            .target_group_arn(&balancers.target_group_arn)
            .send()
            .await
            .unwrap()
            .target_health_descriptions()
            .iter()
            .map(|d| {
                let state = d
                    .target_health()
                    .and_then(|h| h.state())
                    .map(|s| s.as_str().to_string());
                (
                    d.target().unwrap().id().unwrap().to_string(),
                    state.as_deref() == Some("healthy"),
                )
            })
            .collect(),
    }
}

/// The ids of every instance the balancer has registered, healthy or not.
pub async fn registered(env: &Env, balancers: &Balancers, kind: Kind) -> Vec<String> {
    balancer_health(env, balancers, kind)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// The ids of the instances the balancer reports healthy, sorted.
pub async fn healthy(env: &Env, balancers: &Balancers, kind: Kind) -> Vec<String> {
    healthy_with(&env.sdk, balancers, kind).await
}

pub async fn healthy_with(
    sdk: &aws_config::SdkConfig,
    balancers: &Balancers,
    kind: Kind,
) -> Vec<String> {
    let mut ids: Vec<String> = health_with(sdk, balancers, kind)
        .await
        .into_iter()
        .filter(|(_, h)| *h)
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids
}

/// `load_balancer` YAML for a seeded Classic ELB.
pub fn classic(b: &Balancers) -> String {
    format!("{{ classic: {} }}", b.classic)
}

/// `load_balancer` YAML for a seeded target group.
pub fn target_group(b: &Balancers) -> String {
    format!("{{ target_group: \"{}\" }}", b.target_group_arn)
}
