//! A buffer in memory: no durability, no disk.

use std::sync::Arc;

use super::{Buffer, BufferError, EntryMeta, ObjectBody, ObjectSummary, SealedObject};

/// Keeps the current object's batches in memory.
///
/// ```
/// use connector_s3::buffer::{Buffer, EntryMeta, MemoryBuffer};
/// let mut buffer = MemoryBuffer::default();
/// buffer.append(vec![(EntryMeta { items: 1, ..Default::default() }, b"x\n".to_vec())]).unwrap();
/// let sealed = buffer.seal().unwrap().unwrap();
/// assert_eq!(sealed.read_all().unwrap(), b"x\n");
/// ```
#[derive(Debug, Default)]
pub struct MemoryBuffer {
    next_object: u64,
    current: Option<(ObjectSummary, Vec<Vec<u8>>)>,
}

impl Buffer for MemoryBuffer {
    fn append(&mut self, batches: Vec<(EntryMeta, Vec<u8>)>) -> Result<(), BufferError> {
        for (meta, body) in batches {
            let (summary, bodies) = self.current.get_or_insert_with(|| {
                self.next_object += 1;
                (ObjectSummary::new(self.next_object - 1, &meta), Vec::new())
            });
            summary.add(&meta, body.len() as u64);
            bodies.push(body);
        }
        Ok(())
    }

    fn current(&self) -> Option<&ObjectSummary> {
        self.current.as_ref().map(|(summary, _)| summary)
    }

    fn seal(&mut self) -> Result<Option<SealedObject>, BufferError> {
        Ok(self.current.take().map(|(summary, bodies)| SealedObject {
            summary,
            body: ObjectBody::Memory(Arc::new(bodies)),
        }))
    }

    fn release(&mut self, _object: &SealedObject) -> Result<(), BufferError> {
        Ok(())
    }

    fn clear(&mut self) -> Result<(), BufferError> {
        self.current = None;
        Ok(())
    }
}
