//! The journal: durable, batched, compressed S3 journal files without
//! Kinesis — s3-journal's shape on this crate's buffer and emitter.
//!
//! `put` hands an entry to a lane's writer, which batches entries (up to
//! `max_batch_size` entries or `max_batch_latency`), encodes and compresses
//! each batch as one unit (a gzip member, a zstd frame), appends it to the lane's write-ahead log
//! with one fsync (the group commit), and rolls objects by size and age. A
//! lane's uploader then writes each complete object to S3 under a
//! deterministic key (`{id}-{lane}-{object}`), and only then deletes it
//! from disk. A restart uploads what the previous run left, under the same
//! keys, so a crash at any point neither loses an entry that was on disk
//! (`put_durable` returned) nor duplicates one; entries `put` but still
//! queued in memory are lost with the process.
//!
//! An object in S3 is never replaced: uploads are conditional
//! (`If-None-Match: *`) and carry a digest of the object
//! ([`DIGEST_METADATA`](crate::emit::DIGEST_METADATA)). When the key is
//! taken by an object with the same digest, that is this object, uploaded
//! before a crash kept its segment: done. Any other object there belongs to
//! another run with the same id (a replaced host with an empty directory,
//! say): this object takes its lane's next number (persisted) and is
//! uploaded under that key instead.

mod config;
mod lane;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

pub use config::{JournalConfig, JournalConfigBuilder};

use crate::buffer::BufferError;
use crate::key::KeyTemplateError;

/// The largest entry `put` takes.
pub const MAX_ENTRY_BYTES: usize = 256 << 20;
/// A batch is split so that its entries stay under this (a log entry holds
/// at most 1 GiB, compressed; compression can grow incompressible data a
/// little, a user's encoder more).
const MAX_BATCH_BYTES: usize = 256 << 20;

/// Journal errors.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A setting is missing or wrong.
    #[error("journal setting `{name}`: {message}")]
    Config {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The key template is unusable.
    #[error(transparent)]
    KeyTemplate(#[from] KeyTemplateError),
    /// Upload settings S3 would refuse (`part_size`, `multipart_threshold`,
    /// `max_object_bytes`, SSE).
    #[error(transparent)]
    UploadSettings(#[from] crate::emit::UploadSettingsError),
    /// The buffer failed.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// The lane's queue is full (`try_put`): its writer is behind, or
    /// waits for buffer budget that uploads give back.
    #[error("the journal's queue is full")]
    Full,
    /// The journal is closed.
    #[error("the journal is closed")]
    Closed,
    /// An entry larger than the journal takes (256 MiB).
    #[error("an entry of {bytes} bytes exceeds the journal's {max}-byte limit")]
    EntryTooLarge {
        /// The entry's size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// `close_within` ran out of time (S3 unreachable, say). Nothing is
    /// lost: what was not uploaded stays in the journal's directory, and the
    /// next `Journal::open` of it uploads it.
    #[error(
        "the journal did not finish uploading within {timeout:?}; {buffered_bytes} bytes stay on disk for the next open",
        buffered_bytes = stats.buffered_bytes
    )]
    CloseTimedOut {
        /// The time allowed.
        timeout: std::time::Duration,
        /// The counters when it gave up.
        stats: JournalStats,
    },
}

/// Counters of a journal (since it was opened).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub enqueued: AtomicU64,
    pub durable: AtomicU64,
    pub uploaded: AtomicU64,
    pub buffered_bytes: AtomicU64,
    pub objects: AtomicU64,
    pub retries: AtomicU64,
    pub quarantined: AtomicU64,
}

/// A snapshot of a journal's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Entries accepted by `put`.
    pub enqueued: u64,
    /// Entries written to disk (fsynced when `fsync` is on).
    pub durable: u64,
    /// Entries in uploaded objects (including ones recovered at open).
    pub uploaded: u64,
    /// Compressed bytes on disk waiting for upload.
    pub buffered_bytes: u64,
    /// Objects uploaded.
    pub objects: u64,
    /// Failed upload attempts (retried).
    pub retries: u64,
    /// Corrupt buffer entries quarantined at open.
    pub quarantined: u64,
}

pub(crate) struct Put {
    entry: Bytes,
    durable: Option<oneshot::Sender<Result<(), JournalError>>>,
}

/// A journal of entries archived to S3.
///
/// ```no_run
/// # async fn demo(sdk_config: aws_config::SdkConfig) -> Result<(), connector_s3::journal::JournalError> {
/// use connector_s3::journal::{Journal, JournalConfig};
/// let config = JournalConfig::builder()
///     .sdk_config(&sdk_config)
///     .bucket("my-journal")
///     .directory("/var/lib/my-journal")
///     .build()?;
/// let journal = Journal::open(config).await?;
/// journal.put("one line").await?;            // queued
/// journal.put_durable("another").await?;     // on disk when this returns
/// println!("{:?}", journal.stats());
/// journal.close().await?;                    // everything uploaded
/// # Ok(()) }
/// ```
pub struct Journal {
    lanes: Vec<mpsc::Sender<Put>>,
    next_lane: AtomicU64,
    counters: Arc<Counters>,
    /// The lanes' writer and uploader tasks.
    tasks: lane::Tasks,
    /// Tells the writers the journal is closing.
    closing: watch::Sender<bool>,
    /// The expiration timer, if any (aborted when the journal goes).
    expiry: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Journal {
    fn drop(&mut self) {
        if let Some(expiry) = &self.expiry {
            expiry.abort();
        }
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("lanes", &self.lanes.len())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Journal {
    /// Opens the journal: recovers each lane's buffer (uploading what an
    /// earlier run left), aborts multipart uploads of this id left open,
    /// and starts the lanes. A directory written with more lanes than
    /// `shards` is drained: what the extra lanes hold is uploaded under
    /// their own keys (and `close` waits for it), and no new entry goes to
    /// them.
    pub async fn open(config: JournalConfig) -> Result<Self, JournalError> {
        let config = Arc::new(config);
        let counters = Arc::new(Counters::default());
        lane::clean_up_uploads(&config).await;
        let mut tasks = lane::Tasks::default();
        let (closing, closing_rx) = watch::channel(false);
        let mut lanes = Vec::with_capacity(config.shards);
        for lane in 0..config.shards {
            lanes
                .push(lane::start(&config, lane as u32, &counters, &closing_rx, &mut tasks).await?);
        }
        for lane in lane::extra_lanes(&config).await? {
            lane::drain(&config, lane, &counters, &mut tasks).await?;
        }
        let expiry = config.expiration.map(|expiration| {
            let config = config.clone();
            // Hourly, as s3-journal; ends with the journal.
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
                // The first tick is immediate, and `clean_up_uploads` just ran.
                tick.tick().await;
                loop {
                    tick.tick().await;
                    lane::expire_uploads(&config, expiration).await;
                }
            })
        });
        Ok(Self {
            lanes,
            next_lane: AtomicU64::new(0),
            counters,
            tasks,
            closing,
            expiry,
        })
    }

    /// Refuses an entry that could not be written as part of a batch.
    fn check_size(entry: &Bytes) -> Result<(), JournalError> {
        if entry.len() > MAX_ENTRY_BYTES {
            return Err(JournalError::EntryTooLarge {
                bytes: entry.len(),
                max: MAX_ENTRY_BYTES,
            });
        }
        Ok(())
    }

    fn lane(&self) -> &mpsc::Sender<Put> {
        let n = self.next_lane.fetch_add(1, Relaxed) as usize;
        &self.lanes[n % self.lanes.len()]
    }

    /// Queues an entry; waits while the journal's buffer is full.
    pub async fn put(&self, entry: impl Into<Bytes>) -> Result<(), JournalError> {
        let entry = entry.into();
        Self::check_size(&entry)?;
        self.lane()
            .send(Put {
                entry,
                durable: None,
            })
            .await
            .map_err(|_| JournalError::Closed)?;
        self.counters.enqueued.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Queues an entry if there is room now (s3-journal's `put!` returning
    /// false): `Err(Full)` otherwise.
    pub fn try_put(&self, entry: impl Into<Bytes>) -> Result<(), JournalError> {
        let entry = entry.into();
        Self::check_size(&entry)?;
        self.lane()
            .try_send(Put {
                entry,
                durable: None,
            })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => JournalError::Full,
                mpsc::error::TrySendError::Closed(_) => JournalError::Closed,
            })?;
        self.counters.enqueued.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Queues an entry and resolves once it is on disk (fsynced when
    /// `fsync` is on): from then on a crash does not lose it.
    pub async fn put_durable(&self, entry: impl Into<Bytes>) -> Result<(), JournalError> {
        let entry = entry.into();
        Self::check_size(&entry)?;
        let (done, durable) = oneshot::channel();
        self.lane()
            .send(Put {
                entry,
                durable: Some(done),
            })
            .await
            .map_err(|_| JournalError::Closed)?;
        self.counters.enqueued.fetch_add(1, Relaxed);
        durable.await.map_err(|_| JournalError::Closed)?
    }

    /// The counters.
    pub fn stats(&self) -> JournalStats {
        let c = &self.counters;
        JournalStats {
            enqueued: c.enqueued.load(Relaxed),
            durable: c.durable.load(Relaxed),
            uploaded: c.uploaded.load(Relaxed),
            buffered_bytes: c.buffered_bytes.load(Relaxed),
            objects: c.objects.load(Relaxed),
            retries: c.retries.load(Relaxed),
            quarantined: c.quarantined.load(Relaxed),
        }
    }

    /// Writes out every queued entry, uploads every object, and stops. While
    /// S3 stays unreachable this retries, and does not return: see
    /// [`close_within`](Self::close_within) for a bounded stop.
    pub async fn close(mut self) -> Result<JournalStats, JournalError> {
        self.finish().await
    }

    /// As [`close`](Self::close), but gives up after `timeout` with
    /// [`JournalError::CloseTimedOut`]: every entry is then on disk, and
    /// what was not uploaded is uploaded by the next `Journal::open` of the
    /// same directory (under the same keys, so nothing twice). For a
    /// service that must stop in bounded time, as under a supervisor's
    /// shutdown grace period. The bound covers the uploads; writing the
    /// queued entries to disk is always finished first, so a disk that
    /// stalls (or fails and is retried) can still hold it up.
    ///
    /// ```no_run
    /// # async fn demo(journal: connector_s3::journal::Journal) {
    /// use std::time::Duration;
    /// match journal.close_within(Duration::from_secs(20)).await {
    ///     Ok(stats) => println!("{} entries uploaded", stats.uploaded),
    ///     Err(error) => eprintln!("{error}"), // the rest goes up at the next open
    /// }
    /// # }
    /// ```
    pub async fn close_within(
        mut self,
        timeout: std::time::Duration,
    ) -> Result<JournalStats, JournalError> {
        if let Ok(result) = tokio::time::timeout(timeout, self.finish()).await {
            return result;
        }
        // Stop the uploads where they are; the writers finish writing the
        // queues to disk (they no longer wait for uploads), so every
        // accepted entry is there for the next open.
        self.tasks.uploaders.abort_all();
        while self.tasks.uploaders.join_next().await.is_some() {}
        while self.tasks.writers.join_next().await.is_some() {}
        Err(JournalError::CloseTimedOut {
            timeout,
            stats: self.stats(),
        })
    }

    /// Closes the queues and waits for the lanes (cancel-safe: an aborted
    /// wait leaves the lanes to `close_within`).
    async fn finish(&mut self) -> Result<JournalStats, JournalError> {
        self.lanes.clear();
        let _ = self.closing.send(true);
        let mut first_error = None;
        // The writers end once their queues are on disk, the uploaders once
        // their objects are uploaded.
        loop {
            let ended = match self.tasks.writers.join_next().await {
                Some(ended) => ended,
                None => match self.tasks.uploaders.join_next().await {
                    Some(ended) => ended,
                    None => break,
                },
            };
            let error = match ended {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error,
                Err(join) => JournalError::Buffer(BufferError::Io {
                    path: "<journal task>".into(),
                    source: std::io::Error::other(join.to_string()),
                }),
            };
            first_error.get_or_insert(error);
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(self.stats()),
        }
    }
}
