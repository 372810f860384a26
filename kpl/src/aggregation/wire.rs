//! A zero-copy reader of the `AggregatedRecord` protobuf (schema in
//! [`super::proto`]), for deaggregation: key tables stay slices of the
//! aggregate, each record's data is a [`Bytes`] slice of it, and nothing is
//! allocated per record but the result. Deaggregation is the consumer's
//! per-record cost; the generic prost decoder allocated a `String` per key
//! table entry and a `Record` per record before the result was built.
//!
//! It accepts and refuses exactly what prost's derived decoder does for
//! these messages (a property test in `super::tests` compares both on
//! arbitrary and mutated inputs): unknown fields are skipped (groups
//! included), a known field with the wrong wire type, a field number 0, a
//! varint over 10 bytes, a length past the end, or a string that is not
//! UTF-8 is an error; a missing `required` field reads as its default; a
//! repeated scalar field keeps its last value.

use bytes::Bytes;

/// Not a well-formed `AggregatedRecord`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// One record of an aggregate, its key indexes unresolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawRecord {
    pub partition_key_index: u64,
    pub explicit_hash_key_index: Option<u64>,
    pub data: Bytes,
}

/// An aggregate's tables and records.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct RawAggregate<'a> {
    pub partition_key_table: Vec<&'a str>,
    pub explicit_hash_key_table: Vec<&'a str>,
    pub records: Vec<RawRecord>,
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH_DELIMITED: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// prost's default recursion limit.
const RECURSION_LIMIT: u32 = 100;

/// A cursor over protobuf bytes.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self.bytes.get(self.at).ok_or(Malformed)?;
            self.at += 1;
            // The tenth byte may only carry the top bit of a u64.
            if i == 9 && byte > 1 {
                return Err(Malformed);
            }
            value |= u64::from(byte & 0x7F) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(Malformed)
    }

    /// A field's key: (field number, wire type).
    fn key(&mut self) -> Result<(u32, u8), Malformed> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(Malformed);
        }
        let wire_type = (key & 7) as u8;
        if wire_type > FIXED32 {
            return Err(Malformed);
        }
        let field = (key >> 3) as u32;
        if field == 0 {
            return Err(Malformed);
        }
        Ok((field, wire_type))
    }

    /// The range of a length-delimited field's contents.
    fn length_delimited(&mut self) -> Result<std::ops::Range<usize>, Malformed> {
        let len = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
        let start = self.at;
        let end = start.checked_add(len).ok_or(Malformed)?;
        if end > self.bytes.len() {
            return Err(Malformed);
        }
        self.at = end;
        Ok(start..end)
    }

    fn string(&mut self) -> Result<&'a str, Malformed> {
        let range = self.length_delimited()?;
        std::str::from_utf8(&self.bytes[range]).map_err(|_| Malformed)
    }

    /// Skips a field of an unknown number (a group through its end), at
    /// nesting `depth` (messages and groups; at most [`RECURSION_LIMIT`],
    /// prost's limit, so that hostile nesting cannot exhaust the stack).
    fn skip(&mut self, field: u32, wire_type: u8, depth: u32) -> Result<(), Malformed> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.advance(8),
            LENGTH_DELIMITED => self.length_delimited().map(drop),
            FIXED32 => self.advance(4),
            START_GROUP => loop {
                let (inner, inner_type) = self.key()?;
                if inner_type == END_GROUP {
                    return if inner == field {
                        Ok(())
                    } else {
                        Err(Malformed)
                    };
                }
                if depth + 1 >= RECURSION_LIMIT {
                    return Err(Malformed);
                }
                self.skip(inner, inner_type, depth + 1)?;
            },
            // An end of group that no group opened.
            _ => Err(Malformed),
        }
    }

    fn advance(&mut self, n: usize) -> Result<(), Malformed> {
        let end = self.at.checked_add(n).ok_or(Malformed)?;
        if end > self.bytes.len() {
            return Err(Malformed);
        }
        self.at = end;
        Ok(())
    }
}

/// One top-level field of an `AggregatedRecord`, in the order of the bytes.
#[derive(Debug)]
pub(crate) enum Field<'a> {
    /// An entry of the partition key table.
    PartitionKey(&'a str),
    /// An entry of the explicit hash key table.
    ExplicitHashKey(&'a str),
    /// A record.
    Record(RawRecord),
}

/// The top-level fields of an `AggregatedRecord` in `body` (the bytes
/// between the magic and the digest), unknown ones skipped; an error ends
/// the sequence.
pub(crate) struct Fields<'a> {
    body: &'a Bytes,
    reader: Reader<'a>,
    failed: bool,
}

pub(crate) fn fields(body: &Bytes) -> Fields<'_> {
    Fields {
        body,
        reader: Reader::new(body),
        failed: false,
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed && !self.reader.done() {
            let field = match self.reader.key() {
                Ok((1, LENGTH_DELIMITED)) => {
                    self.reader.string().map(|k| Some(Field::PartitionKey(k)))
                }
                Ok((2, LENGTH_DELIMITED)) => self
                    .reader
                    .string()
                    .map(|k| Some(Field::ExplicitHashKey(k))),
                Ok((3, LENGTH_DELIMITED)) => self
                    .reader
                    .length_delimited()
                    .and_then(|range| parse_record(self.body, range))
                    .map(|r| Some(Field::Record(r))),
                Ok((1..=3, _)) => Err(Malformed),
                Ok((field, wire_type)) => self.reader.skip(field, wire_type, 0).map(|()| None),
                Err(malformed) => Err(malformed),
            };
            match field {
                Ok(Some(field)) => return Some(Ok(field)),
                Ok(None) => {}
                Err(malformed) => {
                    self.failed = true;
                    return Some(Err(malformed));
                }
            }
        }
        None
    }
}

/// Parses a whole `AggregatedRecord` (the tables and records apart).
#[cfg(test)]
pub(crate) fn parse(body: &Bytes) -> Result<RawAggregate<'_>, Malformed> {
    let mut aggregate = RawAggregate::default();
    for field in fields(body) {
        match field? {
            Field::PartitionKey(key) => aggregate.partition_key_table.push(key),
            Field::ExplicitHashKey(key) => aggregate.explicit_hash_key_table.push(key),
            Field::Record(record) => aggregate.records.push(record),
        }
    }
    Ok(aggregate)
}

/// Parses one `Record` occupying `range` of `body`.
fn parse_record(body: &Bytes, range: std::ops::Range<usize>) -> Result<RawRecord, Malformed> {
    let offset = range.start;
    let mut reader = Reader::new(&body[range]);
    let mut record = RawRecord {
        partition_key_index: 0,
        explicit_hash_key_index: None,
        data: Bytes::new(),
    };
    while !reader.done() {
        match reader.key()? {
            (1, VARINT) => record.partition_key_index = reader.varint()?,
            (2, VARINT) => record.explicit_hash_key_index = Some(reader.varint()?),
            (3, LENGTH_DELIMITED) => {
                let data = reader.length_delimited()?;
                record.data = body.slice(offset + data.start..offset + data.end);
            }
            (4, LENGTH_DELIMITED) => {
                let tag = reader.length_delimited()?;
                check_tag(&reader.bytes[tag])?;
            }
            (1..=4, _) => return Err(Malformed),
            (field, wire_type) => reader.skip(field, wire_type, 1)?,
        }
    }
    Ok(record)
}

/// Checks a `Tag` (kept by no consumer, but malformed tags make the whole
/// aggregate malformed, as for prost).
fn check_tag(bytes: &[u8]) -> Result<(), Malformed> {
    let mut reader = Reader::new(bytes);
    while !reader.done() {
        match reader.key()? {
            (1 | 2, LENGTH_DELIMITED) => {
                reader.string()?;
            }
            (1 | 2, _) => return Err(Malformed),
            (field, wire_type) => reader.skip(field, wire_type, 2)?,
        }
    }
    Ok(())
}
