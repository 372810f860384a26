//! Reading a shard: polling GetRecords, deaggregation, resuming from a
//! checkpoint in the middle of an aggregate, and detecting the shard's end.

mod convert;
mod fanout;
mod polling;
mod prefetch;
mod record;

pub use convert::OUT_OF_RANGE_SUB_RECORDS;
pub use fanout::{FanOutReader, register_consumer};
pub use polling::{Batch, ShardReader, StartingPosition};
pub use prefetch::{Prefetched, Prefetcher, Source};
pub use record::ConsumerRecord;

/// Errors while reading a shard.
#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    /// A Kinesis call failed.
    #[error("Kinesis {operation} failed for shard {shard_id}: {message}")]
    Kinesis {
        /// The operation.
        operation: &'static str,
        /// The shard.
        shard_id: String,
        /// The SDK's error with its sources.
        message: String,
    },
}

impl RetrievalError {
    pub(crate) fn kinesis(
        operation: &'static str,
        shard_id: &str,
        error: impl std::error::Error,
    ) -> Self {
        RetrievalError::Kinesis {
            operation,
            shard_id: shard_id.to_owned(),
            message: crate::error_chain(&error),
        }
    }
}
