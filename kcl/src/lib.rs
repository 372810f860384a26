//! `kcl` — a native Rust Kinesis consumer.
//!
//! What the AWS Kinesis Client Library gives Java applications: workers share
//! a stream's shards through leases kept in DynamoDB (in the same table schema
//! as the Java KCL 2.x, so an existing application can switch over), checkpoint
//! their progress with sub-sequence numbers, finish parent shards before their
//! children, and hand user code deaggregated records through a
//! `RecordProcessor` trait.
//!
//! Modules: positions with sub-sequence numbers and the KCL's sentinels
//! ([`checkpoint`]), the lease table with the Java KCL's item schema and
//! conditional operations ([`lease`]), polling and enhanced fan-out reads with
//! a bounded read-ahead ([`retrieval`]), the [`processor::RecordProcessor`]
//! trait and its checkpointer ([`processor`]), and the scheduler that takes,
//! renews and balances leases and runs one processor per held shard
//! ([`scheduler`]). Deaggregation ([`deaggregate`]) is the `kpl` crate's
//! implementation of the wire format.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use kpl::aggregation::{DeaggregatedRecord, NotAggregated, deaggregate};

pub mod checkpoint;
pub mod lease;
pub mod metrics;
pub mod processor;
pub mod retrieval;
pub mod scheduler;
mod shard_consumer;
mod shard_sync;

/// An error's message followed by those of its sources, `": "`-separated:
/// the SDK's top-level messages alone ("service error") say too little.
///
/// ```
/// let error = std::io::Error::other("disk full");
/// assert_eq!(kcl::error_chain(&error), "disk full");
/// ```
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
