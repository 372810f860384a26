//! The connector as a KCL record processor: one per shard lease.
//!
//! Exactly-once rests on three rules:
//! 1. An object holds the records right after the shard's checkpoint, up to
//!    a position `last`; its key is rendered from its first record only.
//! 2. Before the upload, `prepare_checkpoint(last, key)` records the plan in
//!    the lease; after it, `checkpoint(last)` makes it done.
//! 3. A new owner that finds a prepared checkpoint looks for the object: if
//!    it exists it is adopted (its records are skipped and the checkpoint
//!    moved to `last`); if not, the first object is cut at exactly `last`
//!    again and written under the prepared key. Writes are conditional
//!    (never over an existing object), so whichever of the redo and a late
//!    upload by the lost previous owner comes second finds the object there,
//!    holding the same records, and adopts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

use kcl::checkpoint::ExtendedSequenceNumber;
use kcl::processor::{
    CheckpointError, Checkpointer, InitializationInput, ProcessRecordsInput, RecordProcessor,
};
use kcl::retrieval::ConsumerRecord;

use super::Shared;
use super::batch;
use crate::buffer::{Buffer, BufferError, DiskBuffer, ObjectSummary, SealedObject};
use crate::emit::{EmitError, Emitted};
use crate::key::KeyFields;
use crate::metrics as m;
use crate::retry::with_backoff;
use crate::transform::{RecordContext, epoch_millis};

/// Attempts of an S3 call that keeps failing permanently (a missing bucket,
/// denied access) before the shard's processor stops and its lease is
/// released: a few, since a policy or a bucket just created can take
/// seconds to be seen.
pub const PERMANENT_ATTEMPTS: u32 = 5;

/// Attempts to open a shard's buffer directory (5 s apart), and failed
/// buffer writes in a row (1 s apart: a full disk may drain), before the
/// processor stops and its lease is released.
pub const BUFFER_ATTEMPTS: u32 = 30;

/// This processor cannot go on (its lease is gone); the shard's next owner
/// re-reads what was not uploaded.
struct Stopped;

type Step = Result<(), Stopped>;

/// Archives one shard.
pub struct ShardArchiver {
    shared: Arc<Shared>,
    lease_key: String,
    stream: String,
    shard: String,
    buffer: Option<Box<dyn Buffer>>,
    /// Buffer budget (KiB permits) held for the current object.
    permits: u32,
    /// Records up to here are in an adopted object: skip them, then
    /// checkpoint here.
    adopted: Option<ExtendedSequenceNumber>,
    /// End the first object exactly here (a prepared checkpoint whose object
    /// is missing).
    /// (with the key it prepared, which the redone object is written under:
    /// the same key, so a late upload by the previous owner finds it there,
    /// or the redo finds the late upload, and nothing is written twice).
    cut_at: Option<(ExtendedSequenceNumber, String)>,
    stopped: bool,
}

fn position((sequence, sub): &(String, u64)) -> ExtendedSequenceNumber {
    ExtendedSequenceNumber::new(sequence.clone(), *sub)
}

impl ShardArchiver {
    pub(crate) fn new(shared: Arc<Shared>, lease_key: &str) -> Self {
        Self {
            shared,
            lease_key: lease_key.to_owned(),
            stream: String::new(),
            shard: String::new(),
            buffer: None,
            permits: 0,
            adopted: None,
            cut_at: None,
            stopped: false,
        }
    }

    fn key(&self, summary: &ObjectSummary) -> String {
        let time = chrono::DateTime::from_timestamp_millis(summary.first_time_ms)
            .unwrap_or(chrono::DateTime::UNIX_EPOCH);
        let first = summary.first_position.as_ref();
        self.shared.template.render(&KeyFields {
            time,
            stream: &self.stream,
            shard: &self.shard,
            first_seq: first.map(|(sequence, sub)| (sequence.as_str(), *sub)),
            id: &self.shared.worker_id,
            ext: self.shared.compression.extension(),
            ..Default::default()
        })
    }

    /// Runs a blocking buffer operation once, off the async workers. A panic
    /// in it loses the buffer: `Err(Stopped)`, the next owner re-reads.
    async fn buffer_once<T: Send + 'static>(
        &mut self,
        op: impl FnOnce(&mut dyn Buffer) -> Result<T, BufferError> + Send + 'static,
    ) -> Result<Result<T, BufferError>, Stopped> {
        let Some(mut buffer) = self.buffer.take() else {
            return Err(Stopped);
        };
        let joined = tokio::task::spawn_blocking(move || {
            let result = op(buffer.as_mut());
            (buffer, result)
        })
        .await;
        let (buffer, result) = joined.map_err(|_| Stopped)?;
        self.buffer = Some(buffer);
        Ok(result)
    }

    /// Runs a blocking buffer operation off the async workers. I/O errors
    /// (a full disk may drain) are retried every second: the shard waits,
    /// which is the backpressure, and nothing accepted is dropped — up to
    /// [`BUFFER_ATTEMPTS`] in a row, after which the processor stops and
    /// its lease is released.
    async fn with_buffer<T: Send + 'static>(
        &mut self,
        what: &'static str,
        op: impl Fn(&mut dyn Buffer) -> Result<T, BufferError> + Send + Clone + 'static,
    ) -> Result<T, Stopped> {
        let mut failures = 0;
        loop {
            match self.buffer_once(op.clone()).await? {
                Ok(value) => return Ok(value),
                Err(error) => {
                    failures += 1;
                    metrics::counter!(m::BUFFER_ERRORS).increment(1);
                    if failures >= BUFFER_ATTEMPTS {
                        self.permanent_failure(
                            &format!("buffer {what} failed {failures} times in a row: {error}"),
                            "free space in `buffer_dir` (or make it writable)",
                        );
                        return Err(Stopped);
                    }
                    tracing::error!(shard = %self.shard, %error, what, failures, "buffer operation failed (reading pauses); retrying in 1 s");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Checkpoints, retrying table errors; a lost lease stops the processor.
    async fn checkpoint(
        &mut self,
        checkpointer: &mut Checkpointer,
        at: ExtendedSequenceNumber,
        prepare_state: Option<Vec<u8>>,
    ) -> Step {
        loop {
            let result = match &prepare_state {
                Some(state) => {
                    checkpointer
                        .prepare_checkpoint(at.clone(), Some(state.clone()))
                        .await
                }
                None => checkpointer.checkpoint_sequence(at.clone()).await,
            };
            match result {
                Ok(()) => return Ok(()),
                Err(CheckpointError::Table(error)) if !checkpointer.is_lease_fenced() => {
                    tracing::warn!(shard = %self.shard, %error, "checkpoint failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                Err(error) => {
                    tracing::error!(
                        shard = %self.shard,
                        %error,
                        at = %at,
                        prepared = prepare_state.is_some(),
                        "checkpoint refused; dropping this shard's buffer and stopping its processor"
                    );
                    return self.stop().await;
                }
            }
        }
    }

    /// Drops what is buffered (the shard's next owner re-reads it).
    async fn stop(&mut self) -> Step {
        self.stopped = true;
        let _ = self.with_buffer("clear", |buffer| buffer.clear()).await;
        self.release_permits();
        Err(Stopped)
    }

    fn release_permits(&mut self) {
        if self.permits > 0 {
            self.shared.budget.add_permits(self.permits as usize);
            self.shared
                .stats
                .buffered_bytes
                .fetch_sub(u64::from(self.permits) * 1024, Relaxed);
            metrics::gauge!(m::BUFFERED_BYTES).decrement(f64::from(self.permits) * 1024.0);
            self.permits = 0;
        }
    }

    /// Transforms, filters, compresses and buffers records.
    async fn append(
        &mut self,
        records: Vec<ConsumerRecord>,
        checkpointer: &mut Checkpointer,
    ) -> Step {
        if records.is_empty() {
            return Ok(());
        }
        let shared = self.shared.clone();
        let (stream, shard) = (self.stream.clone(), self.shard.clone());
        let encoded = tokio::task::spawn_blocking(move || {
            let context = RecordContext {
                stream: &stream,
                shard_id: &shard,
            };
            batch::encode(
                &context,
                &records,
                shared.transformer.as_ref(),
                shared.filter.as_ref(),
                shared.compression,
            )
        })
        .await;
        let encoded = match encoded {
            Ok(Ok(encoded)) => encoded,
            Ok(Err(error)) => {
                tracing::error!(shard = %self.shard, %error, "compression failed; stopping this shard");
                return self.stop().await;
            }
            Err(_) => return self.stop().await,
        };
        let stats = &self.shared.stats;
        stats.records_in.fetch_add(encoded.meta.items, Relaxed);
        stats.records_filtered.fetch_add(encoded.filtered, Relaxed);
        stats
            .transform_failures
            .fetch_add(encoded.failures, Relaxed);
        metrics::counter!(m::RECORDS_IN).increment(encoded.meta.items);
        metrics::counter!(m::RECORDS_FILTERED).increment(encoded.filtered);

        // The buffer budget: when it is spent, upload our own object first,
        // then wait for others to upload theirs.
        let kib = (encoded.body.len().div_ceil(1024) as u32).min(self.shared.budget_kib);
        let permit = match self.shared.budget.clone().try_acquire_many_owned(kib) {
            Ok(permit) => permit,
            Err(_) => {
                if self.cut_at.is_none() {
                    self.flush(checkpointer).await?;
                }
                match self.shared.budget.clone().acquire_many_owned(kib).await {
                    Ok(permit) => permit,
                    Err(_) => return self.stop().await,
                }
            }
        };
        permit.forget();
        self.permits += kib;
        self.shared
            .stats
            .buffered_bytes
            .fetch_add(u64::from(kib) * 1024, Relaxed);
        metrics::gauge!(m::BUFFERED_BYTES).increment(f64::from(kib) * 1024.0);

        let entry = (encoded.meta, encoded.body);
        let first = entry.clone();
        match self
            .buffer_once(move |buffer| buffer.append(vec![first]))
            .await?
        {
            Ok(()) => return Ok(()),
            Err(error) => {
                // A full disk: upload what this shard has buffered, which
                // frees its space, before trying again (as when the budget
                // is spent) — waiting alone would wait for ever when every
                // shard's object is short of its size limit.
                metrics::counter!(m::BUFFER_ERRORS).increment(1);
                tracing::warn!(shard = %self.shard, %error, "cannot append to the buffer; uploading the current object first");
                if self.cut_at.is_none() && self.has_current_object() {
                    // The flush gives back the object's budget, not this
                    // entry's, which it still needs.
                    self.permits -= kib;
                    let flushed = self.flush(checkpointer).await;
                    self.permits += kib;
                    flushed?;
                }
            }
        }
        self.with_buffer("append", move |buffer| buffer.append(vec![entry.clone()]))
            .await
    }

    fn has_current_object(&self) -> bool {
        self.buffer
            .as_ref()
            .and_then(|buffer| buffer.current())
            .is_some_and(|current| current.records > 0)
    }

    fn should_flush(&self) -> bool {
        let limits = &self.shared.limits;
        self.buffer
            .as_ref()
            .and_then(|buffer| buffer.current())
            .is_some_and(|current| {
                current.bytes >= limits.max_object_bytes
                    || current.records >= limits.max_object_records
                    || current.opened_at.elapsed() >= limits.max_object_age
            })
    }

    /// Seals the current object, uploads it, and moves the checkpoint past it.
    async fn flush(&mut self, checkpointer: &mut Checkpointer) -> Step {
        self.flush_as(checkpointer, None).await
    }

    /// As `flush`, under `key` instead of the one the template renders.
    async fn flush_as(&mut self, checkpointer: &mut Checkpointer, key: Option<String>) -> Step {
        let Some(sealed) = self.with_buffer("seal", |buffer| buffer.seal()).await? else {
            return Ok(());
        };
        let Some(last) = sealed.summary.last_position.as_ref().map(position) else {
            return self.release(&sealed).await;
        };
        if sealed.summary.items > 0 {
            let key = key.unwrap_or_else(|| self.key(&sealed.summary));
            self.checkpoint(checkpointer, last.clone(), Some(key.clone().into_bytes()))
                .await?;
            if let Err(error) = self.upload(&key, &sealed).await {
                match error.permanent() {
                    Some(fix) => self.permanent_failure(&format!("upload of {key}: {error}"), fix),
                    None => {
                        tracing::error!(shard = %self.shard, %key, %error, "cannot read a buffered object back; stopping this shard's processor for the next owner to redo it")
                    }
                }
                return self.stop().await;
            }
            self.shared.stats.set_permanent_error(&self.lease_key, None);
        }
        self.checkpoint(checkpointer, last, None).await?;
        self.release(&sealed).await
    }

    async fn release(&mut self, sealed: &SealedObject) -> Step {
        let sealed = sealed.clone();
        self.with_buffer("release", move |buffer| buffer.release(&sealed))
            .await?;
        self.release_permits();
        Ok(())
    }

    /// Logs, counts and records an error no retry fixes; the processor then
    /// stops and its lease is released, so the condition is visible and
    /// another worker (or this one after the release cooldown, with a fixed
    /// configuration) can go on.
    fn permanent_failure(&self, what: &str, fix: &str) {
        tracing::error!(shard = %self.shard, error = %what, fix,
            "a permanent error stops this shard's processor; its lease is released");
        metrics::counter!(m::PERMANENT_ERRORS).increment(1);
        self.shared
            .stats
            .set_permanent_error(&self.lease_key, Some(format!("{what} ({fix})")));
    }

    /// Uploads until it works, until the object cannot be read back from
    /// the buffer (damaged on disk: retrying cannot help, and the shard's
    /// next owner redoes the object from Kinesis), or until S3 answered
    /// [`PERMANENT_ATTEMPTS`] permanent errors in a row (a missing bucket,
    /// denied access: see [`crate::emit::classify`]). The upload never replaces
    /// an object: one already under the key holds the same records (a key
    /// names its first record, and a redo cuts at the prepared last one; a
    /// previous owner's late upload, say) and is adopted. The lease may be
    /// lost meanwhile; the upload is then harmless (see the module docs).
    async fn upload(&self, key: &str, sealed: &SealedObject) -> Result<(), EmitError> {
        let shared = &self.shared;
        let unreadable = AtomicBool::new(false);
        let permanent_in_a_row = AtomicU32::new(0);
        let emitted = with_backoff(
            || async {
                let result = shared.emitter.emit(key, sealed).await;
                match &result {
                    Err(EmitError::Buffer(_)) => unreadable.store(true, Relaxed),
                    Err(error) if error.permanent().is_some() => {
                        permanent_in_a_row.fetch_add(1, Relaxed);
                    }
                    _ => permanent_in_a_row.store(0, Relaxed),
                }
                result
            },
            || !unreadable.load(Relaxed) && permanent_in_a_row.load(Relaxed) < PERMANENT_ATTEMPTS,
            |error, delay| {
                shared.stats.upload_retries.fetch_add(1, Relaxed);
                metrics::counter!(m::UPLOAD_RETRIES).increment(1);
                tracing::warn!(%key, %error, ?delay, "upload failed; retrying");
            },
        )
        .await?;
        let stats = &shared.stats;
        match emitted {
            Emitted::Written => {}
            Emitted::AlreadyThere => {
                tracing::info!(shard = %self.shard, %key, "the object is already in S3 (an earlier upload of the same records); adopted");
                stats.objects_adopted.fetch_add(1, Relaxed);
                return Ok(());
            }
            Emitted::Occupied => {
                // The key names the object's first record, so the object
                // there starts with the same records — but its bytes differ
                // (another compression or format setting, or another writer
                // using this prefix and template): worth a look.
                tracing::warn!(shard = %self.shard, %key, "an object with other contents is already under this key (another compression or format setting, or another writer with this prefix?); kept, and adopted as holding these records");
                stats.objects_adopted.fetch_add(1, Relaxed);
                metrics::counter!(m::OBJECTS_OCCUPIED).increment(1);
                return Ok(());
            }
        }
        stats.objects_uploaded.fetch_add(1, Relaxed);
        stats
            .records_uploaded
            .fetch_add(sealed.summary.items, Relaxed);
        stats
            .bytes_uploaded
            .fetch_add(sealed.summary.bytes, Relaxed);
        metrics::counter!(m::OBJECTS_UPLOADED).increment(1);
        metrics::counter!(m::RECORDS_UPLOADED).increment(sealed.summary.items);
        metrics::counter!(m::BYTES_UPLOADED).increment(sealed.summary.bytes);
        tracing::debug!(%key, items = sealed.summary.items, bytes = sealed.summary.bytes, "object uploaded");
        Ok(())
    }

    async fn process(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Step {
        self.shared
            .stats
            .set_lag(&self.lease_key, input.millis_behind_latest);
        let mut records = input.records;
        if let Some(adopted) = self.adopted.clone() {
            let reached = records
                .last()
                .is_some_and(|r| r.extended_sequence_number() >= adopted);
            records.retain(|r| r.extended_sequence_number() > adopted);
            if reached {
                self.checkpoint(checkpointer, adopted, None).await?;
                self.adopted = None;
            }
        }
        if let Some((cut, prepared_key)) = self.cut_at.clone() {
            let upto = records
                .iter()
                .take_while(|r| r.extended_sequence_number() <= cut)
                .count();
            let reached = upto < records.len()
                || records
                    .last()
                    .is_some_and(|r| r.extended_sequence_number() == cut);
            let rest = records.split_off(upto);
            // No size or age cut before `cut`: the object must be the one
            // the previous owner prepared.
            self.append_chunked(records, checkpointer, false).await?;
            records = rest;
            if !reached {
                return Ok(());
            }
            self.flush_as(checkpointer, Some(prepared_key)).await?;
            self.cut_at = None;
        }
        self.append_chunked(records, checkpointer, true).await?;
        if self.should_flush() {
            self.flush(checkpointer).await?;
        }
        Ok(())
    }

    /// Appends in chunks that fit the object's record limit (a GetRecords
    /// batch of aggregates can hold far more user records), uploading full
    /// objects in between when `flush` allows.
    async fn append_chunked(
        &mut self,
        mut records: Vec<ConsumerRecord>,
        checkpointer: &mut Checkpointer,
        flush: bool,
    ) -> Step {
        // A chunk is one buffer entry: at most 4 MiB of records, and no more
        // than an eighth of the buffer budget or an object's size, so that
        // one entry can neither take the whole budget nor need more disk
        // than an object (a full disk is then relieved by uploading).
        let max_chunk_bytes = (4usize << 20)
            .min((self.shared.budget_kib as usize * 1024) / 8)
            .min(self.shared.limits.max_object_bytes as usize)
            .max(64 << 10);
        // An object holds records of one period of the key's time fields
        // (an hour by default): its key's time prefix then covers every
        // record in it, which is what reading the archive by time relies on
        // (a catching-up shard would otherwise put hours into one object).
        let step_ms = self.shared.template.time_step().map(|s| s * 1000);
        let period = |record: &ConsumerRecord| {
            Some(epoch_millis(record.approximate_arrival?).div_euclid(step_ms?))
        };
        while !records.is_empty() {
            let first_period = period(&records[0]);
            if flush && first_period.is_some() {
                let open_period = self
                    .buffer
                    .as_ref()
                    .and_then(|b| b.current())
                    .zip(step_ms)
                    .map(|(current, step)| current.first_time_ms.div_euclid(step));
                if open_period.is_some_and(|open| Some(open) != first_period) {
                    self.flush(checkpointer).await?;
                    continue;
                }
            }
            let same_period = if flush {
                records
                    .iter()
                    .take_while(|r| {
                        let p = period(r);
                        p.is_none() || p == first_period
                    })
                    .count()
                    .max(1)
            } else {
                records.len()
            };
            let in_object = self
                .buffer
                .as_ref()
                .and_then(|b| b.current())
                .map_or(0, |c| c.records);
            let room = self
                .shared
                .limits
                .max_object_records
                .saturating_sub(in_object)
                .max(1) as usize;
            let mut bytes = 0;
            let by_size = records
                .iter()
                .take_while(|r| {
                    bytes += r.data.len() + 64;
                    bytes <= max_chunk_bytes
                })
                .count()
                .max(1);
            let take = room.min(by_size).min(same_period).min(records.len());
            let rest = records.split_off(take);
            self.append(records, checkpointer).await?;
            records = rest;
            if flush && self.should_flush() {
                self.flush(checkpointer).await?;
            }
        }
        Ok(())
    }

    async fn start(&mut self, input: InitializationInput) -> Step {
        self.stream = input.stream_name;
        self.shard = input.shard_id;
        let dir = self.shared.buffer_dir.join(sanitize(&self.lease_key));
        let fsync = self.shared.fsync;
        // Data left by an earlier run is re-read from the shard (its
        // checkpoint never passed it); corrupt entries are counted.
        let mut attempts = 0;
        let opened = loop {
            attempts += 1;
            let shown = dir.display().to_string();
            let dir = dir.clone();
            let open = self.shared.open_buffer.clone();
            let opened = tokio::task::spawn_blocking(move || {
                let (mut buffer, quarantined): (Box<dyn Buffer>, u64) = match open {
                    Some(open) => (open(&dir)?, 0),
                    None => {
                        let (buffer, recovery) = DiskBuffer::open(&dir, fsync)?;
                        (Box::new(buffer), recovery.quarantined)
                    }
                };
                buffer.clear()?;
                Ok::<_, BufferError>((buffer, quarantined))
            })
            .await;
            match opened {
                Ok(Ok(opened)) => break opened,
                Ok(Err(error)) if attempts >= BUFFER_ATTEMPTS => {
                    self.permanent_failure(
                        &format!("cannot open the shard's buffer in {shown}: {error}"),
                        "make `buffer_dir` writable, with free space",
                    );
                    return Err(Stopped);
                }
                Ok(Err(error)) => {
                    metrics::counter!(m::BUFFER_ERRORS).increment(1);
                    tracing::error!(shard = %self.shard, %error, attempts, "cannot open the shard's buffer; retrying in 5 s");
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                }
                Err(_) => return Err(Stopped),
            }
        };
        let (buffer, quarantined) = opened;
        self.shared
            .stats
            .quarantined
            .fetch_add(quarantined, Relaxed);
        self.buffer = Some(buffer);
        self.abort_leftover_uploads().await;
        if let Some((prepared, Some(state))) = input.pending_checkpoint {
            let key = String::from_utf8_lossy(&state).into_owned();
            let shared = &self.shared;
            // A 403 (no s3:ListBucket) or another permanent error counts as
            // "not there": the redo writes the same records under the same
            // key, conditionally, and adopts the object if it is there.
            let permanent = AtomicBool::new(false);
            let exists = with_backoff(
                || async {
                    let result = shared.emitter.exists(&key).await;
                    if result.as_ref().is_err_and(|e| e.permanent().is_some()) {
                        permanent.store(true, Relaxed);
                    }
                    result
                },
                || !permanent.load(Relaxed),
                |error: &EmitError, _| tracing::warn!(%key, %error, "cannot check a prepared object; retrying"),
            )
            .await
            .unwrap_or(false);
            if exists {
                tracing::info!(shard = %self.shard, %key, "adopting the object a previous owner uploaded");
                self.shared.stats.objects_adopted.fetch_add(1, Relaxed);
                self.adopted = Some(prepared);
            } else {
                tracing::info!(shard = %self.shard, %key, "redoing an object a previous owner prepared");
                self.cut_at = Some((prepared, key));
            }
        }
        Ok(())
    }

    /// Aborts multipart uploads of this shard's objects left open by a dead
    /// owner (this worker holds the lease, so none is live).
    async fn abort_leftover_uploads(&self) {
        let Some(s3) = &self.shared.s3 else { return };
        if self.shared.no_upload_listing.load(Relaxed) {
            return;
        }
        let template = &self.shared.template;
        let prefix = match template.prefix() {
            "" => String::new(),
            prefix => format!("{prefix}/"),
        };
        let result = s3
            .abort_uploads(&prefix, |upload| {
                template.parse_key(&upload.key).is_some_and(|parsed| {
                    parsed.shard.as_deref() == Some(self.shard.as_str())
                        && parsed.stream.as_deref().is_none_or(|s| s == self.stream)
                })
            })
            .await;
        match result {
            Ok(_) => {}
            Err(crate::emit::EmitError::Unsupported { .. }) => {
                if !self.shared.no_upload_listing.swap(true, Relaxed) {
                    tracing::info!(
                        "S3 cannot list multipart uploads: leftover uploads of dead owners are not aborted (an S3 lifecycle rule can)"
                    );
                }
            }
            Err(error) => {
                tracing::warn!(%error, "could not list open multipart uploads; leftovers stay until the shard's next start");
            }
        }
    }
}

impl Drop for ShardArchiver {
    fn drop(&mut self) {
        // However the processor ends, its share of the budget goes back.
        self.release_permits();
    }
}

/// A lease key as a directory name.
fn sanitize(lease_key: &str) -> String {
    lease_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl RecordProcessor for ShardArchiver {
    async fn initialize(&mut self, input: InitializationInput) {
        if self.start(input).await.is_err() {
            self.stopped = true;
        }
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) {
        if !self.stopped {
            let failed = self.process(input, checkpointer).await.is_err();
            if failed && !self.stopped {
                // The buffer was lost (its blocking task panicked): stop as
                // a refused checkpoint does, giving back the budget it held.
                let _ = self.stop().await;
            }
        }
        if self.stopped {
            // This processor has dropped its buffer and cannot go on: give
            // the lease back rather than hold a shard nobody reads. The next
            // processor resumes at the checkpoint, which never passed a
            // record that is not in S3.
            checkpointer.release_lease();
            self.shared.stats.set_lag(&self.lease_key, None);
        }
    }

    async fn lease_lost(&mut self) {
        if !self.stopped {
            let _ = self.stop().await;
        }
        self.shared.stats.set_lag(&self.lease_key, None);
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
        if self.cut_at.is_some() {
            // The prepared object is not complete: leave it to the next owner.
            let _ = self.stop().await;
        }
        if !self.stopped && self.flush(checkpointer).await.is_ok() {
            loop {
                match checkpointer.checkpoint_shard_end().await {
                    Ok(()) => break,
                    Err(CheckpointError::Table(error)) if !checkpointer.is_lease_fenced() => {
                        tracing::warn!(shard = %self.shard, %error, "SHARD_END checkpoint failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                    Err(error) => {
                        tracing::warn!(shard = %self.shard, %error, "SHARD_END checkpoint refused");
                        break;
                    }
                }
            }
        }
        self.shared.stats.set_lag(&self.lease_key, None);
    }

    async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
        if self.cut_at.is_some() {
            // Uploading a partial object under the prepared key: if the
            // previous owner's late upload of the whole one got there first,
            // the partial one would be adopted in its place, the checkpoint
            // moved to its end, and the records after it archived a second
            // time. Leave the prepared checkpoint for the next owner.
            let _ = self.stop().await;
        }
        if !self.stopped {
            let _ = self.flush(checkpointer).await;
        }
        self.shared.stats.set_lag(&self.lease_key, None);
    }
}
