//! Journal settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::JournalError;
use crate::compress::Compression;
use crate::emit::{S3Emitter, ServerSideEncryption};
use crate::key::{DEFAULT_JOURNAL_TEMPLATE, KeyTemplate};

/// Turns an entry into the bytes written for it (before the delimiter).
pub type Encoder = Arc<dyn Fn(&[u8], &mut Vec<u8>) + Send + Sync>;

/// A journal's settings; build with [`JournalConfig::builder`].
#[derive(Clone)]
pub struct JournalConfig {
    pub(crate) emitter: S3Emitter,
    pub(crate) template: KeyTemplate,
    pub(crate) directory: PathBuf,
    pub(crate) id: String,
    pub(crate) compression: Compression,
    pub(crate) delimiter: Vec<u8>,
    pub(crate) encoder: Option<Encoder>,
    pub(crate) max_batch_latency: Duration,
    pub(crate) max_batch_size: usize,
    pub(crate) fsync: bool,
    pub(crate) expiration: Option<Duration>,
    pub(crate) shards: usize,
    pub(crate) max_object_bytes: u64,
    pub(crate) max_object_age: Duration,
    pub(crate) max_buffered_bytes: u64,
}

impl std::fmt::Debug for JournalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalConfig")
            .field("bucket", &self.emitter.bucket())
            .field("template", &self.template.as_str())
            .field("directory", &self.directory)
            .field("id", &self.id)
            .field("compression", &self.compression)
            .field("max_batch_latency", &self.max_batch_latency)
            .field("max_batch_size", &self.max_batch_size)
            .field("fsync", &self.fsync)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl JournalConfig {
    /// A builder with the defaults.
    pub fn builder() -> JournalConfigBuilder {
        JournalConfigBuilder::default()
    }
}

/// Builds a [`JournalConfig`]. Defaults are documented on each setter.
pub struct JournalConfigBuilder {
    sdk_config: Option<aws_config::SdkConfig>,
    s3_client: Option<aws_sdk_s3::Client>,
    bucket: Option<String>,
    prefix: String,
    key_template: String,
    directory: Option<PathBuf>,
    id: Option<String>,
    compression: Compression,
    delimiter: Vec<u8>,
    encoder: Option<Encoder>,
    max_batch_latency: Duration,
    max_batch_size: usize,
    fsync: bool,
    expiration: Option<Duration>,
    shards: usize,
    max_object_bytes: u64,
    max_object_age: Duration,
    max_buffered_bytes: u64,
    multipart_threshold: u64,
    part_size: usize,
    sse: ServerSideEncryption,
}

impl Default for JournalConfigBuilder {
    fn default() -> Self {
        Self {
            sdk_config: None,
            s3_client: None,
            bucket: None,
            prefix: String::new(),
            key_template: DEFAULT_JOURNAL_TEMPLATE.to_owned(),
            directory: None,
            id: None,
            compression: Compression::default(),
            delimiter: b"\n".to_vec(),
            encoder: None,
            max_batch_latency: Duration::from_millis(100),
            max_batch_size: 10_000,
            fsync: true,
            expiration: None,
            shards: 1,
            max_object_bytes: 64 << 20,
            max_object_age: Duration::from_secs(60),
            max_buffered_bytes: 512 << 20,
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            sse: ServerSideEncryption::default(),
        }
    }
}

impl std::fmt::Debug for JournalConfigBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalConfigBuilder")
            .field("bucket", &self.bucket)
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

impl JournalConfigBuilder {
    /// AWS settings for the S3 client (or give [`Self::s3_client`]).
    pub fn sdk_config(mut self, config: &aws_config::SdkConfig) -> Self {
        self.sdk_config = Some(config.clone());
        self
    }

    /// The S3 client. Default: one built from the SDK config.
    pub fn s3_client(mut self, client: aws_sdk_s3::Client) -> Self {
        self.s3_client = Some(client);
        self
    }

    /// The bucket. Required.
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }

    /// Key prefix. Default: none.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The key template ("directory format"). Default:
    /// [`DEFAULT_JOURNAL_TEMPLATE`], `{prefix}/{yyyy}/{MM}/{dd}/{id}-{lane}-{object}.journal{ext}`;
    /// must contain `{id}`, `{lane}` and `{object}`.
    pub fn key_template(mut self, template: impl Into<String>) -> Self {
        self.key_template = template.into();
        self
    }

    /// The local directory of the write-ahead log. Required.
    pub fn directory(mut self, directory: impl Into<PathBuf>) -> Self {
        self.directory = Some(directory.into());
        self
    }

    /// This journal's id, in its keys; must be stable across restarts and
    /// unique among journals writing to the same prefix. Default: the
    /// hostname.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Compression ("compressor"). Default: gzip.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Written after each entry. Default: `\n`.
    pub fn delimiter(mut self, delimiter: impl Into<Vec<u8>>) -> Self {
        self.delimiter = delimiter.into();
        self
    }

    /// Encodes each entry (before the delimiter). Default: the entry's bytes.
    pub fn encoder(
        mut self,
        encoder: impl Fn(&[u8], &mut Vec<u8>) + Send + Sync + 'static,
    ) -> Self {
        self.encoder = Some(Arc::new(encoder));
        self
    }

    /// A batch is written at most this long after its first entry.
    /// Default: 100 ms.
    pub fn max_batch_latency(mut self, latency: Duration) -> Self {
        self.max_batch_latency = latency;
        self
    }

    /// Most entries per batch. Default: 10,000.
    pub fn max_batch_size(mut self, entries: usize) -> Self {
        self.max_batch_size = entries;
        self
    }

    /// fsync each batch. Default: true. Off is unsafe: a machine crash can
    /// lose entries `put_durable` reported written.
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// Abort other ids' multipart uploads under the prefix older than this
    /// (at open and hourly). Default: off.
    pub fn expiration(mut self, age: Duration) -> Self {
        self.expiration = Some(age);
        self
    }

    /// Parallel lanes (each its own log, objects and uploads); entries are
    /// spread round-robin. Default: 1.
    pub fn shards(mut self, lanes: usize) -> Self {
        self.shards = lanes;
        self
    }

    /// An object is complete at this compressed size. Default: 64 MiB.
    pub fn max_object_bytes(mut self, bytes: u64) -> Self {
        self.max_object_bytes = bytes;
        self
    }

    /// An object is complete at this age. Default: 60 s.
    pub fn max_object_age(mut self, age: Duration) -> Self {
        self.max_object_age = age;
        self
    }

    /// Most compressed bytes on disk awaiting upload; `put` waits beyond it.
    /// Default: 512 MiB.
    pub fn max_buffered_bytes(mut self, bytes: u64) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Objects at least this large are uploaded in parts; at most 5 GiB
    /// (S3's largest PutObject) unless objects stay below that. Default:
    /// 16 MiB.
    pub fn multipart_threshold(mut self, bytes: u64) -> Self {
        self.multipart_threshold = bytes;
        self
    }

    /// Multipart part size: 5 MiB to 5 GiB, and large enough that an object
    /// (`max_object_bytes` plus one batch, up to 1 GiB) fits in S3's 10,000
    /// parts; `build` refuses other sizes. Default: 8 MiB.
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes;
        self
    }

    /// Server-side encryption. Default: the bucket's.
    pub fn server_side_encryption(mut self, sse: ServerSideEncryption) -> Self {
        self.sse = sse;
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<JournalConfig, JournalError> {
        let missing = |name: &'static str| JournalError::Config {
            name,
            message: "required".into(),
        };
        let bucket = self.bucket.ok_or_else(|| missing("bucket"))?;
        let directory = self.directory.ok_or_else(|| missing("directory"))?;
        let client = match (self.s3_client, &self.sdk_config) {
            (Some(client), _) => client,
            (None, Some(config)) => {
                aws_sdk_s3::Client::new(&kcl::timeouts::ApiTimeouts::S3.apply(config))
            }
            (None, None) => return Err(missing("sdk_config or s3_client")),
        };
        let template = KeyTemplate::new(&self.prefix, &self.key_template)?;
        for field in ["id", "lane", "object"] {
            template.require(field)?;
        }
        if self.shards == 0 || self.max_batch_size == 0 || self.max_object_age.is_zero() {
            return Err(JournalError::Config {
                name: "shards / max_batch_size / max_object_age",
                message: "must be positive".into(),
            });
        }
        crate::emit::check_upload_settings(
            self.max_object_bytes,
            self.multipart_threshold,
            self.part_size as u64,
            &self.sse,
        )?;
        let emitter = S3Emitter::builder(client, bucket)
            .multipart_threshold(self.multipart_threshold)
            .part_size(self.part_size)
            .server_side_encryption(self.sse)
            .compression(self.compression)
            .build();
        Ok(JournalConfig {
            emitter,
            template,
            directory,
            id: self.id.unwrap_or_else(crate::connector::default_worker_id),
            compression: self.compression,
            delimiter: self.delimiter,
            encoder: self.encoder,
            max_batch_latency: self.max_batch_latency,
            max_batch_size: self.max_batch_size,
            fsync: self.fsync,
            expiration: self.expiration,
            shards: self.shards,
            max_object_bytes: self.max_object_bytes,
            max_object_age: self.max_object_age,
            max_buffered_bytes: self.max_buffered_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::UploadSettingsError;

    fn builder() -> JournalConfigBuilder {
        let client = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version_latest()
                .region(aws_sdk_s3::config::Region::new("us-east-1"))
                .build(),
        );
        JournalConfig::builder()
            .s3_client(client)
            .bucket("b")
            .directory("/nonexistent/journal")
    }

    #[test]
    fn upload_settings_s3_would_refuse_are_refused_at_build() {
        assert!(builder().build().is_ok());
        let refused = |b: JournalConfigBuilder| match b.build() {
            Err(JournalError::UploadSettings(error)) => error,
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            refused(builder().part_size(1 << 20)),
            UploadSettingsError::PartTooSmall { .. }
        ));
        assert!(matches!(
            refused(builder().part_size(6 << 30)),
            UploadSettingsError::PartTooLarge { .. }
        ));
        assert!(matches!(
            refused(builder().max_object_bytes(100 << 30)),
            UploadSettingsError::TooManyParts { .. }
        ));
        assert!(matches!(
            refused(
                builder()
                    .max_object_bytes(8 << 30)
                    .multipart_threshold(u64::MAX)
            ),
            UploadSettingsError::PutTooLarge { .. }
        ));
        assert!(matches!(
            refused(builder().server_side_encryption(ServerSideEncryption::Kms {
                key_id: Some(String::new())
            })),
            UploadSettingsError::EmptyKmsKeyId
        ));
    }
}
