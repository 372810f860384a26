//! Typed errors of the producer, and [`elide_middle`], which keeps long
//! service error messages readable.

use std::borrow::Cow;

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

/// Most bytes of a service error message the producer keeps per attempt
/// ([`AttemptError::message`](crate::AttemptError::message),
/// [`RecordError::Failed`]): every user record of a failed entry keeps a copy.
pub const MAX_ERROR_MESSAGE: usize = 512;

/// `message` cut to at most `max` bytes by removing its middle: its start
/// and its end are kept, on character boundaries, around
/// `"…[N bytes elided]…"`. A message of at most `max` bytes comes back as it
/// is (borrowed).
///
/// Service error messages put what went wrong at the end, after an echo of
/// the offending value: a Kinesis `ValidationException` about a long
/// partition key reads `Value '<the key>' at 'records.1.member.partitionKey'
/// failed to satisfy constraint: Member must have length less than or equal
/// to 256`. Keeping only the start would keep the echo and lose the
/// constraint; keeping all of it would let a service echo megabytes into
/// every record's error.
///
/// `max` below the marker's own length (at most 41 bytes) still elides: the
/// result is then the marker alone, a little over `max`.
///
/// ```
/// use kpl::error::elide_middle;
/// assert_eq!(elide_middle("short", 512), "short");
/// let long = format!("Value '{}' failed to satisfy constraint: too long", "x".repeat(10_000));
/// let kept = elide_middle(&long, 100);
/// assert!(kept.len() <= 100);
/// assert!(kept.starts_with("Value 'xx"));
/// assert!(kept.ends_with("constraint: too long"));
/// assert!(kept.contains("bytes elided]"));
/// ```
pub fn elide_middle(message: &str, max: usize) -> Cow<'_, str> {
    let len = message.len();
    if len <= max {
        return Cow::Borrowed(message);
    }
    // The marker's length with as many digits as the whole message has: the
    // number elided is never longer.
    let reserved = marker(len).len();
    let budget = max.saturating_sub(reserved);
    let mut head = budget.div_ceil(2);
    while !message.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = len - budget / 2;
    while !message.is_char_boundary(tail) {
        tail += 1;
    }
    let (start, rest) = message.split_at(head);
    let end = &rest[tail - head..];
    Cow::Owned(format!("{start}{}{end}", marker(tail - head)))
}

fn marker(elided: usize) -> String {
    format!("…[{elided} bytes elided]…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_long_validation_message_keeps_the_failed_constraint() {
        // As Kinesis words it: the echoed value first, the constraint last.
        let message = format!(
            "1 validation error detected: Value '{}' at 'records.1.member.partitionKey' failed \
             to satisfy constraint: Member must have length less than or equal to 256",
            "😀".repeat(256)
        );
        let kept = elide_middle(&message, MAX_ERROR_MESSAGE);
        assert!(kept.len() <= MAX_ERROR_MESSAGE, "{} bytes", kept.len());
        assert!(kept.starts_with("1 validation error detected: Value '😀"));
        assert!(
            kept.ends_with("Member must have length less than or equal to 256"),
            "{kept}"
        );
        assert!(kept.contains(" bytes elided]…"), "{kept}");
    }

    #[test]
    fn multi_byte_characters_are_never_split() {
        // Every boundary falls inside a 4-, 3- or 2-byte character somewhere.
        for text in ["😀".repeat(300), "€".repeat(300), "é".repeat(300)] {
            for max in 41..200 {
                let kept = elide_middle(&text, max);
                assert!(kept.len() <= max, "{max}: {} bytes", kept.len());
                let (start, rest) = kept.split_once('…').expect("marker");
                let end = rest.rsplit_once('…').expect("marker").1;
                assert!(text.starts_with(start) && text.ends_with(end));
            }
        }
    }

    #[test]
    fn short_messages_and_tiny_limits() {
        assert!(matches!(
            elide_middle("exactly", 7),
            Cow::Borrowed("exactly")
        ));
        assert_eq!(elide_middle("", 0), "");
        // Below the marker's length only the marker is left.
        assert_eq!(elide_middle("abcdef", 2), "…[6 bytes elided]…");
    }

    proptest! {
        #[test]
        fn start_and_end_are_kept_within_the_bound(text in "[^…]{0,400}", max in 0usize..600) {
            let kept = elide_middle(&text, max);
            if text.len() <= max {
                prop_assert_eq!(&*kept, text.as_str());
            } else {
                let (start, rest) = kept.split_once("…[").expect("marker");
                let (count, end) = rest.split_once(" bytes elided]…").expect("marker");
                let count: usize = count.parse().expect("count");
                prop_assert!(text.starts_with(start) && text.ends_with(end));
                prop_assert_eq!(start.len() + count + end.len(), text.len());
                prop_assert!(kept.len() <= max.max(marker(text.len()).len()));
                // Nothing more is cut than the bound needs, but for a character.
                prop_assert!(start.len() + end.len() + 8 >= max.saturating_sub(marker(text.len()).len()));
            }
        }
    }
}
