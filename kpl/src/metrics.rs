//! Names of the metrics the producer records through the `metrics` facade.
//! Install any `metrics` exporter (Prometheus, StatsD, ...) to collect them.

/// Counter: user records accepted by `add_user_record`.
pub const USER_RECORDS_RECEIVED: &str = "kpl_user_records_received_total";
/// Counter: user records put successfully.
pub const USER_RECORDS_PUT: &str = "kpl_user_records_put_total";
/// Counter: user records failed with a non-retryable error.
pub const USER_RECORDS_FAILED: &str = "kpl_user_records_failed_total";
/// Counter: user records whose time to live ran out.
pub const USER_RECORDS_EXPIRED: &str = "kpl_user_records_expired_total";
/// Counter: Kinesis records (aggregates or single records) put successfully.
pub const KINESIS_RECORDS_PUT: &str = "kpl_kinesis_records_put_total";
/// Counter: user record retries scheduled.
pub const RETRIES: &str = "kpl_retries_total";
/// Counter: PutRecords entries answered ProvisionedThroughputExceeded.
pub const THROTTLES: &str = "kpl_throttles_total";
/// Counter: puts stored in a shard other than the predicted one.
pub const WRONG_SHARD: &str = "kpl_wrong_shard_total";
/// Counter: aggregates stored in a shard whose hash key range does not cover
/// all their records (built on a stale map during a reshard), whose records
/// were put again: consumers that drop such aggregates (the Java KCL) lose
/// nothing, consumers that keep them see those records twice.
pub const AGGREGATES_PUT_AGAIN: &str = "kpl_aggregates_put_again_total";
/// Counter: PutRecords calls sent.
pub const REQUESTS: &str = "kpl_put_records_requests_total";
/// Histogram (seconds): time from a user record's arrival to the start of the
/// PutRecords attempt that stored it.
pub const BUFFERING_TIME: &str = "kpl_buffering_time_seconds";
/// Gauge: user records outstanding.
pub const OUTSTANDING: &str = "kpl_outstanding_user_records";
