//! Segment files: the on-disk format of the write-ahead log.
//!
//! A segment holds the batches of one future S3 object, appended in order.
//! Each entry is framed so that start-up can tell a torn tail (the process
//! died mid-write: truncate it) from corruption (quarantine it, resync at the
//! next valid frame):
//!
//! ```text
//! magic u32 LE | length u32 LE | crc32c(length bytes ‖ payload) u32 LE | payload
//! payload = meta length u32 LE | meta (JSON) | body (one compressed batch)
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const MAGIC: u32 = 0x5733_534B; // "KS3W" little-endian
const HEADER: usize = 12;
/// Larger entries are treated as corrupt lengths.
pub(crate) const MAX_ENTRY: usize = 1 << 30;

/// What an entry's batch holds, kept beside the body so that a segment
/// describes its own object after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// Items in the body.
    pub items: u64,
    /// Uncompressed bytes of the body.
    pub raw_bytes: u64,
    /// Source records the batch covers, filtered-out ones included.
    pub records: u64,
    /// Arrival (or enqueue) time of the batch's first record, ms since the epoch.
    pub first_time_ms: i64,
    /// Position of the batch's first record (sequence number, sub-sequence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_position: Option<(String, u64)>,
    /// Position of the batch's last record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_position: Option<(String, u64)>,
}

/// Where an entry is in its segment.
#[derive(Debug, Clone)]
pub(crate) struct EntryInfo {
    pub offset: u64,
    pub len: u32,
    pub meta: EntryMeta,
    pub body_len: u64,
}

/// Frames one entry into `out`.
pub(crate) fn encode_entry(meta: &EntryMeta, body: &[u8], out: &mut Vec<u8>) -> io::Result<u32> {
    let meta_json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let len = 4 + meta_json.len() + body.len();
    if len > MAX_ENTRY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("batch of {len} bytes exceeds the {MAX_ENTRY}-byte entry limit"),
        ));
    }
    let len = len as u32;
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(meta_json.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta_json);
    out.extend_from_slice(body);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), &out[start + HEADER..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    Ok(len)
}

/// Splits a verified payload into its meta and body.
fn split_payload(payload: &[u8]) -> Option<(EntryMeta, &[u8])> {
    let meta_len = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    let meta_bytes = payload.get(4..4usize.checked_add(meta_len)?)?;
    let meta = serde_json::from_slice(meta_bytes).ok()?;
    Some((meta, &payload[4 + meta_len..]))
}

/// Checks the frame at `offset`: `Ok(Some(next offset, info))` for a valid
/// entry, `Ok(None)` for a torn tail, `Err(())` for corruption.
#[allow(clippy::result_unit_err)]
fn check_frame(data: &[u8], offset: usize) -> Result<Option<(usize, EntryInfo)>, ()> {
    let rest = &data[offset..];
    if rest.len() < HEADER {
        // A partial header: the last write was cut short, unless what is
        // there already contradicts a header.
        let magic_prefix = &MAGIC.to_le_bytes()[..rest.len().min(4)];
        return if rest[..rest.len().min(4)] == *magic_prefix {
            Ok(None)
        } else {
            Err(())
        };
    }
    let word = |at: usize| u32::from_le_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
    if word(0) != MAGIC {
        return Err(());
    }
    let len = word(4) as usize;
    if !(4..=MAX_ENTRY).contains(&len) {
        return Err(());
    }
    if rest.len() < HEADER + len {
        return Ok(None);
    }
    let payload = &rest[HEADER..HEADER + len];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&(len as u32).to_le_bytes()), payload);
    if crc != word(8) {
        return Err(());
    }
    let (meta, body) = split_payload(payload).ok_or(())?;
    Ok(Some((
        offset + HEADER + len,
        EntryInfo {
            offset: offset as u64,
            len: len as u32,
            body_len: body.len() as u64,
            meta,
        },
    )))
}

/// What start-up found in a segment.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub entries: Vec<EntryInfo>,
    /// Corrupt byte ranges: (offset, bytes).
    pub corrupt: Vec<(u64, Vec<u8>)>,
    /// Where a torn tail starts, if the file ends in one.
    pub torn_at: Option<u64>,
}

/// Reads a segment and classifies every byte of it.
///
/// A frame that runs past the end of the file is a torn tail only if no
/// valid frame follows it: a damaged length field in the middle of the
/// segment looks the same, and must not take the good entries after it
/// with it (they are quarantined around, not truncated away).
pub(crate) fn scan(data: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut offset = 0;
    while offset < data.len() {
        let torn = match check_frame(data, offset) {
            Ok(Some((next, info))) => {
                scan.entries.push(info);
                offset = next;
                continue;
            }
            Ok(None) => true,
            Err(()) => false,
        };
        let resumed = next_valid_frame(data, offset + 1);
        if torn && resumed.is_none() {
            scan.torn_at = Some(offset as u64);
            break;
        }
        let end = resumed.unwrap_or(data.len());
        scan.corrupt
            .push((offset as u64, data[offset..end].to_vec()));
        offset = end;
    }
    scan
}

/// The first offset at or after `from` where a whole valid frame starts.
fn next_valid_frame(data: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let candidate = memchr_magic(data, from)?;
        if let Ok(Some(_)) = check_frame(data, candidate) {
            return Some(candidate);
        }
        from = candidate + 1;
    }
}

fn memchr_magic(data: &[u8], from: usize) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    data.get(from..)?
        .windows(4)
        .position(|w| w == magic)
        .map(|p| p + from)
}

/// Appends entries to a segment file.
#[derive(Debug)]
pub(crate) struct SegmentWriter {
    file: File,
    pub len: u64,
    scratch: Vec<u8>,
    /// A failed write left bytes that could not be truncated away.
    broken: bool,
}

impl SegmentWriter {
    /// Creates a new, empty segment (and makes its directory entry durable).
    pub fn create(path: &Path, fsync: bool) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        if fsync && let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(Self {
            file,
            len: 0,
            scratch: Vec::new(),
            broken: false,
        })
    }

    /// Appends entries with one write and, if `fsync`, one fdatasync: the
    /// group commit. Returns each entry's place.
    pub fn append(
        &mut self,
        entries: &[(EntryMeta, &[u8])],
        fsync: bool,
    ) -> io::Result<Vec<EntryInfo>> {
        self.scratch.clear();
        let mut infos = Vec::with_capacity(entries.len());
        for (meta, body) in entries {
            let offset = self.len + self.scratch.len() as u64;
            let len = encode_entry(meta, body, &mut self.scratch)?;
            infos.push(EntryInfo {
                offset,
                len,
                meta: meta.clone(),
                body_len: body.len() as u64,
            });
        }
        if self.broken {
            return Err(io::Error::other(
                "an earlier failed write could not be rolled back; this segment takes no more entries",
            ));
        }
        let written = self
            .file
            .write_all(&self.scratch)
            .and_then(|()| if fsync { self.file.sync_data() } else { Ok(()) });
        if let Err(error) = written {
            // The entries were not made durable: take back whatever reached
            // the file, so that the offsets of later entries stay true. If
            // even that fails, stop writing here rather than record wrong
            // offsets.
            if self.file.set_len(self.len).is_err() {
                self.broken = true;
            }
            return Err(error);
        }
        self.len += self.scratch.len() as u64;
        if self.scratch.capacity() > 16 << 20 {
            self.scratch = Vec::new();
        }
        Ok(infos)
    }
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads the bodies of a segment's entries in order, verifying each frame
/// again (the disk may have changed since start-up).
pub(crate) struct BodyReader {
    file: File,
    path: PathBuf,
    entries: std::vec::IntoIter<EntryInfo>,
}

impl BodyReader {
    pub fn open(path: &Path, entries: Vec<EntryInfo>) -> io::Result<Self> {
        Ok(Self {
            file: File::open(path)?,
            path: path.to_owned(),
            entries: entries.into_iter(),
        })
    }

    /// The next body, or `None` at the end.
    pub fn next_body(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        use std::io::{Seek, SeekFrom};
        self.file.seek(SeekFrom::Start(entry.offset))?;
        let mut frame = vec![0; HEADER + entry.len as usize];
        self.file.read_exact(&mut frame)?;
        // The frame must be valid and be the entry recorded at this offset.
        match check_frame(&frame, 0) {
            Ok(Some((_, found))) if found.meta == entry.meta => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: entry at offset {} changed on disk since it was written",
                        self.path.display(),
                        entry.offset
                    ),
                ));
            }
        }
        let meta_len = u32::from_le_bytes([frame[12], frame[13], frame[14], frame[15]]) as usize;
        frame.drain(..HEADER + 4 + meta_len);
        Ok(Some(frame))
    }
}

/// Removes a file and makes the removal durable.
pub(crate) fn remove(path: &Path, fsync: bool) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    }
    if fsync && let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta(items: u64) -> EntryMeta {
        EntryMeta {
            items,
            ..Default::default()
        }
    }

    fn frames(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            encode_entry(&meta(i as u64), body, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn a_cut_short_last_entry_is_a_torn_tail() {
        let data = frames(&[b"one", b"two", b"three"]);
        for cut in 1..20 {
            let scan = scan(&data[..data.len() - cut]);
            assert_eq!(scan.entries.len(), 2, "cut {cut}");
            assert!(scan.corrupt.is_empty(), "cut {cut}");
            assert!(scan.torn_at.is_some());
        }
    }

    #[test]
    fn a_flipped_byte_quarantines_one_entry_and_keeps_the_rest() {
        let data = frames(&[b"one", b"two", b"three"]);
        let second = scan(&data).entries[1].offset as usize;
        let mut bad = data.clone();
        bad[second + HEADER + 6] ^= 0x40;
        let scan = scan(&bad);
        let items: Vec<u64> = scan.entries.iter().map(|e| e.meta.items).collect();
        assert_eq!(items, [0, 2]);
        assert_eq!(scan.corrupt.len(), 1);
        assert_eq!(scan.corrupt[0].0 as usize, second);
        assert!(scan.torn_at.is_none());
    }

    #[test]
    fn a_damaged_length_in_the_middle_is_corruption_not_a_torn_tail() {
        let data = frames(&[b"one", b"two", b"three"]);
        let second = scan(&data).entries[1].offset as usize;
        let mut bad = data.clone();
        // A length that runs past the end of the file.
        bad[second + 4..second + 8].copy_from_slice(&1_000u32.to_le_bytes());
        let scan = scan(&bad);
        let items: Vec<u64> = scan.entries.iter().map(|e| e.meta.items).collect();
        assert_eq!(items, [0, 2], "the entry after the damage is kept");
        assert_eq!(scan.corrupt.len(), 1);
        assert_eq!(scan.corrupt[0].0 as usize, second);
        assert!(scan.torn_at.is_none());
    }

    #[test]
    fn a_failed_write_that_cannot_be_undone_stops_the_writer() {
        // A read-only handle fails the write and the truncation after it: the
        // writer must neither advance nor take entries at offsets that are
        // no longer true.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.seg");
        let mut writer = SegmentWriter::create(&path, false).unwrap();
        let first = writer
            .append(&[(meta(0), b"one".as_slice())], false)
            .unwrap();
        let len = writer.len;
        writer.file = File::open(&path).unwrap();
        assert!(
            writer
                .append(&[(meta(1), b"two".as_slice())], false)
                .is_err()
        );
        assert_eq!(writer.len, len);
        writer.file = OpenOptions::new().append(true).open(&path).unwrap();
        assert!(
            writer
                .append(&[(meta(2), b"three".as_slice())], false)
                .is_err()
        );
        assert_eq!(writer.len, len);
        let mut reader = BodyReader::open(&path, first).unwrap();
        assert_eq!(
            reader.next_body().unwrap().as_deref(),
            Some(b"one".as_slice())
        );
    }

    #[test]
    fn a_reader_refuses_an_entry_other_than_the_one_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.seg");
        let mut writer = SegmentWriter::create(&path, false).unwrap();
        let infos = writer
            .append(
                &[(meta(0), b"one".as_slice()), (meta(1), b"two".as_slice())],
                false,
            )
            .unwrap();
        // Offsets that point at the wrong (but valid) frame.
        let mut wrong = infos[1].clone();
        wrong.offset = infos[0].offset;
        wrong.len = infos[0].len;
        let mut reader = BodyReader::open(&path, vec![wrong]).unwrap();
        assert!(reader.next_body().is_err());
    }

    proptest! {
        #[test]
        fn scanning_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let scan = scan(&data);
            let covered: usize = scan.corrupt.iter().map(|(_, b)| b.len()).sum::<usize>()
                + scan.entries.iter().map(|e| HEADER + e.len as usize).sum::<usize>()
                + scan.torn_at.map_or(0, |t| data.len() - t as usize);
            prop_assert_eq!(covered, data.len());
        }

        #[test]
        fn damage_never_yields_a_wrong_body(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..6), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let refs: Vec<&[u8]> = bodies.iter().map(|b| b.as_slice()).collect();
            let mut data = frames(&refs);
            let i = at.index(data.len());
            data[i] ^= flip;
            for entry in scan(&data).entries {
                let (meta, body) = split_payload(&data[entry.offset as usize + HEADER..][..entry.len as usize]).unwrap();
                prop_assert_eq!(body, bodies[meta.items as usize].as_slice());
            }
        }
    }
}
