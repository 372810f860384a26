//! The KPL aggregation wire format: many user records in one Kinesis record.
//!
//! ```text
//! [F3 89 9A C2] [protobuf AggregatedRecord] [MD5 of the protobuf bytes, 16 B]
//! ```
//!
//! Byte-compatible with the AWS KPL, the Java KCL's deaggregator and the
//! `aws-kinesis-agg` libraries: key tables are deduplicated, the explicit hash
//! key index is written only for records that carry an explicit hash key, and
//! an aggregate of one record is sent as the plain record.
//!
//! [`AggregateBuilder`] encodes, [`decode_aggregate`] / [`deaggregate`] decode.

mod decode;
mod encode;
pub mod proto;
mod wire;

pub use decode::{DeaggregatedRecord, MAX_KEY_BYTES, NotAggregated, deaggregate, decode_aggregate};
pub use encode::{AGGREGATE_OVERHEAD, AggregateBuilder, KinesisRecord};

/// The four bytes every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Length of the MD5 digest that ends every aggregated record.
pub const DIGEST_LEN: usize = 16;

#[cfg(test)]
mod tests;
