//! What polling and enhanced fan-out share: turning Kinesis records into
//! deaggregated consumer records after a position, and finding a shard's
//! children at its end.

use std::time::SystemTime;

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

/// Where reading resumes: AT_SEQUENCE_NUMBER of the last processed record (a
/// half-processed aggregate is read again and its processed sub-records
/// skipped by [`convert`]), or the starting position for a sentinel.
pub(crate) fn resume_at(
    after: &ExtendedSequenceNumber,
    initial: StartingPosition,
) -> (ShardIteratorType, Option<String>, Option<DateTime>) {
    match (after.position(), initial) {
        (Position::Sequence(sequence), _) => (
            ShardIteratorType::AtSequenceNumber,
            Some(sequence.clone()),
            None,
        ),
        (Position::Latest, _) => (ShardIteratorType::Latest, None, None),
        (Position::AtTimestamp, StartingPosition::AtTimestamp(at)) => (
            ShardIteratorType::AtTimestamp,
            None,
            Some(DateTime::from(at)),
        ),
        _ => (ShardIteratorType::TrimHorizon, None, None),
    }
}

/// Deaggregates `records`, drops what is at or before `after` (a resume in
/// the middle of an aggregate), and moves `after` to the last record kept.
pub(crate) fn convert(
    records: &[aws_sdk_kinesis::types::Record],
    after: &mut ExtendedSequenceNumber,
    shard_id: &str,
    hash_range: Option<(u128, u128)>,
) -> Vec<ConsumerRecord> {
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
