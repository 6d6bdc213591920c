//! The stages, each a step a CI job runs: `test`, `build`, `deploy`,
//! `promote` (and rollback), `status`, which only reads, and `task`, the
//! one-off release tasks a deploy runs (or `pipeline task` by hand).
//!
//! Stages talk to AWS only through [`crate::ports`]; each takes a validated
//! plan, the ports, and an [`crate::wait::Interrupt`], and cleans up what it
//! created when it fails.

pub mod build;
pub mod deploy;
pub mod gc;
pub mod promote;
pub mod status;
pub mod task;
pub mod test;
