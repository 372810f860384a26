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
pub mod fleet;
pub mod lease;
mod lease_coordinator;
pub mod metrics;
pub mod processor;
pub mod retrieval;
pub mod scheduler;
mod shard_consumer;
mod shard_sync;
pub mod timeouts;

/// Most bytes kept of each message in an [`error_chain`]: services echo the
/// offending value in their messages, which could be megabytes.
pub const MAX_CAUSE_MESSAGE: usize = 1024;

/// An error's message followed by those of its sources, `": "`-separated:
/// the SDK's top-level messages alone ("service error") say too little.
/// Each message longer than [`MAX_CAUSE_MESSAGE`] bytes keeps its start and
/// its end, where services say what failed
/// ([`kpl::error::elide_middle`]).
///
/// ```
/// let error = std::io::Error::other("disk full");
/// assert_eq!(kcl::error_chain(&error), "disk full");
/// let error = std::io::Error::other(format!("Value '{}' is too long", "x".repeat(5_000)));
/// let chain = kcl::error_chain(&error);
/// assert!(chain.len() <= kcl::MAX_CAUSE_MESSAGE && chain.ends_with("is too long"));
/// ```
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = String::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&kpl::error::elide_middle(
            &cause.to_string(),
            MAX_CAUSE_MESSAGE,
        ));
        next = cause.source();
    }
    message
}
