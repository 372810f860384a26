//! Reading the archive back: list the objects of a time range (only the key
//! prefixes the range needs), download them with bounded concurrency, and
//! yield their records in per-shard sequence order, selected by time,
//! stream, shard and sequence range.
//!
//! ```no_run
//! # async fn demo(s3: aws_sdk_s3::Client) -> Result<(), connector_s3::archive::ArchiveError> {
//! use connector_s3::archive::{ArchiveItem, ArchiveReader, Selection};
//! use connector_s3::key::{DEFAULT_TEMPLATE, KeyTemplate};
//! let reader = ArchiveReader::new(s3, "my-archive", KeyTemplate::new("orders", DEFAULT_TEMPLATE)?);
//! let selection = Selection {
//!     from: Some("2026-01-20T00:00:00Z".parse().unwrap()),
//!     to: Some("2026-01-21T00:00:00Z".parse().unwrap()),
//!     ..Default::default()
//! };
//! let objects = reader.list(&selection).await?;
//! let mut items = reader.read(objects, selection);
//! while let Some(item) = items.recv().await {
//!     if let ArchiveItem::Record(line) = item {
//!         println!("{}", line.line);
//!     }
//! }
//! # Ok(()) }
//! ```

mod list;
mod read;
mod select;

use std::sync::Arc;

pub use select::Selection;

use crate::key::{KeyTemplate, KeyTemplateError, ParsedKey};
use crate::transform::JsonRecord;

/// Archive errors.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Listing or downloading failed.
    #[error("{operation} {key}: {message}")]
    S3 {
        /// What was attempted.
        operation: &'static str,
        /// The key or prefix.
        key: String,
        /// The error and its causes.
        message: String,
    },
    /// An object does not decompress (corrupt or truncated).
    #[error("{key}: cannot decompress: {source}")]
    Decompress {
        /// The object.
        key: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a JSON record.
    #[error("{key}: line {line}: not a JSON record: {source}")]
    Line {
        /// The object.
        key: String,
        /// The 1-based line number.
        line: u64,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The key template is unusable.
    #[error(transparent)]
    KeyTemplate(#[from] KeyTemplateError),
}

/// An archived object.
#[derive(Debug, Clone)]
pub struct ArchivedObject {
    /// Its key.
    pub key: String,
    /// Its size in bytes (compressed).
    pub size: u64,
    /// The fields read back from its key.
    pub parsed: ParsedKey,
}

/// One selected record.
#[derive(Debug, Clone)]
pub struct ArchivedLine {
    /// The object it came from.
    pub key: Arc<str>,
    /// The line as stored (without its newline).
    pub line: String,
    /// The line, parsed.
    pub record: JsonRecord,
}

/// What [`ArchiveReader::read`] yields, in order.
#[derive(Debug)]
pub enum ArchiveItem {
    /// A record the selection matched.
    Record(ArchivedLine),
    /// An object was read to its end.
    ObjectDone {
        /// The object.
        key: String,
        /// Its size (compressed).
        bytes: u64,
        /// Lines it held.
        lines: u64,
    },
    /// An object could not be read; none of its records were yielded unless
    /// the damage was found only after them (a bad line in an object that
    /// decompresses).
    ObjectFailed {
        /// The object.
        key: String,
        /// Its size (compressed).
        bytes: u64,
        /// Why.
        error: ArchiveError,
    },
}

/// Reads an archive written with a key template.
#[derive(Debug, Clone)]
pub struct ArchiveReader {
    client: aws_sdk_s3::Client,
    bucket: String,
    template: KeyTemplate,
    concurrency: usize,
}

impl ArchiveReader {
    /// A reader of `bucket`, whose keys follow `template`.
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        template: KeyTemplate,
    ) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            template,
            concurrency: 8,
        }
    }

    /// Objects downloaded in parallel (memory: this many objects). Default: 8.
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }
}

pub(crate) use kcl::error_chain;
