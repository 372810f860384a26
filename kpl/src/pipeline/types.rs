//! What flows through the core: accepted records, Kinesis records on their
//! way, requests and their outcomes.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::aggregation::KinesisRecord;
use crate::error::RecordError;
use crate::record::{Attempt, UserRecord, UserRecordResult};

/// Where a record's result goes.
pub(crate) type Reply = oneshot::Sender<Result<UserRecordResult, RecordError>>;

/// A user record the producer has accepted and not yet completed.
#[derive(Debug)]
pub(crate) struct Pending {
    pub record: UserRecord,
    /// Filled in by [`Core::add`].
    pub hash_key: u128,
    pub arrival: Instant,
    pub expires: Instant,
    /// When the last attempt ended (or the record arrived).
    pub since: Instant,
    pub attempts: Vec<Attempt>,
    pub reply: Option<Reply>,
    pub epoch: u64,
    /// Backpressure permits, released when the record completes.
    pub _permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

/// One Kinesis record on its way: the encoded record and its user records.
#[derive(Debug)]
pub(crate) struct Entry {
    pub record: KinesisRecord,
    pub pendings: Vec<Pending>,
    /// Shard the producer predicted, when it had a shard map.
    pub shard: Option<Arc<str>>,
    pub aggregated: bool,
}

impl Entry {
    /// Bytes Kinesis counts: data plus partition key.
    pub(crate) fn size(&self) -> usize {
        self.record.data.len() + self.record.partition_key.len()
    }
    /// When the first of its user records expires.
    pub(crate) fn earliest_expiry(&self) -> Option<Instant> {
        self.pendings.iter().map(|p| p.expires).min()
    }
}

/// A PutRecords call to make.
#[derive(Debug)]
pub(crate) struct Request {
    pub stream: Arc<str>,
    pub entries: Vec<Entry>,
    pub started: Option<Instant>,
}

impl Request {
    /// The entries of the PutRecords call, as the SDK takes them. The encoded
    /// records are moved out (an aggregate's bytes without a copy): after the
    /// call, only the user records behind each entry matter.
    pub fn sdk_entries(
        &mut self,
    ) -> Result<
        Vec<aws_sdk_kinesis::types::PutRecordsRequestEntry>,
        aws_sdk_kinesis::error::BuildError,
    > {
        self.entries
            .iter_mut()
            .map(|entry| {
                let record = &mut entry.record;
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .data(aws_sdk_kinesis::primitives::Blob::new(Vec::from(
                        std::mem::take(&mut record.data),
                    )))
                    .partition_key(std::mem::take(&mut record.partition_key))
                    .set_explicit_hash_key(record.explicit_hash_key.take())
                    .build()
            })
            .collect()
    }
}

/// What Kinesis answered for one entry.
#[derive(Debug, Clone)]
pub(crate) enum EntryOutcome {
    Put {
        sequence_number: String,
        shard_id: String,
    },
    Failed {
        code: String,
        message: String,
    },
}

/// What became of a whole request.
#[derive(Debug, Clone)]
pub(crate) enum RequestOutcome {
    /// The call returned; one outcome per entry, in order.
    Entries(Vec<EntryOutcome>),
    /// The call failed as a whole.
    Failed {
        code: String,
        message: String,
        retryable: bool,
    },
}

/// An entry of one user record, sent as it is.
pub(crate) fn single_entry(pending: Pending, shard: Option<Arc<str>>) -> Entry {
    let record = &pending.record;
    let kinesis = KinesisRecord {
        partition_key: record.partition_key().to_owned(),
        explicit_hash_key: record.explicit_hash_key().map(|k| k.to_string()),
        data: record.data().clone(),
        user_records: 1,
    };
    Entry {
        record: kinesis,
        pendings: vec![pending],
        shard,
        aggregated: false,
    }
}
