//! What polling and enhanced fan-out share: turning Kinesis records into
//! deaggregated consumer records after a position, and finding a shard's
//! children at its end.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use kpl::aggregation::deaggregate;
use kpl::hash_key::{hash_key, parse_explicit_hash_key};

use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;

use super::{ConsumerRecord, StartingPosition};
use crate::checkpoint::{ExtendedSequenceNumber, Position};

/// Metric: sub-records whose hash key lies outside their shard's range. The
/// Java KCL drops them silently; they are delivered here, and counted.
pub const OUT_OF_RANGE_SUB_RECORDS: &str = "kcl_out_of_range_sub_records_total";

/// Where a reader (re)starts a shard, and which records it skips before
/// the first one read.
///
/// After a record was read, reading resumes AT_SEQUENCE_NUMBER of the last
/// one (a half-processed aggregate is read again and its processed
/// sub-records skipped by [`convert`]). Before that, a shard that starts at
/// LATEST is never resolved at LATEST twice — records written between an
/// expired iterator (or an ended subscription) and its renewal would be
/// skipped: it resumes at the last position the service gave (a fan-out
/// subscription's `ContinuationSequenceNumber`), else AT_TIMESTAMP of the
/// whole second in which LATEST was first resolved (this worker's clock;
/// whole seconds, because some back ends keep arrival times in seconds — so
/// at most that second's earlier records are read as well, never one
/// skipped).
///
/// Until the first record is read, records before the position asked for
/// are skipped even if a back end returns them (an AT_TIMESTAMP position is
/// "at or after" its time, an AT_SEQUENCE_NUMBER one at or after its
/// number): some emulators position a timestamp after a shard's last
/// record at its start, or replay a subscription from the start.
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    initial: StartingPosition,
    /// When LATEST was first resolved, by this worker's clock.
    latest_at: Option<SystemTime>,
    /// The last `ContinuationSequenceNumber` of a fan-out subscription.
    continuation: Option<String>,
    /// Until the first record is read, records that arrived before this are
    /// skipped (the time of an AT_TIMESTAMP position).
    not_before: Option<SystemTime>,
    /// Until the first record is read, records below this sequence number
    /// are skipped (an AT_SEQUENCE_NUMBER continuation).
    not_below: Option<ExtendedSequenceNumber>,
}

impl Resume {
    pub(crate) fn new(initial: StartingPosition) -> Self {
        Self {
            initial,
            latest_at: None,
            continuation: None,
            not_before: None,
            not_below: None,
        }
    }

    /// Remembers a fan-out subscription's continuation.
    pub(crate) fn set_continuation(&mut self, continuation: &str) {
        if !continuation.is_empty() {
            self.continuation = Some(continuation.to_owned());
        }
    }

    /// The position to ask for, given the last record read (`after`).
    pub(crate) fn position(
        &mut self,
        after: &ExtendedSequenceNumber,
    ) -> (ShardIteratorType, Option<String>, Option<DateTime>) {
        let at_timestamp = |this: &mut Self, at: SystemTime| {
            this.not_before = Some(at);
            (
                ShardIteratorType::AtTimestamp,
                None,
                Some(DateTime::from(at)),
            )
        };
        match (after.position(), self.initial) {
            (Position::Sequence(sequence), _) => (
                ShardIteratorType::AtSequenceNumber,
                Some(sequence.clone()),
                None,
            ),
            (_, _) if self.continuation.is_some() => {
                self.not_below = self
                    .continuation
                    .as_deref()
                    .map(|c| ExtendedSequenceNumber::new(c, 0));
                (
                    ShardIteratorType::AtSequenceNumber,
                    self.continuation.clone(),
                    None,
                )
            }
            (Position::Latest, _) => match self.latest_at {
                Some(at) => at_timestamp(self, at),
                None => {
                    let now = SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default();
                    self.latest_at =
                        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs()));
                    (ShardIteratorType::Latest, None, None)
                }
            },
            (Position::AtTimestamp, StartingPosition::AtTimestamp(at)) => at_timestamp(self, at),
            _ => (ShardIteratorType::TrimHorizon, None, None),
        }
    }

    /// Whether `record`, arriving at `arrival`, lies before the position
    /// asked for (only asked until the first record is read).
    fn is_before_start(&self, record: &ConsumerRecord, arrival: Option<SystemTime>) -> bool {
        // Whole seconds: some back ends keep arrival times in seconds (and
        // Kinesis itself never returns a record before the position).
        let seconds = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        let early = match (self.not_before, arrival) {
            (Some(limit), Some(arrival)) => seconds(arrival) < seconds(limit),
            _ => false,
        };
        early
            || self
                .not_below
                .as_ref()
                .is_some_and(|floor| record.extended_sequence_number() < *floor)
    }
}

/// Deaggregates `records`, drops what is at or before `after` (a resume in
/// the middle of an aggregate) and, until a first record is read, what lies
/// before the position `resume` asked for; moves `after` to the last record
/// kept.
pub(crate) fn convert(
    records: &[aws_sdk_kinesis::types::Record],
    after: &mut ExtendedSequenceNumber,
    resume: &Resume,
    shard_id: &str,
    hash_range: Option<(u128, u128)>,
) -> Vec<ConsumerRecord> {
    let mut started = after.sequence_number().is_some();
    let mut out = Vec::new();
    for record in records {
        let arrival = record
            .approximate_arrival_timestamp()
            .and_then(|t| SystemTime::try_from(*t).ok());
        let data = Bytes::copy_from_slice(record.data().as_ref());
        for user in deaggregate(record.partition_key().unwrap_or_default(), None, data) {
            let consumer = ConsumerRecord {
                sequence_number: record.sequence_number().to_owned(),
                sub_sequence_number: user.sub_sequence_number,
                aggregated: user.aggregated,
                partition_key: user.partition_key,
                explicit_hash_key: user.explicit_hash_key,
                data: user.data,
                approximate_arrival: arrival,
            };
            if after.sequence_number().is_some() && consumer.extended_sequence_number() <= *after {
                continue;
            }
            if !started && resume.is_before_start(&consumer, arrival) {
                continue;
            }
            started = true;
            if consumer.aggregated {
                check_range(&consumer, shard_id, hash_range);
            }
            out.push(consumer);
        }
    }
    if let Some(last) = out.last() {
        *after = last.extended_sequence_number();
    }
    out
}

fn check_range(record: &ConsumerRecord, shard_id: &str, hash_range: Option<(u128, u128)>) {
    let Some((start, end)) = hash_range else {
        return;
    };
    let explicit = record
        .explicit_hash_key
        .as_deref()
        .and_then(|k| parse_explicit_hash_key(k).ok());
    let hash = hash_key(&record.partition_key, explicit);
    if hash < start || hash > end {
        metrics::counter!(OUT_OF_RANGE_SUB_RECORDS).increment(1);
        tracing::warn!(shard = %shard_id, sequence = %record.sequence_number,
            sub = record.sub_sequence_number, "sub-record outside the shard's hash range (delivered)");
    }
}

/// A shard's children: as Kinesis named them at the shard's end, else from
/// ListShards (emulators and older APIs do not name them).
pub(crate) async fn children(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shard_id: &str,
    named: Vec<String>,
) -> Result<Vec<String>, aws_sdk_kinesis::Error> {
    if !named.is_empty() {
        return Ok(named);
    }
    let shards = kpl::shard_map::list_shards(client, stream).await?;
    Ok(shards
        .iter()
        .filter(|s| {
            s.parent_shard_id() == Some(shard_id) || s.adjacent_parent_shard_id() == Some(shard_id)
        })
        .map(|s| s.shard_id().to_owned())
        .collect())
}
