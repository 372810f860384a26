//! The write-ahead log: one directory of segment files per lane.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::segment::{self, EntryInfo, SegmentWriter};
use super::{Buffer, BufferError, EntryMeta, ObjectBody, ObjectSummary, SealedObject};

const NEXT_OBJECT: &str = "next-object";
const QUARANTINE: &str = "quarantine";

/// What [`DiskBuffer::open`] found from an earlier run.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Objects left by the earlier run, sealed, oldest first.
    pub objects: Vec<SealedObject>,
    /// Corrupt regions moved to the `quarantine/` directory.
    pub quarantined: u64,
    /// Bytes of corrupt regions quarantined.
    pub quarantined_bytes: u64,
    /// Bytes of torn tails (writes the earlier run did not finish) truncated.
    pub truncated_bytes: u64,
}

/// A durable buffer: segment files in a directory, one per object.
///
/// Each append is one write and (with `fsync`) one `fdatasync` — the group
/// commit. Object numbers are persisted, so an object keeps its number (and
/// its key) across restarts and a number is never reused.
///
/// ```
/// use connector_s3::buffer::{Buffer, DiskBuffer, EntryMeta};
/// let dir = tempfile::tempdir().unwrap();
/// let (mut buffer, recovery) = DiskBuffer::open(dir.path(), true).unwrap();
/// assert!(recovery.objects.is_empty());
/// buffer.append(vec![(EntryMeta { items: 1, ..Default::default() }, b"x\n".to_vec())]).unwrap();
/// drop(buffer);
/// // A restart finds the batch again.
/// let (_buffer, recovery) = DiskBuffer::open(dir.path(), true).unwrap();
/// assert_eq!(recovery.objects[0].read_all().unwrap(), b"x\n");
/// ```
#[derive(Debug)]
pub struct DiskBuffer {
    dir: PathBuf,
    fsync: bool,
    numbers: ObjectNumbers,
    current: Option<Open>,
}

/// A buffer's object numbers, shared by whoever starts objects and whoever
/// must move a sealed object to a new number (the journal, when another
/// object already holds its key). A number is durable before it is used,
/// and never handed out twice.
#[derive(Debug, Clone)]
pub struct ObjectNumbers(Arc<Numbers>);

#[derive(Debug)]
struct Numbers {
    dir: PathBuf,
    fsync: bool,
    next: Mutex<u64>,
}

impl ObjectNumbers {
    /// The next number, persisted. Blocking I/O.
    fn take(&self) -> Result<u64, BufferError> {
        let numbers = &self.0;
        let mut next = numbers.next.lock().unwrap_or_else(PoisonError::into_inner);
        let object = *next;
        write_next_object(&numbers.dir, numbers.fsync, object + 1)?;
        *next = object + 1;
        Ok(object)
    }

    /// Gives a sealed object of this buffer the next number: its segment is
    /// renamed to it (a crash leaves it under the old number or the new one,
    /// whole). Blocking I/O.
    pub fn renumber(&self, object: &mut SealedObject) -> Result<(), BufferError> {
        let ObjectBody::Segment { path, .. } = &mut object.body else {
            return Ok(());
        };
        let number = self.take()?;
        let renamed = path.with_file_name(segment_name(number));
        fs::rename(&*path, &renamed).map_err(BufferError::io(&*path))?;
        if self.0.fsync {
            segment::sync_dir(&self.0.dir).map_err(BufferError::io(&self.0.dir))?;
        }
        *path = renamed;
        object.summary.object = number;
        Ok(())
    }
}

#[derive(Debug)]
struct Open {
    writer: SegmentWriter,
    path: PathBuf,
    entries: Vec<EntryInfo>,
    summary: ObjectSummary,
}

fn segment_name(object: u64) -> String {
    format!("{object:020}.seg")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".seg")?.parse().ok()
}

impl DiskBuffer {
    /// Opens (creating) the buffer in `dir`, recovering what an earlier run
    /// left: torn tails are truncated, corrupt entries quarantined, and the
    /// remaining objects returned sealed, for the caller to emit or discard.
    /// `fsync: false` is unsafe: a machine crash can lose accepted batches.
    pub fn open(dir: impl AsRef<Path>, fsync: bool) -> Result<(Self, Recovery), BufferError> {
        let dir = dir.as_ref().to_owned();
        fs::create_dir_all(&dir).map_err(BufferError::io(&dir))?;
        let mut next_object = read_next_object(&dir)?;
        let mut segments = Vec::new();
        for entry in fs::read_dir(&dir).map_err(BufferError::io(&dir))? {
            let entry = entry.map_err(BufferError::io(&dir))?;
            if let Some(object) = entry.file_name().to_str().and_then(parse_segment_name) {
                segments.push((object, entry.path()));
            }
        }
        segments.sort();
        let mut recovery = Recovery::default();
        for (object, path) in segments {
            next_object = next_object.max(object + 1);
            if let Some(sealed) = recover_segment(&dir, object, &path, fsync, &mut recovery)? {
                recovery.objects.push(sealed);
            }
        }
        write_next_object(&dir, fsync, next_object)?;
        let buffer = Self {
            numbers: ObjectNumbers(Arc::new(Numbers {
                dir: dir.clone(),
                fsync,
                next: Mutex::new(next_object),
            })),
            dir,
            fsync,
            current: None,
        };
        Ok((buffer, recovery))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This buffer's object numbers.
    pub fn numbers(&self) -> ObjectNumbers {
        self.numbers.clone()
    }

    fn start_object(&mut self, first: &EntryMeta) -> Result<&mut Open, BufferError> {
        // The number is durable before any batch is written under it.
        let object = self.numbers.take()?;
        let path = self.dir.join(segment_name(object));
        let writer = SegmentWriter::create(&path, self.fsync).map_err(BufferError::io(&path))?;
        Ok(self.current.insert(Open {
            writer,
            path,
            entries: Vec::new(),
            summary: ObjectSummary::new(object, first),
        }))
    }
}

fn write_next_object(dir: &Path, fsync: bool, next_object: u64) -> Result<(), BufferError> {
    let path = dir.join(NEXT_OBJECT);
    let tmp = dir.join(format!("{NEXT_OBJECT}.tmp"));
    let write = || -> io::Result<()> {
        fs::write(&tmp, next_object.to_string())?;
        if fsync {
            fs::File::open(&tmp)?.sync_all()?;
        }
        fs::rename(&tmp, &path)?;
        if fsync {
            segment::sync_dir(dir)?;
        }
        Ok(())
    };
    write().map_err(BufferError::io(&path))
}

fn read_next_object(dir: &Path) -> Result<u64, BufferError> {
    let path = dir.join(NEXT_OBJECT);
    match fs::read_to_string(&path) {
        // Unreadable is not "start at 0": numbers already uploaded would be
        // used again, and their objects' keys overwritten.
        Ok(text) => text.trim().parse().map_err(|_| BufferError::Io {
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "holds {:?}, not an object number; write in a number above the highest object uploaded from this directory",
                    text.trim()
                ),
            ),
            path,
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(error) => Err(BufferError::io(path)(error)),
    }
}

/// Recovers one segment: truncates a torn tail, quarantines corrupt regions
/// (rewriting the segment without them), and describes what is left.
fn recover_segment(
    dir: &Path,
    object: u64,
    path: &Path,
    fsync: bool,
    recovery: &mut Recovery,
) -> Result<Option<SealedObject>, BufferError> {
    let data = fs::read(path).map_err(BufferError::io(path))?;
    let scan = segment::scan(&data);
    let mut entries = scan.entries;
    if !scan.corrupt.is_empty() {
        let quarantine = dir.join(QUARANTINE);
        fs::create_dir_all(&quarantine).map_err(BufferError::io(&quarantine))?;
        for (offset, bytes) in &scan.corrupt {
            let file = quarantine.join(format!("{}.{offset}.bad", segment_name(object)));
            fs::write(&file, bytes).map_err(BufferError::io(&file))?;
            recovery.quarantined += 1;
            recovery.quarantined_bytes += bytes.len() as u64;
            tracing::warn!(
                segment = %path.display(),
                offset,
                bytes = bytes.len(),
                quarantined_to = %file.display(),
                "corrupt buffer entry quarantined"
            );
            metrics::counter!(crate::metrics::QUARANTINED).increment(1);
        }
        // Rewrite the segment with its valid entries only.
        let tmp = path.with_extension("rewrite");
        let mut clean = Vec::with_capacity(data.len());
        let mut rewritten = Vec::with_capacity(entries.len());
        for entry in &entries {
            let start = entry.offset as usize;
            let end = start + 12 + entry.len as usize;
            rewritten.push(EntryInfo {
                offset: clean.len() as u64,
                ..entry.clone()
            });
            clean.extend_from_slice(&data[start..end]);
        }
        let write = || -> io::Result<()> {
            fs::write(&tmp, &clean)?;
            fs::File::open(&tmp)?.sync_all()?;
            fs::rename(&tmp, path)?;
            segment::sync_dir(dir)
        };
        write().map_err(BufferError::io(path))?;
        entries = rewritten;
    } else if let Some(torn_at) = scan.torn_at {
        recovery.truncated_bytes += data.len() as u64 - torn_at;
        tracing::info!(segment = %path.display(), torn_at, "truncating an unfinished write");
        let file = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(BufferError::io(path))?;
        file.set_len(torn_at).map_err(BufferError::io(path))?;
        if fsync {
            file.sync_all().map_err(BufferError::io(path))?;
        }
    }
    let Some(first) = entries.first() else {
        segment::remove(path, fsync).map_err(BufferError::io(path))?;
        return Ok(None);
    };
    let mut summary = ObjectSummary::new(object, &first.meta);
    for entry in &entries {
        summary.add(&entry.meta, entry.body_len);
    }
    Ok(Some(SealedObject {
        summary,
        body: ObjectBody::Segment {
            path: path.to_owned(),
            entries,
        },
    }))
}

impl Buffer for DiskBuffer {
    fn append(&mut self, batches: Vec<(EntryMeta, Vec<u8>)>) -> Result<(), BufferError> {
        let Some((first, _)) = batches.first() else {
            return Ok(());
        };
        let fsync = self.fsync;
        let open = match self.current.take() {
            Some(open) => self.current.insert(open),
            None => self.start_object(&first.clone())?,
        };
        let refs: Vec<(EntryMeta, &[u8])> = batches
            .iter()
            .map(|(meta, body)| (meta.clone(), body.as_slice()))
            .collect();
        let infos = open
            .writer
            .append(&refs, fsync)
            .map_err(BufferError::io(&open.path))?;
        for info in infos {
            open.summary.add(&info.meta, info.body_len);
            open.entries.push(info);
        }
        Ok(())
    }

    fn current(&self) -> Option<&ObjectSummary> {
        self.current.as_ref().map(|open| &open.summary)
    }

    fn seal(&mut self) -> Result<Option<SealedObject>, BufferError> {
        Ok(self.current.take().map(|open| SealedObject {
            summary: open.summary,
            body: ObjectBody::Segment {
                path: open.path,
                entries: open.entries,
            },
        }))
    }

    fn release(&mut self, object: &SealedObject) -> Result<(), BufferError> {
        if let ObjectBody::Segment { path, .. } = &object.body {
            segment::remove(path, self.fsync).map_err(BufferError::io(path))?;
        }
        Ok(())
    }

    fn clear(&mut self) -> Result<(), BufferError> {
        self.current = None;
        for entry in fs::read_dir(&self.dir).map_err(BufferError::io(&self.dir))? {
            let entry = entry.map_err(BufferError::io(&self.dir))?;
            if entry
                .file_name()
                .to_str()
                .and_then(parse_segment_name)
                .is_some()
            {
                segment::remove(&entry.path(), false).map_err(BufferError::io(entry.path()))?;
            }
        }
        if self.fsync {
            segment::sync_dir(&self.dir).map_err(BufferError::io(&self.dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(items: u64, body: &[u8]) -> Vec<(EntryMeta, Vec<u8>)> {
        vec![(
            EntryMeta {
                items,
                ..Default::default()
            },
            body.to_vec(),
        )]
    }

    #[test]
    fn objects_keep_their_numbers_and_numbers_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut buffer, _) = DiskBuffer::open(dir.path(), true).unwrap();
        buffer.append(batch(1, b"a")).unwrap();
        let first = buffer.seal().unwrap().unwrap();
        buffer.append(batch(1, b"b")).unwrap();
        buffer.release(&first).unwrap();
        drop(buffer);
        let (mut buffer, recovery) = DiskBuffer::open(dir.path(), true).unwrap();
        assert_eq!(recovery.objects.len(), 1);
        assert_eq!(recovery.objects[0].summary.object, 1);
        buffer.release(&recovery.objects[0]).unwrap();
        drop(buffer);
        let (mut buffer, recovery) = DiskBuffer::open(dir.path(), true).unwrap();
        assert!(recovery.objects.is_empty());
        buffer.append(batch(1, b"c")).unwrap();
        assert_eq!(buffer.current().unwrap().object, 2);
    }

    #[test]
    fn a_renumbered_object_keeps_its_batches_and_its_new_number() {
        let dir = tempfile::tempdir().unwrap();
        let (mut buffer, _) = DiskBuffer::open(dir.path(), true).unwrap();
        buffer.append(batch(1, b"a")).unwrap();
        let mut first = buffer.seal().unwrap().unwrap();
        buffer.append(batch(1, b"b")).unwrap();
        buffer.numbers().renumber(&mut first).unwrap();
        assert_eq!(first.summary.object, 2);
        assert_eq!(first.read_all().unwrap(), b"a");
        buffer.seal().unwrap();
        buffer.append(batch(1, b"c")).unwrap();
        assert_eq!(buffer.current().unwrap().object, 3, "2 is taken");
        drop(buffer);
        // A restart finds it under its new number.
        let (_buffer, recovery) = DiskBuffer::open(dir.path(), true).unwrap();
        let numbers: Vec<u64> = recovery.objects.iter().map(|o| o.summary.object).collect();
        assert_eq!(numbers, [1, 2, 3]);
        assert_eq!(recovery.objects[1].read_all().unwrap(), b"a");
    }

    #[test]
    fn an_unreadable_object_counter_is_an_error_not_a_restart_at_zero() {
        let dir = tempfile::tempdir().unwrap();
        drop(DiskBuffer::open(dir.path(), true).unwrap());
        fs::write(dir.path().join(NEXT_OBJECT), "").unwrap();
        let error = DiskBuffer::open(dir.path(), true).unwrap_err();
        assert!(
            error.to_string().contains("not an object number"),
            "{error}"
        );
    }

    #[test]
    fn torn_tails_are_truncated_and_corruption_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let (mut buffer, _) = DiskBuffer::open(dir.path(), true).unwrap();
        for i in 0..3 {
            buffer.append(batch(i, b"payload payload")).unwrap();
        }
        drop(buffer);
        let path = dir.path().join(segment_name(0));
        let mut data = fs::read(&path).unwrap();
        let entry_len = data.len() / 3;
        data[entry_len + 20] ^= 0xff; // corrupt the second entry
        data.extend_from_within(..7); // and a torn tail
        fs::write(&path, &data).unwrap();

        let (_buffer, recovery) = DiskBuffer::open(dir.path(), true).unwrap();
        assert_eq!(recovery.quarantined, 1);
        let object = &recovery.objects[0];
        assert_eq!(object.summary.entries, 2);
        assert_eq!(
            object.read_all().unwrap(),
            b"payload payloadpayload payload"
        );
        assert_eq!(
            fs::read_dir(dir.path().join(QUARANTINE)).unwrap().count(),
            1
        );
        // The rewritten segment is clean: a second start finds nothing wrong.
        let (_buffer, recovery) = DiskBuffer::open(dir.path(), true).unwrap();
        assert_eq!(recovery.quarantined, 0);
        assert_eq!(recovery.objects[0].summary.entries, 2);
    }
}
