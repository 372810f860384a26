//! Reading ahead of the processor, within bounds: a task per shard fetches
//! the next batches while the processor works on the current one, and stops
//! fetching while the batches it holds reach the record or byte bound.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::{Batch, FanOutReader, RetrievalError, ShardReader};

/// Where a shard's batches come from.
// One per shard worker, moved once: the polling reader's size costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Source {
    /// Polling GetRecords.
    Polling(ShardReader),
    /// An enhanced fan-out subscription.
    FanOut(Box<FanOutReader>),
}

impl Source {
    async fn next_batch(&mut self) -> Result<Batch, RetrievalError> {
        match self {
            Source::Polling(reader) => reader.next_batch().await,
            Source::FanOut(reader) => reader.next_batch().await,
        }
    }
}

/// A fetched batch; holding it holds its share of the prefetch bounds.
#[derive(Debug)]
pub struct Prefetched {
    /// The batch.
    pub batch: Batch,
    _records: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

/// The read-ahead task of one shard. Dropping it stops the task.
#[derive(Debug)]
pub struct Prefetcher {
    batches: mpsc::UnboundedReceiver<Result<Prefetched, RetrievalError>>,
    task: JoinHandle<()>,
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Prefetcher {
    /// Starts reading ahead with `reader`, holding at most `max_records`
    /// records and `max_bytes` bytes of fetched, unprocessed batches (a single
    /// batch larger than the bounds is still let through, alone), and pausing
    /// `idle` after an empty batch or an error.
    pub fn spawn(mut reader: Source, max_records: usize, max_bytes: usize, idle: Duration) -> Self {
        let max_records = max_records.clamp(1, Semaphore::MAX_PERMITS) as u32;
        let max_bytes = max_bytes.clamp(1, u32::MAX as usize) as u32;
        let records = Arc::new(Semaphore::new(max_records as usize));
        let bytes = Arc::new(Semaphore::new(max_bytes as usize));
        let (sender, batches) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let batch = match reader.next_batch().await {
                    Ok(batch) => batch,
                    Err(error) => {
                        if sender.send(Err(error)).is_err() {
                            return;
                        }
                        tokio::time::sleep(idle).await;
                        continue;
                    }
                };
                let count = (batch.records.len() as u32).clamp(1, max_records);
                let size: usize = batch.records.iter().map(|r| r.data.len()).sum();
                let size = (size.min(u32::MAX as usize) as u32).clamp(1, max_bytes);
                let (Ok(records), Ok(bytes)) = (
                    records.clone().acquire_many_owned(count).await,
                    bytes.clone().acquire_many_owned(size).await,
                ) else {
                    return;
                };
                let empty = batch.records.is_empty();
                let ended = batch.shard_end.is_some();
                let prefetched = Prefetched {
                    batch,
                    _records: records,
                    _bytes: bytes,
                };
                if sender.send(Ok(prefetched)).is_err() || ended {
                    return;
                }
                if empty {
                    tokio::time::sleep(idle).await;
                }
            }
        });
        Self { batches, task }
    }

    /// The next batch (cancel-safe). `None` after the shard's end was
    /// delivered.
    pub async fn next(&mut self) -> Option<Result<Prefetched, RetrievalError>> {
        self.batches.recv().await
    }
}
