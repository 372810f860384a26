//! Producer configuration. Defaults are the AWS KPL's unless noted.

use std::time::Duration;

/// How the producer batches, limits, retries and bounds its memory.
///
/// Every field has a default (shown next to it); start from
/// `ProducerConfig::default()` and change what you need:
///
/// ```
/// use std::time::Duration;
/// let config = kpl::ProducerConfig {
///     record_max_buffered_time: Duration::from_millis(50),
///     max_outstanding_bytes: 64 << 20,
///     ..Default::default()
/// };
/// assert_eq!(config.aggregation_max_size, 51_200);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerConfig {
    /// Pack user records into KPL aggregated records. Default: `true`.
    pub aggregation_enabled: bool,
    /// Most user records in one aggregate. Default: `4_294_967_295`.
    pub aggregation_max_count: usize,
    /// Most bytes of one aggregate (magic, protobuf and digest), up to
    /// 10 MiB. An aggregate is also kept small enough that it plus its
    /// partition key (what Kinesis counts) fits its stream's record limit
    /// (see [`crate::limits`]: 1 MiB unless the stream's was raised).
    /// Default: `51_200`.
    pub aggregation_max_size: usize,
    /// Most Kinesis records in one PutRecords call. Default: `500` (the API's limit).
    pub collection_max_count: usize,
    /// Most bytes (data plus partition keys) in one PutRecords call, up to
    /// 10 MiB. Each stream's calls are also held to its PutRecords limit:
    /// 5 MiB, or 10 MiB for a stream whose records may exceed 1 MiB (see
    /// [`crate::limits`]). Default: `10_485_760`, so that the stream's limit
    /// decides (the AWS KPL's is 5 MiB, the limit before larger records).
    pub collection_max_size: usize,
    /// A PutRecords call is also sent as soon as one shard has this many
    /// bytes waiting in it. Default: `262_144` (256 KiB, as the AWS KPL).
    pub collection_shard_trigger_size: usize,
    /// Longest a user record waits to be aggregated and collected before it is
    /// sent. Default: 100 ms.
    pub record_max_buffered_time: Duration,
    /// Time to live of a user record: past it, the record fails with
    /// [`ProducerError::Expired`](crate::ProducerError::Expired). Default: 30 s.
    pub record_ttl: Duration,
    /// Timeout of one PutRecords attempt. Default: 6 s.
    pub request_timeout: Duration,
    /// Most PutRecords calls in flight at once. Default: `24`.
    pub max_connections: usize,
    /// Percentage of a shard's write limits (1,000 records/s and 1 MiB/s) the
    /// per-shard rate limiter lets through. The limiter also slows a shard
    /// down while Kinesis answers ProvisionedThroughputExceeded for it, and
    /// speeds back up as puts succeed. Default: `150`.
    pub rate_limit: u32,
    /// Largest user record accepted (data plus partition key, in bytes), up
    /// to 10 MiB. A record is also held to its stream's record limit (see
    /// [`crate::limits`]: 1 MiB unless the stream's was raised) and to
    /// `max_outstanding_bytes`. Default: `10_485_760`, so that the stream's
    /// limit decides.
    pub max_user_record_size: usize,
    /// Backpressure bound on user records accepted but not yet completed.
    /// `add_user_record` waits, and `try_add_user_record` fails, at the bound.
    /// Default: `100_000` (not in the AWS KPL, which has no bound).
    pub max_outstanding_records: usize,
    /// Backpressure bound on the bytes of user records accepted but not yet
    /// completed. Default: 128 MiB (not in the AWS KPL).
    pub max_outstanding_bytes: usize,
    /// Smallest delay before a failed record is retried; it doubles with each
    /// attempt, with full jitter. Default: 100 ms (the AWS KPL does not back
    /// off at all).
    pub retry_min_delay: Duration,
    /// Largest delay between two attempts of a record. Default: 5 s.
    pub retry_max_delay: Duration,
    /// How often the shard map of each stream is refreshed from ListShards
    /// (it is also refreshed at once when a put lands in an unexpected shard).
    /// Default: 60 s.
    pub shard_map_refresh_interval: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            aggregation_enabled: true,
            aggregation_max_count: 4_294_967_295,
            aggregation_max_size: 51_200,
            collection_max_count: 500,
            collection_max_size: 10_485_760,
            collection_shard_trigger_size: 262_144,
            record_max_buffered_time: Duration::from_millis(100),
            record_ttl: Duration::from_secs(30),
            request_timeout: Duration::from_secs(6),
            max_connections: 24,
            rate_limit: 150,
            max_user_record_size: 10_485_760,
            max_outstanding_records: 100_000,
            max_outstanding_bytes: 128 << 20,
            retry_min_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(5),
            shard_map_refresh_interval: Duration::from_secs(60),
        }
    }
}
