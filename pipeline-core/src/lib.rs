//! pipeline-core: an immutable-AMI delivery pipeline for AWS, as a library.
//!
//! Bake one AMI per commit, swap fresh instances of it in behind an
//! environment's load balancer, and flip traffic between two production
//! slots on Route53 (and back). The
//! `pipeline` binary is a thin shell around this crate; a program can embed
//! the same stages and go through the same checks.
//!
//! ```no_run
//! # async fn example() -> pipeline_core::Result<()> {
//! use pipeline_core::{aws::ec2::Ec2, config::Config, release::{Release, RunId},
//!     stages::build::{BuildPlan, BuildPorts}, wait::Interrupt};
//! let config = Config::load("pipeline.yaml".as_ref())?; // validated: no AWS call yet
//! let sdk = aws_config::load_from_env().await;
//! let ec2 = Ec2::new(&sdk, &config.region);
//! let release = Release::vouched(&config.app, "0123456789abcdef0123456789abcdef01234567".parse()?);
//! let built = release
//!     .build(&BuildPlan::new(&config)?, BuildPorts { images: &ec2, instances: &ec2 },
//!            &RunId::new(), &Interrupt::on_signals())
//!     .await?;
//! println!("{} reused={}", built.release.image().id, built.reused);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: `pipeline.yaml`, parsed and validated before any AWS call.
//! - [`release`]: commits, run ids and the typed [`release::Release`]
//!   (`Tested` -> `Built` -> `Deployed`).
//! - [`stages`]: `test`, `build`, `deploy`, `promote` (and rollback), `status`.
//! - [`ports`]: the async traits the stages talk to, and their data.
//! - [`aws`]: the ports implemented with the AWS SDK, one file per service.
//! - [`wait`]: bounded polling and the interrupt (Ctrl-C, SIGTERM).
//! - [`error`]: the one error type and how it maps to exit codes.
//! - [`iam`]: the least-privilege IAM policy the configured stages need.
//! - [`ledger`]: the audit ledger and test verdicts in the state bucket.
//! - [`lock`]: the per-environment release lock and queue in the state bucket.
//! - [`notify`]: stage events to webhooks, in the background, bounded.
//! - [`run`]: a stage run: who started it, and the events around it.
//! - [`recovery`]: what a killed run left, cleaned up by the run that takes
//!   over its lock.

#![deny(missing_docs)]

pub mod aws;
pub mod config;
pub mod error;
pub mod iam;
pub mod ledger;
pub mod lock;
pub mod notify;
pub mod ports;
pub mod recovery;
pub mod release;
pub mod run;
pub mod session;
pub mod stages;
pub mod wait;

pub use error::{Error, ErrorKind, Result};
