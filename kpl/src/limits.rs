//! What Kinesis refuses, by size: the per-record limit of a stream and the
//! PutRecords request limit that goes with it.
//!
//! Kinesis counts a record as its data plus its partition key (in UTF-8
//! bytes), both per record and per PutRecords request. A stream's record
//! limit is 1 MiB unless raised with `UpdateMaxRecordSize` (up to 10 MiB);
//! `DescribeStreamSummary` reports it as `MaxRecordSizeInKiB`. The producer
//! reads it when it first meets a stream and whenever it reloads the
//! stream's shard map, and holds validation, aggregation and collection to
//! it. Source: the Kinesis API reference (PutRecord, PutRecords,
//! UpdateMaxRecordSize) and the developer guide's "Handle large records".

/// A stream's record limit unless raised, and the least any stream has: 1 MiB
/// of data plus partition key.
pub const DEFAULT_MAX_RECORD_SIZE: usize = 1_048_576;

/// The highest record limit a stream can be given (`UpdateMaxRecordSize`
/// with 10,240 KiB): 10 MiB of data plus partition key.
pub const MAX_RECORD_SIZE_CEILING: usize = 10_485_760;

/// Most bytes (data plus partition keys) of one PutRecords request to a
/// stream at the default record limit: 5 MiB.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 5_242_880;

/// Most bytes (data plus partition keys) of one PutRecords request to a
/// stream whose records may exceed 1 MiB: 10 MiB.
pub const LARGE_MAX_REQUEST_SIZE: usize = 10_485_760;

/// The size limits of one stream.
///
/// ```
/// use kpl::limits::StreamLimits;
/// let default = StreamLimits::default();
/// assert_eq!(default.max_record_size(), 1_048_576);
/// assert_eq!(default.max_request_size(), 5_242_880);
/// let large = StreamLimits::from_kib(Some(10_240));
/// assert_eq!(large.max_record_size(), 10_485_760);
/// assert_eq!(large.max_request_size(), 10_485_760);
/// assert_eq!(StreamLimits::from_kib(None), default);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    max_record_size: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
        }
    }
}

impl StreamLimits {
    /// The limits of a stream whose `MaxRecordSizeInKiB` is `kib`: the
    /// default when absent, and clamped to the range Kinesis allows (1,024 to
    /// 10,240 KiB) otherwise.
    pub fn from_kib(kib: Option<i32>) -> Self {
        let Some(kib) = kib else {
            return Self::default();
        };
        let bytes = usize::try_from(kib).unwrap_or(0).saturating_mul(1024);
        Self {
            max_record_size: bytes.clamp(DEFAULT_MAX_RECORD_SIZE, MAX_RECORD_SIZE_CEILING),
        }
    }

    /// Largest record the stream takes: data plus partition key, in bytes.
    pub fn max_record_size(&self) -> usize {
        self.max_record_size
    }

    /// Largest PutRecords request the stream takes, data plus partition keys
    /// of every entry, in bytes: 10 MiB when its records may exceed 1 MiB,
    /// 5 MiB otherwise.
    pub fn max_request_size(&self) -> usize {
        if self.max_record_size > DEFAULT_MAX_RECORD_SIZE {
            LARGE_MAX_REQUEST_SIZE
        } else {
            DEFAULT_MAX_REQUEST_SIZE
        }
    }
}

/// Reads a stream's limits with `DescribeStreamSummary`. `Ok` with the
/// default limits when the answer has no `MaxRecordSizeInKiB` (older
/// endpoints and emulators).
pub async fn describe_stream_limits(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<StreamLimits, aws_sdk_kinesis::Error> {
    let out = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await?;
    let kib = out
        .stream_description_summary()
        .and_then(|summary| summary.max_record_size_in_kib());
    Ok(StreamLimits::from_kib(kib))
}
