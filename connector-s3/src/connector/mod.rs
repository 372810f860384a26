//! The Kinesis → S3 connector: a `kcl` application whose record processor
//! runs the pipeline transformer → filter → buffer → emitter per shard.

mod batch;
mod processor;
mod stats;
mod traced;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kcl::retrieval::StartingPosition;
use kcl::scheduler::{ConsumerConfig, ConsumerError, Scheduler, ShutdownHandle};
use tokio::sync::Semaphore;

pub use processor::ShardArchiver;
pub use stats::{ConnectorStats, StatsSnapshot};
use traced::Traced;

use crate::buffer::{Buffer, BufferError};
use crate::compress::Compression;
use crate::emit::{Emitter, S3Emitter, ServerSideEncryption};
use crate::filter::{Filter, KeepAll};
use crate::key::{DEFAULT_TEMPLATE, KeyTemplate, KeyTemplateError};
use crate::transform::{JsonLines, Transformer};

/// When an object is complete.
#[derive(Debug, Clone)]
pub(crate) struct ObjectLimits {
    pub max_object_bytes: u64,
    pub max_object_records: u64,
    pub max_object_age: Duration,
}

/// What every shard's processor shares.
pub(crate) struct Shared {
    pub emitter: Arc<dyn Emitter>,
    /// For cleaning up multipart uploads (when the emitter is S3).
    pub s3: Option<S3Emitter>,
    /// Set once S3 answered that it cannot list multipart uploads: every
    /// shard start would otherwise ask again.
    pub no_upload_listing: std::sync::atomic::AtomicBool,
    pub template: KeyTemplate,
    pub transformer: Arc<dyn Transformer>,
    pub filter: Arc<dyn Filter>,
    pub compression: Compression,
    pub limits: ObjectLimits,
    pub buffer_dir: PathBuf,
    pub fsync: bool,
    /// Opens a shard's buffer instead of the disk buffer, when set.
    pub open_buffer: Option<OpenBuffer>,
    pub worker_id: String,
    /// Buffer budget in KiB permits, shared by all shards.
    pub budget: Arc<Semaphore>,
    pub budget_kib: u32,
    pub stats: Arc<ConnectorStats>,
}

/// Connector configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorConfigError {
    /// A setting is missing.
    #[error("connector setting `{0}` is required")]
    Missing(&'static str),
    /// The key template is unusable.
    #[error(transparent)]
    KeyTemplate(#[from] KeyTemplateError),
    /// The buffer directory cannot be created.
    #[error("buffer directory {path}: {source}")]
    BufferDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Upload settings S3 would refuse (`part_size`, `multipart_threshold`,
    /// `max_object_bytes`, SSE).
    #[error(transparent)]
    UploadSettings(#[from] crate::emit::UploadSettingsError),
    /// A limit is out of range.
    #[error("connector setting `{name}`: {message}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Errors that stop a running connector.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The consumer (lease table, stream) failed.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
}

/// Builds an [`S3Connector`]. Defaults are documented on each setter.
pub struct S3ConnectorBuilder {
    sdk_config: Option<aws_config::SdkConfig>,
    application_name: Option<String>,
    streams: Vec<String>,
    worker_id: Option<String>,
    bucket: Option<String>,
    prefix: String,
    key_template: String,
    compression: Compression,
    transformer: Arc<dyn Transformer>,
    filter: Arc<dyn Filter>,
    emitter: Option<Arc<dyn Emitter>>,
    s3_client: Option<aws_sdk_s3::Client>,
    buffer_dir: PathBuf,
    fsync: bool,
    open_buffer: Option<OpenBuffer>,
    max_object_bytes: u64,
    max_object_records: u64,
    max_object_age: Duration,
    max_buffered_bytes: u64,
    multipart_threshold: u64,
    part_size: usize,
    sse: ServerSideEncryption,
    initial_position: StartingPosition,
    configure_consumer: Option<ConfigureConsumer>,
}

impl std::fmt::Debug for S3ConnectorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3ConnectorBuilder")
            .field("application_name", &self.application_name)
            .field("streams", &self.streams)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("key_template", &self.key_template)
            .finish_non_exhaustive()
    }
}

impl Default for S3ConnectorBuilder {
    fn default() -> Self {
        Self {
            sdk_config: None,
            application_name: None,
            streams: Vec::new(),
            worker_id: None,
            bucket: None,
            prefix: String::new(),
            key_template: DEFAULT_TEMPLATE.to_owned(),
            compression: Compression::default(),
            transformer: Arc::new(JsonLines),
            filter: Arc::new(KeepAll),
            emitter: None,
            s3_client: None,
            buffer_dir: PathBuf::from("connector-s3-buffer"),
            fsync: true,
            open_buffer: None,
            max_object_bytes: 64 << 20,
            max_object_records: 1_000_000,
            max_object_age: Duration::from_secs(60),
            max_buffered_bytes: 512 << 20,
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            sse: ServerSideEncryption::default(),
            initial_position: StartingPosition::TrimHorizon,
            configure_consumer: None,
        }
    }
}

/// The hostname, or `"worker"` when it cannot be read.
pub fn default_worker_id() -> String {
    gethostname::gethostname()
        .into_string()
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned())
}

impl S3ConnectorBuilder {
    /// AWS settings (region, credentials, endpoints). Required. Clients
    /// built from it get [`kcl::timeouts::ApiTimeouts::S3`] (and the
    /// consumer's DynamoDB and Kinesis timeouts) where it sets none.
    pub fn sdk_config(mut self, config: &aws_config::SdkConfig) -> Self {
        self.sdk_config = Some(config.clone());
        self
    }

    /// The KCL application name: the lease table's name. Required.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// A stream to archive (call again for more; several streams use the
    /// KCL's multi-stream lease keys). At least one is required.
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.streams.push(stream.into());
        self
    }

    /// This worker's id, unique among the application's workers. Default:
    /// the hostname.
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// The bucket. Required.
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }

    /// The key prefix every object is under. Default: none.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The object key template. Default: [`DEFAULT_TEMPLATE`]
    /// (`{prefix}/{yyyy}/{MM}/{dd}/{HH}/{stream}-{shard}-{first_seq}.jsonl{ext}`).
    /// Must contain `{shard}` and `{first_seq}` (and `{stream}` with several
    /// streams).
    pub fn key_template(mut self, template: impl Into<String>) -> Self {
        self.key_template = template.into();
        self
    }

    /// Compression. Default: gzip (level 6).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// The transformer. Default: [`JsonLines`].
    pub fn transformer(mut self, transformer: impl Transformer) -> Self {
        self.transformer = Arc::new(transformer);
        self
    }

    /// The filter. Default: [`KeepAll`].
    pub fn filter(mut self, filter: impl Filter) -> Self {
        self.filter = Arc::new(filter);
        self
    }

    /// An emitter in place of S3 (for another destination). Default: S3.
    pub fn emitter(mut self, emitter: impl Emitter) -> Self {
        self.emitter = Some(Arc::new(emitter));
        self
    }

    /// The S3 client (for path-style addressing, say), used with its own
    /// timeouts. Default: one built from the SDK config, with
    /// [`kcl::timeouts::ApiTimeouts::S3`] (connect 5 s, attempt 120 s,
    /// operation 10 min) where the SDK config sets none.
    pub fn s3_client(mut self, client: aws_sdk_s3::Client) -> Self {
        self.s3_client = Some(client);
        self
    }

    /// Where shards' buffers live (one subdirectory per lease). Default:
    /// `connector-s3-buffer` in the working directory.
    pub fn buffer_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.buffer_dir = dir.into();
        self
    }

    /// fsync each batch. Default: true. Turning it off is unsafe for the
    /// journal; for the connector it only costs a re-read after a crash.
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// Buffers each shard's objects in a buffer of the caller's, opened
    /// with the shard's directory under `buffer_dir`, instead of the disk
    /// buffer (the default). The connector clears it at the shard's start:
    /// it re-reads from the checkpoint whatever a previous run buffered, so
    /// a buffer need not survive the process; it bounds memory by
    /// `max_buffered_bytes` all the same.
    ///
    /// ```no_run
    /// # fn demo(sdk_config: aws_config::SdkConfig) -> Result<(), Box<dyn std::error::Error>> {
    /// use connector_s3::buffer::{Buffer, MemoryBuffer};
    /// use connector_s3::connector::S3Connector;
    /// let connector = S3Connector::builder()
    ///     .sdk_config(&sdk_config)
    ///     .application_name("orders-archiver")
    ///     .stream("orders")
    ///     .bucket("my-archive")
    ///     // No disk: objects wait in memory.
    ///     .buffer(|_dir| Ok(Box::new(MemoryBuffer::default()) as Box<dyn Buffer>))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn buffer(
        mut self,
        open: impl Fn(&std::path::Path) -> Result<Box<dyn Buffer>, BufferError> + Send + Sync + 'static,
    ) -> Self {
        self.open_buffer = Some(Arc::new(open));
        self
    }

    /// An object is uploaded once its compressed size reaches this.
    /// Default: 64 MiB.
    pub fn max_object_bytes(mut self, bytes: u64) -> Self {
        self.max_object_bytes = bytes;
        self
    }

    /// An object is uploaded once it covers this many records. Default:
    /// 1,000,000.
    pub fn max_object_records(mut self, records: u64) -> Self {
        self.max_object_records = records;
        self
    }

    /// An object is uploaded once it is this old. Default: 60 s.
    pub fn max_object_age(mut self, age: Duration) -> Self {
        self.max_object_age = age;
        self
    }

    /// Most bytes buffered over all shards; when reached, shards upload
    /// early and reading waits. Default: 512 MiB.
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
    /// (`max_object_bytes` plus one batch) fits in S3's 10,000 parts; `build`
    /// refuses other sizes. Default: 8 MiB.
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes;
        self
    }

    /// Server-side encryption. Default: the bucket's.
    pub fn server_side_encryption(mut self, sse: ServerSideEncryption) -> Self {
        self.sse = sse;
        self
    }

    /// Where shards without a checkpoint start. Default: TRIM_HORIZON (an
    /// archive wants everything still in the stream).
    pub fn initial_position(mut self, position: StartingPosition) -> Self {
        self.initial_position = position;
        self
    }

    /// Adjusts the consumer settings (failover time, read sizes, fan-out…).
    pub fn consumer(
        mut self,
        configure: impl FnOnce(&mut ConsumerConfig) + Send + 'static,
    ) -> Self {
        self.configure_consumer = Some(Box::new(configure));
        self
    }

    /// Checks the settings and builds the connector.
    pub fn build(self) -> Result<S3Connector, ConnectorConfigError> {
        let sdk_config = self
            .sdk_config
            .ok_or(ConnectorConfigError::Missing("sdk_config"))?;
        let application_name = self
            .application_name
            .ok_or(ConnectorConfigError::Missing("application_name"))?;
        if self.streams.is_empty() {
            return Err(ConnectorConfigError::Missing("stream"));
        }
        let template = KeyTemplate::new(&self.prefix, &self.key_template)?;
        template.require("shard")?;
        template.require("first_seq")?;
        // A key must not depend on the worker that writes it: the next owner
        // of a shard redoes a prepared object under the same key.
        for field in ["id", "lane", "object"] {
            template.forbid(field)?;
        }
        if self.streams.len() > 1 {
            template.require("stream")?;
        }
        if self.max_object_bytes == 0
            || self.max_object_records == 0
            || self.max_object_age.is_zero()
        {
            return Err(ConnectorConfigError::Invalid {
                name: "max_object_bytes / max_object_records / max_object_age",
                message: "must be positive".into(),
            });
        }
        if self.emitter.is_none() {
            // Settings S3 would refuse for some object, every time.
            crate::emit::check_upload_settings(
                self.max_object_bytes,
                self.multipart_threshold,
                self.part_size as u64,
                &self.sse,
            )?;
        }
        let budget_kib =
            (self.max_buffered_bytes / 1024).clamp(1024, u64::from(u32::MAX >> 3)) as u32;
        std::fs::create_dir_all(&self.buffer_dir).map_err(|source| {
            ConnectorConfigError::BufferDir {
                path: self.buffer_dir.clone(),
                source,
            }
        })?;
        let worker_id = self.worker_id.unwrap_or_else(default_worker_id);
        let (emitter, s3): (Arc<dyn Emitter>, Option<S3Emitter>) = match self.emitter {
            Some(emitter) => (emitter, None),
            None => {
                let bucket = self.bucket.ok_or(ConnectorConfigError::Missing("bucket"))?;
                let client = self.s3_client.unwrap_or_else(|| {
                    aws_sdk_s3::Client::new(&kcl::timeouts::ApiTimeouts::S3.apply(&sdk_config))
                });
                let s3 = S3Emitter::builder(client, bucket)
                    .multipart_threshold(self.multipart_threshold)
                    .part_size(self.part_size)
                    .server_side_encryption(self.sse)
                    .compression(self.compression)
                    .build();
                (Arc::new(s3.clone()), Some(s3))
            }
        };
        let stats = Arc::new(ConnectorStats::new(
            (self.streams.len() == 1).then(|| self.streams[0].clone()),
        ));
        let shared = Arc::new(Shared {
            emitter,
            s3,
            no_upload_listing: Default::default(),
            template,
            transformer: self.transformer,
            filter: self.filter,
            compression: self.compression,
            limits: ObjectLimits {
                max_object_bytes: self.max_object_bytes,
                max_object_records: self.max_object_records,
                max_object_age: self.max_object_age,
            },
            buffer_dir: self.buffer_dir,
            fsync: self.fsync,
            open_buffer: self.open_buffer,
            worker_id: worker_id.clone(),
            budget: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
            stats: stats.clone(),
        });
        let mut consumer = if self.streams.len() == 1 {
            ConsumerConfig::new(&application_name, self.streams[0].clone(), &worker_id)
        } else {
            ConsumerConfig::multi_stream(&application_name, self.streams.clone(), &worker_id)
        };
        consumer.initial_position = self.initial_position;
        if let Some(configure) = self.configure_consumer {
            configure(&mut consumer);
        }
        // Age-based uploads need a call on idle shards too.
        consumer.process_empty_batches = true;
        if consumer.idle_time_between_reads > self.max_object_age {
            consumer.idle_time_between_reads = self.max_object_age;
        }
        let factory: ArchiverFactory = Box::new(move |lease_key: &str| {
            Traced::new(
                ShardArchiver::new(shared.clone(), lease_key),
                shared.stats.clone(),
                lease_key,
            )
        });
        let scheduler = Scheduler::new(&sdk_config, consumer, factory);
        Ok(S3Connector { scheduler, stats })
    }
}

/// Opens a shard's buffer, given the shard's directory.
pub(crate) type OpenBuffer =
    Arc<dyn Fn(&std::path::Path) -> Result<Box<dyn Buffer>, BufferError> + Send + Sync>;

/// A caller's adjustment of the consumer settings.
type ConfigureConsumer = Box<dyn FnOnce(&mut ConsumerConfig) + Send>;

type ArchiverFactory = Box<dyn Fn(&str) -> Traced<ShardArchiver> + Send + Sync>;

/// Archives Kinesis streams to S3, exactly once.
///
/// ```no_run
/// # async fn demo(sdk_config: aws_config::SdkConfig) -> Result<(), Box<dyn std::error::Error>> {
/// use connector_s3::connector::S3Connector;
/// let connector = S3Connector::builder()
///     .sdk_config(&sdk_config)
///     .application_name("orders-archiver")
///     .stream("orders")
///     .bucket("my-archive")
///     .prefix("orders")
///     .build()?;
/// let shutdown = connector.shutdown_handle();
/// tokio::spawn(async move {
///     let _ = tokio::signal::ctrl_c().await;
///     shutdown.graceful().await; // uploads everything and checkpoints
/// });
/// connector.run().await?;
/// # Ok(()) }
/// ```
pub struct S3Connector {
    scheduler: Scheduler<ArchiverFactory>,
    stats: Arc<ConnectorStats>,
}

impl std::fmt::Debug for S3Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Connector").finish_non_exhaustive()
    }
}

impl S3Connector {
    /// A builder with the defaults.
    pub fn builder() -> S3ConnectorBuilder {
        S3ConnectorBuilder::default()
    }

    /// A handle that shuts the connector down gracefully: every shard's
    /// buffered records are uploaded and checkpointed, and leases released.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.scheduler.shutdown_handle()
    }

    /// The connector's live counters.
    pub fn stats(&self) -> Arc<ConnectorStats> {
        self.stats.clone()
    }

    /// Runs until shut down through [`S3Connector::shutdown_handle`].
    pub async fn run(self) -> Result<(), ConnectorError> {
        Ok(self.scheduler.run().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::UploadSettingsError;

    fn builder() -> S3ConnectorBuilder {
        let sdk_config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        S3Connector::builder()
            .sdk_config(&sdk_config)
            .application_name("app")
            .stream("orders")
            .bucket("b")
    }

    /// Refused before anything is created (the buffer directory).
    #[test]
    fn upload_settings_s3_would_refuse_are_refused_at_build() {
        let refused = |b: S3ConnectorBuilder| match b.build() {
            Err(ConnectorConfigError::UploadSettings(error)) => error,
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("accepted"),
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
