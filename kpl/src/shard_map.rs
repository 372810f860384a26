//! Which shard a hash key falls into: the open shards of a stream, sorted by
//! the end of their hash-key range.

use std::sync::Arc;

use aws_sdk_kinesis::types::Shard;

/// The open shards of one stream.
///
/// ```
/// use kpl::shard_map::ShardMap;
/// let map = ShardMap::from_ranges([("shardId-1", 0, 99), ("shardId-0", 100, u128::MAX)]).unwrap();
/// assert_eq!(&**map.shard_id(map.shard_for(5).unwrap()), "shardId-1");
/// assert_eq!(&**map.shard_id(map.shard_for(100).unwrap()), "shardId-0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    /// `(ending hash key, starting hash key, shard id)`, sorted by ending key.
    shards: Vec<(u128, u128, Arc<str>)>,
}

/// A shard map could not be built from what ListShards returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardMapError {
    /// The stream has no open shard.
    #[error("the stream has no open shard")]
    NoOpenShards,
    /// A hash key range does not parse as two decimal u128.
    #[error("shard {shard_id} has an invalid hash key range")]
    InvalidRange {
        /// The shard.
        shard_id: String,
    },
}

impl ShardMap {
    /// Builds the map from `(shard id, starting hash key, ending hash key)`.
    pub fn from_ranges<'a>(
        ranges: impl IntoIterator<Item = (&'a str, u128, u128)>,
    ) -> Result<Self, ShardMapError> {
        let mut shards: Vec<_> = ranges
            .into_iter()
            .map(|(id, start, end)| (end, start, Arc::<str>::from(id)))
            .collect();
        if shards.is_empty() {
            return Err(ShardMapError::NoOpenShards);
        }
        shards.sort();
        Ok(Self { shards })
    }

    /// Builds the map from ListShards output, keeping only open shards (those
    /// without an ending sequence number).
    pub fn from_shards(shards: &[Shard]) -> Result<Self, ShardMapError> {
        let mut ranges = Vec::new();
        for shard in shards {
            let open = shard
                .sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_none();
            if !open {
                continue;
            }
            let invalid = || ShardMapError::InvalidRange {
                shard_id: shard.shard_id().to_owned(),
            };
            let range = shard.hash_key_range().ok_or_else(invalid)?;
            let start = range.starting_hash_key().parse().map_err(|_| invalid())?;
            let end = range.ending_hash_key().parse().map_err(|_| invalid())?;
            ranges.push((shard.shard_id(), start, end));
        }
        Self::from_ranges(ranges)
    }

    /// Index of the shard whose range holds `hash_key`, if any.
    pub fn shard_for(&self, hash_key: u128) -> Option<usize> {
        let index = self.shards.partition_point(|(end, _, _)| *end < hash_key);
        let (_, start, _) = self.shards.get(index)?;
        (*start <= hash_key).then_some(index)
    }

    /// Id of the shard at `index` (from [`shard_for`](Self::shard_for)).
    ///
    /// # Panics
    /// Never for an index `shard_for` returned on this map.
    pub fn shard_id(&self, index: usize) -> &Arc<str> {
        &self.shards[index].2
    }

    /// Number of open shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: a map has at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Whether a shard id is one of the open shards.
    pub fn contains(&self, shard_id: &str) -> bool {
        self.shards.iter().any(|(_, _, id)| &**id == shard_id)
    }
}

/// Lists every shard of a stream with ListShards, following `NextToken`
/// (1,000 shards a page).
pub async fn list_shards(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<Shard>, aws_sdk_kinesis::Error> {
    list_shards_paged(client, stream, 1000).await
}

/// [`list_shards`] with a given page size (1 to 10,000).
pub async fn list_shards_paged(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    page_size: i32,
) -> Result<Vec<Shard>, aws_sdk_kinesis::Error> {
    list(client, stream, page_size, None).await
}

/// The shards ListShards returns with a `ShardFilter` (for example the
/// shards open at a timestamp, as the Java KCL lists them for a new
/// application). Back ends that ignore the filter return every shard.
pub async fn list_shards_filtered(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    filter: aws_sdk_kinesis::types::ShardFilter,
) -> Result<Vec<Shard>, aws_sdk_kinesis::Error> {
    list(client, stream, 1000, Some(filter)).await
}

async fn list(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    page_size: i32,
    filter: Option<aws_sdk_kinesis::types::ShardFilter>,
) -> Result<Vec<Shard>, aws_sdk_kinesis::Error> {
    let mut shards = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        // With a NextToken, the API refuses the stream name and the filter.
        let request = match next_token.take() {
            Some(token) => client.list_shards().next_token(token),
            None => client
                .list_shards()
                .stream_name(stream)
                .set_shard_filter(filter.clone()),
        };
        let out = request.max_results(page_size).send().await?;
        shards.extend(out.shards().iter().cloned());
        match out.next_token() {
            Some(token) if !out.shards().is_empty() => next_token = Some(token.to_owned()),
            _ => return Ok(shards),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_with_gaps_and_bounds() {
        let map =
            ShardMap::from_ranges([("b", 50, 99), ("a", 0, 9), ("c", 100, u128::MAX)]).unwrap();
        assert_eq!(
            map.shard_for(0).map(|i| map.shard_id(i).to_string()),
            Some("a".into())
        );
        assert_eq!(
            map.shard_for(9).map(|i| map.shard_id(i).to_string()),
            Some("a".into())
        );
        assert_eq!(map.shard_for(10), None, "gap between ranges");
        assert_eq!(
            map.shard_for(50).map(|i| map.shard_id(i).to_string()),
            Some("b".into())
        );
        assert_eq!(
            map.shard_for(u128::MAX)
                .map(|i| map.shard_id(i).to_string()),
            Some("c".into())
        );
        assert!(ShardMap::from_ranges([]).is_err());
    }
}
