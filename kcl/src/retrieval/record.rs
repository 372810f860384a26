//! The record a processor sees.

use std::time::SystemTime;

use bytes::Bytes;

use crate::checkpoint::ExtendedSequenceNumber;

/// One user record, deaggregated, with everything needed to checkpoint it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Sequence number of the Kinesis record that carried it.
    pub sequence_number: String,
    /// Index within its aggregate; 0 for a plain record.
    pub sub_sequence_number: u64,
    /// Whether it came out of a KPL aggregate.
    pub aggregated: bool,
    /// The user's partition key.
    pub partition_key: String,
    /// The user's explicit hash key, when the aggregate carried one.
    pub explicit_hash_key: Option<String>,
    /// The payload.
    pub data: Bytes,
    /// When Kinesis received the (outer) record.
    pub approximate_arrival: Option<SystemTime>,
}

impl ConsumerRecord {
    /// The position to checkpoint at this record.
    pub fn extended_sequence_number(&self) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::new(self.sequence_number.clone(), self.sub_sequence_number)
    }
}
