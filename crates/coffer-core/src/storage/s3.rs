//! A repository in an S3 bucket (AWS or any S3-compatible server: Garage, s3s-fs, MinIO, Ceph).
//!
//! Uploads of unknown length fill one part at a time (`part_size`, 16 MiB by default) and switch
//! from a single PUT to a multipart upload only when the data outgrows one part, so memory stays
//! at about two parts (one being sent, the next filling) whatever the artifact's size. S3 takes at
//! most 10,000 parts, so a long stream grows its parts as it goes (see [`part_size`]). A failed
//! stream aborts its multipart upload, and so does one whose future is dropped (cancelled): a
//! guard spawns the abort on the tokio runtime. Transient failures (connection errors, timeouts,
//! 5xx other than 501, throttling) are retried with exponential backoff by the SDK's standard
//! retry strategy; every request body is in memory, so every retry is safe. Errors are classified
//! once ([`classify`]): only what can succeed on a retry is marked transient; a refused signature
//! or key, a denied access or a missing bucket is permanent.
//!
//! A server that stops answering (frozen, or a network that silently drops packets) fails the
//! operation after the stall timeout (`stall_timeout_seconds`): each request, the SDK's retries
//! included, must complete within it, and each read of an object's body may wait at most that
//! long for bytes. A multipart upload whose part stalls is aborted (the abort waits no longer,
//! then leaves the parts to the bucket's lifecycle rules). The SDK's own stalled-stream
//! protection stays off: it judges an upload by how often the body is polled, and a part is one
//! in-memory buffer handed over at once, so it cannot tell a slow link from a dead one.
//!
//! The same client, error classification, stall timeout and upload path serve [`S3Objects`]
//! (`s3/objects.rs`): a bucket prefix read or written as files (a `[[files]]` source, a restore
//! target), whose keys are raw and whose objects carry content types and user metadata.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::{Bytes, BytesMut};
use tokio_stream::StreamExt;

use super::{
    AbandonedUpload, BodyStream, Capabilities, CreateOutcome, ObjectMeta, ObjectReader, Storage,
    check_key, range_past_end, stall,
};
use crate::config::{ChecksumMode, S3Config};

mod objects;
use crate::error::{Error, Result};
pub use objects::{ObjectAttrs, ObjectHead, S3Objects, SourceObject};

/// The most parts S3 accepts in one multipart upload.
const MAX_PARTS: u32 = 10_000;

/// The largest part S3 accepts (5 GiB).
const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;

/// Parts are `part_size` bytes for this many parts, then double every this many parts.
const PARTS_PER_DOUBLING: u32 = 1_000;

/// The most keys one `DeleteObjects` request takes.
const MAX_DELETE_BATCH: usize = 1_000;

/// The size of part `number` (1-based) of a stream upload whose parts start at `base` bytes:
/// `base` for the first 1,000 parts, then twice as much every further 1,000 parts, never more
/// than S3's 5 GiB (nor less than `base`). From the 5 MiB minimum this reaches about 4.9 TiB in
/// 10,000 parts, from 16 MiB beyond S3's 5 TiB object limit; a stream of up to 1,000 parts is
/// unchanged. Memory is the part being sent plus the next one filling, and the next is at most
/// twice the current, so it stays at about two parts of the current size.
pub(crate) fn part_size(base: usize, number: u32) -> usize {
    let doublings = (number.saturating_sub(1) / PARTS_PER_DOUBLING).min(30);
    base.saturating_mul(1usize << doublings)
        .min(MAX_PART_SIZE.max(base))
}

/// How a failed S3 request is to be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The object (or upload) does not exist: `NotFound`.
    Missing,
    /// Retrying cannot help (refused credentials, denied access, no bucket, a bad request).
    Permanent,
    /// A retry may succeed (5xx, throttling, timeouts, connection errors).
    Transient,
}

/// Error codes that no retry can fix, whatever the HTTP status that came with them.
const PERMANENT_CODES: &[&str] = &[
    "AccessDenied",
    "AccountProblem",
    "AllAccessDisabled",
    "AuthorizationHeaderMalformed",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidBucketName",
    "InvalidToken",
    "MethodNotAllowed",
    "NoSuchBucket",
    "NotImplemented",
    "SignatureDoesNotMatch",
];

/// Error codes that a later retry may not see again (throttling, a server in trouble).
const TRANSIENT_CODES: &[&str] = &[
    "InternalError",
    "RequestTimeout",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
];

/// Classifies a server's answer by its error code (when it sent one: HEAD answers have no body)
/// and HTTP status (absent for the per-key errors of `DeleteObjects`).
pub(crate) fn classify_answer(status: Option<u16>, code: Option<&str>) -> Class {
    if let Some(code) = code {
        if PERMANENT_CODES.contains(&code) {
            return Class::Permanent;
        }
        if TRANSIENT_CODES.contains(&code) {
            return Class::Transient;
        }
        if code == "NoSuchKey" || code == "NoSuchUpload" {
            return Class::Missing;
        }
    }
    match status {
        Some(404) => Class::Missing,
        Some(429) => Class::Transient,
        Some(501) => Class::Permanent,
        Some(status) if status >= 500 => Class::Transient,
        _ => Class::Permanent,
    }
}

/// Classifies a failed SDK call: the server's answer by [`classify_answer`]; timeouts, failed
/// connections and cut-off responses as transient; a request that could not be built (or a
/// connector refusing our settings) as permanent.
pub(crate) fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Class {
    match err {
        SdkError::ServiceError(service) => {
            classify_answer(Some(service.raw().status().as_u16()), service.err().code())
        }
        SdkError::ConstructionFailure(_) => Class::Permanent,
        SdkError::DispatchFailure(failure) if failure.is_user() => Class::Permanent,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Class::Transient
        }
        _ => Class::Transient,
    }
}

/// Whether the server refused a range because it starts past the object's end (HTTP 416).
fn range_not_satisfiable<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    matches!(err, SdkError::ServiceError(service)
        if service.raw().status().as_u16() == 416 || service.err().code() == Some("InvalidRange"))
}

/// Whether the server does not implement the operation (s3s-fs and others lack some).
fn not_implemented<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    matches!(err, SdkError::ServiceError(service)
        if service.raw().status().as_u16() == 501 || service.err().code() == Some("NotImplemented"))
}

/// An S3 timestamp as a [`jiff::Timestamp`].
fn timestamp(time: &DateTime) -> Option<jiff::Timestamp> {
    jiff::Timestamp::new(time.secs(), time.subsec_nanos() as i32).ok()
}

/// Aborts a multipart upload when dropped while armed, so an upload whose future is dropped
/// (cancelled) after `CreateMultipartUpload` frees its parts. The abort is spawned on the tokio
/// runtime of the drop; with none (or one shutting down), the upload is left for the bucket's
/// lifecycle rules and a warning says so.
struct AbortGuard {
    client: Client,
    bucket: String,
    full: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl AbortGuard {
    fn request(
        &self,
    ) -> aws_sdk_s3::operation::abort_multipart_upload::builders::AbortMultipartUploadFluentBuilder
    {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.full)
            .upload_id(&self.upload_id)
    }

    /// The upload completed: nothing to abort.
    fn disarm(mut self) {
        self.armed = false;
    }

    /// Aborts now, waiting for the answer at most the stall timeout; if this is cancelled in
    /// turn, the drop aborts.
    async fn abort(mut self, storage: &S3Storage) {
        let what = "aborting multipart upload of";
        let error = match storage
            .bounded(what, &self.key, self.request().send())
            .await
        {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(storage.error(what, &self.key, e)),
            Err(stalled) => Some(stalled),
        };
        if let Some(error) = error {
            tracing::warn!(key = %self.key, error = %error, "multipart upload left behind");
        }
        self.armed = false;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let request = self.request();
        let key = std::mem::take(&mut self.key);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    match request.send().await {
                        Ok(_) => tracing::debug!(key, "aborted the multipart upload of a cancelled stream"),
                        Err(e) => tracing::warn!(key, error = %crate::error_chain(&e), "multipart upload of a cancelled stream left behind"),
                    }
                });
            }
            Err(_) => {
                tracing::warn!(
                    key,
                    "multipart upload of a cancelled stream left behind: no runtime to abort it on"
                )
            }
        }
    }
}

/// A bucket and prefix on an S3-compatible server.
#[derive(Debug, Clone)]
pub struct S3Storage {
    client: Client,
    config: S3Config,
    /// Set once the server answered `DeleteObjects` with 501: batches then go key by key.
    no_batch_delete: Arc<AtomicBool>,
    /// How long a request or a body read may wait for the server (`stall_timeout_seconds`).
    stall: Duration,
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
            no_batch_delete: Arc::new(AtomicBool::new(false)),
            stall: stall::DEFAULT_STALL_TIMEOUT,
        }
    }

    /// Fails a request (its retries included) or a read of an object's body that waits longer
    /// than `stall` for the server (`stall_timeout_seconds`; the default is 300 s).
    pub fn with_stall_timeout(mut self, stall: Duration) -> Self {
        self.stall = stall;
        self
    }

    /// Awaits one request about `key` for at most the stall timeout.
    async fn bounded<F: std::future::IntoFuture>(
        &self,
        what: &str,
        key: &str,
        request: F,
    ) -> Result<F::Output> {
        stall::bounded(
            self.stall,
            || format!("{what} {key} in {}", self.root_location()),
            request,
        )
        .await
    }

    /// An object's body, whose reads fail when its bytes stop arriving.
    fn reader(&self, key: &str, body: ByteStream) -> ObjectReader {
        Box::pin(stall::StallReader::new(
            Box::pin(body.into_async_read()),
            self.stall,
            format!("reading {key} in {}", self.root_location()),
        ))
    }

    /// `s3://bucket/prefix`, for messages.
    fn root_location(&self) -> String {
        format!("s3://{}/{}", self.config.bucket, self.config.prefix)
    }

    /// The prefix every full key starts with (`prefix/`, or nothing).
    fn root(&self) -> String {
        if self.config.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.config.prefix)
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
        let message = match &err {
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let code = service.err().code().unwrap_or("unknown");
                let detail = service.err().message().unwrap_or("");
                format!("{code} (HTTP {status}) {detail}")
                    .trim()
                    .to_string()
            }
            SdkError::DispatchFailure(_) => format!(
                "cannot reach {}: {}",
                self.endpoint(),
                crate::error_chain(&err)
            ),
            SdkError::TimeoutError(_) => format!("timed out talking to {}", self.endpoint()),
            other => crate::error_chain(other),
        };
        let text = format!("{what} {key} in {}: {message}", self.root_location());
        match classify(&err) {
            Class::Missing => Error::not_found(text),
            Class::Permanent => Error::storage(text),
            Class::Transient => Error::storage(text).transient(),
        }
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
        attrs: &ObjectAttrs,
    ) -> Result<CreateOutcome> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.config.bucket)
            .key(full)
            .set_content_type(attrs.content_type.clone())
            .set_metadata(attrs.user_metadata())
            .body(ByteStream::from(body));
        if if_absent {
            request = request.if_none_match("*");
        }
        match self.bounded("storing", key, request.send()).await? {
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
        attrs: &ObjectAttrs,
    ) -> Result<u64> {
        let what = "starting multipart upload of";
        let created = self
            .bounded(
                what,
                key,
                self.client
                    .create_multipart_upload()
                    .bucket(&self.config.bucket)
                    .key(full)
                    .set_content_type(attrs.content_type.clone())
                    .set_metadata(attrs.user_metadata())
                    .send(),
            )
            .await?
            .map_err(|e| self.error("starting multipart upload of", key, e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| {
                Error::storage(format!(
                    "starting multipart upload of {key}: server returned no upload id"
                ))
            })?
            .to_string();
        let guard = AbortGuard {
            client: self.client.clone(),
            bucket: self.config.bucket.clone(),
            full: full.to_string(),
            key: key.to_string(),
            upload_id: upload_id.clone(),
            armed: true,
        };
        let result = self.upload_parts(key, full, &upload_id, first, body).await;
        match &result {
            Ok(_) => guard.disarm(),
            // Abort so the server frees the parts; the original error is what matters.
            Err(_) => guard.abort(self).await,
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
        let base = self.config.part_size;
        let mut parts = Vec::new();
        let mut total = 0u64;
        let mut pending = Some(first);
        let mut buffer = BytesMut::with_capacity(part_size(base, 2));
        let mut ended = false;
        while let Some(part) = pending.take() {
            let number = parts.len() as u32 + 1;
            if number > MAX_PARTS {
                return Err(Error::storage(format!(
                    "uploading {key}: the stream needs more than {MAX_PARTS} parts, the most S3 takes ({total} bytes sent so far)"
                )));
            }
            let next_size = part_size(base, number + 1);
            // Fill the next part before sending this one, so the last part is sent knowing it is last.
            while !ended && buffer.len() < next_size {
                match body.next().await {
                    Some(chunk) => buffer.extend_from_slice(&chunk.map_err(Error::from)?),
                    None => ended = true,
                }
            }
            let number = number as i32;
            total += part.len() as u64;
            let what = format!("uploading part {number} of");
            let request = self
                .client
                .upload_part()
                .bucket(&self.config.bucket)
                .key(full)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(part))
                .send();
            let uploaded = self
                .bounded(&what, key, request)
                .await?
                .map_err(|e| self.error(&what, key, e))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(uploaded.e_tag().map(str::to_string))
                    .part_number(number)
                    .build(),
            );
            if !buffer.is_empty() {
                let next_len = buffer.len().min(next_size);
                pending = Some(buffer.split_to(next_len).freeze());
                buffer.reserve(part_size(base, number as u32 + 2));
            }
        }
        let request = self
            .client
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send();
        self.bounded("completing multipart upload of", key, request)
            .await?
            .map_err(|e| self.error("completing multipart upload of", key, e))?;
        Ok(total)
    }
}

impl S3Storage {
    /// Stores a stream at the full key `full` (`key` names it in messages), with `attrs`: one
    /// `PutObject` if it fits in one part, else a multipart upload, aborted on failure.
    async fn put_stream_at(
        &self,
        key: &str,
        full: &str,
        mut body: BodyStream,
        attrs: &ObjectAttrs,
    ) -> Result<u64> {
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
            self.put_object(key, full, first.freeze(), false, attrs)
                .await?;
            return Ok(len);
        }
        let rest = first.split_off(part_size);
        let mut body: BodyStream = if rest.is_empty() {
            body
        } else {
            Box::pin(tokio_stream::once(Ok(rest.freeze())).chain(body))
        };
        self.multipart(key, full, first.freeze(), &mut body, attrs)
            .await
    }
}

/// Why one `DeleteObjects` request did not delete its keys.
enum BatchError {
    /// The server lacks `DeleteObjects` (501): delete key by key instead.
    NotImplemented,
    /// The request, or some of its keys, failed.
    Failed(Error),
}

impl S3Storage {
    /// Deletes up to 1,000 objects (full keys) in one `DeleteObjects` request, quietly (the answer
    /// lists only the keys that failed).
    async fn delete_batch(&self, full: &[String]) -> Result<(), BatchError> {
        let count = full.len();
        let what = format!("{count} objects");
        let built = |e: aws_sdk_s3::error::BuildError| {
            BatchError::Failed(Error::other(format!(
                "building the deletion of {what}: {e}"
            )))
        };
        let objects = full
            .iter()
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(built)?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(built)?;
        let request = self
            .client
            .delete_objects()
            .bucket(&self.config.bucket)
            .delete(delete)
            .send();
        let answer = self
            .bounded("deleting", &what, request)
            .await
            .map_err(BatchError::Failed)?
            .map_err(|e| {
                if not_implemented(&e) {
                    BatchError::NotImplemented
                } else {
                    BatchError::Failed(self.error("deleting", &what, e))
                }
            })?;
        let root = self.root();
        // A missing key is not an error (S3 does not report one; some servers do).
        let failed: Vec<_> = answer
            .errors()
            .iter()
            .filter(|e| classify_answer(None, e.code()) != Class::Missing)
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let transient = failed
            .iter()
            .all(|e| classify_answer(None, e.code()) == Class::Transient);
        let mut listed: Vec<String> = failed
            .iter()
            .take(5)
            .map(|e| {
                let key = e.key().unwrap_or("?");
                let key = key.strip_prefix(&root).unwrap_or(key);
                format!(
                    "{key}: {} {}",
                    e.code().unwrap_or("unknown"),
                    e.message().unwrap_or("")
                )
                .trim()
                .to_string()
            })
            .collect();
        if failed.len() > 5 {
            listed.push(format!("and {} more", failed.len() - 5));
        }
        let error = Error::storage(format!(
            "deleting {what} in {}: {} not deleted: {}",
            self.root_location(),
            failed.len(),
            listed.join("; ")
        ));
        Err(BatchError::Failed(if transient {
            error.transient()
        } else {
            error
        }))
    }
}

#[async_trait]
impl Storage for S3Storage {
    fn shared(&self) -> Option<Arc<dyn Storage>> {
        Some(Arc::new(self.clone()))
    }

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
        self.put_object(key, &full, body, false, &ObjectAttrs::default())
            .await
            .map(drop)
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<CreateOutcome> {
        let full = self.full_key(key)?;
        self.put_object(key, &full, body, true, &ObjectAttrs::default())
            .await
    }

    async fn put_stream(&self, key: &str, body: BodyStream) -> Result<u64> {
        let full = self.full_key(key)?;
        self.put_stream_at(key, &full, body, &ObjectAttrs::default())
            .await
    }

    async fn get(&self, key: &str) -> Result<ObjectReader> {
        let full = self.full_key(key)?;
        let request = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(&full)
            .send();
        let object = self
            .bounded("reading", key, request)
            .await?
            .map_err(|e| self.error("reading", key, e))?;
        Ok(self.reader(key, object.body))
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<ObjectReader> {
        let full = self.full_key(key)?;
        let location = self.root_location();
        if len == 0 {
            // HTTP cannot ask for zero bytes; the object must still exist and reach `start`.
            let size = self.head(key).await?.size;
            if start > size {
                return Err(range_past_end(key, &location, start, len, size));
            }
            return Ok(Box::pin(tokio::io::empty()));
        }
        let Some(last) = start.checked_add(len - 1) else {
            return Err(Error::integrity(format!(
                "reading {len} bytes at offset {start} of {key} in {location}: the range ends past the largest offset"
            )));
        };
        let request = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(&full)
            .range(format!("bytes={start}-{last}"))
            .send();
        let object = self
            .bounded("reading", key, request)
            .await?
            .map_err(|e| {
                if range_not_satisfiable(&e) {
                    Error::integrity(format!(
                        "reading {len} bytes at offset {start} of {key} in {location}: the object ends before offset {start}"
                    ))
                } else {
                    self.error("reading", key, e)
                }
            })?;
        let sent = object.content_length().unwrap_or(-1);
        if sent != len as i64 {
            // A range reaching past the end is cut short by the server (`bytes START-END/SIZE`).
            let size = object
                .content_range()
                .and_then(|range| range.rsplit('/').next())
                .and_then(|size| size.parse::<u64>().ok());
            return Err(match size {
                Some(size) => range_past_end(key, &location, start, len, size),
                None => Error::integrity(format!(
                    "reading {len} bytes at offset {start} of {key} in {location}: the server sent {sent} bytes"
                )),
            });
        }
        Ok(self.reader(key, object.body))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let full = self.full_key(key)?;
        let request = self
            .client
            .head_object()
            .bucket(&self.config.bucket)
            .key(&full)
            .send();
        let object = self
            .bounded("looking up", key, request)
            .await?
            .map_err(|e| self.error("looking up", key, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: object.content_length().unwrap_or(0).max(0) as u64,
            last_modified: object.last_modified().and_then(timestamp),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let root = self.root();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(format!("{root}{prefix}"))
            .into_paginator()
            .send();
        let what = if prefix.is_empty() { "objects" } else { prefix };
        let mut out = Vec::new();
        while let Some(page) = self.bounded("listing", what, pages.next()).await? {
            let page = page.map_err(|e| self.error("listing", what, e))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&root)) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    last_modified: object.last_modified().and_then(timestamp),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key)?;
        let request = self
            .client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(&full)
            .send();
        self.bounded("deleting", key, request)
            .await?
            .map_err(|e| self.error("deleting", key, e))?;
        Ok(())
    }

    async fn delete_many(&self, keys: &[String]) -> Result<()> {
        let full = keys
            .iter()
            .map(|key| self.full_key(key))
            .collect::<Result<Vec<_>>>()?;
        for (keys, full) in keys
            .chunks(MAX_DELETE_BATCH)
            .zip(full.chunks(MAX_DELETE_BATCH))
        {
            if !self.no_batch_delete.load(Ordering::Relaxed) {
                match self.delete_batch(full).await {
                    Ok(()) => continue,
                    Err(BatchError::NotImplemented) => {
                        tracing::debug!(location = %self.location(), "no DeleteObjects: deleting key by key");
                        self.no_batch_delete.store(true, Ordering::Relaxed);
                    }
                    Err(BatchError::Failed(e)) => return Err(e),
                }
            }
            for key in keys {
                self.delete(key).await?;
            }
        }
        Ok(())
    }

    async fn abandoned_uploads(&self, before: jiff::Timestamp) -> Result<Vec<AbandonedUpload>> {
        let root = self.root();
        let mut found = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let request = self
                .client
                .list_multipart_uploads()
                .bucket(&self.config.bucket)
                .prefix(&root)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send();
            let page = match self
                .bounded("listing", "multipart uploads", request)
                .await?
            {
                Ok(page) => page,
                Err(e) if not_implemented(&e) => {
                    tracing::warn!(
                        location = %self.root_location(),
                        "the server cannot list multipart uploads: abandoned ones are left to the bucket's lifecycle rules"
                    );
                    return Ok(Vec::new());
                }
                Err(e) => return Err(self.error("listing", "multipart uploads", e)),
            };
            for upload in page.uploads() {
                let (Some(key), Some(id)) = (
                    upload.key().and_then(|k| k.strip_prefix(&root)),
                    upload.upload_id(),
                ) else {
                    continue;
                };
                let started = upload.initiated().and_then(timestamp);
                // An upload the server does not date is never old enough.
                if started.is_some_and(|at| at < before) {
                    found.push(AbandonedUpload {
                        key: key.to_string(),
                        upload_id: id.to_string(),
                        started,
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(String::from);
            id_marker = page.next_upload_id_marker().map(String::from);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        Ok(found)
    }

    async fn abort_upload(&self, upload: &AbandonedUpload) -> Result<()> {
        let full = self.full_key(&upload.key)?;
        let request = self
            .client
            .abort_multipart_upload()
            .bucket(&self.config.bucket)
            .key(&full)
            .upload_id(&upload.upload_id)
            .send();
        match self
            .bounded("aborting multipart upload of", &upload.key, request)
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(&e, SdkError::ServiceError(s) if s.raw().status().as_u16() == 404) => {
                Ok(())
            }
            Err(e) => Err(self.error("aborting multipart upload of", &upload.key, e)),
        }
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
                &ObjectAttrs::default(),
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

        let request = self
            .client
            .get_object_lock_configuration()
            .bucket(&self.config.bucket)
            .send();
        let object_lock = match self
            .bounded(
                "reading the object lock configuration of",
                "the bucket",
                request,
            )
            .await?
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::error::{ConnectorError, ErrorMetadata};
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_sdk_s3::primitives::SdkBody;

    const MIB: usize = 1024 * 1024;

    /// Parts (count, largest) of a stream of `total` bytes starting at `base`-byte parts.
    fn plan(total: u64, base: usize) -> (u32, usize) {
        let (mut sent, mut number, mut largest) = (0u64, 0u32, 0usize);
        while sent < total {
            number += 1;
            let size = part_size(base, number);
            largest = largest.max(size);
            sent += size as u64;
        }
        (number, largest)
    }

    #[test]
    fn parts_grow_to_stay_within_ten_thousand() {
        assert_eq!(part_size(16 * MIB, 1), 16 * MIB);
        assert_eq!(part_size(16 * MIB, 1000), 16 * MIB);
        assert_eq!(part_size(16 * MIB, 1001), 32 * MIB);
        assert_eq!(part_size(16 * MIB, 2001), 64 * MIB);
        assert_eq!(part_size(16 * MIB, u32::MAX), MAX_PART_SIZE);

        // A 2 TB stream at 16 MiB parts, and even at the 5 MiB minimum.
        let two_tb = 2 * 1024u64.pow(4);
        let (parts, largest) = plan(two_tb, 16 * MIB);
        assert!(parts <= MAX_PARTS, "{parts} parts");
        assert_eq!(largest, 2048 * MIB);
        assert!(plan(two_tb, 5 * MIB).0 <= MAX_PARTS);
        // Short streams keep their part size.
        assert_eq!(plan(1000 * 16 * MIB as u64, 16 * MIB), (1000, 16 * MIB));

        // Memory: the part being sent plus the next one filling, the next never more than twice
        // the current one, so about two parts whatever the length.
        for number in 1..MAX_PARTS {
            let (this, next) = (part_size(16 * MIB, number), part_size(16 * MIB, number + 1));
            assert!(next == this || next == 2 * this || next == MAX_PART_SIZE);
            assert!(next <= MAX_PART_SIZE);
        }
    }

    fn answer(status: u16, code: Option<&str>) -> SdkError<GetObjectError, HttpResponse> {
        let mut meta = ErrorMetadata::builder().message("refused");
        if let Some(code) = code {
            meta = meta.code(code);
        }
        SdkError::service_error(
            GetObjectError::generic(meta.build()),
            HttpResponse::new(status.try_into().unwrap(), SdkBody::empty()),
        )
    }

    #[test]
    fn errors_are_transient_only_when_a_retry_can_help() {
        for (status, code) in [
            (403, Some("AccessDenied")),
            (403, Some("SignatureDoesNotMatch")),
            (403, Some("InvalidAccessKeyId")),
            (400, Some("AuthorizationHeaderMalformed")),
            (404, Some("NoSuchBucket")),
            (403, None),
            (400, Some("InvalidArgument")),
            (501, Some("NotImplemented")),
            (501, None),
            // A server in trouble that refuses the signature is still refusing it.
            (500, Some("SignatureDoesNotMatch")),
        ] {
            assert_eq!(
                classify(&answer(status, code)),
                Class::Permanent,
                "{status} {code:?}"
            );
        }
        for (status, code) in [
            (500, Some("InternalError")),
            (503, Some("SlowDown")),
            (503, None),
            (429, None),
            (400, Some("RequestTimeout")),
            (502, Some("BadGateway")),
        ] {
            assert_eq!(
                classify(&answer(status, code)),
                Class::Transient,
                "{status} {code:?}"
            );
        }
        for (status, code) in [
            (404, Some("NoSuchKey")),
            (404, None),
            (404, Some("NotFound")),
        ] {
            assert_eq!(
                classify(&answer(status, code)),
                Class::Missing,
                "{status} {code:?}"
            );
        }

        type Failed = SdkError<GetObjectError, HttpResponse>;
        assert_eq!(
            classify(&Failed::timeout_error("too slow")),
            Class::Transient
        );
        assert_eq!(
            classify(&Failed::dispatch_failure(ConnectorError::io(
                "connection refused".into()
            ))),
            Class::Transient
        );
        assert_eq!(
            classify(&Failed::dispatch_failure(ConnectorError::timeout(
                "connect timed out".into()
            ))),
            Class::Transient
        );
        assert_eq!(
            classify(&Failed::dispatch_failure(ConnectorError::user(
                "invalid endpoint".into()
            ))),
            Class::Permanent
        );
        assert_eq!(
            classify(&Failed::construction_failure("no bucket")),
            Class::Permanent
        );
        assert_eq!(
            classify(&Failed::response_error(
                "connection reset",
                HttpResponse::new(200.try_into().unwrap(), SdkBody::empty())
            )),
            Class::Transient
        );
        // Per-key errors of DeleteObjects carry a code and no status.
        assert_eq!(
            classify_answer(None, Some("AccessDenied")),
            Class::Permanent
        );
        assert_eq!(
            classify_answer(None, Some("InternalError")),
            Class::Transient
        );
        assert_eq!(classify_answer(None, Some("Whatever")), Class::Permanent);

        // The message says what failed, and the kind follows the class.
        let storage = S3Storage::new(config("http://127.0.0.1:9"));
        let denied = storage.error(
            "reading",
            "data/x",
            answer(403, Some("SignatureDoesNotMatch")),
        );
        assert_eq!(denied.kind(), crate::error::ErrorKind::Storage);
        assert!(!denied.is_transient());
        assert!(
            denied.to_string().starts_with(
                "reading data/x in s3://bucket/repo: SignatureDoesNotMatch (HTTP 403)"
            ),
            "{denied}"
        );
        let slow = storage.error("reading", "data/x", answer(503, Some("SlowDown")));
        assert!(slow.is_transient());
        let missing = storage.error("reading", "data/x", answer(404, Some("NoSuchKey")));
        assert_eq!(missing.kind(), crate::error::ErrorKind::NotFound);
    }

    fn config(endpoint: &str) -> S3Config {
        S3Config {
            bucket: "bucket".into(),
            prefix: "repo".into(),
            endpoint: Some(endpoint.into()),
            region: "us-east-1".into(),
            path_style: true,
            checksum_mode: ChecksumMode::WhenRequired,
            access_key_id: crate::secret::Secret::new("key"),
            secret_access_key: crate::secret::Secret::new("secret"),
            part_size: 5 * MIB,
        }
    }

    #[tokio::test]
    async fn a_dropped_guard_aborts_its_upload() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let storage = S3Storage::new(config(&format!("http://127.0.0.1:{port}")));
        let guard = |upload_id: &str| AbortGuard {
            client: storage.client.clone(),
            bucket: "bucket".into(),
            full: "repo/data/x".into(),
            key: "data/x".into(),
            upload_id: upload_id.into(),
            armed: true,
        };
        guard("completed").disarm();
        // What a cancelled `put_stream` does: its future, holding the guard, is dropped.
        drop(guard("cancelled"));

        let accepted = tokio::time::timeout(Duration::from_secs(10), listener.accept());
        let (mut socket, _) = accepted.await.expect("no abort request").unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed");
            request.extend_from_slice(&buf[..n]);
        }
        let request = String::from_utf8_lossy(&request);
        let line = request.lines().next().unwrap();
        assert!(
            line.starts_with("DELETE /bucket/repo/data/x?") && line.contains("uploadId=cancelled "),
            "{line}"
        );
        socket
            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        // The disarmed guard sent nothing.
        let more = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(more.is_err(), "a disarmed guard aborted");
    }
}
