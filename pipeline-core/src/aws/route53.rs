//! Route53, through aws-sdk-route53: the public record and its changes.

use async_trait::async_trait;
use aws_sdk_route53::Client;
use aws_sdk_route53::types::{
    AliasTarget, Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord,
    ResourceRecordSet, RrType,
};

use super::sdk_error;
use crate::error::{Error, Result};
use crate::ports::{Dns, Endpoint, Record, Target};

/// [`Dns`] adapter.
#[derive(Debug, Clone)]
pub struct Route53 {
    client: Client,
}

impl Route53 {
    /// The adapter, reached with `sdk`.
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Route53 {
            client: Client::new(sdk),
        }
    }
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

fn record_set(record: &Record) -> Result<ResourceRecordSet> {
    let builder = match &record.weighted {
        Some((id, weight)) => ResourceRecordSet::builder()
            .set_identifier(id)
            .weight(*weight),
        None => ResourceRecordSet::builder(),
    };
    let built = match &record.target {
        Target::Cname(host) => builder
            .name(fqdn(&record.name))
            .r#type(RrType::Cname)
            .ttl(record.ttl.unwrap_or(60))
            .resource_records(
                ResourceRecord::builder()
                    .value(host)
                    .build()
                    .map_err(|e| Error::Input(format!("record value: {e}")))?,
            )
            .build(),
        Target::Alias(endpoint) => builder
            .name(fqdn(&record.name))
            .r#type(RrType::A)
            .alias_target(
                AliasTarget::builder()
                    .dns_name(&endpoint.dns_name)
                    .hosted_zone_id(&endpoint.hosted_zone_id)
                    .evaluate_target_health(true)
                    .build()
                    .map_err(|e| Error::Input(format!("alias target: {e}")))?,
            )
            .build(),
    };
    built.map_err(|e| Error::Input(format!("record set: {e}")))
}

#[async_trait]
impl Dns for Route53 {
    async fn records(&self, zone: &str, name: &str) -> Result<Vec<Record>> {
        let wanted = fqdn(name).to_ascii_lowercase();
        // The zone's records come sorted by name, starting at ours; the
        // pages go on while the next one still starts at our name (a
        // weighted record has one set per identifier).
        let mut sets = Vec::new();
        let mut next: Option<(String, Option<RrType>, Option<String>)> = None;
        loop {
            let (start, kind, identifier) = match next.take() {
                Some((start, kind, identifier)) => (start, kind, identifier),
                None => (fqdn(name), None, None),
            };
            let out = self
                .client
                .list_resource_record_sets()
                .hosted_zone_id(zone)
                .start_record_name(start)
                .set_start_record_type(kind)
                .set_start_record_identifier(identifier)
                .max_items(20)
                .send()
                .await
                .map_err(sdk_error(
                    "ListResourceRecordSets",
                    format!("{name} in hosted zone {zone}"),
                ))?;
            sets.extend(out.resource_record_sets().iter().cloned());
            match out.next_record_name() {
                Some(more) if out.is_truncated() && fqdn(more).to_ascii_lowercase() == wanted => {
                    next = Some((
                        more.to_string(),
                        out.next_record_type().cloned(),
                        out.next_record_identifier().map(str::to_string),
                    ));
                }
                _ => break,
            }
        }
        let mut found = Vec::new();
        for set in &sets {
            if fqdn(set.name()).to_ascii_lowercase() != wanted {
                continue;
            }
            let target = match (set.r#type(), set.alias_target()) {
                (RrType::Cname, _) => set
                    .resource_records()
                    .first()
                    .map(|r| Target::Cname(r.value().to_string())),
                (RrType::A, Some(alias)) => Some(Target::Alias(Endpoint {
                    dns_name: alias.dns_name().to_string(),
                    hosted_zone_id: alias.hosted_zone_id().to_string(),
                })),
                _ => None,
            };
            if let Some(target) = target {
                found.push(Record {
                    name: name.trim_end_matches('.').to_string(),
                    target,
                    ttl: set.ttl(),
                    weighted: set
                        .set_identifier()
                        .map(|id| (id.to_string(), set.weight().unwrap_or(0))),
                });
            }
        }
        Ok(found)
    }

    async fn replace(&self, zone: &str, old: &[Record], new: &[Record]) -> Result<String> {
        let describe = |records: &[Record]| {
            let parts: Vec<String> = records
                .iter()
                .map(|r| match &r.weighted {
                    Some((_, weight)) => format!("{} ({weight})", r.target.host()),
                    None => r.target.host(),
                })
                .collect();
            if parts.is_empty() {
                "nothing".to_string()
            } else {
                parts.join(", ")
            }
        };
        let mut batch = ChangeBatch::builder().comment(format!(
            "pipeline: {} -> {}",
            describe(old),
            describe(new)
        ));
        let changes = old
            .iter()
            .map(|r| (ChangeAction::Delete, r))
            .chain(new.iter().map(|r| (ChangeAction::Create, r)));
        for (action, record) in changes {
            batch = batch.changes(
                Change::builder()
                    .action(action)
                    .resource_record_set(record_set(record)?)
                    .build()
                    .map_err(|e| Error::Input(format!("change: {e}")))?,
            );
        }
        let out = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(
                batch
                    .build()
                    .map_err(|e| Error::Input(format!("change batch: {e}")))?,
            )
            .send()
            .await
            .map_err(sdk_error(
                "ChangeResourceRecordSets",
                format!("hosted zone {zone}"),
            ))?;
        Ok(out
            .change_info()
            .map(|c| c.id().to_string())
            .unwrap_or_default())
    }

    async fn in_sync(&self, change_id: &str) -> Result<bool> {
        let out = self
            .client
            .get_change()
            .id(change_id)
            .send()
            .await
            .map_err(sdk_error("GetChange", format!("change {change_id}")))?;
        Ok(out.change_info().map(|c| c.status()) == Some(&ChangeStatus::Insync))
    }
}
