//! A TCP forwarder in front of a back end that can be closed: while closed,
//! connections are reset at once and open ones are cut, as when the back
//! end's host is unreachable. Bytes pass unchanged (the `Host` header too),
//! so signed requests stay valid, unlike through [`crate::FaultProxy`].

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;

/// A running gate; dropping it stops it and cuts its connections.
pub struct TcpGate {
    url: String,
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for TcpGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpGate")
            .field("url", &self.url)
            .field("open", &*self.open.borrow())
            .finish()
    }
}

impl TcpGate {
    /// Starts an open gate on an ephemeral loopback port in front of
    /// `upstream` (`http://host:port`).
    ///
    /// ```no_run
    /// # async fn demo(aws: &integration_tests::LocalAws) -> Result<(), integration_tests::Error> {
    /// let gate = integration_tests::TcpGate::start(&aws.endpoints().s3).await?;
    /// // ... point a client at gate.url() ...
    /// gate.set_open(false); // S3 unreachable
    /// gate.set_open(true);
    /// # Ok(()) }
    /// ```
    pub async fn start(upstream: &str) -> Result<Self, Error> {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .map_err(|_| Error::Io {
                what: "the gate's upstream is not http://ip:port",
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            })?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| Error::Io {
                what: "binding the TCP gate",
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            what: "binding the TCP gate",
            source,
        })?;
        let (open, opened) = watch::channel(true);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                if !*opened.borrow() {
                    // Dropped: the client sees the connection reset.
                    continue;
                }
                let mut closed = opened.clone();
                connections.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let mut client = socket;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = closed.wait_for(|open| !*open) => {}
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self {
            url: format!("http://{addr}"),
            open,
            task,
        })
    }

    /// The gate's URL, to use in place of the upstream's.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens (`true`) or closes (`false`) the gate; closing cuts the
    /// connections under way.
    pub fn set_open(&self, open: bool) {
        let _ = self.open.send(open);
    }
}

impl Drop for TcpGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}
