//! Metric names, recorded through the `metrics` facade.

/// Records accepted into the pipeline (after the filter).
pub const RECORDS_IN: &str = "connector_s3_records_in_total";
/// Records filtered out.
pub const RECORDS_FILTERED: &str = "connector_s3_records_filtered_total";
/// Records in uploaded objects.
pub const RECORDS_UPLOADED: &str = "connector_s3_records_uploaded_total";
/// Objects uploaded.
pub const OBJECTS_UPLOADED: &str = "connector_s3_objects_uploaded_total";
/// Object bytes uploaded (compressed).
pub const BYTES_UPLOADED: &str = "connector_s3_bytes_uploaded_total";
/// Upload attempts that failed and were retried.
pub const UPLOAD_RETRIES: &str = "connector_s3_upload_retries_total";
/// Corrupt buffer entries quarantined at start-up.
pub const QUARANTINED: &str = "connector_s3_quarantined_total";
/// Bytes waiting in buffers.
pub const BUFFERED_BYTES: &str = "connector_s3_buffered_bytes";
/// Errors no retry fixes (a missing bucket, denied access, an unusable KMS
/// key or buffer directory) that stopped a shard's processor and released
/// its lease.
pub const PERMANENT_ERRORS: &str = "connector_s3_permanent_errors_total";
/// Failed buffer operations (a full disk, an unwritable directory); reading
/// the shard pauses while they are retried.
pub const BUFFER_ERRORS: &str = "connector_s3_buffer_errors_total";
/// Uploads that found an object with other contents under their key (kept;
/// see the connector's log).
pub const OBJECTS_OCCUPIED: &str = "connector_s3_objects_occupied_total";
/// Gauge (labels `stream`, `shard`): seconds behind the tip of the shard,
/// from the last read's MillisBehindLatest; 0 once this worker no longer
/// processes the shard.
pub const BEHIND_LATEST: &str = "connector_s3_behind_latest_seconds";
/// Gauge: shards this worker is processing.
pub const SHARDS: &str = "connector_s3_shards";
/// Gauge: shards stuck in an error retrying cannot fix (the process is not
/// ready while there are any).
pub const SHARDS_FAILED: &str = "connector_s3_shards_in_permanent_error";

/// Describes the connector's metrics (help text and units) to the installed
/// recorder, and registers its counters at 0 so that each series exists
/// before its first event; call after installing the recorder.
///
/// ```
/// connector_s3::metrics::describe(); // a no-op without a recorder
/// ```
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge};
    describe_counter!(
        RECORDS_IN,
        Unit::Count,
        "Records read and accepted by the filter."
    );
    describe_counter!(RECORDS_FILTERED, Unit::Count, "Records the filter dropped.");
    describe_counter!(
        RECORDS_UPLOADED,
        Unit::Count,
        "Records in objects uploaded to S3."
    );
    describe_counter!(OBJECTS_UPLOADED, Unit::Count, "Objects uploaded to S3.");
    describe_counter!(
        BYTES_UPLOADED,
        Unit::Bytes,
        "Object bytes uploaded to S3 (compressed)."
    );
    describe_counter!(
        UPLOAD_RETRIES,
        Unit::Count,
        "Upload attempts that failed and were retried."
    );
    describe_counter!(
        QUARANTINED,
        Unit::Count,
        "Corrupt buffer entries quarantined."
    );
    describe_counter!(
        PERMANENT_ERRORS,
        Unit::Count,
        "Errors no retry fixes (missing bucket, denied access, unusable KMS key or buffer directory) that stopped a shard's processor and released its lease."
    );
    describe_counter!(
        BUFFER_ERRORS,
        Unit::Count,
        "Failed buffer operations (a full disk, an unwritable directory); reading pauses while they are retried."
    );
    describe_counter!(
        OBJECTS_OCCUPIED,
        Unit::Count,
        "Uploads that found an object with other contents under their key (kept)."
    );
    for counter in [
        RECORDS_IN,
        RECORDS_FILTERED,
        RECORDS_UPLOADED,
        OBJECTS_UPLOADED,
        BYTES_UPLOADED,
        UPLOAD_RETRIES,
        QUARANTINED,
        PERMANENT_ERRORS,
        BUFFER_ERRORS,
        OBJECTS_OCCUPIED,
    ] {
        metrics::counter!(counter).increment(0);
    }
    metrics::gauge!(SHARDS_FAILED).set(0.0);
    describe_gauge!(
        BUFFERED_BYTES,
        Unit::Bytes,
        "Bytes waiting in the shards' buffers."
    );
    describe_gauge!(
        BEHIND_LATEST,
        Unit::Seconds,
        "Seconds behind the tip of the shard (MillisBehindLatest of the last read); 0 once the shard left this worker."
    );
    describe_gauge!(SHARDS, Unit::Count, "Shards this worker is processing.");
    describe_gauge!(
        SHARDS_FAILED,
        Unit::Count,
        "Shards stuck in an error retrying cannot fix."
    );
}
