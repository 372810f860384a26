//! Names of the metrics the consumer records through the `metrics` facade.

/// Counter: user records handed to processors.
pub const RECORDS_PROCESSED: &str = "kcl_records_processed_total";
/// Counter: checkpoints written (prepared and SHARD_END ones included).
pub const CHECKPOINTS: &str = "kcl_checkpoints_total";
/// Counter: leases taken (free, expired or stolen).
pub const LEASES_TAKEN: &str = "kcl_leases_taken_total";
/// Counter: leases lost to another worker.
pub const LEASES_LOST: &str = "kcl_leases_lost_total";
/// Gauge: leases this worker holds.
pub const LEASES_HELD: &str = "kcl_leases_held";
/// Gauge (label `shard`): seconds behind the tip of the shard, from the
/// last read's MillisBehindLatest.
pub const BEHIND_LATEST: &str = "kcl_behind_latest_seconds";
/// Counter: sub-records outside their shard's hash range (delivered anyway).
pub const OUT_OF_RANGE_SUB_RECORDS: &str = crate::retrieval::OUT_OF_RANGE_SUB_RECORDS;
/// Gauge (label `table`): lease items the last scan could not read (skipped,
/// neither taken nor replaced; each is logged once with its key).
pub const UNREADABLE_LEASES: &str = "kcl_unreadable_lease_items";
/// Counter (label `shard`): records a reader handed over again at or before
/// a position already delivered under the same lease, dropped before the
/// processor sees them (a processor sees each record at most once per lease,
/// in increasing order).
pub const REPEATED_RECORDS_DROPPED: &str = "kcl_repeated_records_dropped_total";
/// Counter: leases given up because they could not be renewed in time
/// (fencing by local deadline; the processor gets `lease_lost`).
pub const LEASES_FENCED: &str = "kcl_leases_fenced_total";
/// Counter: record processors that panicked (their lease is released and
/// the shard retried from its checkpoint after a growing cooldown).
pub const PROCESSOR_FAILURES: &str = "kcl_processor_failures_total";
/// Counter: shards whose reads kept failing with an error no retry fixes (a
/// deleted stream, denied access, an unusable KMS key; their lease is
/// released), and workers stopped by a lease table that cannot be used
/// (deleted, access denied).
pub const PERMANENT_ERRORS: &str = "kcl_permanent_errors_total";
