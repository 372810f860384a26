//! Building aggregated records, byte for byte as the AWS KPL does.
//!
//! The protobuf body is written incrementally into three buffers (partition
//! key table, explicit hash key table, records) that are concatenated in
//! field order when the aggregate is finished. Writing as we go means the size
//! of the finished aggregate is always known exactly, so an aggregate never
//! exceeds its limit, and adding a record costs one copy of its data.

use std::hash::BuildHasher;

use bytes::Bytes;
use md5::{Digest, Md5};
use prost::encoding::{encode_varint, encoded_len_varint};

use super::{DIGEST_LEN, MAGIC};
use crate::hash_key::hash_key;

/// Bytes an aggregate spends outside its protobuf body: magic plus digest.
pub const AGGREGATE_OVERHEAD: usize = MAGIC.len() + DIGEST_LEN;

// Protobuf keys: (field number << 3) | wire type. Length-delimited = 2, varint = 0.
const KEY_PARTITION_KEY_TABLE: u8 = (1 << 3) | 2;
const KEY_EXPLICIT_HASH_KEY_TABLE: u8 = (2 << 3) | 2;
const KEY_RECORDS: u8 = (3 << 3) | 2;
const KEY_PARTITION_KEY_INDEX: u8 = 1 << 3;
const KEY_EXPLICIT_HASH_KEY_INDEX: u8 = 2 << 3;
const KEY_DATA: u8 = (3 << 3) | 2;

/// One entry of a PutRecords call: what the producer hands to Kinesis.
///
/// Either a single user record, sent as it is, or an aggregate of several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisRecord {
    /// Partition key of the entry. For an aggregate, the partition key of its
    /// first user record (the AWS KPL writes `"a"`; a real key is more useful
    /// in logs and to consumers that do not deaggregate, and routing is fixed
    /// by the explicit hash key anyway).
    pub partition_key: String,
    /// Explicit hash key (decimal) of the entry. For an aggregate, the hash key
    /// of its first user record, so that Kinesis routes it to the shard the
    /// producer predicted; for a single record, the user's own, if any.
    pub explicit_hash_key: Option<String>,
    /// The payload: the user's data, or the aggregate's bytes.
    pub data: Bytes,
    /// Number of user records in this entry.
    pub user_records: usize,
}

/// Accumulates user records into one aggregated record.
///
/// ```
/// use bytes::Bytes;
/// use kpl::aggregation::{AggregateBuilder, decode_aggregate};
///
/// let mut agg = AggregateBuilder::new();
/// assert!(agg.try_add("user-1", None, &Bytes::from_static(b"hello"), 51_200));
/// assert!(agg.try_add("user-2", Some(42), &Bytes::from_static(b"world"), 51_200));
/// let size = agg.encoded_len();
/// let record = agg.take().unwrap();
/// assert_eq!(record.data.len(), size);
/// let users = decode_aggregate(&record.data).unwrap();
/// assert_eq!(users[1].explicit_hash_key.as_deref(), Some("42"));
/// ```
#[derive(Debug, Default)]
pub struct AggregateBuilder {
    partition_key_table: Vec<u8>,
    explicit_hash_key_table: Vec<u8>,
    records: Vec<u8>,
    /// Partition key table index by a 64-bit hash of the key; the key's bytes
    /// (at `partition_key_spans[index]` in the table) confirm a hit, so no key
    /// is copied into a map of its own.
    partition_keys: foldhash::HashMap<u64, u64>,
    partition_key_spans: Vec<(usize, usize)>,
    explicit_hash_keys: foldhash::HashMap<u128, u64>,
    first: Option<FirstRecord>,
    count: usize,
}

/// The first record is kept whole so that an aggregate of one can be sent as
/// the plain record it is (as the AWS KPL does).
#[derive(Debug)]
struct FirstRecord {
    partition_key: String,
    explicit_hash_key: Option<u128>,
    data: Bytes,
}

/// What adding one record changes: table indexes and the bytes it adds.
struct Addition {
    partition_key_index: u64,
    new_partition_key: bool,
    explicit_hash_key_index: Option<u64>,
    new_explicit_hash_key: bool,
    inner_len: usize,
    added_bytes: usize,
}

impl AggregateBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of user records added so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when no record has been added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The partition key the finished record will carry: its first user
    /// record's. `None` when empty. Kinesis counts it in the record's size
    /// (data plus partition key), so a limit on that size leaves
    /// [`encoded_len`](Self::encoded_len) this key's length less.
    pub fn partition_key(&self) -> Option<&str> {
        self.first
            .as_ref()
            .map(|first| first.partition_key.as_str())
    }

    /// Exact size in bytes of the aggregate as it stands (magic, protobuf and
    /// digest). Zero when empty. With one record, this is still the size of
    /// the aggregated form, although [`take`](Self::take) sends it unwrapped.
    pub fn encoded_len(&self) -> usize {
        if self.count == 0 {
            return 0;
        }
        AGGREGATE_OVERHEAD
            + self.partition_key_table.len()
            + self.explicit_hash_key_table.len()
            + self.records.len()
    }

    /// Exact size the aggregate would have with this record added.
    pub fn size_with(
        &self,
        partition_key: &str,
        explicit_hash_key: Option<u128>,
        data_len: usize,
    ) -> usize {
        let addition = self.plan(partition_key, explicit_hash_key, data_len);
        AGGREGATE_OVERHEAD
            + self.partition_key_table.len()
            + self.explicit_hash_key_table.len()
            + self.records.len()
            + addition.added_bytes
    }

    /// Adds the record if the aggregate then stays within `max_size` bytes
    /// (magic, protobuf and digest: the outer partition key is not counted,
    /// see [`partition_key`](Self::partition_key)), or if the builder is empty (a lone record is sent unwrapped, so its size
    /// as an aggregate does not matter). Returns whether it was added.
    pub fn try_add(
        &mut self,
        partition_key: &str,
        explicit_hash_key: Option<u128>,
        data: &Bytes,
        max_size: usize,
    ) -> bool {
        let addition = self.plan(partition_key, explicit_hash_key, data.len());
        if self.count > 0 && self.encoded_len() + addition.added_bytes > max_size {
            return false;
        }
        self.apply(addition, partition_key, explicit_hash_key, data);
        true
    }

    /// Adds the record whatever the resulting size.
    pub fn add(&mut self, partition_key: &str, explicit_hash_key: Option<u128>, data: &Bytes) {
        let addition = self.plan(partition_key, explicit_hash_key, data.len());
        self.apply(addition, partition_key, explicit_hash_key, data);
    }

    /// Finishes the aggregate and resets the builder (keeping its buffers'
    /// capacity). `None` when empty; a single record comes back as it was
    /// added, not wrapped.
    pub fn take(&mut self) -> Option<KinesisRecord> {
        let first = self.first.take()?;
        let count = std::mem::take(&mut self.count);
        let record = if count == 1 {
            KinesisRecord {
                partition_key: first.partition_key,
                explicit_hash_key: first.explicit_hash_key.map(|k| k.to_string()),
                data: first.data,
                user_records: 1,
            }
        } else {
            let body = [
                self.partition_key_table.as_slice(),
                self.explicit_hash_key_table.as_slice(),
                self.records.as_slice(),
            ];
            let body_len: usize = body.iter().map(|part| part.len()).sum();
            let mut out = Vec::with_capacity(AGGREGATE_OVERHEAD + body_len);
            out.extend_from_slice(&MAGIC);
            let mut digest = Md5::new();
            for part in body {
                out.extend_from_slice(part);
                digest.update(part);
            }
            out.extend_from_slice(&digest.finalize());
            let hash = hash_key(&first.partition_key, first.explicit_hash_key);
            KinesisRecord {
                partition_key: first.partition_key,
                explicit_hash_key: Some(hash.to_string()),
                data: Bytes::from(out),
                user_records: count,
            }
        };
        self.partition_key_table.clear();
        self.explicit_hash_key_table.clear();
        self.records.clear();
        self.partition_keys.clear();
        self.partition_key_spans.clear();
        self.explicit_hash_keys.clear();
        Some(record)
    }

    fn find_partition_key(&self, partition_key: &str) -> Option<u64> {
        let index = *self.partition_keys.get(&key_hash(partition_key))?;
        let &(start, end) = self.partition_key_spans.get(usize::try_from(index).ok()?)?;
        (self.partition_key_table.get(start..end)? == partition_key.as_bytes()).then_some(index)
    }

    fn plan(
        &self,
        partition_key: &str,
        explicit_hash_key: Option<u128>,
        data_len: usize,
    ) -> Addition {
        let mut added_bytes = 0;
        let (partition_key_index, new_partition_key) = match self.find_partition_key(partition_key)
        {
            Some(index) => (index, false),
            None => {
                added_bytes += table_entry_len(partition_key.len());
                (self.partition_key_spans.len() as u64, true)
            }
        };
        let (explicit_hash_key_index, new_explicit_hash_key) = match explicit_hash_key {
            None => (None, false),
            Some(ehk) => match self.explicit_hash_keys.get(&ehk) {
                Some(&index) => (Some(index), false),
                None => {
                    added_bytes += table_entry_len(decimal_len(ehk));
                    (Some(self.explicit_hash_keys.len() as u64), true)
                }
            },
        };
        let mut inner_len = 1
            + encoded_len_varint(partition_key_index)
            + 1
            + encoded_len_varint(data_len as u64)
            + data_len;
        if let Some(index) = explicit_hash_key_index {
            inner_len += 1 + encoded_len_varint(index);
        }
        added_bytes += 1 + encoded_len_varint(inner_len as u64) + inner_len;
        Addition {
            partition_key_index,
            new_partition_key,
            explicit_hash_key_index,
            new_explicit_hash_key,
            inner_len,
            added_bytes,
        }
    }

    fn apply(
        &mut self,
        addition: Addition,
        partition_key: &str,
        explicit_hash_key: Option<u128>,
        data: &Bytes,
    ) {
        if addition.new_partition_key {
            push_table_entry(
                &mut self.partition_key_table,
                KEY_PARTITION_KEY_TABLE,
                partition_key.as_bytes(),
            );
            let end = self.partition_key_table.len();
            self.partition_key_spans
                .push((end - partition_key.len(), end));
            // On a (64-bit) hash collision the first key keeps the slot and the
            // second is simply not deduplicated: still a valid aggregate.
            self.partition_keys
                .entry(key_hash(partition_key))
                .or_insert(addition.partition_key_index);
        }
        if let (true, Some(ehk), Some(index)) = (
            addition.new_explicit_hash_key,
            explicit_hash_key,
            addition.explicit_hash_key_index,
        ) {
            push_table_entry(
                &mut self.explicit_hash_key_table,
                KEY_EXPLICIT_HASH_KEY_TABLE,
                ehk.to_string().as_bytes(),
            );
            self.explicit_hash_keys.insert(ehk, index);
        }

        let out = &mut self.records;
        out.push(KEY_RECORDS);
        encode_varint(addition.inner_len as u64, out);
        out.push(KEY_PARTITION_KEY_INDEX);
        encode_varint(addition.partition_key_index, out);
        if let Some(index) = addition.explicit_hash_key_index {
            out.push(KEY_EXPLICIT_HASH_KEY_INDEX);
            encode_varint(index, out);
        }
        out.push(KEY_DATA);
        encode_varint(data.len() as u64, out);
        out.extend_from_slice(data);

        if self.first.is_none() {
            self.first = Some(FirstRecord {
                partition_key: partition_key.to_owned(),
                explicit_hash_key,
                data: data.clone(),
            });
        }
        self.count += 1;
    }
}

fn key_hash(key: &str) -> u64 {
    foldhash::fast::FixedState::default().hash_one(key)
}

/// Bytes of one length-delimited table entry holding `len` bytes.
fn table_entry_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn push_table_entry(table: &mut Vec<u8>, key: u8, value: &[u8]) {
    table.push(key);
    encode_varint(value.len() as u64, table);
    table.extend_from_slice(value);
}

/// Number of decimal digits of `n`.
fn decimal_len(mut n: u128) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}
