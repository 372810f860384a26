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
