//! `kcl` — a native Rust Kinesis consumer.
//!
//! What the AWS Kinesis Client Library gives Java applications: workers share
//! a stream's shards through leases kept in DynamoDB (in the same table schema
//! as the Java KCL 2.x, so an existing application can switch over), checkpoint
//! their progress with sub-sequence numbers, finish parent shards before their
//! children, and hand user code deaggregated records through a
//! `RecordProcessor` trait.
//!
//! This release provides deaggregation of Kinesis records ([`deaggregate`],
//! from the `kpl` crate's implementation of the wire format); the lease-based
//! scheduler is being built on top of it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use kpl::aggregation::{DeaggregatedRecord, NotAggregated, deaggregate};
