//! `kpl` — a native Rust Kinesis producer.
//!
//! What the AWS Kinesis Producer Library gives Java services, without a JVM or
//! a native child process: user records are aggregated in the KPL format (so
//! every Kinesis consumer that understands the KPL reads them), grouped per
//! predicted shard, collected into `PutRecords` calls, rate-limited per shard
//! and retried with backoff until their time to live runs out, behind a
//! bounded buffer that pushes back on the caller instead of growing.
//!
//! - [`Producer`]: `add_user_record` returns a future of the record's result
//!   (sequence number, sub-sequence number, shard, attempts);
//! - [`aggregation`]: the wire format, also used by the `kcl` consumer;
//! - [`hash_key`]: how records map to shards;
//! - [`limits`]: the size limits of a stream, as Kinesis counts them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aggregation;
#[doc(hidden)]
pub mod bench;
pub mod config;
pub mod error;
pub mod hash_key;
pub mod limiter;
pub mod limits;
pub mod metrics;
mod pipeline;
mod producer;
pub mod record;
pub mod shard_map;

pub use config::ProducerConfig;
pub use error::{AddError, BuildError, ProducerError, RecordError, ValidationError};
pub use producer::{PendingResult, Producer, ProducerBuilder};
pub use record::{Attempt, AttemptError, UserRecord, UserRecordResult};
