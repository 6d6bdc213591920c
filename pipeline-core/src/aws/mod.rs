//! AWS adapters: the ports implemented with the aws-sdk-* clients.
//!
//! One file per AWS service. Every SDK error goes through one conversion (`sdk_error`), so
//! the service's error code and message reach the user unchanged.
//!
//! # Layout
//! - [`autoscaling`]: Auto Scaling groups ([`crate::ports::AutoScaling`]).
//! - [`ec2`]: images and instances ([`crate::ports::Images`], [`crate::ports::Instances`]).
//! - [`elb`]: Classic ELB ([`crate::ports::Balancer`]).
//! - [`elbv2`]: ALB/NLB target groups ([`crate::ports::Balancer`]).
//! - [`route53`]: the public record ([`crate::ports::Dns`]).
//! - [`s3`]: the state bucket ([`crate::ports::StateStore`]).
//! - [`adapters`]: every stage's ports, built once from one `SdkConfig`.

pub mod adapters;
pub mod autoscaling;
pub mod cloudwatch;
pub mod ec2;
pub mod elb;
pub mod elbv2;
pub mod route53;
pub mod s3;

pub use adapters::Adapters;

use crate::config::LoadBalancer;
use crate::ports::Balancer;

/// How many times one AWS call is tried before its error reaches the stage:
/// enough to ride out a throttling storm (each try backs off with jitter,
/// doubling from [`RETRY_INITIAL_BACKOFF`] up to [`RETRY_MAX_BACKOFF`]),
/// few enough that a dead endpoint fails a CI step in about a minute.
pub const RETRY_ATTEMPTS: u32 = 10;

/// The first retry's backoff ceiling; each later one doubles it.
pub const RETRY_INITIAL_BACKOFF: std::time::Duration = std::time::Duration::from_millis(500);

/// The longest one retry backs off.
pub const RETRY_MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(10);

/// The one `SdkConfig` every client is built from: the standard credential
/// chain (env vars, profiles, SSO, web identity, instance role), `region`,
/// and `AWS_ENDPOINT_URL` if set. Loading it makes no network call.
///
/// Every client retries a throttled or failed call the same way: the SDK's
/// standard mode, [`RETRY_ATTEMPTS`] tries with jittered exponential
/// backoff. `AWS_MAX_ATTEMPTS` or `AWS_RETRY_MODE` in the environment
/// replace that budget, as for any AWS tool.
pub async fn sdk_config(region: &str) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()));
    if let Ok(name) = aws_config::AppName::new("pipeline") {
        loader = loader.app_name(name);
    }
    if std::env::var_os("AWS_MAX_ATTEMPTS").is_none()
        && std::env::var_os("AWS_RETRY_MODE").is_none()
    {
        loader = loader.retry_config(retry_config());
    }
    loader.load().await
}

/// The retry budget of [`sdk_config`].
pub fn retry_config() -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard()
        .with_max_attempts(RETRY_ATTEMPTS)
        .with_initial_backoff(RETRY_INITIAL_BACKOFF)
        .with_max_backoff(RETRY_MAX_BACKOFF)
}

/// The [`Balancer`] adapter for an environment's `load_balancer`.
pub fn balancer(sdk: &aws_config::SdkConfig, config: &LoadBalancer) -> Box<dyn Balancer> {
    match config {
        LoadBalancer::Classic(name) => Box::new(elb::ClassicElb::new(sdk, name)),
        LoadBalancer::TargetGroup(arn) => Box::new(elbv2::TargetGroup::new(sdk, arn)),
    }
}

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::error::Error;

/// Converts an SDK error on `resource` into [`Error::Aws`], keeping the
/// service's code and message. Errors that never reached the service (no
/// connection, no credentials) get a code that says so and a plain reason;
/// never the SDK's internals (bodies, headers, type names).
pub(crate) fn sdk_error<E, R>(
    operation: &'static str,
    resource: impl Into<String>,
) -> impl FnOnce(SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let resource = resource.into();
    move |err| {
        let aws = |code: &str, message: String| Error::Aws {
            operation,
            resource,
            code: code.to_string(),
            message,
        };
        if matches!(err, SdkError::DispatchFailure(_)) && is_credentials_failure(&err) {
            return aws(
                "NoCredentials",
                "no AWS credentials found in the standard chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, SSO, web identity, instance role); configure one for this job".into(),
            );
        }
        if let (Some(code), message) = (err.code(), err.message()) {
            let message = message.unwrap_or("(no message)").to_string();
            return aws(code, message);
        }
        let (code, what) = match &err {
            SdkError::ConstructionFailure(_) => {
                ("RequestNotBuilt", "the request could not be built")
            }
            SdkError::TimeoutError(_) => ("RequestTimeout", "the request timed out"),
            SdkError::DispatchFailure(_) => ("NoConnection", "could not reach the AWS endpoint"),
            SdkError::ResponseError(_) => ("BadResponse", "AWS's answer could not be read"),
            _ => ("Unknown", "AWS answered with an error and no code"),
        };
        let message = match root_cause(&err) {
            Some(cause) => format!("{what} ({cause})"),
            None => what.to_string(),
        };
        aws(code, message)
    }
}

/// The innermost error of a chain (an I/O error's "Connection refused",
/// say), if the chain has more than one.
fn root_cause(err: &dyn std::error::Error) -> Option<String> {
    let mut last = err.source()?;
    while let Some(next) = last.source() {
        last = next;
    }
    Some(last.to_string())
}

/// Whether a request failed because no credentials could be loaded. The SDK
/// reports that as a dispatch failure whose source chain is a credentials
/// provider error; only its wording tells it apart.
fn is_credentials_failure(err: &dyn std::error::Error) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        if text.contains("loading credentials") || text.contains("no credentials found") {
            return true;
        }
        source = e.source();
    }
    false
}
