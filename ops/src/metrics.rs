//! The Prometheus exporter for everything recorded through the `metrics`
//! facade, and the help text of the kpl and kcl metrics.

use metrics::{Unit, describe_counter, describe_gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The exporter could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the Prometheus exporter: {0}")]
pub struct MetricsError(String);

/// Installs the Prometheus exporter as the process's `metrics` recorder,
/// with `global_labels` on every series (`worker`, say, so that series of
/// several processes stay apart), and describes the kpl and kcl metrics
/// ([`describe_kpl`], [`describe_kcl`]; describe the application's own
/// after this). The handle renders the text format; keep it for
/// [`crate::server::serve`].
///
/// ```
/// let handle = kinesis_ops::metrics::install_prometheus(&[("worker", "w1".to_owned())]).unwrap();
/// metrics::counter!(kcl::metrics::RECORDS_PROCESSED).increment(3);
/// let text = handle.render();
/// assert!(text.contains("# HELP kcl_records_processed_total"));
/// assert!(text.contains("kcl_records_processed_total{worker=\"w1\"} 3"));
/// ```
pub fn install_prometheus(
    global_labels: &[(&str, String)],
) -> Result<PrometheusHandle, MetricsError> {
    let handle = prometheus_builder(global_labels)
        .install_recorder()
        .map_err(|error| MetricsError(error.to_string()))?;
    describe_kpl();
    describe_kcl();
    Ok(handle)
}

/// As [`install_prometheus`], with `other` receiving every metric too (the
/// CloudWatch recorder, say); `global_labels` are the Prometheus exporter's
/// only.
///
/// ```
/// let handle = kinesis_ops::metrics::install_prometheus_and(&[], metrics::NoopRecorder).unwrap();
/// metrics::counter!("example_total").increment(1);
/// assert!(handle.render().contains("example_total 1"));
/// ```
pub fn install_prometheus_and(
    global_labels: &[(&str, String)],
    other: impl metrics::Recorder + Sync + 'static,
) -> Result<PrometheusHandle, MetricsError> {
    let prometheus = prometheus_builder(global_labels).build_recorder();
    let handle = prometheus.handle();
    let fanout = metrics_util::layers::FanoutBuilder::default()
        .add_recorder(prometheus)
        .add_recorder(other)
        .build();
    metrics::set_global_recorder(fanout).map_err(|error| MetricsError(error.to_string()))?;
    describe_kpl();
    describe_kcl();
    Ok(handle)
}

fn prometheus_builder(global_labels: &[(&str, String)]) -> PrometheusBuilder {
    let mut builder = PrometheusBuilder::new();
    for (key, value) in global_labels {
        builder = builder.add_global_label(*key, value.clone());
    }
    builder
}

/// Help text and units of [`kpl::metrics`].
pub fn describe_kpl() {
    use kpl::metrics as m;
    let counters = [
        (
            m::USER_RECORDS_RECEIVED,
            "User records accepted by add_user_record.",
        ),
        (m::USER_RECORDS_PUT, "User records put successfully."),
        (
            m::USER_RECORDS_FAILED,
            "User records failed with an error retrying cannot fix.",
        ),
        (
            m::USER_RECORDS_EXPIRED,
            "User records whose time to live ran out.",
        ),
        (
            m::KINESIS_RECORDS_PUT,
            "Kinesis records (aggregates or single records) put successfully.",
        ),
        (m::RETRIES, "User record retries scheduled."),
        (
            m::THROTTLES,
            "PutRecords entries answered ProvisionedThroughputExceeded.",
        ),
        (
            m::WRONG_SHARD,
            "Puts stored in a shard other than the predicted one.",
        ),
        (m::REQUESTS, "PutRecords calls sent."),
    ];
    for (name, help) in counters {
        describe_counter!(name, Unit::Count, help);
    }
    metrics::describe_histogram!(
        m::BUFFERING_TIME,
        Unit::Seconds,
        "Time from a user record's arrival to the start of the PutRecords attempt that stored it."
    );
    describe_gauge!(m::OUTSTANDING, Unit::Count, "User records outstanding.");
}

/// Help text and units of [`kcl::metrics`]; registers the counters at 0,
/// so that each series exists before its first event.
pub fn describe_kcl() {
    use kcl::metrics as m;
    let counters = [
        (
            m::RECORDS_PROCESSED,
            "User records handed to record processors.",
        ),
        (
            m::CHECKPOINTS,
            "Checkpoints written (prepared and SHARD_END ones included).",
        ),
        (m::LEASES_TAKEN, "Leases taken (free, expired or stolen)."),
        (m::LEASES_LOST, "Leases lost to another worker."),
        (
            m::OUT_OF_RANGE_SUB_RECORDS,
            "Sub-records outside their shard's hash range (delivered anyway).",
        ),
        (
            m::REPEATED_RECORDS_DROPPED,
            "Records handed over again at or before a position already delivered under the same lease, dropped.",
        ),
        (
            m::LEASES_FENCED,
            "Leases given up because they could not be renewed in time.",
        ),
        (m::PROCESSOR_FAILURES, "Record processors that panicked."),
        (
            m::PERMANENT_ERRORS,
            "Shards whose reads kept failing with an error no retry fixes (lease released).",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, Unit::Count, help);
        metrics::counter!(name).increment(0);
    }
    describe_gauge!(m::LEASES_HELD, Unit::Count, "Leases this worker holds.");
    describe_gauge!(
        m::BEHIND_LATEST,
        Unit::Seconds,
        "Seconds behind the tip of the shard, as the last read reported it (MillisBehindLatest / 1000)."
    );
    describe_gauge!(
        m::UNREADABLE_LEASES,
        Unit::Count,
        "Lease items the last scan could not read (skipped)."
    );
}
