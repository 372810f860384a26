//! An optional CloudWatch publisher (feature `cloudwatch`): the same
//! metrics as `/metrics`, sent with batched PutMetricData, under the Java
//! KCL's and KPL's metric names where one exists, so that dashboards built
//! for them read a kinesis-rs application too.
//!
//! | recorded as | CloudWatch name | `Operation` | unit |
//! |---|---|---|---|
//! | `kcl_records_processed_total` | `RecordsProcessed` | `ProcessTask` | Count |
//! | `kcl_behind_latest_seconds` | `MillisBehindLatest` | `ProcessTask` | Milliseconds (× 1000) |
//! | `kcl_leases_held` | `CurrentLeases` | `RenewAllLeases` | Count |
//! | `kcl_leases_lost_total` | `LostLeases` | `RenewAllLeases` | Count |
//! | `kcl_leases_taken_total` | `TakenLeases` | `TakeLeases` | Count |
//! | `kpl_user_records_received_total` | `UserRecordsReceived` | | Count |
//! | `kpl_user_records_put_total` | `UserRecordsPut` | | Count |
//! | `kpl_kinesis_records_put_total` | `KinesisRecordsPut` | | Count |
//! | `kpl_user_records_expired_total` | `UserRecordExpired` | | Count |
//! | `kpl_outstanding_user_records` | `UserRecordsPending` | | Count |
//! | `kpl_buffering_time_seconds` | `BufferingTime` | | Milliseconds |
//!
//! Every other metric keeps its own name (`connector_s3_records_in_total`,
//! …), with the unit its suffix names. Labels become dimensions, `shard` as
//! `ShardId` and `stream` as `StreamName` (the KCL's and KPL's). Each round
//! sends counters as the increase since the last round that was accepted
//! (`Sum`), gauges as their value, and histograms as a statistic set (count,
//! sum, minimum, maximum) of the samples since the last round; a refused
//! round's counter increases go with the next one, its histogram samples
//! are lost.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::types::builders::MetricDatumBuilder;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// Most metric data in one PutMetricData call (CloudWatch's limit).
pub const MAX_DATA_PER_CALL: usize = 1_000;

/// (recorded name, CloudWatch name, `Operation` dimension, scale to the unit, unit).
const NAMES: &[(&str, &str, Option<&str>, f64, StandardUnit)] = &[
    (
        kcl::metrics::RECORDS_PROCESSED,
        "RecordsProcessed",
        Some("ProcessTask"),
        1.0,
        StandardUnit::Count,
    ),
    (
        kcl::metrics::BEHIND_LATEST,
        "MillisBehindLatest",
        Some("ProcessTask"),
        1000.0,
        StandardUnit::Milliseconds,
    ),
    (
        kcl::metrics::LEASES_HELD,
        "CurrentLeases",
        Some("RenewAllLeases"),
        1.0,
        StandardUnit::Count,
    ),
    (
        kcl::metrics::LEASES_LOST,
        "LostLeases",
        Some("RenewAllLeases"),
        1.0,
        StandardUnit::Count,
    ),
    (
        kcl::metrics::LEASES_TAKEN,
        "TakenLeases",
        Some("TakeLeases"),
        1.0,
        StandardUnit::Count,
    ),
    (
        kpl::metrics::USER_RECORDS_RECEIVED,
        "UserRecordsReceived",
        None,
        1.0,
        StandardUnit::Count,
    ),
    (
        kpl::metrics::USER_RECORDS_PUT,
        "UserRecordsPut",
        None,
        1.0,
        StandardUnit::Count,
    ),
    (
        kpl::metrics::KINESIS_RECORDS_PUT,
        "KinesisRecordsPut",
        None,
        1.0,
        StandardUnit::Count,
    ),
    (
        kpl::metrics::USER_RECORDS_EXPIRED,
        "UserRecordExpired",
        None,
        1.0,
        StandardUnit::Count,
    ),
    (
        kpl::metrics::OUTSTANDING,
        "UserRecordsPending",
        None,
        1.0,
        StandardUnit::Count,
    ),
    (
        kpl::metrics::BUFFERING_TIME,
        "BufferingTime",
        None,
        1_000.0,
        StandardUnit::Milliseconds,
    ),
];

/// The CloudWatch name, `Operation`, scale and unit of a recorded metric.
fn cloudwatch_name(name: &str) -> (String, Option<&'static str>, f64, StandardUnit) {
    if let Some((_, cw, operation, scale, unit)) = NAMES.iter().find(|n| n.0 == name) {
        return (cw.to_string(), *operation, *scale, unit.clone());
    }
    let unit = if name.ends_with("_bytes") || name.ends_with("_bytes_total") {
        StandardUnit::Bytes
    } else if name.ends_with("_seconds") {
        StandardUnit::Seconds
    } else {
        StandardUnit::Count
    };
    (name.to_owned(), None, 1.0, unit)
}

fn dimension_name(label: &str) -> String {
    match label {
        "shard" => "ShardId".into(),
        "stream" => "StreamName".into(),
        "worker" => "WorkerIdentifier".into(),
        other => other.to_owned(),
    }
}

type Metrics = Arc<Registry<Key, AtomicStorage>>;

/// The `metrics` recorder side: keeps what is recorded for the
/// [`CloudWatchPublisher`] made with it. Install it alone, or next to the
/// Prometheus exporter with [`crate::metrics::install`].
pub struct CloudWatchRecorder {
    registry: Metrics,
}

impl std::fmt::Debug for CloudWatchRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudWatchRecorder").finish_non_exhaustive()
    }
}

impl Recorder for CloudWatchRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

/// PutMetricData failed.
#[derive(Debug, thiserror::Error)]
#[error("CloudWatch PutMetricData: {0}")]
pub struct PublishError(String);

/// Sends what its [`CloudWatchRecorder`] holds to CloudWatch.
pub struct CloudWatchPublisher {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
    registry: Metrics,
    /// Each counter's value at the last accepted round.
    published: HashMap<Key, u64>,
}

impl std::fmt::Debug for CloudWatchPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudWatchPublisher")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// A recorder and the publisher that sends its metrics to CloudWatch under
/// `namespace` (the Java KCL's default is the application name).
///
/// ```no_run
/// # async fn demo(client: aws_sdk_cloudwatch::Client) -> Result<(), kinesis_ops::cloudwatch::PublishError> {
/// use kinesis_ops::cloudwatch;
/// let (recorder, mut publisher) = cloudwatch::recorder(client, "orders-archiver");
/// metrics::with_local_recorder(&recorder, || {
///     metrics::counter!(kcl::metrics::RECORDS_PROCESSED, "shard" => "shardId-000000000000").increment(5);
/// });
/// publisher.publish().await?; // RecordsProcessed{Operation=ProcessTask,ShardId=shardId-000000000000} Sum 5
/// # Ok(()) }
/// ```
pub fn recorder(
    client: aws_sdk_cloudwatch::Client,
    namespace: impl Into<String>,
) -> (CloudWatchRecorder, CloudWatchPublisher) {
    let registry: Metrics = Arc::new(Registry::atomic());
    (
        CloudWatchRecorder {
            registry: registry.clone(),
        },
        CloudWatchPublisher {
            client,
            namespace: namespace.into(),
            registry,
            published: HashMap::new(),
        },
    )
}

fn datum(key: &Key, timestamp: SystemTime) -> (MetricDatumBuilder, f64) {
    let (name, operation, scale, unit) = cloudwatch_name(key.name());
    let mut dimensions: Vec<Dimension> = operation
        .map(|operation| {
            Dimension::builder()
                .name("Operation")
                .value(operation)
                .build()
        })
        .into_iter()
        .collect();
    dimensions.extend(key.labels().map(|label| {
        Dimension::builder()
            .name(dimension_name(label.key()))
            .value(label.value())
            .build()
    }));
    let datum = MetricDatum::builder()
        .metric_name(name)
        .set_dimensions(Some(dimensions))
        .timestamp(aws_smithy_types::DateTime::from(timestamp))
        .unit(unit);
    (datum, scale)
}

impl CloudWatchPublisher {
    /// The namespace metrics are published under.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Sends one round: every counter's increase since the last accepted
    /// round, every gauge, every histogram's samples since the last round,
    /// in calls of at most [`MAX_DATA_PER_CALL`]. Returns how many data were
    /// sent.
    pub async fn publish(&mut self) -> Result<usize, PublishError> {
        let now = SystemTime::now();
        let mut data = Vec::new();
        let mut counters: Vec<(Key, u64)> = Vec::new();
        self.registry
            .visit_counters(|key, counter: &Arc<AtomicU64>| {
                counters.push((key.clone(), counter.load(Relaxed)));
            });
        for (key, value) in &counters {
            let before = self.published.get(key).copied().unwrap_or(0);
            let (datum, scale) = datum(key, now);
            let increase = value.saturating_sub(before) as f64 * scale;
            data.push(datum.value(increase).build());
        }
        self.registry.visit_gauges(|key, gauge: &Arc<AtomicU64>| {
            let value = f64::from_bits(gauge.load(Relaxed));
            let (datum, scale) = datum(key, now);
            if (value * scale).is_finite() {
                data.push(datum.value(value * scale).build());
            }
        });
        self.registry.visit_histograms(|key, histogram| {
            let (datum, scale) = datum(key, now);
            let (mut count, mut sum, mut min, mut max) =
                (0u64, 0.0, f64::INFINITY, f64::NEG_INFINITY);
            histogram.clear_with(|samples| {
                for sample in samples.iter().map(|s| s * scale).filter(|s| s.is_finite()) {
                    count += 1;
                    sum += sample;
                    min = f64::min(min, sample);
                    max = f64::max(max, sample);
                }
            });
            if count > 0 {
                let statistics = StatisticSet::builder()
                    .sample_count(count as f64)
                    .sum(sum)
                    .minimum(min)
                    .maximum(max)
                    .build();
                data.push(datum.statistic_values(statistics).build());
            }
        });
        let sent = data.len();
        let mut rest = data;
        while !rest.is_empty() {
            let batch: Vec<MetricDatum> = rest.drain(..rest.len().min(MAX_DATA_PER_CALL)).collect();
            self.client
                .put_metric_data()
                .namespace(&self.namespace)
                .set_metric_data(Some(batch))
                .send()
                .await
                .map_err(|error| PublishError(kcl::error_chain(&error)))?;
        }
        self.published.extend(counters);
        tracing::debug!(namespace = %self.namespace, data = sent, "metrics published to CloudWatch");
        Ok(sent)
    }

    /// Publishes every `every` until `shutdown` completes, then once more
    /// (the last increases of a stopping process). A refused round is
    /// logged; the next one carries its counters. Spawn it and keep the
    /// handle: it is the publisher's owner.
    pub async fn run(mut self, every: Duration, shutdown: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = &mut shutdown => true,
            };
            if let Err(error) = self.publish().await {
                tracing::warn!(namespace = %self.namespace, %error, "publishing metrics to CloudWatch failed; the next round carries the counters");
            }
            if last {
                return;
            }
        }
    }
}
