//! What to read.

use chrono::{DateTime, Utc};
use kcl::checkpoint::ExtendedSequenceNumber;

use crate::key::ParsedKey;
use crate::transform::JsonRecord;

/// Which records to read. Every bound is optional.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Records that arrived at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Records that arrived before this time.
    pub to: Option<DateTime<Utc>>,
    /// Only this stream.
    pub stream: Option<String>,
    /// Only this shard.
    pub shard: Option<String>,
    /// Only records after this position (a catch-up read from a checkpoint).
    pub after: Option<ExtendedSequenceNumber>,
    /// Only records up to and including this position.
    pub until: Option<ExtendedSequenceNumber>,
}

impl Selection {
    /// Whether an object (by its key) can hold selected records. `slack` is
    /// how far before `from` an object may start and still reach into the
    /// range (objects are named after their first record).
    pub(crate) fn may_contain(&self, key: &ParsedKey, slack: chrono::Duration) -> bool {
        if let (Some(stream), Some(key_stream)) = (&self.stream, &key.stream)
            && stream != key_stream
        {
            return false;
        }
        if let (Some(shard), Some(key_shard)) = (&self.shard, &key.shard)
            && shard != key_shard
        {
            return false;
        }
        if let Some(time) = key.time {
            if self.to.is_some_and(|to| time >= to) {
                return false;
            }
            if self.from.is_some_and(|from| time < from - slack) {
                return false;
            }
        }
        if let (Some(until), Some((sequence, sub))) = (&self.until, &key.first_seq)
            && ExtendedSequenceNumber::new(sequence.clone(), *sub) > *until
        {
            return false;
        }
        true
    }

    /// Whether a record is selected.
    pub fn matches(&self, record: &JsonRecord) -> bool {
        if self.stream.as_ref().is_some_and(|s| *s != record.stream)
            || self.shard.as_ref().is_some_and(|s| *s != record.shard_id)
        {
            return false;
        }
        if self.from.is_some() || self.to.is_some() {
            let Some(arrival) = record.arrival() else {
                return false;
            };
            if self.from.is_some_and(|from| arrival < from)
                || self.to.is_some_and(|to| arrival >= to)
            {
                return false;
            }
        }
        if self.after.is_some() || self.until.is_some() {
            let position = ExtendedSequenceNumber::new(
                record.sequence_number.clone(),
                record.sub_sequence_number,
            );
            if self.after.as_ref().is_some_and(|after| position <= *after)
                || self.until.as_ref().is_some_and(|until| position > *until)
            {
                return false;
            }
        }
        true
    }
}
