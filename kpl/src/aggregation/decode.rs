//! Reading aggregated records back into user records.
//!
//! The rule, as the Java KCL applies it: a Kinesis record is an aggregate only
//! if it starts with the magic, its trailing MD5 matches the protobuf bytes and
//! those bytes parse. We are stricter in one way that protects data: an
//! aggregate whose key-table indexes do not resolve, or that holds no records,
//! is also treated as a plain record and delivered unchanged, never dropped.

use bytes::Bytes;
use md5::{Digest, Md5};

use super::{DIGEST_LEN, MAGIC, wire};

/// A user record as a consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeaggregatedRecord {
    /// The user's partition key.
    pub partition_key: String,
    /// The user's explicit hash key, when the producer gave one.
    pub explicit_hash_key: Option<String>,
    /// The user's payload.
    pub data: Bytes,
    /// Index of this record in its aggregate; `0` for a plain record.
    pub sub_sequence_number: u64,
    /// Whether the record came out of an aggregate.
    pub aggregated: bool,
}

/// Why a Kinesis record is not treated as an aggregate (it is then delivered
/// unchanged as one user record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAggregated {
    /// The data does not start with the aggregation magic.
    #[error("no aggregation magic")]
    NoMagic,
    /// Magic present but too short to hold a digest.
    #[error("too short for an aggregate")]
    TooShort,
    /// The trailing MD5 does not match the protobuf bytes.
    #[error("MD5 digest mismatch")]
    DigestMismatch,
    /// The protobuf bytes do not parse as an `AggregatedRecord`.
    #[error("protobuf does not parse")]
    InvalidProtobuf,
    /// A record points outside the partition key table.
    #[error("partition key index out of range")]
    PartitionKeyIndexOutOfRange,
    /// A record points outside the explicit hash key table.
    #[error("explicit hash key index out of range")]
    ExplicitHashKeyIndexOutOfRange,
    /// The aggregate holds no records.
    #[error("aggregate holds no records")]
    Empty,
    /// Its records would take more than [`MAX_KEY_BYTES`] of partition and
    /// explicit hash keys (each record owns a copy of its keys): a crafted
    /// aggregate of a long key and many empty records could otherwise ask
    /// for gigabytes. No producer writes such an aggregate.
    #[error("the records' keys would take more than {MAX_KEY_BYTES} bytes")]
    KeysTooLarge,
}

/// The most bytes of keys one aggregate's records may own together: 64 MiB,
/// 64 times the 1 MiB record limit, far above any aggregate a producer
/// writes (an aggregate of 256-character keys and empty payloads comes
/// nearest).
pub const MAX_KEY_BYTES: usize = 64 << 20;

impl NotAggregated {
    /// True when the record looked like an aggregate (it had the magic) but
    /// failed a later check: worth counting, as it usually means corruption.
    pub fn had_magic(self) -> bool {
        !matches!(self, NotAggregated::NoMagic)
    }
}

/// Decodes an aggregated record into its user records, or says why the bytes
/// are not an aggregate. Never panics, whatever the input.
///
/// ```
/// use bytes::Bytes;
/// use kpl::aggregation::{decode_aggregate, NotAggregated};
///
/// assert_eq!(decode_aggregate(&Bytes::from_static(b"plain")), Err(NotAggregated::NoMagic));
/// ```
pub fn decode_aggregate(data: &Bytes) -> Result<Vec<DeaggregatedRecord>, NotAggregated> {
    if !data.starts_with(&MAGIC) {
        return Err(NotAggregated::NoMagic);
    }
    if data.len() < MAGIC.len() + DIGEST_LEN {
        return Err(NotAggregated::TooShort);
    }
    let body_end = data.len() - DIGEST_LEN;
    let body = data.slice(MAGIC.len()..body_end);
    if Md5::digest(&body).as_slice() != &data[body_end..] {
        return Err(NotAggregated::DigestMismatch);
    }
    // One pass: a record is resolved against the key tables read so far
    // (entries are only ever appended, so a resolved index stays right);
    // one whose key comes later in the bytes (legal, written by no known
    // producer) is resolved at the end.
    let mut partition_keys: Vec<&str> = Vec::new();
    let mut hash_keys: Vec<&str> = Vec::new();
    // Room for ~100-byte records without growing (small records grow it a
    // few times, large ones leave some unused).
    let mut out: Vec<DeaggregatedRecord> = Vec::with_capacity(body.len() / 96 + 1);
    let mut unresolved: Vec<(usize, u64, Option<u64>)> = Vec::new();
    let mut key_bytes = 0usize;
    let mut charge = |len: usize| -> Result<(), NotAggregated> {
        key_bytes += len;
        if key_bytes > MAX_KEY_BYTES {
            return Err(NotAggregated::KeysTooLarge);
        }
        Ok(())
    };
    for field in wire::fields(&body) {
        match field.map_err(|_| NotAggregated::InvalidProtobuf)? {
            wire::Field::PartitionKey(key) => partition_keys.push(key),
            wire::Field::ExplicitHashKey(key) => hash_keys.push(key),
            wire::Field::Record(record) => {
                let index = out.len();
                let partition_key = lookup(&partition_keys, record.partition_key_index);
                let explicit_hash_key = record
                    .explicit_hash_key_index
                    .map(|i| lookup(&hash_keys, i));
                charge(partition_key.as_ref().map_or(0, String::len))?;
                charge(
                    explicit_hash_key
                        .as_ref()
                        .and_then(Option::as_ref)
                        .map_or(0, String::len),
                )?;
                let resolved = partition_key.is_some()
                    && explicit_hash_key.as_ref().is_none_or(Option::is_some);
                if !resolved {
                    unresolved.push((
                        index,
                        record.partition_key_index,
                        record.explicit_hash_key_index,
                    ));
                }
                out.push(DeaggregatedRecord {
                    partition_key: partition_key.unwrap_or_default(),
                    explicit_hash_key: explicit_hash_key.flatten(),
                    data: record.data,
                    sub_sequence_number: index as u64,
                    aggregated: true,
                });
            }
        }
    }
    if out.is_empty() {
        return Err(NotAggregated::Empty);
    }
    for (index, partition_key_index, explicit_hash_key_index) in unresolved {
        let record = &mut out[index];
        record.partition_key = lookup(&partition_keys, partition_key_index)
            .ok_or(NotAggregated::PartitionKeyIndexOutOfRange)?;
        charge(record.partition_key.len())?;
        if let Some(i) = explicit_hash_key_index {
            let key = lookup(&hash_keys, i).ok_or(NotAggregated::ExplicitHashKeyIndexOutOfRange)?;
            charge(key.len())?;
            record.explicit_hash_key = Some(key);
        }
    }
    Ok(out)
}

/// A key table's entry, owned.
fn lookup(table: &[&str], index: u64) -> Option<String> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .map(|key| (*key).to_owned())
}

/// Deaggregates one Kinesis record: its user records if it is a valid
/// aggregate, else the record itself, unchanged, as the only user record.
///
/// ```
/// use bytes::Bytes;
/// let users = kpl::aggregation::deaggregate("pk", None, Bytes::from_static(b"plain"));
/// assert_eq!(users.len(), 1);
/// assert!(!users[0].aggregated);
/// ```
pub fn deaggregate(
    partition_key: &str,
    explicit_hash_key: Option<&str>,
    data: Bytes,
) -> Vec<DeaggregatedRecord> {
    match decode_aggregate(&data) {
        Ok(records) => records,
        Err(_) => vec![DeaggregatedRecord {
            partition_key: partition_key.to_owned(),
            explicit_hash_key: explicit_hash_key.map(str::to_owned),
            data,
            sub_sequence_number: 0,
            aggregated: false,
        }],
    }
}
