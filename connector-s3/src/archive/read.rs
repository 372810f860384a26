//! Downloading and decoding objects with bounded memory.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use futures::StreamExt as _;
use tokio::sync::mpsc;

use super::{
    ArchiveError, ArchiveItem, ArchiveReader, ArchivedLine, ArchivedObject, Selection, error_chain,
};
use crate::compress::Compression;
use crate::transform::JsonRecord;

impl ArchiveReader {
    async fn get(&self, key: &str) -> Result<Vec<u8>, ArchiveError> {
        let failed = |error: &dyn std::error::Error| ArchiveError::S3 {
            operation: "GetObject",
            key: key.to_owned(),
            message: error_chain(error),
        };
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| failed(&e))?;
        let body = object.body.collect().await.map_err(|e| failed(&e))?;
        Ok(body.into_bytes().to_vec())
    }

    /// Reads `objects` in order and yields their selected records, then an
    /// `ObjectDone` (or `ObjectFailed`) per object. Downloads run ahead in
    /// parallel (`with_concurrency`); decompression and parsing run on the
    /// blocking pool. Dropping the receiver stops the reading.
    pub fn read(
        &self,
        objects: Vec<ArchivedObject>,
        selection: Selection,
    ) -> mpsc::Receiver<ArchiveItem> {
        let (tx, rx) = mpsc::channel(1_024);
        let reader = self.clone();
        let selection = Arc::new(selection);
        tokio::spawn(async move {
            let downloads = futures::stream::iter(objects)
                .map(|object| {
                    let reader = reader.clone();
                    async move {
                        let body = reader.get(&object.key).await;
                        (object, body)
                    }
                })
                .buffered(reader.concurrency);
            futures::pin_mut!(downloads);
            while let Some((object, body)) = downloads.next().await {
                let body = match body {
                    Ok(body) => body,
                    Err(error) => {
                        let failed = ArchiveItem::ObjectFailed {
                            key: object.key,
                            bytes: object.size,
                            error,
                        };
                        if tx.send(failed).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let (lines_tx, mut lines) = mpsc::channel(256);
                let selection = selection.clone();
                let key = object.key.clone();
                let bytes = body.len() as u64;
                let parsing =
                    tokio::task::spawn_blocking(move || decode(&key, &body, &selection, &lines_tx));
                while let Some(item) = lines.recv().await {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
                let end = match parsing.await {
                    Ok(Ok(lines)) => ArchiveItem::ObjectDone {
                        key: object.key,
                        bytes,
                        lines,
                    },
                    Ok(Err(error)) => ArchiveItem::ObjectFailed {
                        key: object.key,
                        bytes,
                        error,
                    },
                    Err(join) => ArchiveItem::ObjectFailed {
                        key: object.key.clone(),
                        bytes,
                        error: ArchiveError::Decompress {
                            key: object.key,
                            source: std::io::Error::other(join.to_string()),
                        },
                    },
                };
                if tx.send(end).await.is_err() {
                    return;
                }
            }
        });
        rx
    }
}

/// The longest line read: a 1 MiB Kinesis record in base64 with its fields
/// is under 2 MiB.
const MAX_LINE: usize = 16 << 20;

/// Checks that the object decompresses whole, then streams its selected
/// lines. Returns the number of lines.
fn decode(
    key: &str,
    body: &[u8],
    selection: &Selection,
    out: &mpsc::Sender<ArchiveItem>,
) -> Result<u64, ArchiveError> {
    let compression = Compression::from_key(key);
    let decompress_error = |source| ArchiveError::Decompress {
        key: key.to_owned(),
        source,
    };
    // Pass 1: a truncated or corrupt object yields nothing.
    let mut decoder = compression.decoder(body).map_err(decompress_error)?;
    std::io::copy(&mut decoder, &mut std::io::sink()).map_err(decompress_error)?;
    // Pass 2: the records.
    let decoder = compression.decoder(body).map_err(decompress_error)?;
    let shared_key: Arc<str> = Arc::from(key);
    let mut reader = BufReader::with_capacity(1 << 16, decoder);
    let mut buffer = Vec::new();
    let mut number = 0;
    loop {
        buffer.clear();
        // A line is at most MAX_LINE bytes: garbage without newlines must not
        // grow one without bound.
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buffer)
            .map_err(decompress_error)?;
        if read == 0 {
            break;
        }
        number += 1;
        if buffer.last() == Some(&b'\n') {
            buffer.pop();
        } else if buffer.len() > MAX_LINE {
            return Err(decompress_error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {number} is longer than {MAX_LINE} bytes"),
            )));
        }
        if buffer.is_empty() {
            continue;
        }
        let line = String::from_utf8(std::mem::take(&mut buffer)).map_err(|error| {
            decompress_error(std::io::Error::new(std::io::ErrorKind::InvalidData, error))
        })?;
        let record: JsonRecord =
            serde_json::from_str(&line).map_err(|source| ArchiveError::Line {
                key: key.to_owned(),
                line: number,
                source,
            })?;
        if selection.matches(&record) {
            let item = ArchiveItem::Record(ArchivedLine {
                key: shared_key.clone(),
                line,
                record,
            });
            if out.blocking_send(item).is_err() {
                break;
            }
        }
    }
    Ok(number)
}
