//! A repository in an S3 bucket (AWS or any S3-compatible server: Garage, s3s-fs, MinIO, Ceph).
//!
//! Uploads of unknown length fill one part at a time (`part_size`, 16 MiB by default) and switch
//! from a single PUT to a multipart upload only when the data outgrows one part, so memory stays
//! at about two parts (one being sent, the next filling) whatever the artifact's size. A failed
//! stream aborts its multipart upload. Transient failures (connection errors, 5xx, throttling)
//! are retried with exponential backoff by the SDK's standard retry strategy; every request body
//! is in memory, so every retry is safe.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio_stream::StreamExt;

use super::{
    BodyStream, Capabilities, CreateOutcome, ObjectMeta, ObjectReader, Storage, check_key,
};
use crate::config::{ChecksumMode, S3Config};
use crate::error::{Error, Result};

/// A bucket and prefix on an S3-compatible server.
#[derive(Debug, Clone)]
pub struct S3Storage {
    client: Client,
    config: S3Config,
}

impl S3Storage {
    /// Builds a client from the repository's S3 settings (no network traffic yet).
    pub fn new(config: S3Config) -> Self {
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let (request_checksums, response_checksums) = match config.checksum_mode {
            ChecksumMode::WhenRequired => (
                RequestChecksumCalculation::WhenRequired,
                ResponseChecksumValidation::WhenRequired,
            ),
            ChecksumMode::WhenSupported => (
                RequestChecksumCalculation::WhenSupported,
                ResponseChecksumValidation::WhenSupported,
            ),
        };
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http_client)
            .region(Region::new(config.region.clone()))
            .credentials_provider(Credentials::new(
                config.access_key_id.expose(),
                config.secret_access_key.expose(),
                None,
                None,
                "coffer-config",
            ))
            .force_path_style(config.path_style)
            .request_checksum_calculation(request_checksums)
            .response_checksum_validation(response_checksums)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(5)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            )
            // Downloads feed a restore that may pause for minutes (index builds); uploads send
            // whole in-memory parts. Neither is a stalled stream, so the heuristic only hurts.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Self {
            client: Client::from_conf(builder.build()),
            config,
        }
    }

    fn full_key(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(if self.config.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.config.prefix)
        })
    }

    fn error<E>(&self, what: &str, key: &str, err: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let location = format!("s3://{}/{}", self.config.bucket, self.config.prefix);
        let (message, transient, missing) = match &err {
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let code = service.err().code().unwrap_or("unknown");
                let detail = service.err().message().unwrap_or("");
                (
                    format!("{code} (HTTP {status}) {detail}")
                        .trim()
                        .to_string(),
                    status >= 500 || status == 429,
                    code == "NoSuchKey" || (status == 404 && code != "NoSuchBucket"),
                )
            }
            SdkError::DispatchFailure(_) => (
                format!(
                    "cannot reach {}: {}",
                    self.endpoint(),
                    crate::error_chain(&err)
                ),
                true,
                false,
            ),
            SdkError::TimeoutError(_) => (
                format!("timed out talking to {}", self.endpoint()),
                true,
                false,
            ),
            other => (crate::error_chain(other), true, false),
        };
        let text = format!("{what} {key} in {location}: {message}");
        let error = if missing {
            Error::not_found(text)
        } else {
            Error::storage(text)
        };
        if transient { error.transient() } else { error }
    }

    fn endpoint(&self) -> &str {
        self.config.endpoint.as_deref().unwrap_or("AWS S3")
    }

    async fn put_object(
        &self,
        key: &str,
        full: &str,
        body: Bytes,
        if_absent: bool,
    ) -> Result<CreateOutcome> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.config.bucket)
            .key(full)
            .body(ByteStream::from(body));
        if if_absent {
            request = request.if_none_match("*");
        }
        match request.send().await {
            Ok(_) => Ok(CreateOutcome::Created),
            Err(SdkError::ServiceError(e)) if if_absent && e.raw().status().as_u16() == 412 => {
                Ok(CreateOutcome::AlreadyExists)
            }
            Err(e) => Err(self.error("storing", key, e)),
        }
    }

    async fn multipart(
        &self,
        key: &str,
        full: &str,
        first: Bytes,
        body: &mut BodyStream,
    ) -> Result<u64> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| self.error("starting multipart upload of", key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| {
                Error::storage(format!(
                    "starting multipart upload of {key}: server returned no upload id"
                ))
            })?
            .to_string();
        let result = self.upload_parts(key, full, &upload_id, first, body).await;
        if result.is_err() {
            // Abort so the server frees the parts; the original error is what matters.
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(&self.config.bucket)
                .key(full)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(e) = abort {
                tracing::warn!(key, error = %self.error("aborting multipart upload of", key, e), "multipart upload left behind");
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        full: &str,
        upload_id: &str,
        first: Bytes,
        body: &mut BodyStream,
    ) -> Result<u64> {
        let part_size = self.config.part_size;
        let mut parts = Vec::new();
        let mut total = 0u64;
        let mut pending = Some(first);
        let mut buffer = BytesMut::with_capacity(part_size);
        let mut ended = false;
        while let Some(part) = pending.take() {
            // Fill the next part before sending this one, so the last part is sent knowing it is last.
            while !ended && buffer.len() < part_size {
                match body.next().await {
                    Some(chunk) => buffer.extend_from_slice(&chunk.map_err(Error::from)?),
                    None => ended = true,
                }
            }
            let number = parts.len() as i32 + 1;
            total += part.len() as u64;
            let uploaded = self
                .client
                .upload_part()
                .bucket(&self.config.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(part))
                .send()
                .await
                .map_err(|e| self.error(&format!("uploading part {number} of"), key, e))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(uploaded.e_tag().map(str::to_string))
                    .part_number(number)
                    .build(),
            );
            if !buffer.is_empty() {
                let next_len = buffer.len().min(part_size);
                pending = Some(buffer.split_to(next_len).freeze());
                buffer.reserve(part_size);
            }
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error("completing multipart upload of", key, e))?;
        Ok(total)
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn location(&self) -> String {
        match &self.config.endpoint {
            Some(endpoint) => format!(
                "s3://{}/{} at {endpoint}",
                self.config.bucket, self.config.prefix
            ),
            None => format!("s3://{}/{}", self.config.bucket, self.config.prefix),
        }
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let full = self.full_key(key)?;
        self.put_object(key, &full, body, false).await.map(drop)
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<CreateOutcome> {
        let full = self.full_key(key)?;
        self.put_object(key, &full, body, true).await
    }

    async fn put_stream(&self, key: &str, mut body: BodyStream) -> Result<u64> {
        let full = self.full_key(key)?;
        let part_size = self.config.part_size;
        let mut first = BytesMut::with_capacity(part_size);
        let mut ended = false;
        while first.len() < part_size {
            match body.next().await {
                Some(chunk) => first.extend_from_slice(&chunk.map_err(Error::from)?),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            let len = first.len() as u64;
            self.put_object(key, &full, first.freeze(), false).await?;
            return Ok(len);
        }
        let rest = first.split_off(part_size);
        let mut body: BodyStream = if rest.is_empty() {
            body
        } else {
            Box::pin(tokio_stream::once(Ok(rest.freeze())).chain(body))
        };
        self.multipart(key, &full, first.freeze(), &mut body).await
    }

    async fn get(&self, key: &str) -> Result<ObjectReader> {
        let full = self.full_key(key)?;
        let object = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.error("reading", key, e))?;
        Ok(Box::pin(object.body.into_async_read()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let root = if self.config.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.config.prefix)
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(format!("{root}{prefix}"))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                self.error(
                    "listing",
                    if prefix.is_empty() { "objects" } else { prefix },
                    e,
                )
            })?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&root)) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.error("deleting", key, e))?;
        Ok(())
    }

    async fn probe(&self) -> Result<Capabilities> {
        // Multipart: one small (last, so allowed below 5 MiB) part, completed, read back.
        let key = "probe/multipart";
        let full = self.full_key(key)?;
        let mut empty: BodyStream = Box::pin(tokio_stream::empty());
        let multipart = match self
            .multipart(
                key,
                &full,
                Bytes::from_static(b"coffer multipart probe"),
                &mut empty,
            )
            .await
        {
            Ok(_) => {
                let read = self.get_bytes(key).await?;
                read.as_ref() == b"coffer multipart probe"
            }
            Err(e) if e.kind() == crate::error::ErrorKind::Storage && !e.is_transient() => false,
            Err(e) => return Err(e),
        };
        self.delete(key).await?;

        // Conditional write: a second create-if-absent must be refused (Garage ignores it).
        let key = "probe/conditional-write";
        self.delete(key).await?;
        self.put_if_absent(key, Bytes::from_static(b"1")).await?;
        let second = self.put_if_absent(key, Bytes::from_static(b"2")).await?;
        let kept = self.get_bytes(key).await?;
        self.delete(key).await?;
        let conditional_write = second == CreateOutcome::AlreadyExists && kept.as_ref() == b"1";

        let object_lock = match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.config.bucket)
            .send()
            .await
        {
            Ok(out) => out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| e.as_str() == "Enabled"),
            Err(_) => false,
        };
        Ok(Capabilities {
            multipart,
            conditional_write,
            object_lock,
        })
    }
}
