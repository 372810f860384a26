//! What applications implement: a processor per shard, and the checkpointer
//! it records its progress with.

use std::future::Future;
use std::sync::Arc;

use crate::checkpoint::ExtendedSequenceNumber;
use crate::lease::{HeldLease, LeaseError};
use crate::retrieval::ConsumerRecord;

/// Given to [`RecordProcessor::initialize`].
#[derive(Debug, Clone)]
pub struct InitializationInput {
    /// The stream.
    pub stream_name: String,
    /// The shard.
    pub shard_id: String,
    /// Where processing resumes (the lease's checkpoint).
    pub extended_sequence_number: ExtendedSequenceNumber,
    /// A prepared checkpoint left by the previous owner, with its state.
    pub pending_checkpoint: Option<(ExtendedSequenceNumber, Option<Vec<u8>>)>,
}

/// Given to [`RecordProcessor::process_records`].
#[derive(Debug, Clone)]
pub struct ProcessRecordsInput {
    /// Deaggregated records, in order.
    pub records: Vec<ConsumerRecord>,
    /// How far behind the tip of the shard this batch is.
    pub millis_behind_latest: Option<i64>,
}

/// Processes the records of one shard. One instance per shard lease; its
/// methods are never called concurrently.
///
/// ```
/// use kcl::processor::*;
/// struct Printer;
/// impl RecordProcessor for Printer {
///     async fn initialize(&mut self, input: InitializationInput) {
///         println!("starting {} at {}", input.shard_id, input.extended_sequence_number);
///     }
///     async fn process_records(&mut self, input: ProcessRecordsInput, checkpointer: &mut Checkpointer) {
///         for record in &input.records { println!("{:?}", record.data); }
///         let _ = checkpointer.checkpoint().await;
///     }
///     async fn lease_lost(&mut self) {}
///     async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) {
///         let _ = checkpointer.checkpoint_shard_end().await;
///     }
///     async fn shutdown_requested(&mut self, checkpointer: &mut Checkpointer) {
///         let _ = checkpointer.checkpoint().await;
///     }
/// }
/// ```
pub trait RecordProcessor: Send + 'static {
    /// Called once before the first records.
    fn initialize(&mut self, input: InitializationInput) -> impl Future<Output = ()> + Send;
    /// Called with each batch of records.
    fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> impl Future<Output = ()> + Send;
    /// The lease was lost (another worker took it): stop; checkpoints would fail.
    fn lease_lost(&mut self) -> impl Future<Output = ()> + Send;
    /// The shard has ended: checkpoint SHARD_END (`checkpoint_shard_end`), or
    /// its children never start.
    fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> impl Future<Output = ()> + Send;
    /// The worker is shutting down gracefully: a last chance to checkpoint.
    fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> impl Future<Output = ()> + Send;
}

/// Checkpoint errors.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// This worker no longer holds the lease.
    #[error("lease {0} is no longer held by this worker")]
    LeaseLost(String),
    /// The position is before the last checkpoint or after the last record
    /// delivered.
    #[error("checkpoint {requested} is outside [{last_checkpoint}, {largest_delivered}]")]
    OutOfRange {
        /// The position asked for.
        requested: ExtendedSequenceNumber,
        /// The lease's checkpoint.
        last_checkpoint: ExtendedSequenceNumber,
        /// The last record delivered.
        largest_delivered: ExtendedSequenceNumber,
    },
    /// SHARD_END can only be checkpointed once the shard has ended.
    #[error("the shard has not ended")]
    ShardNotEnded,
    /// The lease table failed.
    #[error(transparent)]
    Table(#[from] LeaseError),
}

/// Records a shard's progress in its lease.
///
/// A checkpoint refused because another worker owns the lease now ends the
/// shard's processing after the current call (`lease_lost` is called), and a
/// processor that cannot go on can [hand its lease back](Self::release_lease).
#[derive(Debug)]
pub struct Checkpointer {
    lease: Arc<HeldLease>,
    largest_delivered: ExtendedSequenceNumber,
    shard_ended: bool,
    end: Option<End>,
}

/// Why a shard's processing ends before its shard does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// A write found another owner.
    LeaseLost,
    /// The processor asked to give the lease back.
    Released,
}

impl Checkpointer {
    pub(crate) fn new(lease: Arc<HeldLease>, start: ExtendedSequenceNumber) -> Self {
        Self {
            lease,
            largest_delivered: start,
            shard_ended: false,
            end: None,
        }
    }

    /// Stops processing this shard and gives its lease back, its checkpoint
    /// unchanged: once the current call returns, no further method of the
    /// processor is called, the lease is released, and this or another
    /// worker takes it again with a new processor that resumes at the
    /// checkpoint. For a processor that cannot go on (its state is lost or
    /// inconsistent) but must not leave its shard stalled while the lease
    /// is still renewed.
    ///
    /// ```
    /// use kcl::processor::*;
    /// struct Strict;
    /// impl RecordProcessor for Strict {
    ///     async fn initialize(&mut self, _: InitializationInput) {}
    ///     async fn process_records(&mut self, _: ProcessRecordsInput, checkpointer: &mut Checkpointer) {
    ///         if let Err(CheckpointError::OutOfRange { .. }) = checkpointer.checkpoint().await {
    ///             // Start this shard over from its checkpoint.
    ///             checkpointer.release_lease();
    ///         }
    ///     }
    ///     async fn lease_lost(&mut self) {}
    ///     async fn shard_ended(&mut self, c: &mut Checkpointer) { let _ = c.checkpoint_shard_end().await; }
    ///     async fn shutdown_requested(&mut self, _: &mut Checkpointer) {}
    /// }
    /// ```
    pub fn release_lease(&mut self) {
        self.end.get_or_insert(End::Released);
    }

    /// Whether this processor's lease is known to be lost (a checkpoint
    /// found another owner) or was released: checkpoints are then refused.
    pub fn is_ended(&self) -> bool {
        self.end.is_some()
    }

    /// Whether this worker could not renew the lease in time (fencing by
    /// local deadline: three quarters of the failover time), so that
    /// another worker may take it soon. A processor retrying a failed
    /// checkpoint should stop then: its shard is about to move.
    pub fn is_lease_fenced(&self) -> bool {
        self.lease.is_fenced(std::time::Instant::now())
    }

    pub(crate) fn end(&self) -> Option<End> {
        self.end
    }

    /// The answer to a conditional write: refused means another owner.
    fn answer(&mut self, written: bool) -> Result<(), CheckpointError> {
        if written {
            return Ok(());
        }
        self.end.get_or_insert(End::LeaseLost);
        Err(CheckpointError::LeaseLost(self.lease.key()))
    }

    pub(crate) fn delivered(&mut self, position: ExtendedSequenceNumber) {
        self.largest_delivered = position;
    }

    pub(crate) fn set_shard_ended(&mut self) {
        self.shard_ended = true;
    }

    /// Checkpoints the last record delivered.
    pub async fn checkpoint(&mut self) -> Result<(), CheckpointError> {
        let position = self.largest_delivered.clone();
        self.write(&position).await
    }

    /// Checkpoints at a record (it and everything before it are done).
    pub async fn checkpoint_at(&mut self, record: &ConsumerRecord) -> Result<(), CheckpointError> {
        self.write(&record.extended_sequence_number()).await
    }

    /// Checkpoints at a sequence and sub-sequence number.
    pub async fn checkpoint_sequence(
        &mut self,
        position: ExtendedSequenceNumber,
    ) -> Result<(), CheckpointError> {
        self.write(&position).await
    }

    /// Records a prepared checkpoint with application state (for example
    /// the key of an object about to be written), without moving the
    /// checkpoint. A later `checkpoint` clears it.
    pub async fn prepare_checkpoint(
        &mut self,
        position: ExtendedSequenceNumber,
        state: Option<Vec<u8>>,
    ) -> Result<(), CheckpointError> {
        self.check_range(&position)?;
        let current = self.lease.snapshot().checkpoint;
        let ok = self
            .lease
            .checkpoint(&current, Some((&position, state.as_deref())))
            .await?;
        self.answer(ok)
    }

    /// Checkpoints SHARD_END; only after the shard has ended.
    pub async fn checkpoint_shard_end(&mut self) -> Result<(), CheckpointError> {
        if !self.shard_ended {
            return Err(CheckpointError::ShardNotEnded);
        }
        self.ensure_held()?;
        let ok = self
            .lease
            .checkpoint(&ExtendedSequenceNumber::SHARD_END, None)
            .await?;
        self.answer(ok)
    }

    /// Refuses every write once the lease is lost or released.
    fn ensure_held(&self) -> Result<(), CheckpointError> {
        match self.end {
            Some(_) => Err(CheckpointError::LeaseLost(self.lease.key())),
            None => Ok(()),
        }
    }

    fn check_range(&self, position: &ExtendedSequenceNumber) -> Result<(), CheckpointError> {
        self.ensure_held()?;
        let last_checkpoint = self.lease.snapshot().checkpoint;
        let below = position.sequence_number().is_some()
            && last_checkpoint.sequence_number().is_some()
            && *position < last_checkpoint;
        let above = position.sequence_number().is_none()
            || (self.largest_delivered.sequence_number().is_some()
                && *position > self.largest_delivered)
            || self.largest_delivered.sequence_number().is_none();
        if below || above {
            return Err(CheckpointError::OutOfRange {
                requested: position.clone(),
                last_checkpoint,
                largest_delivered: self.largest_delivered.clone(),
            });
        }
        Ok(())
    }

    async fn write(&mut self, position: &ExtendedSequenceNumber) -> Result<(), CheckpointError> {
        self.check_range(position)?;
        let ok = self.lease.checkpoint(position, None).await?;
        self.answer(ok)
    }
}
