//! The buffer stage: where transformed, compressed batches wait until their
//! object is emitted.
//!
//! [`DiskBuffer`] is the default: a write-ahead log of segment files, one
//! segment per future object, with a checksum per entry and a group-commit
//! fsync per batch, so that an accepted batch survives the process.
//! [`MemoryBuffer`] keeps batches in memory, for users who re-read their
//! source after a crash anyway and want no disk; the connector takes it, or
//! a buffer of the user's, through `S3ConnectorBuilder::buffer`.

mod disk;
mod memory;
pub(crate) mod segment;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub use disk::{DiskBuffer, ObjectNumbers, Recovery};
pub use memory::MemoryBuffer;
pub use segment::EntryMeta;

/// Classifies arbitrary bytes as a segment file's recovery would: returns
/// (valid entries, corrupt regions, torn tail) and checks that every byte
/// is accounted for exactly once. For the fuzz targets.
#[doc(hidden)]
pub fn scan_segment_bytes(data: &[u8]) -> (usize, usize, bool) {
    let scan = segment::scan(data);
    let covered: usize = scan.corrupt.iter().map(|(_, b)| b.len()).sum::<usize>()
        + scan
            .entries
            .iter()
            .map(|e| 12 + e.len as usize)
            .sum::<usize>()
        + scan.torn_at.map_or(0, |t| data.len() - t as usize);
    assert_eq!(
        covered,
        data.len(),
        "every byte is an entry, corrupt, or torn"
    );
    (
        scan.entries.len(),
        scan.corrupt.len(),
        scan.torn_at.is_some(),
    )
}

/// Buffer errors.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// A file of the buffer could not be read or written.
    #[error("buffer file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl BufferError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| BufferError::Io { path, source }
    }
}

/// What an object being buffered holds so far.
#[derive(Debug, Clone)]
pub struct ObjectSummary {
    /// The object's number within its buffer (stable across restarts for
    /// [`DiskBuffer`]).
    pub object: u64,
    /// Batches appended.
    pub entries: usize,
    /// Items (lines) in the object.
    pub items: u64,
    /// Source records covered, filtered-out ones included.
    pub records: u64,
    /// Compressed size: the size the object will have.
    pub bytes: u64,
    /// Uncompressed size.
    pub raw_bytes: u64,
    /// Time of the first record (ms since the epoch).
    pub first_time_ms: i64,
    /// Position of the first record.
    pub first_position: Option<(String, u64)>,
    /// Position of the last record.
    pub last_position: Option<(String, u64)>,
    /// When the object was started (or recovered) in this process.
    pub opened_at: Instant,
}

impl ObjectSummary {
    pub(crate) fn new(object: u64, first: &EntryMeta) -> Self {
        Self {
            object,
            entries: 0,
            items: 0,
            records: 0,
            bytes: 0,
            raw_bytes: 0,
            first_time_ms: first.first_time_ms,
            first_position: first.first_position.clone(),
            last_position: None,
            opened_at: Instant::now(),
        }
    }

    pub(crate) fn add(&mut self, meta: &EntryMeta, body_len: u64) {
        self.entries += 1;
        self.items += meta.items;
        self.records += meta.records;
        self.bytes += body_len;
        self.raw_bytes += meta.raw_bytes;
        if meta.last_position.is_some() {
            self.last_position = meta.last_position.clone();
        }
        if self.first_position.is_none() {
            self.first_position = meta.first_position.clone();
        }
    }
}

/// A sealed object: no more batches are added; ready to emit.
#[derive(Debug, Clone)]
pub struct SealedObject {
    /// What it holds.
    pub summary: ObjectSummary,
    pub(crate) body: ObjectBody,
}

#[derive(Debug, Clone)]
pub(crate) enum ObjectBody {
    Segment {
        path: PathBuf,
        entries: Vec<segment::EntryInfo>,
    },
    Memory(Arc<Vec<Vec<u8>>>),
}

impl SealedObject {
    /// Reads the object's body, batch by batch. Blocking I/O.
    pub fn reader(&self) -> Result<ObjectReader, BufferError> {
        Ok(ObjectReader(match &self.body {
            ObjectBody::Segment { path, entries } => Reader::Segment(
                segment::BodyReader::open(path, entries.clone()).map_err(BufferError::io(path))?,
                path.clone(),
            ),
            ObjectBody::Memory(batches) => Reader::Memory(batches.clone(), 0),
        }))
    }

    /// Deletes the object's files (after it was emitted). Blocking I/O.
    pub fn remove_files(&self, fsync: bool) -> Result<(), BufferError> {
        if let ObjectBody::Segment { path, .. } = &self.body {
            segment::remove(path, fsync).map_err(BufferError::io(path))?;
        }
        Ok(())
    }

    /// The whole body in memory. Blocking I/O.
    pub fn read_all(&self) -> Result<Vec<u8>, BufferError> {
        let mut reader = self.reader()?;
        let mut body = Vec::with_capacity(self.summary.bytes as usize);
        while let Some(chunk) = reader.next_chunk()? {
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Reads a sealed object's batches in order.
pub struct ObjectReader(Reader);

enum Reader {
    Segment(segment::BodyReader, PathBuf),
    Memory(Arc<Vec<Vec<u8>>>, usize),
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectReader")
    }
}

impl ObjectReader {
    /// The next compressed batch, or `None` at the end. Blocking I/O.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, BufferError> {
        match &mut self.0 {
            Reader::Segment(reader, path) => {
                reader.next_body().map_err(BufferError::io(path.clone()))
            }
            Reader::Memory(batches, next) => {
                let chunk = batches.get(*next).cloned();
                *next += 1;
                Ok(chunk)
            }
        }
    }
}

/// Where batches wait for their object to be emitted. Methods do blocking
/// I/O: the pipeline calls them off the async workers.
pub trait Buffer: Send + Sync + 'static {
    /// Appends batches to the current object (starting one if needed). When
    /// this returns, they are as durable as the buffer makes them.
    fn append(&mut self, batches: Vec<(EntryMeta, Vec<u8>)>) -> Result<(), BufferError>;
    /// The object being filled, if any.
    fn current(&self) -> Option<&ObjectSummary>;
    /// Ends the current object; the next append starts a new one.
    fn seal(&mut self) -> Result<Option<SealedObject>, BufferError>;
    /// Forgets an emitted object.
    fn release(&mut self, object: &SealedObject) -> Result<(), BufferError>;
    /// Drops everything buffered, sealed objects included.
    fn clear(&mut self) -> Result<(), BufferError>;
}
