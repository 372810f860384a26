//! `kinesis-ops` — what operators watch a kinesis-rs daemon through.
//!
//! The `connector-s3` binary uses it, and so will `kcl-multilang`: one HTTP
//! listener ([`server`]) serving `/metrics` in the Prometheus text format
//! (rendered by `metrics-exporter-prometheus` from everything recorded
//! through the `metrics` facade: [`metrics`]) and the health endpoints
//! `/health/live` and `/health/ready` ([`health`]); and the process's log
//! format, text or one JSON object per line ([`log`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use kinesis_ops::{health::Health, log, metrics, server};
//! log::init(log::LogFormat::Json, "info")?;
//! let prometheus = metrics::install_prometheus(&[("worker", "worker-1".to_owned())])?;
//! let health = Health::new(Duration::from_secs(30));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9102").await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let serving = tokio::spawn(server::serve(listener, Some(prometheus), health.clone(), async {
//!     let _ = stopped.await;
//! }));
//! // ... run the daemon, calling health.beat() from its loop ...
//! let _ = stop.send(());
//! serving.await??;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "cloudwatch")]
pub mod cloudwatch;
pub mod health;
pub mod log;
pub mod metrics;
pub mod server;
