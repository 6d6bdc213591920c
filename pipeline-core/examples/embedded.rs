//! Embedding pipeline-core: bake the commit's AMI and deploy it to one
//! environment from your own program, through the same [`Session`] the
//! `pipeline` binary uses. So it gets what the CLI gets: the test gate
//! (the commit must have passed `pipeline test`), the locks (a CLI run on
//! the same environment waits or exits 3, and so does this program), crash
//! recovery, the ledger entries and the webhooks.
//!
//!     cargo run -p pipeline-core --example embedded -- pipeline.yaml staging <40-hex commit>
//!
//! AWS settings come from the standard chain (AWS_ENDPOINT_URL works, so
//! this runs against the local AWS `make demo` starts, too).

use std::time::Duration;

use pipeline_core::config::Config;
use pipeline_core::release::{Commit, ReleaseRef};
use pipeline_core::run::Actor;
use pipeline_core::session::{BuildOptions, DeployOptions, DeployReport, DeployTarget, Session};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, env, commit] = args.as_slice() else {
        eprintln!("usage: embedded CONFIG ENV COMMIT");
        return std::process::ExitCode::from(2);
    };
    let actor = Actor {
        name: std::env::var("USER").ok(),
        job_url: None,
    };
    let result = async {
        // Everything is checked before the first AWS call.
        let config = Config::load(config.as_ref())?;
        let sdk = pipeline_core::aws::sdk_config(&config.region).await;
        run(config, env, commit, &sdk, actor).await
    };
    match result.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            // The same exit codes as the CLI: 2 bad input, 1 failed safely,
            // 3 locked by another run.
            std::process::ExitCode::from(err.kind().exit_code())
        }
    }
}

/// Bakes (or reuses) `commit`'s AMI and deploys it to `env`, as `actor`.
pub async fn run(
    config: Config,
    env: &str,
    commit: &str,
    sdk: &aws_config::SdkConfig,
    actor: Actor,
) -> pipeline_core::Result<()> {
    let commit: Commit = commit.parse()?;
    let session = Session::new(config, sdk, actor, |name| std::env::var(name).ok())?;

    // Tested -> Built: refused unless `pipeline test` passed the commit.
    let built = session
        .build(BuildOptions {
            commit: commit.clone(),
            skip_test_gate: false,
            lock_wait: Duration::ZERO,
            artifact: None, // build.artifact, if the config has one
            rebake: false,
        })
        .await?;
    println!("AMI {} (reused: {})", built.ami, built.reused);

    // Built -> Deployed: swapped in behind the environment's balancer.
    let deployed = session
        .deploy(DeployOptions {
            target: DeployTarget::Env(env.to_string()),
            allow_live: false,
            release: ReleaseRef::Commit(commit),
            lock_wait: Duration::ZERO,
        })
        .await?;
    match deployed {
        DeployReport::Deployed(d) => {
            println!("{} runs {} on {}", d.env, d.commit, d.new.join(", "))
        }
        DeployReport::Superseded(s) => println!("a newer deploy to {} won: {}", s.env, s.by),
    }
    Ok(())
}
