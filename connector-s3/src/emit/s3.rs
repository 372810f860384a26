//! S3: PutObject for small objects, multipart upload above a threshold.

use std::time::SystemTime;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::FutureExt as _;
use futures::future::BoxFuture;

use super::{EmitError, Emitter};
use crate::buffer::{BufferError, ObjectReader, SealedObject};
use crate::compress::Compression;

/// S3's smallest part (except the last).
const MIN_PART: usize = 5 << 20;

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

    /// Size of each part (at least 5 MiB, S3's minimum). Default: 8 MiB.
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

fn failed(operation: &'static str, key: &str, error: &dyn std::error::Error) -> EmitError {
    EmitError::Destination {
        operation,
        key: key.to_owned(),
        message: kcl::error_chain(error),
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

    async fn put(&self, key: &str, object: &SealedObject) -> Result<(), EmitError> {
        let sealed = object.clone();
        let body = blocking(move || sealed.read_all()).await?;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(self.content_type)
            .body(ByteStream::from(body));
        let (sse, kms_key) = self.sse.headers();
        request = request
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms_key);
        request
            .send()
            .await
            .map_err(|e| failed("PutObject", key, &e))?;
        Ok(())
    }

    async fn multipart(&self, key: &str, object: &SealedObject) -> Result<(), EmitError> {
        let mut request = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(self.content_type);
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
        if result.is_err() {
            // Best effort: a leftover upload is also cleaned up at start.
            let _ = self.abort(key, &upload_id).await;
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        object: &SealedObject,
    ) -> Result<(), EmitError> {
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
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| failed("CompleteMultipartUpload", key, &e))?;
        Ok(())
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
    ) -> BoxFuture<'a, Result<(), EmitError>> {
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
