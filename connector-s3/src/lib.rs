//! `connector-s3` — archive Kinesis streams to S3.
//!
//! A pipeline (transformer → filter → durable disk buffer → emitter) that runs
//! as a `kcl` record processor and writes records to S3 as compressed,
//! newline-delimited journal files. A shard's checkpoint only moves past
//! records whose object is in S3, so a dead process or node loses nothing.
//!
//! This crate is being built on the `kpl` and `kcl` crates; it exposes nothing
//! yet.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
