//! Shared set-up for the runnable examples.
//!
//! Every example runs on the embedded local back ends by default (nothing to
//! install), or, with `--use-env`, on whatever the standard AWS configuration
//! points at: real AWS, or local endpoints given by `AWS_ENDPOINT_URL_*`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use aws_config::{BehaviorVersion, SdkConfig};
use integration_tests::LocalAws;

/// Where an example's AWS calls go.
pub struct Backend {
    /// The configuration every client is built from.
    pub sdk_config: SdkConfig,
    /// The embedded back ends, kept alive while the example runs; `None` with
    /// `--use-env`.
    pub local: Option<LocalAws>,
}

impl Backend {
    /// Embedded back ends, unless the command line has `--use-env`, in which
    /// case the standard AWS configuration chain (environment, profile, ...)
    /// is loaded.
    ///
    /// ```no_run
    /// # async fn demo() -> anyhow::Result<()> {
    /// let backend = examples::Backend::from_args().await?;
    /// let kinesis = aws_sdk_kinesis::Client::new(&backend.sdk_config);
    /// # Ok(()) }
    /// ```
    pub async fn from_args() -> anyhow::Result<Self> {
        if std::env::args().any(|arg| arg == "--use-env") {
            let sdk_config = aws_config::defaults(BehaviorVersion::latest()).load().await;
            return Ok(Self {
                sdk_config,
                local: None,
            });
        }
        let local = LocalAws::start().await?;
        Ok(Self {
            sdk_config: local.sdk_config().clone(),
            local: Some(local),
        })
    }

    /// A short description for the example's output.
    pub fn describe(&self) -> String {
        match &self.local {
            Some(local) => format!(
                "embedded back ends (Kinesis at {})",
                local.endpoints().kinesis
            ),
            None => "the standard AWS configuration (--use-env)".to_owned(),
        }
    }
}

/// Installs a `tracing` subscriber that honours `RUST_LOG` (default `warn`,
/// without the embedded S3's own log of the calls it does not implement, such
/// as ListMultipartUploads, which the connector tries and does without).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,s3s::service=off".into()),
        )
        .try_init();
}

/// Produces `count` sample orders (a JSON document each, keyed by customer)
/// into `stream` with the `kpl` producer, and returns every record's result
/// (shard, sequence and sub-sequence number) once all are stored.
///
/// ```no_run
/// # async fn demo(sdk_config: aws_config::SdkConfig) -> anyhow::Result<()> {
/// let results = examples::produce_orders(&sdk_config, "orders", 1_000).await?;
/// println!("first in {}", results[0].shard_id);
/// # Ok(()) }
/// ```
pub async fn produce_orders(
    sdk_config: &SdkConfig,
    stream: &str,
    count: usize,
) -> anyhow::Result<Vec<kpl::UserRecordResult>> {
    let producer = kpl::Producer::builder().sdk_config(sdk_config).build()?;
    let mut pending = Vec::with_capacity(count);
    for i in 0..count {
        let customer = format!("customer-{}", i % 97);
        let data = format!(
            r#"{{"order":{i},"customer":"{customer}","amount":{}}}"#,
            i * 7 % 500
        );
        // Waits only if the producer's buffer is full (backpressure).
        pending.push(
            producer
                .add_user_record(kpl::UserRecord::new(stream, customer, data))
                .await?,
        );
    }
    let mut results = Vec::with_capacity(count);
    for result in futures::future::join_all(pending).await {
        results.push(result?);
    }
    producer.shutdown().await?;
    Ok(results)
}
