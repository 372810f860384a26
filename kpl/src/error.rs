//! Typed errors of the producer.

/// A user record that Kinesis would refuse, caught before it is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The stream name is empty.
    #[error("stream name is empty")]
    EmptyStreamName,
    /// The partition key is not 1 to 256 Unicode characters long.
    #[error("partition key must be 1 to 256 Unicode characters, got {chars}")]
    PartitionKeyLength {
        /// Its length in characters.
        chars: usize,
    },
    /// The explicit hash key is not a decimal integer in `0..=2^128-1`.
    #[error("explicit hash key {value:?} is not a decimal integer in 0..=2^128-1")]
    InvalidExplicitHashKey {
        /// The offending value (first 64 characters).
        value: String,
    },
    /// The record is larger than the configured maximum.
    #[error("record of {size} bytes (data plus partition key) exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Data plus partition key, in bytes.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
}

use crate::record::{Attempt, UserRecord};

/// Why `add_user_record` / `try_add_user_record` did not accept a record. The
/// record is handed back (boxed) wherever it was valid.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// Kinesis would refuse the record.
    #[error("invalid user record: {0}")]
    Invalid(#[from] ValidationError),
    /// The backpressure bound is reached (only from `try_add_user_record`).
    #[error("producer buffer is full ({outstanding_records} records outstanding)")]
    BufferFull {
        /// The record, not accepted.
        record: Box<UserRecord>,
        /// Records outstanding when it was refused.
        outstanding_records: usize,
    },
    /// The producer is shutting down or has shut down.
    #[error("producer is shut down")]
    ShutDown {
        /// The record, not accepted.
        record: Box<UserRecord>,
    },
}

/// Why an accepted record was not put. The record comes back with every
/// attempt made, so that the caller can log it, store it or send it again.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The record's time to live passed before Kinesis accepted it.
    #[error("record expired after {} attempt(s){}", attempts.len(), last_error(attempts))]
    Expired {
        /// The record.
        record: Box<UserRecord>,
        /// The attempts made.
        attempts: Vec<Attempt>,
    },
    /// Kinesis refused the record (or its request) with an error that retrying
    /// cannot fix, such as a missing stream or denied access.
    #[error("record failed: {code}: {message}")]
    Failed {
        /// The record.
        record: Box<UserRecord>,
        /// Error code.
        code: String,
        /// Error message.
        message: String,
        /// The attempts made.
        attempts: Vec<Attempt>,
    },
    /// The producer stopped before the record had a result (it was dropped
    /// without `shutdown`, or its background task failed).
    #[error("producer stopped before the record completed")]
    ProducerStopped {
        /// The record, when it could be recovered.
        record: Option<Box<UserRecord>>,
    },
}

impl RecordError {
    /// The record that failed, when available.
    pub fn record(&self) -> Option<&UserRecord> {
        match self {
            RecordError::Expired { record, .. } | RecordError::Failed { record, .. } => {
                Some(record)
            }
            RecordError::ProducerStopped { record } => record.as_deref(),
        }
    }

    /// The attempts made.
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            RecordError::Expired { attempts, .. } | RecordError::Failed { attempts, .. } => {
                attempts
            }
            RecordError::ProducerStopped { .. } => &[],
        }
    }
}

fn last_error(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .rev()
        .find_map(|a| a.error.as_ref())
        .map(|e| format!("; last error {}: {}", e.code, e.message))
        .unwrap_or_default()
}

/// The producer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Neither an `SdkConfig` nor a Kinesis client was given.
    #[error("no AWS configuration: call sdk_config() or client() on the builder")]
    MissingAwsConfig,
    /// A configuration value is out of range.
    #[error("invalid producer configuration: {0}")]
    InvalidConfig(String),
}

/// `flush_all` or `shutdown` could not complete.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// The producer's background task is gone.
    #[error("producer background task stopped")]
    Stopped,
}
