//! The shard consumer: one task per held lease that reads the shard (through
//! the read-ahead) and drives the processor — `initialize`, then
//! `process_records` batch by batch, and `shard_ended`, `lease_lost` or
//! `shutdown_requested` at the end (the Java KCL's `ShardConsumer`).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use std::cmp::Ordering;

use crate::checkpoint::{ExtendedSequenceNumber, compare_positions};
use crate::lease::HeldLease;
use crate::metrics as m;
use crate::processor::{
    Checkpointer, End, InitializationInput, ProcessRecordsInput, RecordProcessor,
};
use crate::retrieval::{ConsumerRecord, FanOutReader, Prefetcher, ShardReader, Source};
use crate::scheduler::ConsumerConfig;

/// Reads in a row failing with an error no retry fixes (a deleted stream,
/// denied access: [`crate::retrieval::permanent_cause`]) before the shard's
/// processor is stopped (`lease_lost`) and its lease released.
pub(crate) const PERMANENT_ATTEMPTS: u32 = 5;

/// Why the scheduler stops a shard consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Keep going.
    Run,
    /// The lease was lost: call `lease_lost`, stop.
    LeaseLost,
    /// Graceful shutdown: call `shutdown_requested`, stop.
    Shutdown,
}

/// What a shard task needs besides its processor.
pub(crate) struct ShardContext {
    pub(crate) lease: Arc<HeldLease>,
    pub(crate) kinesis: aws_sdk_kinesis::Client,
    pub(crate) config: ConsumerConfig,
    pub(crate) stream: String,
    pub(crate) consumer_arn: Option<String>,
}

/// Runs one shard's processor until the shard ends, the lease is lost, or
/// the worker shuts down.
pub(crate) async fn run<P: RecordProcessor>(
    mut processor: P,
    context: ShardContext,
    mut stop: watch::Receiver<Stop>,
) {
    let ShardContext {
        lease,
        kinesis,
        config,
        stream,
        consumer_arn,
    } = context;
    let snapshot = lease.snapshot();
    let shard_id = snapshot.shard().to_owned();
    if snapshot.checkpoint == ExtendedSequenceNumber::SHARD_END {
        return;
    }
    processor
        .initialize(InitializationInput {
            stream_name: stream.clone(),
            shard_id: shard_id.clone(),
            extended_sequence_number: snapshot.checkpoint.clone(),
            pending_checkpoint: snapshot
                .pending_checkpoint
                .clone()
                .map(|p| (p, snapshot.pending_checkpoint_state.clone())),
        })
        .await;
    let hash_range = snapshot
        .hash_key_range
        .as_ref()
        .and_then(|(start, end)| Some((start.parse::<u128>().ok()?, end.parse::<u128>().ok()?)));
    let source = match consumer_arn {
        Some(arn) => {
            let mut reader = FanOutReader::new(
                kinesis,
                &stream,
                arn,
                &shard_id,
                snapshot.checkpoint.clone(),
                config.initial_position,
            );
            if let Some((start, end)) = hash_range {
                reader = reader.with_hash_range(start, end);
            }
            Source::FanOut(Box::new(reader))
        }
        None => {
            let mut reader = ShardReader::new(
                kinesis,
                &stream,
                &shard_id,
                snapshot.checkpoint.clone(),
                config.initial_position,
            )
            .with_limit(config.max_records);
            if let Some((start, end)) = hash_range {
                reader = reader.with_hash_range(start, end);
            }
            Source::Polling(reader)
        }
    };
    let mut prefetcher = Prefetcher::spawn(
        source,
        config.max_prefetch_records,
        config.max_prefetch_bytes,
        config.idle_time_between_reads,
    );
    let mut checkpointer = Checkpointer::new(lease.clone(), snapshot.checkpoint.clone());
    let mut order = DeliveryOrder::new(&shard_id, &snapshot.checkpoint);
    let mut permanent_in_a_row = 0;
    loop {
        let state = *stop.borrow();
        match state {
            Stop::Run => {}
            Stop::LeaseLost => {
                processor.lease_lost().await;
                return;
            }
            Stop::Shutdown => {
                processor.shutdown_requested(&mut checkpointer).await;
                return;
            }
        }
        let next = tokio::select! {
            next = prefetcher.next() => next,
            changed = stop.changed() => {
                if changed.is_err() {
                    // The scheduler is gone: stop as for a lost lease.
                    processor.lease_lost().await;
                    return;
                }
                continue;
            }
        };
        let mut prefetched = match next {
            Some(Ok(prefetched)) => {
                permanent_in_a_row = 0;
                prefetched
            }
            Some(Err(error)) => {
                match error.permanent() {
                    Some(fix) => {
                        permanent_in_a_row += 1;
                        if permanent_in_a_row >= PERMANENT_ATTEMPTS {
                            // Released for others (or for this worker after
                            // the release cooldown) instead of held silently.
                            metrics::counter!(m::PERMANENT_ERRORS).increment(1);
                            tracing::error!(shard = %shard_id, %error, fix,
                                "reading the shard keeps failing with an error no retry fixes; its lease is released");
                            processor.lease_lost().await;
                            return;
                        }
                        tracing::warn!(shard = %shard_id, %error, attempt = permanent_in_a_row, "reading the shard failed");
                    }
                    None => {
                        permanent_in_a_row = 0;
                        tracing::warn!(shard = %shard_id, %error, "reading the shard failed");
                    }
                }
                continue;
            }
            // The read-ahead task ended without a shard end: cannot happen
            // unless it panicked; stop this shard, its lease will be retaken.
            None => return,
        };
        // Fencing: a lease not renewed in time is given up before another
        // worker can take it, and no record is delivered meanwhile.
        if lease.is_fenced(Instant::now()) {
            tracing::warn!(shard = %shard_id, "lease not renewed in time: delivery stops");
            processor.lease_lost().await;
            return;
        }
        // Holding `prefetched` keeps its share of the read-ahead bounds until
        // the batch has been processed.
        let records = order.keep_new(std::mem::take(&mut prefetched.batch.records));
        let batch = &prefetched.batch;
        if let Some(millis) = batch.millis_behind_latest {
            metrics::gauge!(m::BEHIND_LATEST, "shard" => shard_id.clone())
                .set(millis as f64 / 1000.0);
        }
        if let Some(last) = records.last() {
            metrics::counter!(m::RECORDS_PROCESSED).increment(records.len() as u64);
            checkpointer.delivered(last.extended_sequence_number());
            lease.record_delivered(records.iter().map(|r| r.data.len() as u64).sum());
        }
        if !records.is_empty() || config.process_empty_batches {
            let input = ProcessRecordsInput {
                records,
                millis_behind_latest: batch.millis_behind_latest,
            };
            processor.process_records(input, &mut checkpointer).await;
        }
        // A checkpoint that found another owner, or a processor that gave
        // its lease back, ends this shard here; the scheduler then releases
        // the lease (if still ours) for a new processor to resume at the
        // checkpoint.
        match checkpointer.end() {
            Some(End::LeaseLost) => {
                tracing::info!(shard = %shard_id, "a checkpoint found the lease taken");
                processor.lease_lost().await;
                return;
            }
            Some(End::Released) => {
                tracing::info!(shard = %shard_id, "the processor released its lease");
                return;
            }
            None => {}
        }
        if batch.shard_end.is_some() {
            checkpointer.set_shard_ended();
            processor.shard_ended(&mut checkpointer).await;
            return;
        }
        drop(prefetched);
    }
}

/// Guarantees a processor sees a shard's records in strictly increasing
/// (sequence, sub-sequence) order, each at most once per lease, whatever a
/// back end or a renewed iterator hands over again: a record at or before
/// the last one delivered (or the checkpoint the lease started from) is
/// dropped, logged and counted in [`m::REPEATED_RECORDS_DROPPED`].
pub(crate) struct DeliveryOrder {
    shard_id: String,
    /// The last position delivered (sequence, sub-sequence).
    last: Option<(String, u64)>,
}

impl DeliveryOrder {
    pub(crate) fn new(shard_id: &str, checkpoint: &ExtendedSequenceNumber) -> Self {
        Self {
            shard_id: shard_id.to_owned(),
            last: checkpoint
                .sequence_number()
                .map(|sequence| (sequence.to_owned(), checkpoint.sub_sequence_number())),
        }
    }

    /// The records after the last one delivered, in order; compacted in
    /// place, without an allocation per record (this is every record's path).
    pub(crate) fn keep_new(&mut self, mut records: Vec<ConsumerRecord>) -> Vec<ConsumerRecord> {
        let newer = |record: &ConsumerRecord, sequence: &str, sub: u64| {
            compare_positions(
                &record.sequence_number,
                record.sub_sequence_number,
                sequence,
                sub,
            ) == Ordering::Greater
        };
        let before = records.len();
        let mut kept = 0usize;
        for read in 0..records.len() {
            let keep = match kept.checked_sub(1) {
                Some(previous) => {
                    let previous = &records[previous];
                    newer(
                        &records[read],
                        &previous.sequence_number,
                        previous.sub_sequence_number,
                    )
                }
                None => self
                    .last
                    .as_ref()
                    .is_none_or(|(sequence, sub)| newer(&records[read], sequence, *sub)),
            };
            if keep {
                records.swap(kept, read);
                kept += 1;
            }
        }
        records.truncate(kept);
        if let Some(last) = records.last() {
            self.last = Some((last.sequence_number.clone(), last.sub_sequence_number));
        }
        let dropped = before - kept;
        if dropped > 0 {
            metrics::counter!(m::REPEATED_RECORDS_DROPPED, "shard" => self.shard_id.clone())
                .increment(dropped as u64);
            tracing::warn!(shard = %self.shard_id, dropped, last = ?self.last,
                "records at or before a position already delivered were handed over again; dropped");
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn record(sequence: &str, sub: u64) -> ConsumerRecord {
        ConsumerRecord {
            sequence_number: sequence.to_owned(),
            sub_sequence_number: sub,
            aggregated: sub > 0,
            partition_key: "k".into(),
            explicit_hash_key: None,
            data: Bytes::new(),
            approximate_arrival: None,
        }
    }

    #[test]
    fn records_handed_over_again_are_dropped() {
        let mut order = DeliveryOrder::new("shard", &ExtendedSequenceNumber::TRIM_HORIZON);
        let first = order.keep_new(vec![record("10", 0), record("11", 0)]);
        assert_eq!(first.len(), 2);
        let again = order.keep_new(vec![record("10", 0), record("11", 0), record("12", 0)]);
        assert_eq!(
            again
                .iter()
                .map(|r| r.sequence_number.as_str())
                .collect::<Vec<_>>(),
            ["12"]
        );
        // Out of order within a batch: only increasing positions pass.
        let shuffled = order.keep_new(vec![record("14", 1), record("13", 0), record("14", 2)]);
        assert_eq!(
            shuffled
                .iter()
                .map(|r| (r.sequence_number.as_str(), r.sub_sequence_number))
                .collect::<Vec<_>>(),
            [("14", 1), ("14", 2)]
        );
    }

    #[test]
    fn nothing_at_or_before_the_starting_checkpoint_passes() {
        let mut order = DeliveryOrder::new("shard", &ExtendedSequenceNumber::new("20", 3));
        let kept = order.keep_new(vec![record("20", 3), record("20", 4), record("21", 0)]);
        assert_eq!(kept.len(), 2);
    }
}
