//! `connector-s3`: archive Kinesis streams to S3 (see `--help`).

mod config;
mod replay;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use connector_s3::connector::{S3Connector, S3ConnectorBuilder};
use connector_s3::transform::Raw;
use kcl::scheduler::RetrievalMode;

#[derive(Parser)]
#[command(
    name = "connector-s3",
    version,
    about = "Archive Kinesis streams to S3 as compressed JSON-lines journal files, exactly once.",
    after_long_help = config::keys_help()
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the connector until SIGINT or SIGTERM (then upload everything
    /// buffered, checkpoint, and exit).
    Run {
        /// The TOML configuration file (keys: see `connector-s3 --help`).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Read records back from the archive: select by time, stream, shard and
    /// sequence, filter, and publish them to a stream (--to-stream), write
    /// them as JSON lines (--output FILE|-), or count them (--dry-run).
    Replay(Box<replay::ReplayArgs>),
    /// One row per shard of an application's lease table: owner, whether
    /// the lease is being renewed, checkpoint, pending checkpoint and its
    /// object, parents, and lag. Reads the table (twice, --watch-ms apart:
    /// a lease's renewal shows only as its counter moving) and one record
    /// per shard; changes nothing.
    Status(status::StatusArgs),
    /// Check a configuration and print the effective settings; with
    /// --connect, also make the cheap AWS calls that prove it (HeadBucket
    /// and the bucket's region, DescribeStreamSummary, DescribeTable), each
    /// failure naming the key or permission to fix.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Call S3, Kinesis and DynamoDB to prove the configuration.
        #[arg(long)]
        connect: bool,
        /// With --connect: also write and delete a small object under the
        /// prefix (needs s3:PutObject and s3:DeleteObject there).
        #[arg(long, requires = "connect")]
        write_test: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` logs in the configured format; a configuration that cannot be
    // read is reported by `run` itself, in text.
    let format = match &cli.command {
        Command::Run { config } => match config::load(config.as_deref()) {
            Ok(config) => match config.log_format() {
                Ok(format) => format,
                Err(error) => {
                    eprintln!("error: {error:#}");
                    return ExitCode::FAILURE;
                }
            },
            Err(_) => kinesis_ops::log::LogFormat::Text,
        },
        _ => kinesis_ops::log::LogFormat::Text,
    };
    if let Err(error) = kinesis_ops::log::init(format, "info") {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { config } => run(config).await,
            Command::CheckConfig {
                config,
                connect,
                write_test,
            } => check(config, connect, write_test).await,
            Command::Replay(args) => replay::run(*args).await,
            Command::Status(args) => status::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The S3 client the connector uploads with (and readiness probes).
fn s3_client(config: &config::Config, sdk_config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    // An upload that hangs (a dropped connection) must fail and be retried,
    // not hold its shard forever.
    let s3 = aws_sdk_s3::config::Builder::from(&kcl::timeouts::ApiTimeouts::S3.apply(sdk_config))
        .force_path_style(config.force_path_style == Some(true))
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

async fn builder(
    config: &config::Config,
    sdk_config: &aws_config::SdkConfig,
) -> anyhow::Result<S3ConnectorBuilder> {
    let mut builder = S3Connector::builder()
        .sdk_config(sdk_config)
        .application_name(&config.application_name)
        .bucket(&config.bucket)
        .prefix(&config.prefix)
        .compression(config.compression()?)
        .max_object_age(config.max_object_age())
        .initial_position(config.initial_position()?)
        .server_side_encryption(config.sse()?);
    for stream in &config.streams {
        builder = builder.stream(stream);
    }
    if let Some(template) = &config.key_template {
        builder = builder.key_template(template);
    }
    match config.format.as_deref() {
        None | Some("json") => {}
        Some("raw") => {
            let delimiter = config.delimiter.clone().unwrap_or_else(|| "\n".into());
            builder = builder.transformer(Raw {
                delimiter: delimiter.into_bytes(),
            });
        }
        Some(other) => anyhow::bail!("format {other:?}: expected json or raw"),
    }
    if let Some(bytes) = config.max_object_bytes {
        builder = builder.max_object_bytes(bytes);
    }
    if let Some(records) = config.max_object_records {
        builder = builder.max_object_records(records);
    }
    if let Some(bytes) = config.max_buffered_bytes {
        builder = builder.max_buffered_bytes(bytes);
    }
    if let Some(dir) = &config.buffer_dir {
        builder = builder.buffer_dir(dir);
    }
    if let Some(fsync) = config.fsync {
        builder = builder.fsync(fsync);
    }
    if let Some(id) = &config.worker_id {
        builder = builder.worker_id(id);
    }
    if let Some(bytes) = config.multipart_threshold {
        builder = builder.multipart_threshold(bytes);
    }
    if let Some(bytes) = config.part_size {
        builder = builder.part_size(bytes as usize);
    }
    builder = builder.s3_client(s3_client(config, sdk_config));
    let failover = config.failover_time_ms.map(Duration::from_millis);
    let idle = Duration::from_millis(config.idle_time_between_reads_ms.unwrap_or(1_000));
    let max_records = config.max_records;
    let fan_out = config.fan_out_consumer.clone();
    builder = builder.consumer(move |consumer| {
        if let Some(failover) = failover {
            consumer.failover_time = failover;
        }
        consumer.idle_time_between_reads = idle;
        if let Some(max_records) = max_records {
            consumer.max_records = max_records;
        }
        if let Some(consumer_name) = fan_out {
            consumer.retrieval = RetrievalMode::FanOut { consumer_name };
        }
    });
    Ok(builder)
}

async fn check(path: Option<PathBuf>, connect: bool, write_test: bool) -> anyhow::Result<()> {
    let config = config::load(path.as_deref())?;
    config.log_format()?;
    if let Some(address) = &config.metrics_listen {
        address.parse::<std::net::SocketAddr>().with_context(|| {
            format!("metrics_listen {address:?}: expected an address such as 127.0.0.1:9102")
        })?;
    }
    let sdk_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    builder(&config, &sdk_config)
        .await?
        .build()
        .context("invalid configuration")?;
    if connect {
        preflight(&config, &sdk_config, write_test, true, false).await?;
    }
    println!("configuration OK");
    println!("{config:#?}");
    Ok(())
}

/// Proves the configuration against AWS (see `connector_s3::preflight`);
/// an error lists every check that failed with what to fix. With
/// `only_fatal` (at `run`), only definite answers that the configuration is
/// wrong fail it; other failures (a permission the check needs but the
/// connector may not, a service that did not answer) are warnings.
async fn preflight(
    config: &config::Config,
    sdk_config: &aws_config::SdkConfig,
    write_test: bool,
    print: bool,
    only_fatal: bool,
) -> anyhow::Result<()> {
    let s3 = s3_client(config, sdk_config);
    let target = connector_s3::preflight::Target {
        bucket: &config.bucket,
        prefix: &config.prefix,
        streams: &config.streams,
        lease_table: &config.application_name,
        write_test,
    };
    let checks = connector_s3::preflight::run(sdk_config, &s3, &target).await;
    let mut failed = Vec::new();
    for check in &checks {
        match &check.outcome {
            Ok(note) if print => println!("ok      {}: {note}", check.what),
            Ok(_) => {}
            Err(problem) if only_fatal && !check.fatal => {
                tracing::warn!(check = %check.what, %problem, "a start-up check failed; starting anyway");
            }
            Err(problem) => {
                if print {
                    println!("FAILED  {}: {problem}", check.what);
                }
                failed.push(format!("{}: {problem}", check.what));
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "the configuration does not work:\n  {}",
            failed.join("\n  ")
        )
    }
}

/// A service's error code and message (the SDK's own chain repeats them),
/// or the chain of a failure to reach it; a few hundred bytes at most.
fn short_error<E, R>(error: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = match error.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("service error"),
            service.message().unwrap_or_default()
        ),
        None => kcl::error_chain(error),
    };
    kpl::error::elide_middle(&text, 300).into_owned()
}

/// The metrics and health listener of a run, and the tasks feeding its
/// health: all stopped by [`Ops::stop`].
struct Ops {
    health: kinesis_ops::health::Health,
    server: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    )>,
    /// The CloudWatch publisher: stopped after the connector, for a last
    /// round with the final counts.
    cloudwatch: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    tasks: tokio::task::JoinSet<()>,
}

impl Ops {
    /// With `metrics_listen` or `cloudwatch_metrics`: installs the
    /// Prometheus exporter (and the CloudWatch recorder) before the
    /// connector records anything; with `metrics_listen`, binds the listener
    /// and starts probing the lease table and S3 for readiness.
    async fn start(
        config: &config::Config,
        sdk_config: &aws_config::SdkConfig,
        worker_id: &str,
    ) -> anyhow::Result<Self> {
        let health = kinesis_ops::health::Health::new(Duration::from_secs(30));
        let mut ops = Self {
            health: health.clone(),
            server: None,
            cloudwatch: None,
            tasks: tokio::task::JoinSet::new(),
        };
        let labels = [("worker", worker_id.to_owned())];
        let prometheus = if config.cloudwatch_metrics == Some(true) {
            let client = aws_sdk_cloudwatch::Client::from_conf(
                aws_sdk_cloudwatch::config::Builder::from(sdk_config)
                    .timeout_config(
                        aws_config::timeout::TimeoutConfig::builder()
                            .connect_timeout(Duration::from_secs(5))
                            .operation_timeout(Duration::from_secs(20))
                            .build(),
                    )
                    .build(),
            );
            let namespace = config
                .cloudwatch_namespace
                .clone()
                .unwrap_or_else(|| config.application_name.clone());
            let (recorder, publisher) = kinesis_ops::cloudwatch::recorder(client, &namespace);
            let prometheus = kinesis_ops::metrics::install_prometheus_and(&labels, recorder)?;
            let every = Duration::from_secs(config.cloudwatch_interval_secs.unwrap_or(60).max(1));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(publisher.run(every, async {
                let _ = stopped.await;
            }));
            tracing::info!(%namespace, interval = ?every, "publishing metrics to CloudWatch");
            ops.cloudwatch = Some((stop, task));
            Some(prometheus)
        } else if config.metrics_listen.is_some() {
            Some(kinesis_ops::metrics::install_prometheus(&labels)?)
        } else {
            None
        };
        connector_s3::metrics::describe();
        let (Some(address), Some(prometheus)) = (&config.metrics_listen, prometheus) else {
            return Ok(ops);
        };
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("metrics_listen {address:?}: cannot listen"))?;
        let local = listener.local_addr().context("metrics_listen")?;
        tracing::info!(address = %local, "serving /metrics, /health/live and /health/ready");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(kinesis_ops::server::serve(
            listener,
            Some(prometheus),
            health.clone(),
            async {
                let _ = stopped.await;
            },
        ));

        let every =
            Duration::from_millis(config.health_check_interval_ms.unwrap_or(5_000).max(100));
        let timeout = every.min(Duration::from_secs(5));
        let beating = health.clone();
        ops.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                beating.beat();
            }
        });
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(timeout)
            .operation_timeout(timeout)
            .build();
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(sdk_config)
                .timeout_config(timeouts.clone())
                .retry_config(aws_config::retry::RetryConfig::disabled())
                .build(),
        );
        let table = config.application_name.clone();
        ops.tasks.spawn(
            health
                .clone()
                .probe("lease_table", every, timeout, move || {
                    let (dynamodb, table) = (dynamodb.clone(), table.clone());
                    async move {
                        dynamodb
                            .describe_table()
                            .table_name(table)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|error| short_error(&error))
                    }
                }),
        );
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(sdk_config)
                .force_path_style(config.force_path_style == Some(true))
                .timeout_config(timeouts)
                .retry_config(aws_config::retry::RetryConfig::disabled())
                .build(),
        );
        let bucket = config.bucket.clone();
        ops.tasks
            .spawn(health.clone().probe("s3", every, timeout, move || {
                let (s3, bucket) = (s3.clone(), bucket.clone());
                async move {
                    s3.head_bucket()
                        .bucket(bucket)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|error| short_error(&error))
                }
            }));
        ops.server = Some((stop, server));
        Ok(ops)
    }

    /// Stops the probes and the listener (after the requests under way).
    async fn stop(mut self) {
        self.tasks.shutdown().await;
        if let Some((stop, publisher)) = self.cloudwatch.take() {
            // A last round with the final counts, unless CloudWatch hangs.
            let _ = stop.send(());
            let abort = publisher.abort_handle();
            if tokio::time::timeout(Duration::from_secs(30), publisher)
                .await
                .is_err()
            {
                abort.abort();
                tracing::warn!("the last CloudWatch round did not finish in 30 s");
            }
        }
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "the metrics listener failed"),
                Err(error) => tracing::warn!(%error, "the metrics listener task failed"),
            }
        }
    }
}

async fn run(path: Option<PathBuf>) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = config::load(path.as_deref())?;
    let sdk_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let worker_id = config
        .worker_id
        .clone()
        .unwrap_or_else(connector_s3::connector::default_worker_id);
    // Fail fast on what no retry fixes (a missing bucket or stream, denied
    // access), with the same message as `check-config --connect`.
    match tokio::time::timeout(
        Duration::from_secs(60),
        preflight(&config, &sdk_config, false, false, true),
    )
    .await
    {
        Ok(checked) => checked?,
        Err(_) => tracing::warn!("the start-up checks did not finish within 60 s; starting anyway"),
    }
    let ops = Ops::start(&config, &sdk_config, &worker_id).await?;
    let connector = builder(&config, &sdk_config)
        .await?
        .build()
        .context("invalid configuration")?;
    let stats = connector.stats();
    let stuck = stats.clone();
    ops.health.add_condition("shards", move || {
        let failed = stuck.shards_in_permanent_error();
        (!failed.is_empty()).then(|| {
            let shards: Vec<String> = failed
                .iter()
                .map(|(shard, error)| format!("{shard} ({error})"))
                .collect();
            format!("stuck in a permanent error: {}", shards.join(", "))
        })
    });
    let shutdown = connector.shutdown_handle();
    let mut running = tokio::spawn(connector.run());

    // Every shard this process takes stops on an error no retry fixes, and
    // none is processed: exit with the error, so that it shows (and a
    // supervisor's restart policy applies) instead of idling for ever.
    let give_up_after = config.exit_on_permanent_error_secs.unwrap_or(120);
    let watched = stats.clone();
    let all_failing = async move {
        if give_up_after == 0 {
            return std::future::pending::<Vec<(String, String)>>().await;
        }
        let mut since: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let failing = watched.shards_in_permanent_error();
            // Every shard this worker processes (taken again after the
            // release cooldown, say) is one that failed.
            let all_failing = !failing.is_empty()
                && watched
                    .processing_shards()
                    .iter()
                    .all(|shard| failing.iter().any(|(f, _)| f == shard));
            if !all_failing {
                since = None;
                continue;
            }
            let first = *since.get_or_insert_with(Instant::now);
            // ... and shards keep failing here (a failure within the window).
            let failing_again = watched
                .last_permanent_error_at()
                .is_some_and(|at| at >= first);
            if first.elapsed() >= Duration::from_secs(give_up_after) && failing_again {
                return failing;
            }
        }
    };

    let interval = config.stats_interval_secs.unwrap_or(30);
    let stats_for_log = stats.clone();
    let stats_log = tokio::spawn(async move {
        let stats = stats_for_log;
        if interval == 0 {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(interval));
        tick.tick().await;
        loop {
            tick.tick().await;
            tracing::info!(target: "connector_s3::stats", "{}", stats.snapshot());
        }
    });

    tracing::info!(
        streams = ?config.streams,
        bucket = %config.bucket,
        prefix = %config.prefix,
        worker = %worker_id,
        "connector started"
    );
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let mut failed_for_good = None;
    let result = tokio::select! {
        result = &mut running => Some(result),
        _ = tokio::signal::ctrl_c() => None,
        _ = sigterm.recv() => None,
        failing = all_failing => {
            failed_for_good = Some(failing);
            None
        }
    };
    let result = match result {
        Some(result) => result,
        None => {
            tracing::info!(
                "shutting down: uploading what is buffered (signal again to exit at once)"
            );
            tokio::select! {
                _ = shutdown.graceful() => {}
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted during shutdown"),
                _ = sigterm.recv() => anyhow::bail!("terminated during shutdown"),
            }
            running.await
        }
    };
    ops.health.stopped("the connector stopped");
    stats_log.abort();
    ops.stop().await;
    let totals = stats.snapshot();
    tracing::info!(
        target: "connector_s3::stats",
        elapsed_secs = started.elapsed().as_secs_f64(),
        "stopped after {:.1} s; totals: {totals} adopted={} transform_failures={}",
        started.elapsed().as_secs_f64(),
        totals.objects_adopted,
        totals.transform_failures,
    );
    result
        .context("the connector task failed")?
        .context("the connector stopped")?;
    if let Some(failing) = failed_for_good {
        let shards: Vec<String> = failing
            .iter()
            .map(|(shard, error)| format!("{shard}: {error}"))
            .collect();
        tracing::error!(shards = ?shards, "every shard this process took failed with an error no retry fixes");
        anyhow::bail!(
            "every shard this process took failed with an error no retry fixes:\n  {}",
            shards.join("\n  ")
        );
    }
    tracing::info!("connector stopped");
    Ok(())
}
