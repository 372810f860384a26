//! The producer's core, free of I/O: records in, PutRecords requests out,
//! responses in, results out. The async driver ([`crate::producer`]) feeds it
//! and the benchmark drives it directly.
//!
//! The path of a user record:
//!
//! ```text
//! add ─► aggregator of its predicted shard ─► shard queue (rate limiter)
//!     ─► collector of its stream ─► request ─► response ─► result
//!                       ▲                                     │
//!                       └──────────── retry (backoff) ◄───────┘
//! ```
//!
//! - [`types`]: what flows (accepted records, entries, requests, outcomes);
//! - [`shard`]: per-shard aggregation and the queue in front of the limiter;
//! - [`collector`]: per-stream collection into PutRecords requests;
//! - [`core`]: the state machine that moves records between them.

mod collector;
mod core;
mod shard;
mod types;

pub(crate) use self::core::Core;
pub(crate) use self::types::{EntryOutcome, Pending, Request, RequestOutcome};

#[cfg(test)]
mod tests;
