//! What goes in (a [`UserRecord`]) and what comes out (a [`UserRecordResult`]).

use std::time::Duration;

use bytes::Bytes;

use crate::error::ValidationError;
use crate::hash_key::{hash_key, parse_explicit_hash_key};

/// Longest partition key Kinesis accepts, in Unicode characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// One record a user hands to the producer.
///
/// ```
/// let record = kpl::UserRecord::new("orders", "customer-42", "hello")
///     .with_explicit_hash_key(7);
/// assert_eq!(record.stream(), "orders");
/// assert_eq!(record.explicit_hash_key(), Some(7));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    stream: String,
    partition_key: String,
    explicit_hash_key: Option<u128>,
    data: Bytes,
}

impl UserRecord {
    /// A record for `stream` with a partition key and a payload.
    pub fn new(
        stream: impl Into<String>,
        partition_key: impl Into<String>,
        data: impl Into<Bytes>,
    ) -> Self {
        Self {
            stream: stream.into(),
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
        }
    }

    /// Routes the record by this hash key instead of its partition key's.
    pub fn with_explicit_hash_key(mut self, explicit_hash_key: u128) -> Self {
        self.explicit_hash_key = Some(explicit_hash_key);
        self
    }

    /// Routes the record by an explicit hash key given as Kinesis takes it: a
    /// decimal in `0..=2^128-1`.
    ///
    /// ```
    /// let record = kpl::UserRecord::new("s", "pk", "x").with_explicit_hash_key_str("12")?;
    /// assert_eq!(record.explicit_hash_key(), Some(12));
    /// assert!(kpl::UserRecord::new("s", "pk", "x").with_explicit_hash_key_str("-1").is_err());
    /// # Ok::<(), kpl::ValidationError>(())
    /// ```
    pub fn with_explicit_hash_key_str(
        self,
        explicit_hash_key: &str,
    ) -> Result<Self, ValidationError> {
        Ok(self.with_explicit_hash_key(parse_explicit_hash_key(explicit_hash_key)?))
    }

    /// The target stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The partition key.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The explicit hash key, if any.
    pub fn explicit_hash_key(&self) -> Option<u128> {
        self.explicit_hash_key
    }

    /// The payload.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The hash key Kinesis will route the record by.
    pub fn hash_key(&self) -> u128 {
        hash_key(&self.partition_key, self.explicit_hash_key)
    }

    /// Size as Kinesis counts it: data plus partition key, in bytes.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// Checks what Kinesis would refuse.
    pub(crate) fn validate(&self, max_size: usize) -> Result<(), ValidationError> {
        if self.stream.is_empty() {
            return Err(ValidationError::EmptyStreamName);
        }
        let chars = self.partition_key.chars().count();
        if chars == 0 || chars > MAX_PARTITION_KEY_CHARS {
            return Err(ValidationError::PartitionKeyLength { chars });
        }
        if self.size() > max_size {
            return Err(ValidationError::RecordTooLarge {
                size: self.size(),
                max: max_size,
            });
        }
        Ok(())
    }
}

/// The outcome of a successful put of one user record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecordResult {
    /// Sequence number of the Kinesis record that carried it (shared by every
    /// user record of an aggregate).
    pub sequence_number: String,
    /// Index of the user record within its aggregate; `0` when it was sent
    /// alone. Consumers see the same number (the KCL's sub-sequence number).
    pub sub_sequence_number: u64,
    /// Shard that stored it.
    pub shard_id: String,
    /// Every attempt, the successful one last.
    pub attempts: Vec<Attempt>,
}

/// One attempt at putting a user record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Time between the previous attempt's end (or the record's arrival) and
    /// this attempt's start: buffering, rate limiting and backoff.
    pub delay: Duration,
    /// How long the PutRecords call took.
    pub duration: Duration,
    /// Why the attempt failed; `None` for the successful one.
    pub error: Option<AttemptError>,
}

/// The error of a failed attempt, as Kinesis or the transport reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    /// Error code, e.g. `ProvisionedThroughputExceededException`.
    pub code: String,
    /// Error message.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let ok = UserRecord::new("s", "k".repeat(256), vec![0; 10]);
        assert_eq!(ok.validate(1 << 20), Ok(()));
        assert_eq!(
            UserRecord::new("", "k", "x").validate(100),
            Err(ValidationError::EmptyStreamName)
        );
        assert_eq!(
            UserRecord::new("s", "", "x").validate(100),
            Err(ValidationError::PartitionKeyLength { chars: 0 })
        );
        assert_eq!(
            UserRecord::new("s", "é".repeat(257), "x").validate(10_000),
            Err(ValidationError::PartitionKeyLength { chars: 257 })
        );
        // 256 two-byte characters are fine: the limit is in characters.
        assert_eq!(
            UserRecord::new("s", "é".repeat(256), "x").validate(10_000),
            Ok(())
        );
        assert_eq!(
            UserRecord::new("s", "kk", vec![0; 99]).validate(100),
            Err(ValidationError::RecordTooLarge {
                size: 101,
                max: 100
            })
        );
    }
}
