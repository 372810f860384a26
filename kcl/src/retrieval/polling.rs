//! Polling retrieval with GetRecords.

use std::time::SystemTime;

use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use kpl::aggregation::deaggregate;
use kpl::hash_key::{hash_key, parse_explicit_hash_key};

use super::{ConsumerRecord, RetrievalError};
use crate::checkpoint::{ExtendedSequenceNumber, Position};

/// Metric: sub-records whose hash key lies outside their shard's range. The
/// Java KCL drops them silently; they are delivered here, and counted.
pub const OUT_OF_RANGE_SUB_RECORDS: &str = "kcl_out_of_range_sub_records_total";

/// Where a shard without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingPosition {
    /// The oldest record.
    TrimHorizon,
    /// After the newest record.
    Latest,
    /// At a timestamp.
    AtTimestamp(SystemTime),
}

/// One GetRecords worth of records.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Deaggregated records after the checkpoint, in order.
    pub records: Vec<ConsumerRecord>,
    /// How far behind the tip of the shard the reader is.
    pub millis_behind_latest: Option<i64>,
    /// The shard has ended; these are its children (empty if Kinesis did not
    /// name them and they could not be found).
    pub shard_end: Option<Vec<String>>,
}

/// Reads one shard from a checkpoint.
///
/// ```no_run
/// # async fn demo(client: aws_sdk_kinesis::Client) -> Result<(), kcl::retrieval::RetrievalError> {
/// use kcl::checkpoint::ExtendedSequenceNumber;
/// use kcl::retrieval::{ShardReader, StartingPosition};
/// let mut reader = ShardReader::new(client, "orders", "shardId-000000000000",
///     ExtendedSequenceNumber::TRIM_HORIZON, StartingPosition::TrimHorizon);
/// loop {
///     let batch = reader.next_batch().await?;
///     for record in &batch.records { println!("{}", record.extended_sequence_number()); }
///     if batch.shard_end.is_some() { break; }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ShardReader {
    client: aws_sdk_kinesis::Client,
    stream: String,
    shard_id: String,
    /// Everything at or before this has been processed.
    after: ExtendedSequenceNumber,
    initial: StartingPosition,
    iterator: Option<String>,
    started: bool,
    ended: bool,
    hash_range: Option<(u128, u128)>,
    limit: i32,
}

impl ShardReader {
    /// A reader of `shard_id` resuming after `checkpoint`; a sentinel
    /// checkpoint (TRIM_HORIZON, LATEST, AT_TIMESTAMP) starts at `initial`
    /// for AT_TIMESTAMP, or at the sentinel itself.
    pub fn new(
        client: aws_sdk_kinesis::Client,
        stream: impl Into<String>,
        shard_id: impl Into<String>,
        checkpoint: ExtendedSequenceNumber,
        initial: StartingPosition,
    ) -> Self {
        Self {
            client,
            stream: stream.into(),
            shard_id: shard_id.into(),
            after: checkpoint,
            initial,
            iterator: None,
            started: false,
            ended: false,
            hash_range: None,
            limit: 10_000,
        }
    }

    /// Also check each sub-record's hash key against the shard's range.
    pub fn with_hash_range(mut self, start: u128, end: u128) -> Self {
        self.hash_range = Some((start, end));
        self
    }

    /// Most Kinesis records per GetRecords (1 to 10,000). Default: 10,000.
    pub fn with_limit(mut self, limit: i32) -> Self {
        self.limit = limit.clamp(1, 10_000);
        self
    }

    fn error(&self, operation: &'static str, error: impl std::error::Error) -> RetrievalError {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        RetrievalError::Kinesis {
            operation,
            shard_id: self.shard_id.clone(),
            message,
        }
    }

    /// A shard iterator at the current position: AT_SEQUENCE_NUMBER of the
    /// last processed record (so a half-processed aggregate is read again
    /// and its processed sub-records skipped), or the starting position.
    async fn fresh_iterator(&self) -> Result<Option<String>, RetrievalError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(&self.shard_id);
        let request = match (self.after.position(), self.initial) {
            (Position::Sequence(sequence), _) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(sequence),
            (Position::Latest, _) => request.shard_iterator_type(ShardIteratorType::Latest),
            (Position::AtTimestamp, StartingPosition::AtTimestamp(at)) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(aws_sdk_kinesis::primitives::DateTime::from(at)),
            _ => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let out = request
            .send()
            .await
            .map_err(|e| self.error("GetShardIterator", e))?;
        Ok(out.shard_iterator)
    }

    /// Reads the next batch. After a batch with `shard_end`, returns empty
    /// batches with `shard_end` again.
    pub async fn next_batch(&mut self) -> Result<Batch, RetrievalError> {
        if self.ended {
            return Ok(Batch {
                shard_end: Some(Vec::new()),
                ..Default::default()
            });
        }
        if !self.started {
            self.iterator = self.fresh_iterator().await?;
            self.started = true;
        }
        let Some(iterator) = self.iterator.clone() else {
            self.ended = true;
            return Ok(Batch {
                shard_end: Some(self.find_children(Vec::new()).await?),
                ..Default::default()
            });
        };
        let out = match self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(self.limit)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_expired_iterator_exception()) =>
            {
                // Start again from the last processed record.
                self.iterator = self.fresh_iterator().await?;
                return Ok(Batch::default());
            }
            Err(e) => return Err(self.error("GetRecords", e)),
        };
        let mut records = Vec::new();
        for record in out.records() {
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
                // Skip what the checkpoint covers (resume mid-aggregate).
                if consumer.extended_sequence_number() <= self.after
                    && self.after.sequence_number().is_some()
                {
                    continue;
                }
                if consumer.aggregated {
                    self.check_range(&consumer);
                }
                records.push(consumer);
            }
        }
        if let Some(last) = records.last() {
            self.after = last.extended_sequence_number();
        }
        self.iterator = out.next_shard_iterator.clone();
        let shard_end = if self.iterator.is_none() {
            self.ended = true;
            let named = out
                .child_shards()
                .iter()
                .map(|c| c.shard_id().to_owned())
                .collect();
            Some(self.find_children(named).await?)
        } else {
            None
        };
        Ok(Batch {
            records,
            millis_behind_latest: out.millis_behind_latest,
            shard_end,
        })
    }

    fn check_range(&self, record: &ConsumerRecord) {
        let Some((start, end)) = self.hash_range else {
            return;
        };
        let explicit = record
            .explicit_hash_key
            .as_deref()
            .and_then(|k| parse_explicit_hash_key(k).ok());
        let hash = hash_key(&record.partition_key, explicit);
        if hash < start || hash > end {
            metrics::counter!(OUT_OF_RANGE_SUB_RECORDS).increment(1);
            tracing::warn!(shard = %self.shard_id, sequence = %record.sequence_number,
                sub = record.sub_sequence_number, "sub-record outside the shard's hash range (delivered)");
        }
    }

    /// The shard's children: as GetRecords named them, else from ListShards
    /// (emulators and older APIs do not name them).
    async fn find_children(&self, named: Vec<String>) -> Result<Vec<String>, RetrievalError> {
        if !named.is_empty() {
            return Ok(named);
        }
        let shards = kpl::shard_map::list_shards(&self.client, &self.stream)
            .await
            .map_err(|e| self.error("ListShards", e))?;
        Ok(shards
            .iter()
            .filter(|s| {
                s.parent_shard_id() == Some(self.shard_id.as_str())
                    || s.adjacent_parent_shard_id() == Some(self.shard_id.as_str())
            })
            .map(|s| s.shard_id().to_owned())
            .collect())
    }

    /// The position after the last record returned.
    pub fn position(&self) -> &ExtendedSequenceNumber {
        &self.after
    }
}
