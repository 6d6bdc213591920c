//! Embedding pipeline-core: bake the commit's AMI and deploy it to one
//! environment from your own program, with the same checks as the CLI.
//!
//!     cargo run -p pipeline-core --example embedded -- pipeline.yaml staging <40-hex commit>
//!
//! AWS settings come from the standard chain (AWS_ENDPOINT_URL works, so
//! this runs against the local AWS `make demo` starts, too).

use pipeline_core::ErrorKind;
use pipeline_core::aws::{self, autoscaling::AutoScalingGroups, ec2::Ec2};
use pipeline_core::config::Config;
use pipeline_core::ports::AutoScaling;
use pipeline_core::release::{Release, RunId};
use pipeline_core::stages::build::{BuildPlan, BuildPorts};
use pipeline_core::stages::deploy::{DeployPlan, DeployPorts};
use pipeline_core::wait::Interrupt;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, env, commit] = args.as_slice() else {
        eprintln!("usage: embedded CONFIG ENV COMMIT");
        return std::process::ExitCode::from(2);
    };
    match run(config, env, commit).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            // The same exit codes as the CLI: 2 bad input, 1 failed safely,
            // 3 locked by another run.
            std::process::ExitCode::from(match err.kind() {
                ErrorKind::BadInput => 2,
                ErrorKind::Failed => 1,
                ErrorKind::Locked => 3,
            })
        }
    }
}

async fn run(config: &str, env: &str, commit: &str) -> pipeline_core::Result<()> {
    // Everything is validated before the first AWS call.
    let config = Config::load(config.as_ref())?;
    let deploy_plan = DeployPlan::new(&config, env)?;
    let commit = commit.parse()?;

    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(config.region.clone()))
        .load()
        .await;
    let ec2 = Ec2::new(&sdk, &config.region);
    let interrupt = Interrupt::on_signals();

    // Test -> Built: bake (or reuse) the commit's AMI.
    let built = Release::vouched(&config.app, commit)
        .build(
            &BuildPlan::new(&config)?,
            BuildPorts {
                images: &ec2,
                instances: &ec2,
            },
            &RunId::new(),
            &interrupt,
        )
        .await?;
    println!(
        "AMI {} (reused: {})",
        built.release.image().id,
        built.reused
    );

    // Built -> Deployed: swap it in behind the environment's balancer.
    let environment = &config.environments[env];
    let balancer = aws::balancer(&sdk, &environment.load_balancer);
    let groups = environment
        .placement
        .group()
        .map(|_| AutoScalingGroups::new(&sdk));
    let deployed = built
        .release
        .deploy(
            &deploy_plan,
            DeployPorts {
                instances: &ec2,
                balancer: balancer.as_ref(),
                auto_scaling: groups.as_ref().map(|g| g as &dyn AutoScaling),
            },
            &RunId::new(),
            &interrupt,
        )
        .await?;
    let state = deployed.release.state();
    println!(
        "{} runs {} on {}",
        state.env,
        deployed.release.commit(),
        state.instances.join(", ")
    );
    Ok(())
}
