//! EC2: AMIs and instances, through aws-sdk-ec2.
//!
//! One [`Ec2`] serves every region: it keeps a client per region, all built
//! from the one `SdkConfig` the caller loaded (so `AWS_ENDPOINT_URL` and the
//! credential chain apply everywhere).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::interceptors::InterceptorContext;
use aws_sdk_ec2::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::operation::run_instances::RunInstancesError;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    ImageAttributeName, InstanceMetadataEndpointState, InstanceMetadataOptionsRequest,
    InstanceType, LaunchPermission, LaunchPermissionModifications, LaunchTemplateHttpTokensState,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    ResourceType, ShutdownBehavior, Tag, TagSpecification, VolumeType,
};
use aws_smithy_runtime_api::client::retries::classifiers::RetryClassifierPriority;
use base64::Engine;

use super::sdk_error;
use crate::config::{Encryption, MetadataOptions};
use crate::error::{NO_CAPACITY_CODE, QUOTA_CODES, Result};
use crate::ports::{
    AppInstance, Image, ImageState, Images, InstanceState, InstanceStatus, Instances, LaunchSpec,
    RootDevice, ShutdownBehaviour, Tags, tag,
};
use crate::release::Commit;

/// EC2 adapter for [`Images`] and [`Instances`].
#[derive(Debug)]
pub struct Ec2 {
    sdk: aws_config::SdkConfig,
    home: String,
    clients: Mutex<HashMap<String, Client>>,
}

impl Ec2 {
    /// An adapter whose home region (instances) is `home_region`.
    pub fn new(sdk: &aws_config::SdkConfig, home_region: &str) -> Self {
        Ec2 {
            sdk: sdk.clone(),
            home: home_region.to_string(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, region: &str) -> Client {
        let mut clients = self.clients.lock().expect("client map poisoned");
        clients
            .entry(region.to_string())
            .or_insert_with(|| {
                let config = aws_sdk_ec2::config::Builder::from(&self.sdk)
                    .region(aws_config::Region::new(region.to_string()))
                    .retry_classifier(CapacityAnswersAreFinal)
                    .build();
                Client::from_conf(config)
            })
            .clone()
    }
}

/// Forbids retrying a RunInstances that answered [`NO_CAPACITY_CODE`] or one
/// of [`QUOTA_CODES`], answers no retry of the same request can change and
/// which the deploy acts on itself. `InsufficientInstanceCapacity` comes as
/// an HTTP 500, which the SDK's standard retry would otherwise try
/// [`super::RETRY_ATTEMPTS`] times (14 s of backoff in the e2e test) before
/// the deploy could move that subnet's share to another; the quota answers
/// are 400s, never retried anyway. It runs after the SDK's own classifiers
/// and, forbidding, overrides them.
#[derive(Debug)]
struct CapacityAnswersAreFinal;

impl ClassifyRetry for CapacityAnswersAreFinal {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(error)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        let code = error
            .as_operation_error()
            .and_then(|e| e.downcast_ref::<RunInstancesError>())
            .and_then(|e| e.code());
        match code {
            Some(code) if code == NO_CAPACITY_CODE || QUOTA_CODES.contains(&code) => {
                RetryAction::RetryForbidden
            }
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "capacity answers are final"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

async fn describe_images(
    region: &str,
    request: aws_sdk_ec2::operation::describe_images::builders::DescribeImagesFluentBuilder,
) -> Result<Vec<Image>> {
    let mut found = Vec::new();
    let mut token = None;
    loop {
        let out = request
            .clone()
            .set_next_token(token)
            .send()
            .await
            .map_err(sdk_error("DescribeImages", format!("images in {region}")))?;
        found.extend(out.images().iter().map(|i| image_from_sdk(region, i)));
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(found);
        }
    }
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

fn tag_spec(resource: ResourceType, tags: &Tags) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

fn image_from_sdk(region: &str, image: &aws_sdk_ec2::types::Image) -> Image {
    let state = match image.state().map(|s| s.as_str()) {
        Some("available") => ImageState::Available,
        Some("pending") => ImageState::Pending,
        Some(other) => ImageState::Other(other.to_string()),
        None => ImageState::Other("unknown".into()),
    };
    Image {
        id: image.image_id().unwrap_or_default().to_string(),
        region: region.to_string(),
        name: image.name().unwrap_or_default().to_string(),
        state,
        created: image.creation_date().unwrap_or_default().to_string(),
        tags: image
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect(),
        snapshot_ids: image
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs()?.snapshot_id().map(str::to_string))
            .collect(),
        root_device: image.root_device_name().map(|name| RootDevice {
            name: name.to_string(),
            size_gib: image
                .block_device_mappings()
                .iter()
                .find(|m| m.device_name() == Some(name))
                .and_then(|m| m.ebs()?.volume_size())
                .and_then(|size| u32::try_from(size).ok()),
        }),
    }
}

/// `Encrypted` and `KmsKeyId` for a volume or a copy.
fn encryption_of(encryption: &Encryption) -> (Option<bool>, Option<String>) {
    match encryption {
        Encryption::AsImage => (None, None),
        Encryption::DefaultKey => (Some(true), None),
        Encryption::Key(key) => (Some(true), Some(key.clone())),
    }
}

/// RunInstances' metadata options: tokens, hop limit, the endpoint on.
fn instance_metadata(metadata: MetadataOptions) -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .http_tokens(if metadata.tokens_required {
            HttpTokensState::Required
        } else {
            HttpTokensState::Optional
        })
        .http_put_response_hop_limit(i32::from(metadata.hop_limit))
        .build()
}

/// A launch template's metadata options, the same as [`instance_metadata`].
pub(super) fn template_metadata(
    metadata: MetadataOptions,
) -> LaunchTemplateInstanceMetadataOptionsRequest {
    LaunchTemplateInstanceMetadataOptionsRequest::builder()
        .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
        .http_tokens(if metadata.tokens_required {
            LaunchTemplateHttpTokensState::Required
        } else {
            LaunchTemplateHttpTokensState::Optional
        })
        .http_put_response_hop_limit(i32::from(metadata.hop_limit))
        .build()
}

/// The root volume's mapping (type, size, encryption), when the image's
/// root device is known.
fn root_volume(spec: &LaunchSpec) -> Option<Vec<BlockDeviceMapping>> {
    let device = spec.root_device.as_ref()?;
    let volume = &spec.shape.root_volume;
    // The size is always given (the image's unless set): EC2 takes a
    // mapping without one, moto does not.
    let size = volume.size_gib.or(device.size_gib);
    let (encrypted, key) = encryption_of(&volume.encryption);
    let ebs = EbsBlockDevice::builder()
        .volume_type(VolumeType::from(volume.volume_type.as_str()))
        .set_volume_size(size.and_then(|s| i32::try_from(s).ok()))
        .delete_on_termination(true)
        .set_encrypted(encrypted)
        .set_kms_key_id(key)
        .build();
    Some(vec![
        BlockDeviceMapping::builder()
            .device_name(&device.name)
            .ebs(ebs)
            .build(),
    ])
}

/// The best of several images for one release: available before pending,
/// then the newest.
fn best(mut images: Vec<Image>) -> Option<Image> {
    images.sort_by(|a, b| {
        let rank = |i: &Image| match i.state {
            ImageState::Available => 2,
            ImageState::Pending => 1,
            ImageState::Other(_) => 0,
        };
        (rank(a), &a.created).cmp(&(rank(b), &b.created))
    });
    images.pop()
}

#[async_trait]
impl Images for Ec2 {
    async fn find_release_image(
        &self,
        region: &str,
        app: &str,
        commit: &Commit,
    ) -> Result<Option<Image>> {
        let request = self
            .client(region)
            .describe_images()
            .owners("self")
            .filters(filter(&format!("tag:{}", tag::APP), app))
            .filters(filter(&format!("tag:{}", tag::COMMIT), commit.as_str()));
        Ok(best(describe_images(region, request).await?))
    }

    async fn release_images(&self, region: &str, app: &str) -> Result<Vec<Image>> {
        let request = self
            .client(region)
            .describe_images()
            .owners("self")
            .filters(filter(&format!("tag:{}", tag::APP), app));
        describe_images(region, request).await
    }

    async fn image(&self, region: &str, image_id: &str) -> Result<Option<Image>> {
        let request = self.client(region).describe_images().image_ids(image_id);
        match describe_images(region, request).await {
            Ok(images) => Ok(images.into_iter().find(|i| i.id == image_id)),
            Err(e) if e.aws_code().is_some_and(|c| c.starts_with("InvalidAMIID")) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn newest_image(
        &self,
        region: &str,
        owner: &str,
        name_pattern: &str,
    ) -> Result<Option<Image>> {
        let request = self
            .client(region)
            .describe_images()
            .owners(owner)
            .filters(filter("name", name_pattern))
            .filters(filter("state", "available"));
        Ok(describe_images(region, request)
            .await?
            .into_iter()
            .max_by(|a, b| a.created.cmp(&b.created)))
    }

    async fn create_image(
        &self,
        region: &str,
        instance_id: &str,
        name: &str,
        description: &str,
        tags: &Tags,
    ) -> Result<String> {
        let out = self
            .client(region)
            .create_image()
            .instance_id(instance_id)
            .name(name)
            .description(description)
            .tag_specifications(tag_spec(ResourceType::Image, tags))
            .tag_specifications(tag_spec(ResourceType::Snapshot, tags))
            .send()
            .await
            .map_err(sdk_error(
                "CreateImage",
                format!("builder {instance_id} in {region}"),
            ));
        match out {
            Ok(out) => Ok(out.image_id().unwrap_or_default().to_string()),
            // CreateImage takes no idempotency token: when its answer is
            // lost and the SDK tries again, AWS refuses the name the first
            // try took. The image of that name carrying this bake's tags is
            // the first try's.
            Err(err) if err.aws_code() == Some("InvalidAMIName.Duplicate") => {
                match self.image_named(region, name, tags).await? {
                    Some(id) => {
                        tracing::debug!("CreateImage's first answer was lost; it made {id}");
                        Ok(id)
                    }
                    None => Err(err),
                }
            }
            Err(err) => Err(err),
        }
    }

    async fn copy_image(
        &self,
        source: &Image,
        to_region: &str,
        tags: &Tags,
        encryption: &Encryption,
    ) -> Result<String> {
        let (encrypted, key) = encryption_of(encryption);
        let out = self
            .client(to_region)
            .copy_image()
            .set_encrypted(encrypted)
            .set_kms_key_id(key)
            .source_image_id(&source.id)
            .source_region(&source.region)
            .name(&source.name)
            .description(format!("copy of {} from {}", source.id, source.region))
            .tag_specifications(tag_spec(ResourceType::Image, tags))
            .tag_specifications(tag_spec(ResourceType::Snapshot, tags))
            .send()
            .await
            .map_err(sdk_error(
                "CopyImage",
                format!("image {} to {to_region}", source.id),
            ))?;
        Ok(out.image_id().unwrap_or_default().to_string())
    }

    async fn share_image(&self, region: &str, image_id: &str, accounts: &[String]) -> Result<()> {
        let add = accounts
            .iter()
            .map(|a| LaunchPermission::builder().user_id(a).build())
            .collect();
        self.client(region)
            .modify_image_attribute()
            .image_id(image_id)
            .launch_permission(
                LaunchPermissionModifications::builder()
                    .set_add(Some(add))
                    .build(),
            )
            .send()
            .await
            .map_err(sdk_error(
                "ModifyImageAttribute",
                format!("image {image_id} in {region}"),
            ))?;
        Ok(())
    }

    async fn launch_permissions(&self, region: &str, image_id: &str) -> Result<Vec<String>> {
        let out = self
            .client(region)
            .describe_image_attribute()
            .image_id(image_id)
            .attribute(ImageAttributeName::LaunchPermission)
            .send()
            .await
            .map_err(sdk_error(
                "DescribeImageAttribute",
                format!("image {image_id} in {region}"),
            ))?;
        Ok(out
            .launch_permissions()
            .iter()
            .filter_map(|p| p.user_id().map(str::to_string))
            .collect())
    }

    async fn deregister_image(&self, region: &str, image_id: &str) -> Result<()> {
        self.client(region)
            .deregister_image()
            .image_id(image_id)
            .delete_associated_snapshots(true)
            .send()
            .await
            .map_err(sdk_error(
                "DeregisterImage",
                format!("image {image_id} in {region}"),
            ))?;
        Ok(())
    }
}

#[async_trait]
impl Instances for Ec2 {
    async fn launch(&self, spec: &LaunchSpec) -> Result<Vec<String>> {
        let user_data = base64::engine::general_purpose::STANDARD.encode(&spec.user_data);
        let shutdown = match spec.shutdown {
            ShutdownBehaviour::Stop => ShutdownBehavior::Stop,
            ShutdownBehaviour::Terminate => ShutdownBehavior::Terminate,
        };
        let count = i32::try_from(spec.count).unwrap_or(i32::MAX);
        let out = self
            .client(&self.home)
            .run_instances()
            .image_id(&spec.image_id)
            .instance_type(InstanceType::from(spec.shape.instance_type.as_str()))
            .min_count(count)
            .max_count(count)
            .set_subnet_id(spec.subnet_id.clone())
            .set_security_group_ids(
                (!spec.shape.security_groups.is_empty())
                    .then(|| spec.shape.security_groups.clone()),
            )
            .set_iam_instance_profile(spec.shape.instance_profile.as_ref().map(|name| {
                IamInstanceProfileSpecification::builder()
                    .name(name)
                    .build()
            }))
            .set_key_name(spec.shape.key_name.clone())
            .user_data(user_data)
            .metadata_options(instance_metadata(spec.shape.metadata))
            .set_block_device_mappings(root_volume(spec))
            .instance_initiated_shutdown_behavior(shutdown)
            .tag_specifications(tag_spec(ResourceType::Instance, &spec.tags))
            .tag_specifications(tag_spec(ResourceType::Volume, &spec.tags))
            .send()
            .await
            .map_err(sdk_error(
                "RunInstances",
                format!("{} instance(s) of {}", spec.count, spec.image_id),
            ))?;
        Ok(out
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect())
    }

    async fn statuses(&self, ids: &[String]) -> Result<Vec<InstanceStatus>> {
        let request = self
            .client(&self.home)
            .describe_instances()
            .set_instance_ids(Some(ids.to_vec()));
        Ok(all_instances(request)
            .await?
            .iter()
            .map(|instance| InstanceStatus {
                id: instance.instance_id().unwrap_or_default().to_string(),
                state: state_name(instance),
                reason: instance
                    .state_reason()
                    .and_then(|r| r.message().or(r.code()))
                    .map(str::to_string),
                tags: tags_of(instance.tags()),
            })
            .collect())
    }

    async fn terminate(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.client(&self.home)
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(sdk_error(
                "TerminateInstances",
                format!("instances {}", ids.join(", ")),
            ))?;
        Ok(())
    }

    async fn console_output(&self, id: &str) -> Result<String> {
        let out = self
            .client(&self.home)
            .get_console_output()
            .instance_id(id)
            .send()
            .await
            .map_err(sdk_error("GetConsoleOutput", format!("instance {id}")))?;
        let encoded = out.output().unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .unwrap_or_else(|_| encoded.as_bytes().to_vec());
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn app_instances(&self, app: &str, env: &str) -> Result<Vec<AppInstance>> {
        let roles = Filter::builder()
            .name(format!("tag:{}", tag::ROLE))
            .values(tag::ROLE_APP)
            .values(tag::ROLE_TASK)
            .build();
        self.instances_of(app, [filter(&format!("tag:{}", tag::ENV), env), roles])
            .await
    }

    async fn instances_of_app(&self, app: &str) -> Result<Vec<AppInstance>> {
        self.instances_of(app, []).await
    }

    async fn instances_of_runs(&self, app: &str, runs: &[String]) -> Result<Vec<AppInstance>> {
        let runs = Filter::builder()
            .name(format!("tag:{}", tag::RUN))
            .set_values(Some(runs.to_vec()))
            .build();
        self.instances_of(app, [runs]).await
    }
}

impl Ec2 {
    /// The id of this account's image named `name` in `region` whose tags
    /// include all of `tags`, if there is one.
    async fn image_named(&self, region: &str, name: &str, tags: &Tags) -> Result<Option<String>> {
        let request = self
            .client(region)
            .describe_images()
            .owners("self")
            .filters(filter("name", name));
        Ok(describe_images(region, request)
            .await?
            .into_iter()
            .find(|image| tags.iter().all(|(k, v)| image.tags.get(k) == Some(v)))
            .map(|image| image.id))
    }

    /// The instances of `app` in the home region that match `filters` too
    /// and are not terminated: one DescribeInstances (and its pages).
    async fn instances_of<const N: usize>(
        &self,
        app: &str,
        filters: [Filter; N],
    ) -> Result<Vec<AppInstance>> {
        let mut request = self
            .client(&self.home)
            .describe_instances()
            .filters(filter(&format!("tag:{}", tag::APP), app))
            .filters(not_terminated());
        for f in filters {
            request = request.filters(f);
        }
        Ok(all_instances(request)
            .await?
            .iter()
            .map(app_instance)
            .collect())
    }
}

fn not_terminated() -> Filter {
    Filter::builder()
        .name("instance-state-name")
        .set_values(Some(
            ["pending", "running", "stopping", "stopped"]
                .map(String::from)
                .to_vec(),
        ))
        .build()
}

fn app_instance(instance: &aws_sdk_ec2::types::Instance) -> AppInstance {
    let tag_value = |key: &str| {
        instance
            .tags()
            .iter()
            .find(|t| t.key() == Some(key))
            .and_then(|t| t.value())
            .unwrap_or_default()
            .to_string()
    };
    AppInstance {
        id: instance.instance_id().unwrap_or_default().to_string(),
        role: tag_value(tag::ROLE),
        env: tag_value(tag::ENV),
        launched_ms: instance
            .launch_time()
            .and_then(|t| t.to_millis().ok())
            .unwrap_or_default(),
        state: state_name(instance),
        commit: tag_value(tag::COMMIT),
        run: tag_value(tag::RUN),
        image_id: instance.image_id().unwrap_or_default().to_string(),
        artifact: tag_value(tag::ARTIFACT_SHA256),
    }
}

fn tags_of(tags: &[aws_sdk_ec2::types::Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

fn state_name(instance: &aws_sdk_ec2::types::Instance) -> InstanceState {
    instance
        .state()
        .and_then(|s| s.name())
        .map_or(InstanceState::Other("unknown".into()), |n| {
            InstanceState::from(n.as_str())
        })
}

/// Every instance a DescribeInstances request matches, following pages.
async fn all_instances(
    request: aws_sdk_ec2::operation::describe_instances::builders::DescribeInstancesFluentBuilder,
) -> Result<Vec<aws_sdk_ec2::types::Instance>> {
    let mut found = Vec::new();
    let mut token = None;
    loop {
        let out = request
            .clone()
            .set_next_token(token)
            .send()
            .await
            .map_err(sdk_error("DescribeInstances", "instances"))?;
        found.extend(
            out.reservations()
                .iter()
                .flat_map(|r| r.instances())
                .cloned(),
        );
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Ok(found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, state: ImageState, created: &str) -> Image {
        Image {
            id: id.into(),
            region: "us-east-1".into(),
            name: id.into(),
            state,
            created: created.into(),
            tags: Tags::new(),
            snapshot_ids: vec![],
            root_device: None,
        }
    }

    #[test]
    fn best_prefers_available_then_newest() {
        let picked = best(vec![
            image("old", ImageState::Available, "2026-01-01T00:00:00.000Z"),
            image("pending", ImageState::Pending, "2026-12-01T00:00:00.000Z"),
            image("new", ImageState::Available, "2026-06-01T00:00:00.000Z"),
            image(
                "failed",
                ImageState::Other("failed".into()),
                "2026-12-02T00:00:00.000Z",
            ),
        ]);
        assert_eq!(picked.unwrap().id, "new");
        assert_eq!(best(vec![]), None);
    }
}
