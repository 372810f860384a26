//! Membership in a Java KCL 3.x fleet: which state the fleet's migration is
//! in, and this worker's `WorkerMetricStats` row, which a Java 3.x leader
//! needs to count a worker alive (and assign it leases), and a 2.x → 3.x
//! migration needs from every lease owner before it completes.
//!
//! Read from the Java KCL 3.x (`coordinator/migration/MigrationState.java`,
//! `worker/metricstats/WorkerMetricStats.java`, 3.5's single-table format):
//! the `Migration3.0` item (`cv`: the client version) lives in
//! `<app>-CoordinatorState` (key `key`) until 3.5 moves it into the lease
//! table (key `leaseKey`, `entityType` `CLIENT_VERSION_MIGRATION`); metrics
//! rows live in `<app>-WorkerMetricStats` (key `wid`) or, in 3.5, in the
//! lease table (`entityType` `WORKER_METRIC_STATS`). A table with neither is
//! a KCL 2.x fleet: nothing here writes anything then.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::lease::LeaseError;

/// How often a Java KCL 3.x worker refreshes its metrics row
/// (`workerMetricsReporterFreqInMillis`); its leader counts a worker dead
/// when the row is older than twice this.
pub const METRICS_INTERVAL: Duration = Duration::from_secs(30);

/// Where a fleet keeps its KCL 3.x items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// No KCL 3.x item: a KCL 2.x fleet.
    TwoX,
    /// 3.0–3.4: `<app>-CoordinatorState` and `<app>-WorkerMetricStats`.
    SeparateTables,
    /// 3.5 single-table format: everything in the lease table.
    LeaseTable,
}

/// The fleet's client version (`Migration3.0`'s `cv`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientVersion {
    /// No migration item: a KCL 2.x fleet.
    None,
    /// `CLIENT_VERSION_UPGRADE_FROM_2X` or `CLIENT_VERSION_2X`: the 2.x lease
    /// taker, but every worker publishes metrics (the migration waits for
    /// every lease owner's row).
    CompatibleWith2x,
    /// `CLIENT_VERSION_3X` or `CLIENT_VERSION_3X_WITH_ROLLBACK`: a leader
    /// assigns leases; workers take none on their own.
    ThreeX,
    /// Another value (`CLIENT_VERSION_INIT`, a future one): treated as
    /// [`CompatibleWith2x`](Self::CompatibleWith2x).
    Other(String),
}

impl ClientVersion {
    fn from_cv(cv: &str) -> Self {
        match cv {
            "CLIENT_VERSION_3X" | "CLIENT_VERSION_3X_WITH_ROLLBACK" => Self::ThreeX,
            "CLIENT_VERSION_UPGRADE_FROM_2X" | "CLIENT_VERSION_2X" => Self::CompatibleWith2x,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Whether a Java leader assigns the leases (this worker must not take
    /// any on its own while one is alive).
    pub fn leader_assigns(&self) -> bool {
        matches!(self, Self::ThreeX)
    }
}

/// What was found of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetState {
    /// Where its 3.x items are.
    pub layout: Layout,
    /// Its client version.
    pub version: ClientVersion,
}

/// Reads and writes the fleet's KCL 3.x items for one worker.
#[derive(Debug, Clone)]
pub struct Fleet {
    client: aws_sdk_dynamodb::Client,
    lease_table: String,
    worker_id: String,
}

impl Fleet {
    /// For the fleet of lease table `lease_table`, as worker `worker_id`.
    pub fn new(client: aws_sdk_dynamodb::Client, lease_table: &str, worker_id: &str) -> Self {
        Self {
            client,
            lease_table: lease_table.to_owned(),
            worker_id: worker_id.to_owned(),
        }
    }

    fn coordinator_table(&self) -> String {
        format!("{}-CoordinatorState", self.lease_table)
    }

    fn metrics_table(&self) -> String {
        format!("{}-WorkerMetricStats", self.lease_table)
    }

    /// Finds where the fleet's `Migration3.0` item is and what it says
    /// (one or two GetItem calls).
    ///
    /// # Errors
    /// [`LeaseError::Dynamo`] when the lease table cannot be read.
    pub async fn state(&self) -> Result<FleetState, LeaseError> {
        let in_lease_table = self
            .get(&self.lease_table, "leaseKey", "Migration3.0")
            .await?;
        if let Some(item) = in_lease_table {
            return Ok(FleetState {
                layout: Layout::LeaseTable,
                version: version_of(&item),
            });
        }
        // A missing CoordinatorState table is a 2.x fleet (or a 3.5 one
        // whose migration item has not been written yet).
        match self
            .get(&self.coordinator_table(), "key", "Migration3.0")
            .await
        {
            Ok(Some(item)) => Ok(FleetState {
                layout: Layout::SeparateTables,
                version: version_of(&item),
            }),
            Ok(None) | Err(_) => Ok(FleetState {
                layout: Layout::TwoX,
                version: ClientVersion::None,
            }),
        }
    }

    async fn get(
        &self,
        table: &str,
        key: &str,
        value: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, LeaseError> {
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key(key, AttributeValue::S(value.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| LeaseError::dynamo("GetItem (fleet state)", e))?;
        Ok(out.item().cloned())
    }

    /// Writes this worker's metrics row where `layout` keeps them: the
    /// empty-metrics form (`sts` and `opr` empty maps), which a Java 3.x
    /// leader balances by lease throughput; `lut` now, and in the lease
    /// table the 3.5 feature code (`sup` 1, `slu`). Nothing for a 2.x fleet.
    ///
    /// # Errors
    /// [`LeaseError::Dynamo`] when the write fails.
    pub async fn publish_metrics(&self, layout: &Layout) -> Result<(), LeaseError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let empty = || AttributeValue::M(HashMap::new());
        let request = match layout {
            Layout::TwoX => return Ok(()),
            Layout::SeparateTables => self
                .client
                .update_item()
                .table_name(self.metrics_table())
                .key("wid", AttributeValue::S(self.worker_id.clone()))
                .update_expression("SET lut = :lut, sts = :sts, opr = :opr"),
            Layout::LeaseTable => self
                .client
                .update_item()
                .table_name(&self.lease_table)
                .key("leaseKey", AttributeValue::S(self.worker_id.clone()))
                .update_expression(
                    "SET lut = :lut, sts = :sts, opr = :opr, entityType = :entity, sup = :sup, slu = :lut",
                )
                .expression_attribute_values(":entity", AttributeValue::S("WORKER_METRIC_STATS".into()))
                .expression_attribute_values(":sup", AttributeValue::N("1".into())),
        };
        request
            .expression_attribute_values(":lut", AttributeValue::N(now))
            .expression_attribute_values(":sts", empty())
            .expression_attribute_values(":opr", empty())
            .send()
            .await
            .map_err(|e| LeaseError::dynamo("UpdateItem (worker metrics)", e))?;
        Ok(())
    }

    /// Whether a leader holds the `Leader` lock: the item exists in the
    /// table `layout` keeps it in (the Java KCL deletes it when its leader
    /// stops gracefully; a crashed leader's item stays, and is judged by
    /// [`LeaderWatch`]). Returns the item's `recordVersionNumber` and
    /// `leaseDuration` (ms).
    ///
    /// # Errors
    /// [`LeaseError::Dynamo`] when the table cannot be read.
    pub async fn leader(&self, layout: &Layout) -> Result<Option<(String, u64)>, LeaseError> {
        let item = match layout {
            Layout::TwoX => return Ok(None),
            // The lock stays in the legacy table until 3.5's table
            // migration completes; look in both.
            Layout::LeaseTable => match self.get(&self.lease_table, "leaseKey", "Leader").await? {
                Some(item) => Some(item),
                None => self
                    .get(&self.coordinator_table(), "key", "Leader")
                    .await
                    .ok()
                    .flatten(),
            },
            Layout::SeparateTables => self.get(&self.coordinator_table(), "key", "Leader").await?,
        };
        Ok(item.and_then(|item| {
            let version = item.get("recordVersionNumber")?.as_s().ok()?.clone();
            let duration = item.get("leaseDuration")?.as_s().ok()?.parse().ok()?;
            Some((version, duration))
        }))
    }
}

fn version_of(item: &HashMap<String, AttributeValue>) -> ClientVersion {
    item.get("cv")
        .and_then(|v| v.as_s().ok())
        .map_or(ClientVersion::Other(String::new()), |cv| {
            ClientVersion::from_cv(cv)
        })
}

/// Whether a Java leader is alive, as the lock client judges it: its item's
/// `recordVersionNumber` changed within its `leaseDuration`, on this
/// worker's clock.
#[derive(Debug, Default)]
pub struct LeaderWatch {
    seen: Option<(String, std::time::Instant)>,
}

impl LeaderWatch {
    /// Records what [`Fleet::leader`] found at `now`; returns whether a
    /// leader is alive.
    pub fn observe(&mut self, leader: Option<(String, u64)>, now: std::time::Instant) -> bool {
        let Some((version, duration_ms)) = leader else {
            self.seen = None;
            return false;
        };
        let since = match &self.seen {
            Some((seen, since)) if *seen == version => *since,
            _ => now,
        };
        self.seen = Some((version, since));
        now.saturating_duration_since(since) <= Duration::from_millis(duration_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn client_versions_map_as_the_java_kcl_names_them() {
        assert!(ClientVersion::from_cv("CLIENT_VERSION_3X").leader_assigns());
        assert!(ClientVersion::from_cv("CLIENT_VERSION_3X_WITH_ROLLBACK").leader_assigns());
        assert!(!ClientVersion::from_cv("CLIENT_VERSION_UPGRADE_FROM_2X").leader_assigns());
        assert!(!ClientVersion::from_cv("CLIENT_VERSION_2X").leader_assigns());
        assert!(!ClientVersion::from_cv("CLIENT_VERSION_INIT").leader_assigns());
    }

    #[test]
    fn a_leader_is_alive_while_its_lock_moves_within_its_duration() {
        let mut watch = LeaderWatch::default();
        let start = Instant::now();
        assert!(!watch.observe(None, start));
        assert!(watch.observe(Some(("a".into(), 6_000)), start));
        assert!(watch.observe(Some(("a".into(), 6_000)), start + Duration::from_secs(5)));
        assert!(!watch.observe(Some(("a".into(), 6_000)), start + Duration::from_secs(7)));
        assert!(watch.observe(Some(("b".into(), 6_000)), start + Duration::from_secs(8)));
    }
}
