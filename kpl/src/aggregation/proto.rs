//! The protobuf messages of the KPL aggregation format, derived with prost.
//!
//! The schema (proto2) as published by awslabs in `aggregation-format.md`:
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! message Tag { required string key = 1; optional string value = 2; }
//! ```
//!
//! These types are what the decoder parses into. The encoder writes the same
//! bytes incrementally (see [`super::encode`]) so that it can account for the
//! size of an aggregate exactly as records are added; a unit test checks that
//! both produce identical bytes.

/// An aggregated Kinesis record: key tables plus the user records.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AggregatedRecord {
    /// Deduplicated partition keys, referenced by index from each record.
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    /// Deduplicated explicit hash keys (decimal strings), referenced by index.
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    /// The user records, in the order they were added.
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<Record>,
}

/// One user record inside an [`AggregatedRecord`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    /// Index into [`AggregatedRecord::partition_key_table`].
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    /// Index into [`AggregatedRecord::explicit_hash_key_table`], present only
    /// when the user gave an explicit hash key.
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    /// The user's payload.
    #[prost(bytes = "bytes", required, tag = "3")]
    pub data: bytes::Bytes,
    /// Key/value tags (written by no current producer, kept for fidelity).
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

/// A key/value tag on a [`Record`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tag {
    /// Tag key.
    #[prost(string, required, tag = "1")]
    pub key: String,
    /// Optional tag value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}
