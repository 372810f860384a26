//! Counters the connector keeps for its stats log and for callers.

use std::collections::{BTreeMap, HashMap};
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
    /// The stream of single-stream lease keys (the shard id alone).
    pub(crate) single_stream: Option<String>,
    /// Shards stuck in an error retrying cannot fix, with the error.
    failed: Mutex<BTreeMap<String, (String, std::time::Instant)>>,
}

/// How long a shard stays reported stuck in a permanent error after its
/// last failure, unless it fails again (its lease was released: another
/// worker may be processing it fine by then).
pub const PERMANENT_ERROR_SHOWN_FOR: std::time::Duration = std::time::Duration::from_secs(600);

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

    /// Counters for a connector of one stream (`Some`) or several.
    pub(crate) fn new(single_stream: Option<String>) -> Self {
        Self {
            single_stream,
            ..Self::default()
        }
    }

    /// The stream and shard of a lease key: `account:stream:epoch:shard`
    /// for several streams, the shard id alone for one.
    pub(crate) fn stream_and_shard(&self, lease_key: &str) -> (String, String) {
        let parts: Vec<&str> = lease_key.split(':').collect();
        match parts.as_slice() {
            [_, stream, _, shard] => ((*stream).to_owned(), (*shard).to_owned()),
            _ => (
                self.single_stream.clone().unwrap_or_default(),
                lease_key.to_owned(),
            ),
        }
    }

    pub(crate) fn set_lag(&self, lease_key: &str, lag: Option<i64>) {
        let shards = self.lag_ms.lock().map(|mut map| {
            match lag {
                Some(lag) => {
                    map.insert(lease_key.to_owned(), lag);
                }
                None => {
                    map.remove(lease_key);
                }
            }
            map.len()
        });
        let (stream, shard) = self.stream_and_shard(lease_key);
        metrics::gauge!(crate::metrics::BEHIND_LATEST, "stream" => stream, "shard" => shard)
            .set(lag.unwrap_or(0).max(0) as f64 / 1000.0);
        if let Ok(shards) = shards {
            metrics::gauge!(crate::metrics::SHARDS).set(shards as f64);
        }
    }

    /// Marks the shard of `lease_key` stuck in an error retrying cannot fix
    /// (`Some(error)`: access denied to the bucket, a KMS key that does not
    /// exist…; the connector sets it when such an error stops a shard's
    /// processor), or no longer stuck (`None`: an upload of it succeeded
    /// again, or the shard left this worker). While any shard is stuck, the process is not ready
    /// (`/health/ready` answers 503 naming the shards).
    ///
    /// ```
    /// # let stats = connector_s3::connector::ConnectorStats::default();
    /// stats.set_permanent_error("shardId-000000000001", Some("AccessDenied: no s3:PutObject".into()));
    /// assert_eq!(stats.shards_in_permanent_error().len(), 1);
    /// stats.set_permanent_error("shardId-000000000001", None);
    /// assert!(stats.shards_in_permanent_error().is_empty());
    /// ```
    pub fn set_permanent_error(&self, lease_key: &str, error: Option<String>) {
        let count = self.failed.lock().map(|mut failed| {
            match error {
                Some(error) => {
                    failed.insert(lease_key.to_owned(), (error, std::time::Instant::now()));
                }
                None => {
                    failed.remove(lease_key);
                }
            }
            failed.len()
        });
        if let Ok(count) = count {
            metrics::gauge!(crate::metrics::SHARDS_FAILED).set(count as f64);
        }
    }

    /// The shards (lease keys) stuck in an error retrying cannot fix, with
    /// their errors ([`ConnectorStats::set_permanent_error`]).
    pub fn shards_in_permanent_error(&self) -> Vec<(String, String)> {
        self.failed
            .lock()
            .map(|failed| {
                failed
                    .iter()
                    .filter(|(_, (_, at))| at.elapsed() < PERMANENT_ERROR_SHOWN_FOR)
                    .map(|(k, (error, _))| (k.clone(), error.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The shards (lease keys) this worker is processing.
    pub fn processing_shards(&self) -> Vec<String> {
        self.lag_ms
            .lock()
            .map(|lag| lag.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// When a shard last stopped on an error no retry fixes, if one did.
    pub fn last_permanent_error_at(&self) -> Option<std::time::Instant> {
        self.failed
            .lock()
            .ok()
            .and_then(|failed| failed.values().map(|(_, at)| *at).max())
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
