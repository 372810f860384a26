//! The emitter stage: a sealed object goes to its destination.

mod s3;

use futures::future::BoxFuture;

pub use s3::{OpenUpload, S3Emitter, S3EmitterBuilder, ServerSideEncryption};

use crate::buffer::{BufferError, SealedObject};

/// Emitter errors. Uploads are retried by the pipeline; these say why one
/// attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The object's buffered body could not be read.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// The destination refused or failed.
    #[error("{operation} {key}: {message}")]
    Destination {
        /// What was attempted.
        operation: &'static str,
        /// The object key.
        key: String,
        /// The error and its causes.
        message: String,
    },
    /// The destination does not implement this operation (HTTP 501; some
    /// S3-compatible stores have no ListMultipartUploads).
    #[error("{operation} is not implemented by the destination")]
    Unsupported {
        /// What was attempted.
        operation: &'static str,
    },
}

/// Writes sealed objects to their destination, under a key the pipeline
/// chose. Writing the same key twice must leave one object (an overwrite):
/// that is what makes a retried or repeated upload harmless.
pub trait Emitter: Send + Sync + 'static {
    /// Writes `object` under `key`.
    fn emit<'a>(
        &'a self,
        key: &'a str,
        object: &'a SealedObject,
    ) -> BoxFuture<'a, Result<(), EmitError>>;

    /// Whether an object exists under `key`.
    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, EmitError>>;
}
