//! Auto Scaling groups, through aws-sdk-autoscaling (and aws-sdk-ec2 for
//! launch template versions).

use async_trait::async_trait;
use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::{
    LaunchTemplateTagSpecificationRequest, RequestLaunchTemplateData, ResourceType, Tag,
};
use base64::Engine;

use super::sdk_error;
use crate::config::MetadataOptions;
use crate::error::{Error, Result};
use crate::ports::{AutoScaling, GroupState, Tags, tag};

/// The processes a deploy suspends so the group does not fight it.
const SUSPENDED: [&str; 5] = [
    "AZRebalance",
    "AlarmNotification",
    "ScheduledActions",
    "ReplaceUnhealthy",
    "HealthCheck",
];

/// DetachInstances takes at most this many ids a call.
const DETACH_BATCH: usize = 20;

/// [`AutoScaling`] adapter.
#[derive(Debug, Clone)]
pub struct AutoScalingGroups {
    autoscaling: aws_sdk_autoscaling::Client,
    ec2: aws_sdk_ec2::Client,
}

impl AutoScalingGroups {
    /// The adapter, reached with `sdk`.
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        AutoScalingGroups {
            autoscaling: aws_sdk_autoscaling::Client::new(sdk),
            ec2: aws_sdk_ec2::Client::new(sdk),
        }
    }

    /// One DetachInstances call, lowering the desired capacity.
    async fn detach_batch(&self, name: &str, batch: &[String]) -> Result<()> {
        self.autoscaling
            .detach_instances()
            .auto_scaling_group_name(name)
            .set_instance_ids(Some(batch.to_vec()))
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .map_err(sdk_error(
                "DetachInstances",
                format!("Auto Scaling group {name}"),
            ))?;
        Ok(())
    }
}

/// Auto Scaling's refusal of a DetachInstances naming an instance that is
/// not in the group: "The instance i-... is not part of Auto Scaling group
/// NAME."
fn is_not_a_member(err: &Error) -> bool {
    matches!(err, Error::Aws { code, message, .. }
        if code == "ValidationError" && message.contains("is not part of Auto Scaling group"))
}

#[async_trait]
impl AutoScaling for AutoScalingGroups {
    async fn group(&self, name: &str) -> Result<GroupState> {
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(sdk_error(
                "DescribeAutoScalingGroups",
                format!("Auto Scaling group {name}"),
            ))?;
        let group = out
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(name))
            .ok_or_else(|| Error::NotFound {
                what: "Auto Scaling group".into(),
                detail: format!("no group {name:?}; fix auto_scaling_group"),
            })?;
        let template = group
            .launch_template()
            .or_else(|| {
                group
                    .mixed_instances_policy()
                    .and_then(|p| p.launch_template())
                    .and_then(|t| t.launch_template_specification())
            })
            .ok_or_else(|| {
                Error::Input(format!(
                    "Auto Scaling group {name} has no launch template; pipeline deploys through launch template versions"
                ))
            })?;
        Ok(GroupState {
            instances: group
                .instances()
                .iter()
                .filter_map(|i| i.instance_id().map(str::to_string))
                .collect(),
            desired: group.desired_capacity().unwrap_or(0).max(0) as u32,
            max: group.max_size().unwrap_or(0).max(0) as u32,
            template_id: template
                .launch_template_id()
                .unwrap_or_default()
                .to_string(),
            template_version: template.version().unwrap_or("$Default").to_string(),
            resting_max: group
                .tags()
                .iter()
                .find(|t| t.key() == Some(tag::RESTING_MAX))
                .and_then(|t| t.value()?.parse().ok()),
        })
    }

    async fn new_template_version(
        &self,
        template_id: &str,
        source_version: &str,
        image_id: &str,
        user_data: &str,
        metadata: MetadataOptions,
        tags: &Tags,
    ) -> Result<String> {
        let tags: Vec<Tag> = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let data = RequestLaunchTemplateData::builder()
            .image_id(image_id)
            .user_data(base64::engine::general_purpose::STANDARD.encode(user_data))
            .metadata_options(super::ec2::template_metadata(metadata))
            .tag_specifications(
                LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags.clone()))
                    .build(),
            )
            .tag_specifications(
                LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ResourceType::Volume)
                    .set_tags(Some(tags))
                    .build(),
            )
            .build();
        let out = self
            .ec2
            .create_launch_template_version()
            .launch_template_id(template_id)
            .source_version(source_version)
            .launch_template_data(data)
            .send()
            .await
            .map_err(sdk_error(
                "CreateLaunchTemplateVersion",
                format!("launch template {template_id}"),
            ))?;
        let number = out
            .launch_template_version()
            .and_then(|v| v.version_number())
            .ok_or_else(|| Error::DeployFailed {
                reason: "CreateLaunchTemplateVersion returned no version number".into(),
            })?;
        Ok(number.to_string())
    }

    async fn update(
        &self,
        name: &str,
        template_id: &str,
        template_version: &str,
        desired: u32,
        max: u32,
    ) -> Result<()> {
        self.autoscaling
            .update_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_id(template_id)
                    .version(template_version)
                    .build(),
            )
            .desired_capacity(desired as i32)
            .max_size(max as i32)
            .send()
            .await
            .map_err(sdk_error(
                "UpdateAutoScalingGroup",
                format!("Auto Scaling group {name}"),
            ))?;
        Ok(())
    }

    async fn suspend(&self, name: &str) -> Result<()> {
        self.autoscaling
            .suspend_processes()
            .auto_scaling_group_name(name)
            .set_scaling_processes(Some(SUSPENDED.map(String::from).to_vec()))
            .send()
            .await
            .map_err(sdk_error(
                "SuspendProcesses",
                format!("Auto Scaling group {name}"),
            ))?;
        Ok(())
    }

    async fn resume(&self, name: &str) -> Result<()> {
        self.autoscaling
            .resume_processes()
            .auto_scaling_group_name(name)
            .set_scaling_processes(Some(SUSPENDED.map(String::from).to_vec()))
            .send()
            .await
            .map_err(sdk_error(
                "ResumeProcesses",
                format!("Auto Scaling group {name}"),
            ))?;
        Ok(())
    }

    async fn template_image(&self, template_id: &str, version: &str) -> Result<Option<String>> {
        let out = self
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(template_id)
            .versions(version)
            .send()
            .await
            .map_err(sdk_error(
                "DescribeLaunchTemplateVersions",
                format!("launch template {template_id} version {version}"),
            ))?;
        Ok(out
            .launch_template_versions()
            .first()
            .and_then(|v| v.launch_template_data())
            .and_then(|d| d.image_id())
            .map(str::to_string))
    }

    /// Detaches `ids`, 20 a call. A batch refused because one
    /// of its instances is no longer in the group (what the SDK's retry of
    /// a DetachInstances whose answer was lost meets: the first try was
    /// applied) is settled by reading the group and detaching only what is
    /// still in it, so no instance is detached, and the desired capacity
    /// lowered, twice.
    async fn detach(&self, name: &str, ids: &[String]) -> Result<()> {
        for batch in ids.chunks(DETACH_BATCH) {
            match self.detach_batch(name, batch).await {
                Err(err) if is_not_a_member(&err) => {
                    let members = self.group(name).await?.instances;
                    let left: Vec<String> = batch
                        .iter()
                        .filter(|id| members.contains(id))
                        .cloned()
                        .collect();
                    tracing::info!(
                        "{} of {} instance(s) were already detached from {name} ({err}); detaching the other {}",
                        batch.len() - left.len(),
                        batch.len(),
                        left.len()
                    );
                    if !left.is_empty() {
                        self.detach_batch(name, &left).await?;
                    }
                }
                other => other?,
            }
        }
        Ok(())
    }

    async fn set_resting_max(&self, name: &str, max: u32) -> Result<()> {
        self.autoscaling
            .create_or_update_tags()
            .tags(group_tag(name).value(max.to_string()).build())
            .send()
            .await
            .map_err(sdk_error(
                "CreateOrUpdateTags",
                format!("Auto Scaling group {name}"),
            ))?;
        Ok(())
    }

    async fn clear_resting_max(&self, name: &str) -> Result<()> {
        self.autoscaling
            .delete_tags()
            .tags(group_tag(name).build())
            .send()
            .await
            .map_err(sdk_error(
                "DeleteTags",
                format!("Auto Scaling group {name}"),
            ))?;
        Ok(())
    }
}

/// The group's [`tag::RESTING_MAX`] tag, not given to what it launches.
fn group_tag(name: &str) -> aws_sdk_autoscaling::types::builders::TagBuilder {
    aws_sdk_autoscaling::types::Tag::builder()
        .resource_id(name)
        .resource_type("auto-scaling-group")
        .key(tag::RESTING_MAX)
        .propagate_at_launch(false)
}
