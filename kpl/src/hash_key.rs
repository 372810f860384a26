//! Hash keys: where a user record lands in the stream's 128-bit key space.
//!
//! Kinesis routes a record to the shard whose `[StartingHashKey,
//! EndingHashKey]` range holds the record's hash key: the explicit hash key
//! when the producer gave one, else the MD5 digest of the partition key read
//! as a big-endian unsigned 128-bit integer.

use md5::{Digest, Md5};

use crate::error::ValidationError;

/// The hash key Kinesis derives from a partition key: MD5(partition key) as a
/// big-endian `u128`.
///
/// ```
/// // MD5("") = d41d8cd98f00b204e9800998ecf8427e
/// assert_eq!(kpl::hash_key::partition_key_hash(""), 0xd41d8cd98f00b204e9800998ecf8427e);
/// ```
pub fn partition_key_hash(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// The hash key of a record: its explicit hash key if it has one, else the
/// hash of its partition key.
///
/// ```
/// assert_eq!(kpl::hash_key::hash_key("pk", Some(7)), 7);
/// assert_eq!(kpl::hash_key::hash_key("pk", None), kpl::hash_key::partition_key_hash("pk"));
/// ```
pub fn hash_key(partition_key: &str, explicit_hash_key: Option<u128>) -> u128 {
    explicit_hash_key.unwrap_or_else(|| partition_key_hash(partition_key))
}

/// A bounded, direct-mapped cache of partition key hashes.
///
/// Producers usually reuse partition keys (a customer, a device, a session),
/// and MD5 is the largest per-record cost after copying the data. A slot is
/// picked by a fast 64-bit hash of the key and confirmed by comparing the key,
/// so a hit is always right; a miss computes MD5 and takes the slot. Memory
/// is bounded by the slot count and the keys' lengths (at most 256 characters).
///
/// ```
/// let mut cache = kpl::hash_key::HashKeyCache::new(1024);
/// assert_eq!(cache.hash("user-1"), kpl::hash_key::partition_key_hash("user-1"));
/// assert_eq!(cache.hash("user-1"), kpl::hash_key::partition_key_hash("user-1"));
/// ```
#[derive(Debug, Clone)]
pub struct HashKeyCache {
    slots: Vec<Option<(String, u128)>>,
    mask: usize,
}

impl HashKeyCache {
    /// A cache of `slots` entries, rounded up to a power of two (at least 1).
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1).next_power_of_two();
        Self {
            slots: vec![None; slots],
            mask: slots - 1,
        }
    }

    /// The hash key of `partition_key`, from the cache when it is there.
    pub fn hash(&mut self, partition_key: &str) -> u128 {
        use std::hash::BuildHasher;
        let index =
            foldhash::fast::FixedState::default().hash_one(partition_key) as usize & self.mask;
        let Some(slot) = self.slots.get_mut(index) else {
            return partition_key_hash(partition_key);
        };
        match slot {
            Some((key, hash)) if key == partition_key => *hash,
            Some((key, hash)) => {
                *hash = partition_key_hash(partition_key);
                key.clear();
                key.push_str(partition_key);
                *hash
            }
            None => {
                let hash = partition_key_hash(partition_key);
                *slot = Some((partition_key.to_owned(), hash));
                hash
            }
        }
    }
}

/// Parses an explicit hash key: a decimal integer in `0..=2^128-1`, digits
/// only (no sign, no spaces), as Kinesis accepts it.
///
/// ```
/// use kpl::hash_key::parse_explicit_hash_key;
/// assert_eq!(parse_explicit_hash_key("340282366920938463463374607431768211455").unwrap(), u128::MAX);
/// assert!(parse_explicit_hash_key("340282366920938463463374607431768211456").is_err());
/// assert!(parse_explicit_hash_key("-1").is_err());
/// ```
pub fn parse_explicit_hash_key(value: &str) -> Result<u128, ValidationError> {
    let invalid = || ValidationError::InvalidExplicitHashKey {
        value: value.chars().take(64).collect(),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse::<u128>().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_md5_hash() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(partition_key_hash("a"), 0x0cc175b9c0f1b6a831c399e269772661);
    }

    #[test]
    fn cache_hits_and_collisions_give_the_right_hash() {
        let mut cache = HashKeyCache::new(2);
        for round in 0..3 {
            for key in ["a", "b", "c", "d", "a"] {
                assert_eq!(
                    cache.hash(key),
                    partition_key_hash(key),
                    "{key} in round {round}"
                );
            }
        }
    }

    #[test]
    fn explicit_hash_key_bounds() {
        assert_eq!(parse_explicit_hash_key("0").unwrap(), 0);
        assert_eq!(parse_explicit_hash_key("007").unwrap(), 7);
        for bad in ["", " 1", "1 ", "+1", "1e3", "0x10", "١"] {
            assert!(parse_explicit_hash_key(bad).is_err(), "{bad:?}");
        }
    }
}
