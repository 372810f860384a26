//! Local AWS back ends for tests and examples, and the integration tests that
//! run against them.
//!
//! Two layers:
//! - [`embedded::LocalAws`] (the default) starts Kinesis (ferrokinesis), S3
//!   (s3s-fs) and DynamoDB (dynoxide) inside the calling process, each on an
//!   ephemeral loopback port, and hands back an `SdkConfig` that points at
//!   them. Nothing but cargo is needed.
//! - [`external::ExternalAws`] connects to moto_server and kinesis-local,
//!   started by `scripts/local-aws start`, for what the embedded back ends get
//!   wrong (ListShards paging, shard end with ChildShards, multipart-upload
//!   listing). It fails at once with a clear message when they are not running.
//!
//! For the interop tests with the Java originals, [`java`] runs the programs
//! of `interop/java/` (the AWS KPL, the Java KCL 2.x) as child processes and
//! [`TlsFront`] puts TLS before the embedded Kinesis for the KPL.
//!
//! Both hand out the same kind of `SdkConfig` users build: per-service
//! endpoints resolved the way `AWS_ENDPOINT_URL_<SERVICE>` is resolved, so the
//! code under test cannot tell them from real AWS.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod embedded;
pub mod endpoints;
pub mod external;
pub mod fault_proxy;
pub mod java;
pub mod proc_tree;
pub mod resources;
pub mod tcp_gate;
pub mod tls_front;

pub use embedded::LocalAws;
pub use endpoints::Endpoints;
pub use external::ExternalAws;
pub use fault_proxy::{FaultCounts, FaultProxy, Faults};
pub use resources::unique_name;
pub use tcp_gate::TcpGate;
pub use tls_front::TlsFront;

/// Errors of the local back ends.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be bound or accepted.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An embedded back end failed to start.
    #[error("embedded {service} failed to start: {message}")]
    Start {
        /// Which back end.
        service: &'static str,
        /// Its own error text.
        message: String,
    },
    /// An external emulator is not configured or not reachable.
    #[error(
        "external {service} emulator not reachable ({detail}); start the external emulators with \
         `scripts/local-aws start` and export their endpoints with `eval \"$(scripts/local-aws env)\"`"
    )]
    ExternalNotRunning {
        /// Which emulator.
        service: &'static str,
        /// What was missing or failed.
        detail: String,
    },
    /// An AWS call made while preparing or cleaning up test resources failed.
    #[error("{operation} failed: {message}")]
    Aws {
        /// The operation.
        operation: &'static str,
        /// The SDK's error, with its source chain.
        message: String,
    },
    /// A resource did not reach the expected state in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

impl Error {
    /// Wraps an SDK error with the name of the operation, keeping the whole
    /// source chain in the message.
    pub fn aws(operation: &'static str, error: impl std::error::Error) -> Self {
        Error::Aws {
            operation,
            message: kcl::error_chain(&error),
        }
    }
}
