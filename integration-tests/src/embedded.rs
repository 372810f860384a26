//! The embedded back ends: Kinesis, S3 and DynamoDB inside this process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use aws_config::SdkConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Endpoints, Error};

/// Options for [`LocalAws`].
#[derive(Debug, Clone)]
pub struct LocalAwsOptions {
    /// Enforce the real per-shard write limits (1 MiB/s and 1,000 records/s)
    /// in the embedded Kinesis, answering ProvisionedThroughputExceeded.
    /// Default: false.
    pub enforce_kinesis_limits: bool,
    /// Shard iterator time to live in seconds. Default: 300, as AWS.
    pub iterator_ttl_seconds: u64,
    /// Maximum number of open shards across all streams. Default: 1,000.
    pub shard_limit: u32,
    /// How long an enhanced fan-out subscription lasts, in milliseconds.
    /// Default: 300,000 (five minutes, as AWS).
    pub subscription_millis: u64,
    /// Serve PutRecord(s) one at a time, so that records become visible in
    /// sequence order as in Kinesis (see `one_write_at_a_time`). Default:
    /// true. Turn it off only where nothing reads a shard while it is
    /// written, such as a producer benchmark: concurrent writes are faster.
    pub ordered_writes: bool,
}

impl Default for LocalAwsOptions {
    fn default() -> Self {
        Self {
            enforce_kinesis_limits: false,
            iterator_ttl_seconds: 300,
            shard_limit: 1000,
            subscription_millis: 300_000,
            ordered_writes: true,
        }
    }
}

/// Kinesis (ferrokinesis), S3 (s3s-fs, in a temporary directory) and DynamoDB
/// (dynoxide, in memory), each served on its own ephemeral loopback port.
/// Dropping it (or [`shutdown`](Self::shutdown)) stops the servers and deletes
/// the S3 files.
///
/// The servers run on a runtime of their own with many worker threads, not
/// on the caller's: ferrokinesis 0.7.0 holds a DashMap guard across an
/// `.await` in GetRecords, so PutRecords calls block worker threads on that
/// map until the GetRecords task is polled again — with as many concurrent
/// PutRecords as worker threads, nothing is left to poll it and the
/// emulator deadlocks (seen with a 4-thread test runtime). More threads than
/// concurrent requests keep one free; a runtime of their own also keeps
/// blocking test code from starving the servers.
///
/// ```no_run
/// # async fn demo() -> Result<(), integration_tests::Error> {
/// let aws = integration_tests::LocalAws::start().await?;
/// let kinesis = aws_sdk_kinesis::Client::new(aws.sdk_config());
/// kinesis.list_streams().send().await.ok();
/// aws.shutdown().await;
/// # Ok(()) }
/// ```
pub struct LocalAws {
    runtime: Option<tokio::runtime::Runtime>,
    endpoints: Endpoints,
    sdk_config: SdkConfig,
    kinesis_store: ferrokinesis::store::Store,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    s3_root: tempfile::TempDir,
}

impl std::fmt::Debug for LocalAws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAws")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl LocalAws {
    /// Starts the three back ends with default options.
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(LocalAwsOptions::default()).await
    }

    /// Starts the three back ends.
    pub async fn start_with(options: LocalAwsOptions) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(SERVER_THREADS)
            .thread_name("local-aws")
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                what: "starting the back ends' runtime",
                source,
            })?;
        let started = runtime.spawn(Self::start_servers(options)).await;
        match started {
            Ok(Ok(mut local)) => {
                local.runtime = Some(runtime);
                Ok(local)
            }
            Ok(Err(error)) => {
                runtime.shutdown_background();
                Err(error)
            }
            Err(join) => {
                runtime.shutdown_background();
                Err(Error::Io {
                    what: "starting the back ends",
                    source: std::io::Error::other(join.to_string()),
                })
            }
        }
    }

    /// Binds and serves the three back ends on the current runtime.
    async fn start_servers(options: LocalAwsOptions) -> Result<Self, Error> {
        let (shutdown, signal) = watch::channel(false);
        let mut servers = Vec::new();

        let (kinesis_addr, kinesis_store, task) = start_kinesis(&options, signal.clone()).await?;
        servers.push(task);

        let s3_root = tempfile::Builder::new()
            .prefix("local-s3-")
            .tempdir()
            .map_err(|source| Error::Io {
                what: "creating the S3 directory",
                source,
            })?;
        let (s3_addr, task) = start_s3(s3_root.path(), signal.clone()).await?;
        servers.push(task);

        let (dynamodb_addr, task) = start_dynamodb(signal).await?;
        servers.push(task);

        let endpoints = Endpoints {
            kinesis: format!("http://{kinesis_addr}"),
            s3: format!("http://{s3_addr}"),
            dynamodb: format!("http://{dynamodb_addr}"),
        };
        let sdk_config = endpoints.sdk_config();
        tracing::debug!(?endpoints, "embedded AWS back ends started");
        Ok(Self {
            runtime: None,
            endpoints,
            sdk_config,
            kinesis_store,
            shutdown,
            servers,
            s3_root,
        })
    }

    /// The configuration to build any AWS client from.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk_config
    }

    /// The endpoint URLs (for child processes, see [`Endpoints::env_vars`]).
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// A Kinesis client.
    pub fn kinesis_client(&self) -> aws_sdk_kinesis::Client {
        aws_sdk_kinesis::Client::new(&self.sdk_config)
    }

    /// A DynamoDB client.
    pub fn dynamodb_client(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config)
    }

    /// An S3 client with path-style addressing (needed by every local S3).
    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        s3_client(&self.sdk_config)
    }

    /// The embedded Kinesis' store, for tests that inspect it directly.
    pub fn kinesis_store(&self) -> &ferrokinesis::store::Store {
        &self.kinesis_store
    }

    /// Where the embedded S3 keeps its objects.
    pub fn s3_root(&self) -> &Path {
        self.s3_root.path()
    }

    /// Stops the servers and waits for them to finish.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        for server in std::mem::take(&mut self.servers) {
            let _ = server.await;
        }
    }
}

/// Worker threads of the back ends' runtime: more than the requests a test
/// or example ever has in flight (see [`LocalAws`]).
const SERVER_THREADS: usize = 64;

impl Drop for LocalAws {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for server in &self.servers {
            server.abort();
        }
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime blocks; this may run inside an async test.
            runtime.shutdown_background();
        }
    }
}

/// An S3 client for `sdk_config` with path-style addressing.
pub fn s3_client(sdk_config: &SdkConfig) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk_config)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

async fn bind(what: &'static str) -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| Error::Io { what, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Io { what, source })?;
    Ok((listener, addr))
}

async fn stopped(mut signal: watch::Receiver<bool>) {
    let _ = signal.wait_for(|stop| *stop).await;
}

async fn start_kinesis(
    options: &LocalAwsOptions,
    signal: watch::Receiver<bool>,
) -> Result<(SocketAddr, ferrokinesis::store::Store, JoinHandle<()>), Error> {
    let (listener, addr) = bind("binding the Kinesis port").await?;
    let (app, store) = ferrokinesis::create_app(ferrokinesis::store::StoreOptions {
        create_stream_ms: 0,
        delete_stream_ms: 0,
        update_stream_ms: 0,
        shard_limit: options.shard_limit,
        iterator_ttl_seconds: options.iterator_ttl_seconds,
        subscribe_to_shard_session_ms: options.subscription_millis,
        enforce_limits: options.enforce_kinesis_limits,
        ..Default::default()
    });
    // axum's default 2 MiB body limit would refuse a full 5 MiB PutRecords.
    let app = app.layer(axum::extract::DefaultBodyLimit::max(7 << 20));
    let app = if options.ordered_writes {
        app.layer(axum::middleware::from_fn_with_state(
            Arc::new(tokio::sync::Mutex::new(())),
            one_write_at_a_time,
        ))
    } else {
        app
    };
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped(signal))
            .await
        {
            tracing::error!(%error, "embedded Kinesis stopped");
        }
    });
    Ok((addr, store, task))
}

/// Serves PutRecord and PutRecords one at a time.
///
/// ferrokinesis 0.7.0 gives a write its sequence numbers first and stores
/// its records later, in a second step. Two concurrent writes to one shard
/// can therefore become visible out of sequence order, and a GetRecords at
/// the tip in between returns the later record and an iterator past the
/// earlier one: a tailing reader never sees it (about 3% of 40,000 records
/// written by 8 concurrent writers; `tests/emulator_tail.rs`). Kinesis makes
/// records visible in sequence order, and consumers rely on it.
async fn one_write_at_a_time(
    axum::extract::State(writes): axum::extract::State<Arc<tokio::sync::Mutex<()>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let is_write = request
        .headers()
        .get("x-amz-target")
        .and_then(|target| target.to_str().ok())
        .is_some_and(|target| target.ends_with(".PutRecords") || target.ends_with(".PutRecord"));
    if is_write {
        let _serial = writes.lock().await;
        next.run(request).await
    } else {
        next.run(request).await
    }
}

async fn start_s3(
    root: &Path,
    signal: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), Error> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder as ConnBuilder;

    let fs = s3s_fs::FileSystem::new(root).map_err(|e| Error::Start {
        service: "S3",
        message: format!("{e:?}"),
    })?;
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    let mut auth = s3s::auth::SimpleAuth::from_single(
        crate::endpoints::ACCESS_KEY_ID,
        crate::endpoints::SECRET_ACCESS_KEY,
    );
    auth.register(
        crate::endpoints::SECOND_ACCESS_KEY_ID.to_owned(),
        crate::endpoints::SECOND_SECRET_ACCESS_KEY.into(),
    );
    builder.set_auth(auth);
    let service = builder.build();
    let (listener, addr) = bind("binding the S3 port").await?;
    let task = tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut stop = std::pin::pin!(stopped(signal));
        loop {
            let socket = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => socket,
                    Err(error) => {
                        tracing::warn!(%error, "embedded S3 accept failed");
                        continue;
                    }
                },
                () = &mut stop => break,
            };
            let connection = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
    });
    Ok((addr, task))
}

async fn start_dynamodb(
    signal: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), Error> {
    let db = dynoxide::Database::memory().map_err(|e| Error::Start {
        service: "DynamoDB",
        message: e.to_string(),
    })?;
    let (listener, addr) = bind("binding the DynamoDB port").await?;
    let task = tokio::spawn(async move {
        if let Err(message) =
            dynoxide::server::serve_with_shutdown(listener, db, stopped(signal)).await
        {
            tracing::error!(%message, "embedded DynamoDB stopped");
        }
    });
    Ok((addr, task))
}
