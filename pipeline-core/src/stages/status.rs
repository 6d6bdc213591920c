//! Status: what each environment runs, how healthy it is, which slot is live.
//!
//! Read-only: one DescribeInstances and one balancer health call per
//! environment, plus the record and the slots' endpoints when `promote` is
//! configured.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Result;
use crate::ports::{Balancer, Instances, fleet_health};

/// One environment's state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EnvStatus {
    /// The environment's name.
    pub name: String,
    /// Its balancer, for messages.
    pub balancer: String,
    /// Instances tagged for it that are not terminated.
    pub instances: usize,
    /// Those the balancer reports healthy.
    pub healthy: usize,
    /// Commit -> number of its instances.
    pub commits: BTreeMap<String, usize>,
    /// The AMIs its instances run.
    pub images: BTreeSet<String>,
    /// The artifacts (SHA-256) its instances' AMIs were baked from.
    pub artifacts: BTreeSet<String>,
    /// Whether the public record points at it.
    pub live: bool,
}

/// Reads the state of each `(name, balancer)` environment of `app`; `live`
/// names the slot the public record points at, if known.
pub async fn status(
    app: &str,
    environments: &[(&str, &dyn Balancer)],
    instances: &dyn Instances,
    live: Option<&str>,
) -> Result<Vec<EnvStatus>> {
    let mut out = Vec::with_capacity(environments.len());
    for (name, balancer) in environments {
        let (members, healthy) = fleet_health(instances, app, name, *balancer).await?;
        let mut commits = BTreeMap::new();
        for i in &members {
            *commits.entry(i.commit.clone()).or_insert(0) += 1;
        }
        out.push(EnvStatus {
            name: name.to_string(),
            balancer: balancer.name(),
            instances: members.len(),
            healthy: members.iter().filter(|i| healthy.contains(&i.id)).count(),
            commits,
            images: members.iter().map(|i| i.image_id.clone()).collect(),
            artifacts: members
                .iter()
                .filter(|i| !i.artifact.is_empty())
                .map(|i| i.artifact.clone())
                .collect(),
            live: live == Some(*name),
        });
    }
    Ok(out)
}
