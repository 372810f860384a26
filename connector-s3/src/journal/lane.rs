//! One lane of a journal: a writer task (batch → compress → log → seal) and
//! an uploader task (object → S3 → delete), joined by a channel.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::{Counters, JournalConfig, JournalError, Put};
use crate::buffer::{Buffer, DiskBuffer, EntryMeta, ObjectNumbers, SealedObject};
use crate::emit::{Emitted, Emitter as _};
use crate::key::KeyFields;
use crate::retry::with_backoff;
use crate::transform::epoch_millis;

/// A sealed object and the buffer budget (KiB) it holds.
type Sealed = (SealedObject, u32);

pub(super) async fn start(
    config: &Arc<JournalConfig>,
    lane: u32,
    counters: &Arc<Counters>,
    closing: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> Result<mpsc::Sender<Put>, JournalError> {
    let (buffer, recovery) = open_lane(config, lane).await?;
    let numbers = buffer.numbers();
    counters
        .quarantined
        .fetch_add(recovery.quarantined, Relaxed);
    let budget_kib = (config.max_buffered_bytes / 1024 / config.shards as u64)
        .clamp(1024, u64::from(u32::MAX >> 4));
    let budget = Arc::new(Semaphore::new(budget_kib as usize));
    let (upload_tx, upload_rx) = mpsc::unbounded_channel();
    for object in recovery.objects {
        // What the last run left goes first, under the keys it would have had.
        counters
            .buffered_bytes
            .fetch_add(object.summary.bytes, Relaxed);
        let _ = upload_tx.send((object, 0));
    }
    let (tx, rx) = mpsc::channel(config.max_batch_size.clamp(1, 65_536) * 2);
    let writer = Writer {
        config: config.clone(),
        buffer: Some(buffer),
        budget: budget.clone(),
        budget_kib: budget_kib as u32,
        object_permits: 0,
        counters: counters.clone(),
        uploads: upload_tx,
        closing: closing.clone(),
    };
    tasks.writers.spawn(writer.run(rx));
    tasks.uploaders.spawn(upload(
        config.clone(),
        lane,
        numbers,
        upload_rx,
        budget,
        counters.clone(),
    ));
    Ok(tx)
}

/// The directory of a lane.
fn lane_dir(config: &JournalConfig, lane: u32) -> std::path::PathBuf {
    config.directory.join(format!("lane-{lane}"))
}

async fn open_lane(
    config: &JournalConfig,
    lane: u32,
) -> Result<(DiskBuffer, crate::buffer::Recovery), JournalError> {
    let dir = lane_dir(config, lane);
    let fsync = config.fsync;
    tokio::task::spawn_blocking(move || DiskBuffer::open(dir, fsync))
        .await
        .map_err(|join| JournalError::Config {
            name: "directory",
            message: join.to_string(),
        })?
        .map_err(JournalError::from)
}

/// The lanes beyond `config.shards` that have a directory: an earlier run
/// had more lanes.
pub(super) async fn extra_lanes(config: &JournalConfig) -> Result<Vec<u32>, JournalError> {
    let directory = config.directory.clone();
    let shards = config.shards;
    let listed = tokio::task::spawn_blocking(move || {
        let entries = match std::fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(crate::buffer::BufferError::io(&directory)(error)),
        };
        let mut lanes = Vec::new();
        for entry in entries {
            let entry = entry.map_err(crate::buffer::BufferError::io(&directory))?;
            let lane = entry
                .file_name()
                .to_str()
                .and_then(|name| name.strip_prefix("lane-"))
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(lane) = lane.filter(|&lane| lane as usize >= shards)
                && entry.path().is_dir()
            {
                lanes.push(lane);
            }
        }
        lanes.sort_unstable();
        Ok(lanes)
    })
    .await
    .map_err(|join| JournalError::Config {
        name: "directory",
        message: join.to_string(),
    })??;
    Ok(listed)
}

/// Uploads what a lane beyond the configured count left (an earlier run had
/// more lanes), under that lane's keys and numbers; nothing new is written
/// to it. Its directory stays, with its object counter, for a later run
/// with that many lanes again.
pub(super) async fn drain(
    config: &Arc<JournalConfig>,
    lane: u32,
    counters: &Arc<Counters>,
    tasks: &mut Tasks,
) -> Result<(), JournalError> {
    let (buffer, recovery) = open_lane(config, lane).await?;
    counters
        .quarantined
        .fetch_add(recovery.quarantined, Relaxed);
    if recovery.objects.is_empty() {
        return Ok(());
    }
    tracing::info!(
        lane,
        lanes = config.shards,
        objects = recovery.objects.len(),
        "uploading what an earlier run with more lanes left in this lane"
    );
    let (upload_tx, upload_rx) = mpsc::unbounded_channel();
    for object in recovery.objects {
        counters
            .buffered_bytes
            .fetch_add(object.summary.bytes, Relaxed);
        let _ = upload_tx.send((object, 0));
    }
    // No writer: the uploader ends once these are uploaded.
    drop(upload_tx);
    tasks.uploaders.spawn(upload(
        config.clone(),
        lane,
        buffer.numbers(),
        upload_rx,
        Arc::new(Semaphore::new(0)),
        counters.clone(),
    ));
    Ok(())
}

/// A journal's lane tasks. Writers end once their queue is on disk;
/// uploaders once their writer has ended and its objects are uploaded.
#[derive(Default)]
pub(super) struct Tasks {
    pub writers: JoinSet<Result<(), JournalError>>,
    pub uploaders: JoinSet<Result<(), JournalError>>,
}

struct Writer {
    config: Arc<JournalConfig>,
    buffer: Option<DiskBuffer>,
    budget: Arc<Semaphore>,
    budget_kib: u32,
    /// Budget held by the current object.
    object_permits: u32,
    counters: Arc<Counters>,
    uploads: mpsc::UnboundedSender<Sealed>,
    /// Set when the journal closes: from then on the queue is written out
    /// without waiting for budget, which only uploads give back (and S3
    /// may be down); the queue is bounded, so the overshoot is too.
    closing: watch::Receiver<bool>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Put>) -> Result<(), JournalError> {
        let max = self.config.max_batch_size;
        let mut batch: Vec<Put> = Vec::with_capacity(max);
        let mut batch_due: Option<Instant> = None;
        loop {
            let object_due = self
                .buffer
                .as_ref()
                .and_then(|b| b.current())
                .map(|c| c.opened_at + self.config.max_object_age);
            let wake = match (batch_due, object_due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let room = max.saturating_sub(batch.len()).max(1);
            tokio::select! {
                received = rx.recv_many(&mut batch, room) => {
                    if received == 0 {
                        // Closed: write what is left, complete the object, end.
                        self.write(&mut batch).await;
                        self.seal().await;
                        return Ok(());
                    }
                    batch_due.get_or_insert_with(|| Instant::now() + self.config.max_batch_latency);
                }
                _ = sleep => {}
            }
            let now = Instant::now();
            // Someone waits for durability: write now, with whatever else
            // is queued (the group commit); otherwise wait for a full batch
            // or its latency.
            let waited_on = batch.iter().any(|put| put.durable.is_some());
            if batch.len() >= max || waited_on || batch_due.is_some_and(|due| due <= now) {
                self.write(&mut batch).await;
                batch_due = None;
            }
            let full = self
                .buffer
                .as_ref()
                .and_then(|b| b.current())
                .is_some_and(|c| {
                    c.bytes >= self.config.max_object_bytes
                        || c.opened_at + self.config.max_object_age <= now
                });
            if full {
                self.seal().await;
            }
        }
    }

    /// Writes the batch, in parts of at most `MAX_BATCH_BYTES`.
    async fn write(&mut self, batch: &mut Vec<Put>) {
        // A log entry holds at most 1 GiB: split a batch of big entries.
        let mut puts = std::mem::take(batch);
        while !puts.is_empty() {
            let mut bytes = 0;
            let take = puts
                .iter()
                .take_while(|put| {
                    bytes += put.entry.len() + self.config.delimiter.len();
                    bytes <= super::MAX_BATCH_BYTES
                })
                .count()
                .max(1);
            let rest = puts.split_off(take);
            self.write_batch(puts).await;
            puts = rest;
        }
    }

    /// Encodes, compresses and logs a batch (one entry, one fsync), then
    /// tells the waiters it is durable. I/O errors are retried: accepted
    /// entries are never dropped.
    async fn write_batch(&mut self, puts: Vec<Put>) {
        let count = puts.len() as u64;
        let config = self.config.clone();
        let entries: Vec<bytes::Bytes> = puts.iter().map(|p| p.entry.clone()).collect();
        let encoded = tokio::task::spawn_blocking(move || {
            let mut raw = Vec::with_capacity(entries.iter().map(|e| e.len() + 1).sum());
            for entry in &entries {
                match &config.encoder {
                    Some(encode) => encode(entry, &mut raw),
                    None => raw.extend_from_slice(entry),
                }
                raw.extend_from_slice(&config.delimiter);
            }
            let meta = EntryMeta {
                items: entries.len() as u64,
                raw_bytes: raw.len() as u64,
                records: entries.len() as u64,
                first_time_ms: epoch_millis(SystemTime::now()),
                first_position: None,
                last_position: None,
            };
            config.compression.compress(&raw).map(|body| (meta, body))
        })
        .await;
        let (meta, body) = match encoded {
            Ok(Ok(encoded)) => encoded,
            failed => {
                // Compressing bytes in memory does not fail in practice; if
                // it does, retrying cannot help: say so to everyone waiting.
                let message = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => "the compression task panicked".to_owned(),
                };
                tracing::error!(%message, entries = count, "a journal batch could not be compressed; its entries are not written");
                for put in puts {
                    if let Some(done) = put.durable {
                        let _ =
                            done.send(Err(JournalError::Buffer(crate::buffer::BufferError::Io {
                                path: self.config.directory.clone(),
                                source: std::io::Error::other(message.clone()),
                            })));
                    }
                }
                return;
            }
        };
        let kib = (body.len().div_ceil(1024) as u32).clamp(1, self.budget_kib);
        let budget = self.budget.clone();
        let acquired = match budget.clone().try_acquire_many_owned(kib) {
            Ok(permit) => Some(permit),
            Err(_) => {
                // This lane's open object may hold the budget itself: complete
                // it, so that its upload gives the budget back, then wait.
                self.seal().await;
                tokio::select! {
                    permit = budget.clone().acquire_many_owned(kib) => permit.ok(),
                    _ = self.closing.wait_for(|closing| *closing) => budget.try_acquire_many_owned(kib).ok(),
                }
            }
        };
        if let Some(permit) = acquired {
            permit.forget();
            self.object_permits += kib;
        }
        let bytes = body.len() as u64;
        let entry = vec![(meta, body)];
        loop {
            let Some(mut buffer) = self.buffer.take() else {
                return;
            };
            let attempt = entry.clone();
            let Ok((buffer, result)) = tokio::task::spawn_blocking(move || {
                let result = buffer.append(attempt);
                (buffer, result)
            })
            .await
            else {
                return;
            };
            self.buffer = Some(buffer);
            match result {
                Ok(()) => break,
                Err(error) => {
                    tracing::error!(%error, "journal write failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        self.counters.durable.fetch_add(count, Relaxed);
        self.counters.buffered_bytes.fetch_add(bytes, Relaxed);
        for put in puts {
            if let Some(done) = put.durable {
                let _ = done.send(Ok(()));
            }
        }
    }

    async fn seal(&mut self) {
        let Some(mut buffer) = self.buffer.take() else {
            return;
        };
        let Ok((buffer, sealed)) = tokio::task::spawn_blocking(move || {
            let sealed = buffer.seal();
            (buffer, sealed)
        })
        .await
        else {
            return;
        };
        self.buffer = Some(buffer);
        if let Ok(Some(object)) = sealed {
            let permits = std::mem::take(&mut self.object_permits);
            let _ = self.uploads.send((object, permits));
        }
    }
}

fn object_key(config: &JournalConfig, lane: u32, object: &SealedObject) -> String {
    let summary = &object.summary;
    config.template.render(&KeyFields {
        time: chrono::DateTime::from_timestamp_millis(summary.first_time_ms)
            .unwrap_or(chrono::DateTime::UNIX_EPOCH),
        id: &config.id,
        lane,
        object: summary.object,
        ext: config.compression.extension(),
        ..Default::default()
    })
}

/// Uploads each object; never replaces an object in S3. An object already
/// under the key is either this one (uploaded before a crash kept its
/// segment: done) or another's (the same id with another or an emptied
/// directory: this object moves to its lane's next number, persisted, and
/// is uploaded under that key).
async fn upload(
    config: Arc<JournalConfig>,
    lane: u32,
    numbers: ObjectNumbers,
    mut objects: mpsc::UnboundedReceiver<Sealed>,
    budget: Arc<Semaphore>,
    counters: Arc<Counters>,
) -> Result<(), JournalError> {
    while let Some((mut object, permits)) = objects.recv().await {
        loop {
            let key = object_key(&config, lane, &object);
            let emitted = with_backoff(
                || config.emitter.emit(&key, &object),
                || true,
                |error, delay| {
                    counters.retries.fetch_add(1, Relaxed);
                    tracing::warn!(%key, %error, ?delay, "journal upload failed; retrying");
                },
            )
            .await;
            if !matches!(emitted, Ok(Emitted::Occupied)) {
                break;
            }
            let from = object.summary.object;
            object = renumber(&numbers, object).await?;
            // Numbers a replaced directory reuses are usually all taken:
            // skip the ones with an object without uploading this one there.
            while config
                .emitter
                .exists(&object_key(&config, lane, &object))
                .await
                .unwrap_or(false)
            {
                object = renumber(&numbers, object).await?;
            }
            tracing::warn!(
                %key,
                lane,
                from,
                to = object.summary.object,
                "another object is under this object's key (another journal with this id, or this one's directory was replaced); uploading it under the lane's next number"
            );
        }
        let summary = &object.summary;
        let fsync = config.fsync;
        let removed = object.clone();
        match tokio::task::spawn_blocking(move || removed.remove_files(fsync)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot delete an uploaded segment"),
            Err(_) => {}
        }
        counters.uploaded.fetch_add(summary.items, Relaxed);
        counters.objects.fetch_add(1, Relaxed);
        counters.buffered_bytes.fetch_sub(summary.bytes, Relaxed);
        budget.add_permits(permits as usize);
    }
    Ok(())
}

/// Moves a sealed object to its lane's next number; disk errors are retried
/// every second (the object stays where it is meanwhile).
async fn renumber(
    numbers: &ObjectNumbers,
    object: SealedObject,
) -> Result<SealedObject, JournalError> {
    loop {
        let numbers = numbers.clone();
        let mut moved = object.clone();
        let renumbered =
            tokio::task::spawn_blocking(move || numbers.renumber(&mut moved).map(|()| moved))
                .await
                .map_err(|join| {
                    JournalError::Buffer(crate::buffer::BufferError::Io {
                        path: "<journal renumber task>".into(),
                        source: std::io::Error::other(join.to_string()),
                    })
                })?;
        match renumbered {
            Ok(moved) => return Ok(moved),
            Err(error) => {
                tracing::error!(%error, "cannot move a journal object to a new number; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn listing_prefix(config: &JournalConfig) -> String {
    match config.template.prefix() {
        "" => String::new(),
        prefix => format!("{prefix}/"),
    }
}

/// Aborts multipart uploads this journal id left open: their data is still
/// in the log, and will be uploaded again under the same key.
pub(super) async fn clean_up_uploads(config: &JournalConfig) {
    let template = &config.template;
    let result = config
        .emitter
        .abort_uploads(&listing_prefix(config), |upload| {
            template
                .parse_key(&upload.key)
                .is_some_and(|parsed| parsed.id.as_deref() == Some(config.id.as_str()))
        })
        .await;
    if let Err(error) = result {
        tracing::warn!(%error, "cannot clean up open multipart uploads");
    }
    if let Some(expiration) = config.expiration {
        expire_uploads(config, expiration).await;
    }
}

/// Aborts other ids' multipart uploads under the prefix older than
/// `expiration` (never this journal's own: one may be in flight).
pub(super) async fn expire_uploads(config: &JournalConfig, expiration: Duration) {
    let cutoff = SystemTime::now() - expiration;
    let template = &config.template;
    let result = config
        .emitter
        .abort_uploads(&listing_prefix(config), |upload| {
            let ours = template
                .parse_key(&upload.key)
                .is_some_and(|parsed| parsed.id.as_deref() == Some(config.id.as_str()));
            !ours && upload.initiated.is_some_and(|at| at < cutoff)
        })
        .await;
    if let Err(error) = result {
        tracing::warn!(%error, "cannot expire stale multipart uploads");
    }
}
