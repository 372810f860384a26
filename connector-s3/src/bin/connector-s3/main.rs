//! `connector-s3`: archive Kinesis streams to S3 (see `--help`).

mod config;
mod replay;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    /// Check a configuration and print the effective settings.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
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
            Command::CheckConfig { config } => check(config).await,
            Command::Replay(args) => replay::run(*args).await,
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

async fn builder(config: &config::Config) -> anyhow::Result<S3ConnectorBuilder> {
    let sdk_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let mut builder = S3Connector::builder()
        .sdk_config(&sdk_config)
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
    // An upload that hangs (a dropped connection) must fail and be retried,
    // not hold its shard forever.
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(120))
        .build();
    let s3 = aws_sdk_s3::config::Builder::from(&sdk_config)
        .force_path_style(config.force_path_style == Some(true))
        .timeout_config(timeouts)
        .build();
    builder = builder.s3_client(aws_sdk_s3::Client::from_conf(s3));
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

async fn check(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = config::load(path.as_deref())?;
    builder(&config)
        .await?
        .build()
        .context("invalid configuration")?;
    println!("configuration OK");
    println!("{config:#?}");
    Ok(())
}

async fn run(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = config::load(path.as_deref())?;
    let connector = builder(&config)
        .await?
        .build()
        .context("invalid configuration")?;
    let stats = connector.stats();
    let shutdown = connector.shutdown_handle();
    let mut running = tokio::spawn(connector.run());

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
        "connector started"
    );
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let result = tokio::select! {
        result = &mut running => Some(result),
        _ = tokio::signal::ctrl_c() => None,
        _ = sigterm.recv() => None,
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
    stats_log.abort();
    tracing::info!(target: "connector_s3::stats", "{}", stats.snapshot());
    result
        .context("the connector task failed")?
        .context("the connector stopped")?;
    tracing::info!("connector stopped");
    Ok(())
}
