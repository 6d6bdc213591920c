//! End-to-end tests: the real `pipeline` binary and the real AWS SDK over
//! HTTP against a moto server on 127.0.0.1. Results are checked through the
//! AWS API, never through the pipeline's own output alone.
//!
//! One test binary for the whole crate (each links the AWS SDK).
//!
//! # Layout
//! - `support`: a moto world per test, a config writer, the binary runner.
//! - `cli`: help, bad input, the test command.
//! - `build`: baking, reuse, timeout, interrupt, copies.
//! - `artifacts`: the commit's build into the AMI, provenance, hardened
//!   instances, secrets by reference.
//! - `deploy`: the swap behind both balancer kinds, failures, crash recovery, call counts.
//! - `embedded`: the embedded example gets the test gate, the lock and the ledger.
//! - `promote`: the blue/green flip, rollback, the traffic guard, status.
//! - `safety`: lock and queue, ledger and test gate, crash recovery, gc, dashboard.
//! - `storm`: the release train through the realistic proxy (AWS's clock,
//!   throttles and faults) ends as a calm one.
//! - `watch`: promote's CloudWatch watch rolls a bad release back by itself.
//! - `tasks`: release tasks before traffic, by hand, and failing.
//! - `notify`: webhook events to a local receiver, one of them down.
//! - `iam`: the printed IAM policy grants every call the stages make.
//! - `progress`: live in a tmux pane, plain in CI.
//! - `integrations`: the CI integrations validate against their schemas,
//!   and their examples' `pipeline` steps run, in order, against moto.

mod artifacts;
mod build;
mod cli;
mod deploy;
mod embedded;
mod iam;
mod integrations;
mod notify;
mod progress;
mod promote;
mod safety;
mod storm;
mod support;
mod tasks;
mod watch;
