//! pipeline-core: an immutable-AMI delivery pipeline for AWS, as a library.
//!
//! Bake one AMI per commit, swap fresh instances of it in behind an
//! environment's load balancer, and flip traffic between two production
//! slots on Route53 (and back). The `pipeline` binary is a thin shell
//! around this crate's [`session::Session`]; a program that embeds the
//! crate goes through the same session, and so gets the same locks, test
//! gate, crash recovery, ledger and webhooks.
//!
//! ```no_run
//! # async fn example() -> pipeline_core::Result<()> {
//! use pipeline_core::{config::Config, run::Actor, session::{BuildOptions, Session}};
//! let config = Config::load("pipeline.yaml".as_ref())?; // checked: no AWS call yet
//! let sdk = pipeline_core::aws::sdk_config(&config.region).await;
//! let actor = Actor { name: Some("release-bot".into()), job_url: None };
//! let session = Session::new(config, &sdk, actor, |var| std::env::var(var).ok())?;
//! let built = session
//!     .build(BuildOptions {
//!         commit: "0123456789abcdef0123456789abcdef01234567".parse()?,
//!         skip_test_gate: false, // the commit must have passed `pipeline test`
//!         lock_wait: std::time::Duration::from_secs(600),
//!         artifact: Some("dist".into()), // the commit's build, into the AMI
//!         rebake: false,
//!     })
//!     .await?;
//! println!("{} reused={}", built.ami, built.reused);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`]: `pipeline.yaml`, each section checked from its raw form
//!   before any AWS call.
//! - [`session`]: one method per command, each with its options and its
//!   typed report (the `--output json` contract).
//! - [`run`]: a stage run: its stage, its locks, its ledger entry and events.
//! - [`release`]: commits, run ids and the typed [`release::Release`]
//!   (`Tested` -> `Built` -> `Deployed`).
//! - [`stages`]: `test`, `build`, `deploy`, `task`, `promote` (and
//!   rollback), `status`, `gc`, and the settings' user-data.
//! - [`ports`]: the async traits the stages talk to, and their data.
//! - [`aws`]: the ports implemented with the AWS SDK, one file per service,
//!   and the one place that builds them all.
//! - [`lock`]: the per-environment release lock and queue in the state bucket.
//! - [`ledger`]: the audit ledger and test verdicts in the state bucket.
//! - [`recovery`]: what a killed run left, cleaned up by the run that takes
//!   over its lock.
//! - [`notify`]: stage events to webhooks, in the background, bounded.
//! - [`wait`]: bounded polling and the interrupt (Ctrl-C, SIGTERM).
//! - [`iam`]: the least-privilege IAM policy the configured stages need.
//! - [`error`]: the one error type and the exit code of each kind.

#![deny(missing_docs)]

pub mod artifact;
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
