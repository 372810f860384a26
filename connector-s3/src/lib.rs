//! `connector-s3` — archive Kinesis streams to S3.
//!
//! A pipeline, transformer → filter → durable disk buffer → emitter, that
//! runs as a `kcl` record processor and writes records to S3 as compressed,
//! newline-delimited journal files. A shard's checkpoint only moves past
//! records whose object is in S3, so a dead process or node loses nothing,
//! and object keys are deterministic, so nothing is archived twice.
//!
//! - [`connector`]: the Kinesis → S3 connector ([`connector::S3Connector`]).
//! - [`journal`]: the same buffer and upload machinery without Kinesis
//!   ([`journal::Journal`], s3-journal's shape).
//! - [`archive`]: reading the archive back by time range, stream, shard and
//!   sequence ([`archive::ArchiveReader`]); `connector-s3 replay` is built on it.
//! - Stages: [`transform`], [`filter`], [`buffer`], [`emit`]; with
//!   [`compress`] and [`key`] (object key templates).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod archive;
pub mod buffer;
pub mod compress;
pub mod connector;
pub mod emit;
pub mod filter;
pub mod journal;
pub mod key;
pub mod metrics;
pub mod preflight;
pub mod retry;
pub mod transform;
