//! S3: PutObject for small objects, multipart upload above a threshold.

use std::time::SystemTime;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::FutureExt as _;
use futures::future::BoxFuture;

use super::{EmitError, Emitted, Emitter};
use crate::buffer::{BufferError, ObjectReader, SealedObject};
use crate::compress::Compression;

/// S3's smallest part (except the last).
const MIN_PART: usize = 5 << 20;

/// The user metadata (`x-amz-meta-kinesis-rs-digest`) every object is
/// written with: the MD5 of its body and the time of its first entry. When a
/// conditional write is refused, it tells an earlier upload of this very
/// object (a crash between the upload and the deletion of its segment, an
/// answer lost) from another writer's object under the same key.
pub const DIGEST_METADATA: &str = "kinesis-rs-digest";

/// Whether S3 refused a conditional write (`If-None-Match: *`, HTTP 412):
/// an object is already under the key.
fn precondition_failed<E>(
    error: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    error.raw_response().map(|r| r.status().as_u16()) == Some(412)
}

/// The digest written as [`DIGEST_METADATA`].
fn digest_of(md5: md5::Md5, first_time_ms: i64) -> String {
    use md5::Digest as _;
    format!("{:x}-{first_time_ms}", md5.finalize())
}

/// S3's most parts in a multipart upload.
pub const MAX_PARTS: u64 = 10_000;
/// S3's smallest part, except the last (5 MiB).
pub const MIN_PART_BYTES: u64 = 5 << 20;
/// S3's largest part (5 GiB).
pub const MAX_PART_BYTES: u64 = 5 << 30;
/// S3's largest single PutObject (5 GiB).
pub const MAX_PUT_BYTES: u64 = 5 << 30;
/// How far an object can grow past `max_object_bytes`: it is complete once
/// a batch takes it there, and a batch is one buffer entry, at most 1 GiB.
pub const MAX_OBJECT_OVERSHOOT: u64 = 1 << 30;

/// Upload settings S3 would refuse for some object, every time: an object
/// that could never be uploaded. Builders refuse them up front.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadSettingsError {
    /// `part_size` below S3's 5 MiB minimum.
    #[error(
        "`part_size` {part_size}: S3 takes parts (all but the last) of at least 5 MiB ({MIN_PART_BYTES} bytes)"
    )]
    PartTooSmall {
        /// The part size given.
        part_size: u64,
    },
    /// `part_size` above S3's 5 GiB maximum.
    #[error("`part_size` {part_size}: S3 takes parts of at most 5 GiB ({MAX_PART_BYTES} bytes)")]
    PartTooLarge {
        /// The part size given.
        part_size: u64,
    },
    /// `max_object_bytes` needs more than 10,000 parts of `part_size`.
    #[error(
        "`max_object_bytes` {max_object_bytes} with `part_size` {part_size}: an object can reach {largest} bytes (one batch past the limit), {parts} parts, over S3's 10,000; raise `part_size` to at least {needed} or lower `max_object_bytes`"
    )]
    TooManyParts {
        /// The object size limit given.
        max_object_bytes: u64,
        /// The part size given.
        part_size: u64,
        /// The largest object the limit allows.
        largest: u64,
        /// The parts it would take.
        parts: u64,
        /// The smallest part size that fits.
        needed: u64,
    },
    /// Objects over 5 GiB would be uploaded with one PutObject.
    #[error(
        "`multipart_threshold` {multipart_threshold} with `max_object_bytes` {max_object_bytes}: objects of up to {largest} bytes would go up in one PutObject, over S3's 5 GiB ({MAX_PUT_BYTES} bytes); lower `multipart_threshold` to at most {MAX_PUT_BYTES}"
    )]
    PutTooLarge {
        /// The threshold given.
        multipart_threshold: u64,
        /// The object size limit given.
        max_object_bytes: u64,
        /// The largest single PutObject the settings allow.
        largest: u64,
    },
    /// SSE-KMS with an empty key id.
    #[error("`sse_kms_key_id` is empty: name a KMS key, or give none for the AWS managed key")]
    EmptyKmsKeyId,
}

/// Checks upload settings against S3's limits (see [`UploadSettingsError`]).
/// An object is taken to reach `max_object_bytes` plus
/// [`MAX_OBJECT_OVERSHOOT`].
pub fn check_upload_settings(
    max_object_bytes: u64,
    multipart_threshold: u64,
    part_size: u64,
    sse: &ServerSideEncryption,
) -> Result<(), UploadSettingsError> {
    if part_size < MIN_PART_BYTES {
        return Err(UploadSettingsError::PartTooSmall { part_size });
    }
    if part_size > MAX_PART_BYTES {
        return Err(UploadSettingsError::PartTooLarge { part_size });
    }
    let largest = max_object_bytes.saturating_add(MAX_OBJECT_OVERSHOOT);
    let largest_put = largest.min(multipart_threshold.saturating_sub(1));
    if largest_put > MAX_PUT_BYTES {
        return Err(UploadSettingsError::PutTooLarge {
            multipart_threshold,
            max_object_bytes,
            largest: largest_put,
        });
    }
    let parts = largest.div_ceil(part_size);
    if largest >= multipart_threshold && parts > MAX_PARTS {
        return Err(UploadSettingsError::TooManyParts {
            max_object_bytes,
            part_size,
            largest,
            parts,
            needed: largest.div_ceil(MAX_PARTS),
        });
    }
    if let ServerSideEncryption::Kms { key_id: Some(key) } = sse
        && key.trim().is_empty()
    {
        return Err(UploadSettingsError::EmptyKmsKeyId);
    }
    Ok(())
}

/// Server-side encryption of uploaded objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ServerSideEncryption {
    /// The bucket's default (the default).
    #[default]
    BucketDefault,
    /// SSE-S3 (`AES256`).
    S3,
    /// SSE-KMS, with a key id or the account's default key.
    Kms {
        /// The KMS key id or ARN; `None` for the AWS managed key.
        key_id: Option<String>,
    },
}

/// Writes objects to an S3 bucket.
///
/// ```no_run
/// # async fn demo(sdk_config: aws_config::SdkConfig) {
/// use connector_s3::emit::{S3Emitter, ServerSideEncryption};
/// let emitter = S3Emitter::builder(aws_sdk_s3::Client::new(&sdk_config), "my-archive")
///     .multipart_threshold(32 << 20)
///     .server_side_encryption(ServerSideEncryption::S3)
///     .build();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct S3Emitter {
    client: Client,
    bucket: String,
    multipart_threshold: u64,
    part_size: usize,
    sse: ServerSideEncryption,
    content_type: &'static str,
}

/// Builds an [`S3Emitter`].
#[derive(Debug, Clone)]
pub struct S3EmitterBuilder {
    emitter: S3Emitter,
}

impl S3EmitterBuilder {
    /// Objects at least this large are uploaded in parts. Default: 16 MiB.
    pub fn multipart_threshold(mut self, bytes: u64) -> Self {
        self.emitter.multipart_threshold = bytes;
        self
    }

    /// Size of each part (at least 5 MiB, S3's minimum: a smaller size is
    /// raised to it; the connector and journal builders refuse one, see
    /// [`check_upload_settings`]). Default: 8 MiB.
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.emitter.part_size = bytes.max(MIN_PART);
        self
    }

    /// Server-side encryption. Default: the bucket's default.
    pub fn server_side_encryption(mut self, sse: ServerSideEncryption) -> Self {
        self.emitter.sse = sse;
        self
    }

    /// The content type objects are stored with, from their compression.
    /// Default: as for gzip (`application/gzip`).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.emitter.content_type = match compression {
            Compression::Gzip { .. } => "application/gzip",
            Compression::Zstd { .. } => "application/zstd",
            Compression::None => "application/x-ndjson",
        };
        self
    }

    /// The emitter.
    pub fn build(self) -> S3Emitter {
        self.emitter
    }
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone)]
pub struct OpenUpload {
    /// Its key.
    pub key: String,
    /// Its id.
    pub upload_id: String,
    /// When it was started.
    pub initiated: Option<SystemTime>,
}

fn failed<E>(operation: &'static str, key: &str, error: &SdkError<E, HttpResponse>) -> EmitError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    EmitError::Destination {
        operation,
        key: key.to_owned(),
        message: kcl::error_chain(error),
        failure: super::classify(error),
    }
}

impl ServerSideEncryption {
    /// The request's `x-amz-server-side-encryption` and KMS key id.
    fn headers(
        &self,
    ) -> (
        Option<aws_sdk_s3::types::ServerSideEncryption>,
        Option<String>,
    ) {
        use aws_sdk_s3::types::ServerSideEncryption as Sse;
        match self {
            ServerSideEncryption::BucketDefault => (None, None),
            ServerSideEncryption::S3 => (Some(Sse::Aes256), None),
            ServerSideEncryption::Kms { key_id } => (Some(Sse::AwsKms), key_id.clone()),
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BufferError> + Send + 'static,
) -> Result<T, EmitError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join| {
            EmitError::Buffer(BufferError::Io {
                path: "<reader task>".into(),
                source: std::io::Error::other(join.to_string()),
            })
        })?
        .map_err(EmitError::Buffer)
}

/// Reads up to `size` bytes' worth of batches (at least one batch).
fn read_part(
    reader: &mut ObjectReader,
    size: usize,
    carry: &mut Vec<u8>,
) -> Result<Vec<u8>, BufferError> {
    let mut part = std::mem::take(carry);
    while part.len() < size {
        match reader.next_chunk()? {
            Some(chunk) => part.extend_from_slice(&chunk),
            None => break,
        }
    }
    if part.len() > size {
        // Parts need not follow batch boundaries: keep the rest for the next.
        *carry = part.split_off(size);
    }
    Ok(part)
}

impl S3Emitter {
    /// A builder for `bucket`.
    pub fn builder(client: Client, bucket: impl Into<String>) -> S3EmitterBuilder {
        S3EmitterBuilder {
            emitter: S3Emitter {
                client,
                bucket: bucket.into(),
                multipart_threshold: 16 << 20,
                part_size: 8 << 20,
                sse: ServerSideEncryption::default(),
                content_type: "application/gzip",
            },
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The S3 client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn put(&self, key: &str, object: &SealedObject) -> Result<Emitted, EmitError> {
        let sealed = object.clone();
        let (body, digest) = blocking(move || {
            use md5::Digest as _;
            let body = sealed.read_all()?;
            let digest = digest_of(
                md5::Md5::new_with_prefix(&body),
                sealed.summary.first_time_ms,
            );
            Ok((body, digest))
        })
        .await?;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(self.content_type)
            .metadata(DIGEST_METADATA, &digest)
            .if_none_match("*")
            .body(ByteStream::from(body));
        let (sse, kms_key) = self.sse.headers();
        request = request
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key);
        match request.send().await {
            Ok(_) => Ok(Emitted::Written),
            Err(error) if precondition_failed(&error) => self.existing(key, &digest).await,
            Err(error) => Err(failed("PutObject", key, &error)),
        }
    }

    /// After a refused conditional write: whether the object under `key` is
    /// this one (its digest metadata) or another.
    async fn existing(&self, key: &str, digest: &str) -> Result<Emitted, EmitError> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed("HeadObject", key, &e))?;
        let theirs = head
            .metadata()
            .and_then(|metadata| metadata.get(DIGEST_METADATA));
        if theirs.map(String::as_str) == Some(digest) {
            tracing::info!(%key, "the object was already uploaded (an earlier attempt); kept");
            Ok(Emitted::AlreadyThere)
        } else {
            tracing::warn!(%key, "another object is under the key; not replaced");
            Ok(Emitted::Occupied)
        }
    }

    async fn multipart(&self, key: &str, object: &SealedObject) -> Result<Emitted, EmitError> {
        // The digest goes with CreateMultipartUpload, before the parts: one
        // more read of the object (from the page cache, usually).
        let sealed = object.clone();
        let digest = blocking(move || {
            use md5::Digest as _;
            let mut reader = sealed.reader()?;
            let mut md5 = md5::Md5::new();
            while let Some(chunk) = reader.next_chunk()? {
                md5.update(&chunk);
            }
            Ok(digest_of(md5, sealed.summary.first_time_ms))
        })
        .await?;
        let mut request = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(self.content_type)
            .metadata(DIGEST_METADATA, &digest);
        let (sse, kms_key) = self.sse.headers();
        request = request
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key);
        let created = request
            .send()
            .await
            .map_err(|e| failed("CreateMultipartUpload", key, &e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let result = self.upload_parts(key, &upload_id, object).await;
        match result {
            Ok(true) => Ok(Emitted::Written),
            Ok(false) => {
                // Refused: an object is under the key. S3 keeps the upload
                // open; it is not needed.
                let _ = self.abort(key, &upload_id).await;
                self.existing(key, &digest).await
            }
            Err(error) => {
                // Best effort: a leftover upload is also cleaned up at start.
                let _ = self.abort(key, &upload_id).await;
                Err(error)
            }
        }
    }

    /// Uploads the parts and completes the upload, unless an object is
    /// under the key already (`Ok(false)`).
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        object: &SealedObject,
    ) -> Result<bool, EmitError> {
        let sealed = object.clone();
        let mut reader = Some(blocking(move || sealed.reader()).await?);
        let mut carry = Vec::new();
        let mut parts = Vec::new();
        let part_size = self.part_size;
        loop {
            let (back, rest, part) = {
                let mut taken = reader.take().ok_or_else(|| EmitError::Destination {
                    operation: "UploadPart",
                    key: key.to_owned(),
                    message: "reader lost".into(),
                    failure: super::Failure::Retryable,
                })?;
                let mut carried = std::mem::take(&mut carry);
                blocking(move || {
                    let part = read_part(&mut taken, part_size, &mut carried)?;
                    Ok((taken, carried, part))
                })
                .await?
            };
            reader = Some(back);
            carry = rest;
            if part.is_empty() && !parts.is_empty() {
                break;
            }
            let number = parts.len() as i32 + 1;
            let uploaded = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(part))
                .send()
                .await
                .map_err(|e| failed("UploadPart", key, &e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_owned))
                    .build(),
            );
        }
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .if_none_match("*")
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        match completed {
            Ok(_) => Ok(true),
            Err(error) if precondition_failed(&error) => Ok(false),
            Err(error) => Err(failed("CompleteMultipartUpload", key, &error)),
        }
    }

    /// Aborts a multipart upload.
    pub async fn abort(&self, key: &str, upload_id: &str) -> Result<(), EmitError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| failed("AbortMultipartUpload", key, &e))?;
        Ok(())
    }

    /// Multipart uploads open under `prefix`.
    pub async fn open_uploads(&self, prefix: &str) -> Result<Vec<OpenUpload>, EmitError> {
        let mut uploads = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| {
                    if e.raw_response().map(|r| r.status().as_u16()) == Some(501) {
                        EmitError::Unsupported {
                            operation: "ListMultipartUploads",
                        }
                    } else {
                        failed("ListMultipartUploads", prefix, &e)
                    }
                })?;
            for upload in page.uploads() {
                if let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) {
                    uploads.push(OpenUpload {
                        key: key.to_owned(),
                        upload_id: upload_id.to_owned(),
                        initiated: upload
                            .initiated()
                            .and_then(|t| SystemTime::try_from(*t).ok()),
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                break;
            }
        }
        Ok(uploads)
    }

    /// Aborts the open multipart uploads under `prefix` that `select` picks;
    /// returns how many. Our uploads never hold the only copy of data (the
    /// buffer keeps it until the upload completes), so aborting is safe.
    pub async fn abort_uploads(
        &self,
        prefix: &str,
        mut select: impl FnMut(&OpenUpload) -> bool,
    ) -> Result<usize, EmitError> {
        let mut aborted = 0;
        for upload in self.open_uploads(prefix).await? {
            if select(&upload) {
                self.abort(&upload.key, &upload.upload_id).await?;
                tracing::info!(key = %upload.key, upload_id = %upload.upload_id, "aborted a leftover multipart upload");
                aborted += 1;
            }
        }
        Ok(aborted)
    }
}

impl Emitter for S3Emitter {
    fn emit<'a>(
        &'a self,
        key: &'a str,
        object: &'a SealedObject,
    ) -> BoxFuture<'a, Result<Emitted, EmitError>> {
        async move {
            if object.summary.bytes >= self.multipart_threshold {
                self.multipart(key, object).await
            } else {
                self.put(key, object).await
            }
        }
        .boxed()
    }

    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, EmitError>> {
        async move {
            match self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(_) => Ok(true),
                Err(error) if error.as_service_error().is_some_and(|e| e.is_not_found()) => {
                    Ok(false)
                }
                Err(error) => Err(failed("HeadObject", key, &error)),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn check(max_object: u64, threshold: u64, part: u64) -> Result<(), UploadSettingsError> {
        check_upload_settings(max_object, threshold, part, &ServerSideEncryption::S3)
    }

    #[test]
    fn the_defaults_and_s3s_limits_themselves_are_accepted() {
        assert_eq!(check(64 * MIB, 16 * MIB, 8 * MIB), Ok(()));
        assert_eq!(check(GIB, 5 * GIB, 5 * MIB), Ok(()));
        assert_eq!(check(64 * MIB, 16 * MIB, 5 * GIB), Ok(()));
        // Objects that never reach the threshold need no parts at all.
        assert_eq!(check(MIB, 4 * GIB, 5 * MIB), Ok(()));
    }

    #[test]
    fn a_part_under_5_mib_or_over_5_gib_is_refused() {
        assert_eq!(
            check(64 * MIB, 16 * MIB, 5 * MIB - 1),
            Err(UploadSettingsError::PartTooSmall {
                part_size: 5 * MIB - 1
            })
        );
        assert_eq!(
            check(64 * MIB, 16 * MIB, 5 * GIB + 1),
            Err(UploadSettingsError::PartTooLarge {
                part_size: 5 * GIB + 1
            })
        );
    }

    #[test]
    fn an_object_of_more_than_10000_parts_is_refused_naming_the_part_size_that_fits() {
        let error = check(100 * GIB, 16 * MIB, 8 * MIB).unwrap_err();
        let UploadSettingsError::TooManyParts { parts, needed, .. } = error.clone() else {
            panic!("{error}");
        };
        assert_eq!(parts, (101 * GIB).div_ceil(8 * MIB));
        assert_eq!(check(100 * GIB, 16 * MIB, needed), Ok(()));
        assert_eq!(
            check(100 * GIB, 16 * MIB, needed - 1),
            Err(UploadSettingsError::TooManyParts {
                max_object_bytes: 100 * GIB,
                part_size: needed - 1,
                largest: 101 * GIB,
                parts: 10_001,
                needed,
            })
        );
        let message = error.to_string();
        assert!(
            message.contains("`max_object_bytes`") && message.contains("`part_size`"),
            "{message}"
        );
    }

    #[test]
    fn a_single_put_over_5_gib_is_refused() {
        let error = check(8 * GIB, 10 * GIB, 8 * MIB).unwrap_err();
        assert_eq!(
            error,
            UploadSettingsError::PutTooLarge {
                multipart_threshold: 10 * GIB,
                max_object_bytes: 8 * GIB,
                largest: 9 * GIB,
            }
        );
        assert!(
            error.to_string().contains("`multipart_threshold`"),
            "{error}"
        );
    }

    #[test]
    fn an_empty_kms_key_id_is_refused() {
        let sse = |key: &str| ServerSideEncryption::Kms {
            key_id: Some(key.to_owned()),
        };
        assert_eq!(
            check_upload_settings(64 * MIB, 16 * MIB, 8 * MIB, &sse(" ")),
            Err(UploadSettingsError::EmptyKmsKeyId)
        );
        assert_eq!(
            check_upload_settings(64 * MIB, 16 * MIB, 8 * MIB, &sse("alias/archive")),
            Ok(())
        );
    }
}
