//! Counters the connector keeps for its stats log and for callers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters of a running connector (all since start).
#[derive(Debug, Default)]
pub struct ConnectorStats {
    pub(crate) records_in: AtomicU64,
    pub(crate) records_filtered: AtomicU64,
    pub(crate) transform_failures: AtomicU64,
    pub(crate) records_uploaded: AtomicU64,
    pub(crate) objects_uploaded: AtomicU64,
    pub(crate) bytes_uploaded: AtomicU64,
    pub(crate) upload_retries: AtomicU64,
    pub(crate) quarantined: AtomicU64,
    pub(crate) objects_adopted: AtomicU64,
    pub(crate) buffered_bytes: AtomicU64,
    pub(crate) lag_ms: Mutex<HashMap<String, i64>>,
    /// Shards whose processor stopped on an error no retry fixes, with it.
    pub(crate) failing: Mutex<HashMap<String, String>>,
}

/// A snapshot of [`ConnectorStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Records read and accepted by the filter.
    pub records_in: u64,
    /// Records the filter dropped.
    pub records_filtered: u64,
    /// Records the transformer failed on (skipped).
    pub transform_failures: u64,
    /// Records in uploaded objects.
    pub records_uploaded: u64,
    /// Objects uploaded.
    pub objects_uploaded: u64,
    /// Bytes uploaded (compressed).
    pub bytes_uploaded: u64,
    /// Failed upload attempts (retried).
    pub upload_retries: u64,
    /// Corrupt buffer entries quarantined.
    pub quarantined: u64,
    /// Objects a previous owner uploaded and this worker adopted.
    pub objects_adopted: u64,
    /// Bytes waiting in buffers.
    pub buffered_bytes: u64,
    /// Largest `millis_behind_latest` over this worker's shards.
    pub max_lag_ms: i64,
    /// Shards being processed.
    pub shards: usize,
}

impl ConnectorStats {
    /// A snapshot of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let lag = self
            .lag_ms
            .lock()
            .map(|l| (l.values().copied().max().unwrap_or(0), l.len()));
        let (max_lag_ms, shards) = lag.unwrap_or_default();
        StatsSnapshot {
            records_in: self.records_in.load(Relaxed),
            records_filtered: self.records_filtered.load(Relaxed),
            transform_failures: self.transform_failures.load(Relaxed),
            records_uploaded: self.records_uploaded.load(Relaxed),
            objects_uploaded: self.objects_uploaded.load(Relaxed),
            bytes_uploaded: self.bytes_uploaded.load(Relaxed),
            upload_retries: self.upload_retries.load(Relaxed),
            quarantined: self.quarantined.load(Relaxed),
            objects_adopted: self.objects_adopted.load(Relaxed),
            buffered_bytes: self.buffered_bytes.load(Relaxed),
            max_lag_ms,
            shards,
        }
    }

    /// Shards (lease keys) whose processor last stopped on an error no retry
    /// fixes (a missing bucket, denied access, an unusable buffer
    /// directory), with the error and what to fix. A shard leaves the list
    /// when an upload of it succeeds again.
    pub fn failing_shards(&self) -> Vec<(String, String)> {
        self.failing
            .lock()
            .map(|f| f.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    pub(crate) fn set_failing(&self, shard: &str, error: Option<String>) {
        if let Ok(mut map) = self.failing.lock() {
            match error {
                Some(error) => {
                    map.insert(shard.to_owned(), error);
                }
                None => {
                    map.remove(shard);
                }
            }
        }
    }

    pub(crate) fn set_lag(&self, shard: &str, lag: Option<i64>) {
        if let Ok(mut map) = self.lag_ms.lock() {
            match lag {
                Some(lag) => {
                    map.insert(shard.to_owned(), lag);
                }
                None => {
                    map.remove(shard);
                }
            }
        }
    }
}

impl std::fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "records_in={} uploaded={} objects={} bytes_uploaded={} lag_ms={} buffered_bytes={} shards={} filtered={} retries={} quarantined={}",
            self.records_in,
            self.records_uploaded,
            self.objects_uploaded,
            self.bytes_uploaded,
            self.max_lag_ms,
            self.buffered_bytes,
            self.shards,
            self.records_filtered,
            self.upload_retries,
            self.quarantined
        )
    }
}
