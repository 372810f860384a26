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
        /// What to fix, when no retry can help ([`permanent_cause`]).
        permanent: Option<&'static str>,
    },
}

/// What to fix when a Kinesis error code says no retry can help: the
/// stream does not exist (deleted, or another region), access is denied,
/// or the stream's KMS key cannot be used. `None` for everything else
/// (throttling, 5xx, timeouts, expired iterators) — those are retried.
///
/// ```
/// assert!(kcl::retrieval::permanent_cause(Some("AccessDeniedException")).is_some());
/// assert!(kcl::retrieval::permanent_cause(Some("ProvisionedThroughputExceededException")).is_none());
/// ```
pub fn permanent_cause(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "ResourceNotFoundException" => Some(
            "the stream or shard does not exist (deleted, or in another region): check `streams` and `region`",
        ),
        "AccessDeniedException" => Some(
            "access denied: give the role kinesis:GetRecords, GetShardIterator, ListShards and DescribeStreamSummary",
        ),
        "KMSAccessDeniedException"
        | "KMSDisabledException"
        | "KMSNotFoundException"
        | "KMSInvalidStateException"
        | "KMSOptInRequired" => {
            Some("the stream's KMS key cannot be used: check the key and the role's kms:Decrypt")
        }
        _ => None,
    }
}

impl RetrievalError {
    /// What to fix, when no retry can help.
    pub fn permanent(&self) -> Option<&'static str> {
        match self {
            RetrievalError::Kinesis { permanent, .. } => *permanent,
        }
    }
}

impl RetrievalError {
    pub(crate) fn kinesis(
        operation: &'static str,
        shard_id: &str,
        error: impl std::error::Error + aws_sdk_kinesis::error::ProvideErrorMetadata,
    ) -> Self {
        RetrievalError::Kinesis {
            operation,
            shard_id: shard_id.to_owned(),
            message: crate::error_chain(&error),
            permanent: permanent_cause(error.code()),
        }
    }
}
