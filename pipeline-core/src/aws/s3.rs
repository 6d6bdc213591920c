//! S3: the state bucket ([`StateStore`]), for the locks and the ledger, and
//! the builds' artifacts ([`ArtifactStore`]).
//!
//! Conditional writes are S3's own: `If-None-Match: *` creates an object
//! only if none exists, `If-Match: ETAG` replaces it only if it is unchanged;
//! either answers `412 PreconditionFailed` (or `409 ConditionalRequestConflict`
//! when two such writes race) when the condition does not hold.

use async_trait::async_trait;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::sdk_error;
use crate::config::format_size;
use crate::error::{Error, Result};
use crate::ports::{ArtifactStore, Listed, SecretUrl, StateStore, Stored, Written};
use crate::wait::PROGRESS;

/// Files up to this size go up in one PutObject; bigger ones in parts.
pub const MULTIPART_THRESHOLD: u64 = 16 << 20;
/// The size of each part of a multipart upload (S3's least is 5 MiB).
pub const PART_SIZE: u64 = 8 << 20;

/// The state bucket, with its key prefix.
#[derive(Debug, Clone)]
pub struct StateBucket {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl StateBucket {
    /// The bucket `bucket`, every key starting with `key_prefix` (as
    /// [`crate::config::StateConfig::key_prefix`] gives it). With a custom
    /// endpoint (`AWS_ENDPOINT_URL`), path-style addressing is used, as
    /// S3-compatible servers expect.
    pub fn new(sdk: &aws_config::SdkConfig, bucket: &str, key_prefix: String) -> Self {
        let mut config = aws_sdk_s3::config::Builder::from(sdk);
        if sdk.endpoint_url().is_some() {
            config = config.force_path_style(true);
        }
        StateBucket {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket: bucket.to_string(),
            prefix: key_prefix,
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The object at `key`, for messages: `s3://bucket/prefix/key`.
    fn object(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(key))
    }

    /// A PutObject of the JSON `body` at `key`, to send as is or with a
    /// condition.
    fn put_request(&self, key: &str, body: &[u8]) -> PutObjectFluentBuilder {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .content_type("application/json")
            .body(ByteStream::from(body.to_vec()))
    }
}

/// Whether an S3 error says a condition did not hold.
fn refused(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("PreconditionFailed" | "ConditionalRequestConflict")
    )
}

#[async_trait]
impl StateStore for StateBucket {
    async fn get(&self, key: &str) -> Result<Option<Stored>> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(sdk_error("GetObject", self.object(key))(e)),
        };
        let etag = out.e_tag().unwrap_or_default().to_string();
        let body = out.body.collect().await.map_err(|e| crate::Error::Aws {
            operation: "GetObject",
            resource: self.object(key),
            code: "ReadFailed".into(),
            message: e.to_string(),
        })?;
        Ok(Some(Stored {
            body: body.into_bytes().to_vec(),
            etag,
        }))
    }

    async fn put_new(&self, key: &str, body: &[u8]) -> Result<Written> {
        let out = self.put_request(key, body).if_none_match("*").send().await;
        match out {
            Ok(out) => Ok(Written::Done(out.e_tag().unwrap_or_default().to_string())),
            Err(e) if refused(e.code()) => Ok(Written::Refused),
            Err(e) => Err(sdk_error("PutObject", self.object(key))(e)),
        }
    }

    async fn put_if(&self, key: &str, body: &[u8], etag: &str) -> Result<Written> {
        let out = self.put_request(key, body).if_match(etag).send().await;
        match out {
            Ok(out) => Ok(Written::Done(out.e_tag().unwrap_or_default().to_string())),
            // A missing object fails If-Match with NoSuchKey: not ours either.
            Err(e) if refused(e.code()) || e.code() == Some("NoSuchKey") => Ok(Written::Refused),
            Err(e) => Err(sdk_error("PutObject", self.object(key))(e)),
        }
    }

    async fn put(&self, key: &str, body: &[u8]) -> Result<()> {
        self.put_request(key, body)
            .send()
            .await
            .map_err(sdk_error("PutObject", self.object(key)))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await
            .map_err(sdk_error("DeleteObject", self.object(key)))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.key(prefix))
                .set_continuation_token(token)
                .send()
                .await
                .map_err(sdk_error("ListObjectsV2", self.object(prefix)))?;
            keys.extend(out.contents().iter().filter_map(|o| {
                Some(Listed {
                    key: o.key()?.get(self.prefix.len()..)?.to_string(),
                    modified_ms: o
                        .last_modified()
                        .and_then(|t| t.to_millis().ok())
                        .unwrap_or_default(),
                })
            }));
            token = out.next_continuation_token().map(str::to_string);
            if token.is_none() {
                keys.sort_by(|a, b| a.key.cmp(&b.key));
                return Ok(keys);
            }
        }
    }
}

#[async_trait]
impl ArtifactStore for StateBucket {
    async fn stored_size(&self, key: &str) -> Result<Option<u64>> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .send()
            .await;
        match out {
            Ok(out) => Ok(Some(
                out.content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
            )),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(sdk_error("HeadObject", self.object(key))(e)),
        }
    }

    async fn upload(&self, key: &str, path: &std::path::Path, size: u64) -> Result<()> {
        if size <= MULTIPART_THRESHOLD {
            let body = ByteStream::from_path(path)
                .await
                .map_err(|e| read_failed(path, e))?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(self.key(key))
                .content_type("application/gzip")
                .body(body)
                .send()
                .await
                .map_err(sdk_error("PutObject", self.object(key)))?;
            return Ok(());
        }
        let started = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.key(key))
            .content_type("application/gzip")
            .send()
            .await
            .map_err(sdk_error("CreateMultipartUpload", self.object(key)))?;
        let upload_id = started.upload_id().unwrap_or_default().to_string();
        match self.upload_parts(key, path, size, &upload_id).await {
            Ok(()) => Ok(()),
            Err(err) => {
                let aborted = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(self.key(key))
                    .upload_id(&upload_id)
                    .send()
                    .await;
                if let Err(e) = aborted {
                    tracing::error!(
                        "could not abort the upload to {}: {}",
                        self.object(key),
                        sdk_error("AbortMultipartUpload", self.object(key))(e)
                    );
                }
                Err(err)
            }
        }
    }

    async fn presigned_get(&self, key: &str, expires_in: std::time::Duration) -> Result<SecretUrl> {
        let config =
            aws_sdk_s3::presigning::PresigningConfig::expires_in(expires_in).map_err(|e| {
                Error::Input(format!(
                    "build.timeout: cannot presign the artifact's URL for it: {e}"
                ))
            })?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(key))
            .presigned(config)
            .await
            .map_err(sdk_error("GetObject (presign)", self.object(key)))?;
        Ok(SecretUrl::new(request.uri().to_string()))
    }
}

impl StateBucket {
    /// Sends the parts of `path` and completes the upload; a part that
    /// fails fails it all (the caller aborts).
    async fn upload_parts(
        &self,
        key: &str,
        path: &std::path::Path,
        size: u64,
        upload_id: &str,
    ) -> Result<()> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number = 1;
        while offset < size {
            let length = PART_SIZE.min(size - offset);
            let body = ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(aws_sdk_s3::primitives::Length::Exact(length))
                .build()
                .await
                .map_err(|e| read_failed(path, e))?;
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(self.key(key))
                .upload_id(upload_id)
                .part_number(number)
                .body(body)
                .send()
                .await
                .map_err(sdk_error("UploadPart", self.object(key)))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
            offset += length;
            number += 1;
            tracing::info!(
                target: PROGRESS,
                "uploading the artifact: {} of {}",
                format_size(offset),
                format_size(size)
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(self.key(key))
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(sdk_error("CompleteMultipartUpload", self.object(key)))?;
        Ok(())
    }
}

fn read_failed(path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::Input(format!(
        "cannot read the packed artifact {}: {e}",
        path.display()
    ))
}
