//! Polling retrieval with GetRecords.

use std::time::SystemTime;

use super::convert::{Resume, children, convert};
use super::{ConsumerRecord, RetrievalError};
use crate::checkpoint::ExtendedSequenceNumber;
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
    resume: Resume,
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
            resume: Resume::new(initial),
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

    fn error(
        &self,
        operation: &'static str,
        error: impl std::error::Error + aws_sdk_kinesis::error::ProvideErrorMetadata,
    ) -> RetrievalError {
        RetrievalError::kinesis(operation, &self.shard_id, error)
    }

    /// A shard iterator at the current position: AT_SEQUENCE_NUMBER of the
    /// last processed record (so a half-processed aggregate is read again
    /// and its processed sub-records skipped), or the starting position
    /// (LATEST only once: see [`Resume`]).
    async fn fresh_iterator(&mut self) -> Result<Option<String>, RetrievalError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(&self.shard_id);
        let (kind, sequence, timestamp) = self.resume.position(&self.after);
        let request = request
            .shard_iterator_type(kind)
            .set_starting_sequence_number(sequence)
            .set_timestamp(timestamp);
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
        let records = convert(
            out.records(),
            &mut self.after,
            &self.resume,
            &self.shard_id,
            self.hash_range,
        );

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

    /// The shard's children: as GetRecords named them, else from ListShards
    /// (emulators and older APIs do not name them).
    async fn find_children(&self, named: Vec<String>) -> Result<Vec<String>, RetrievalError> {
        children(&self.client, &self.stream, &self.shard_id, named)
            .await
            .map_err(|e| self.error("ListShards", e))
    }

    /// The position after the last record returned.
    pub fn position(&self) -> &ExtendedSequenceNumber {
        &self.after
    }
}
