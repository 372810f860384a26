//! The emitter stage: a sealed object goes to its destination.

mod classify;
mod s3;

pub use classify::{Failure, classify, classify_code};

use futures::future::BoxFuture;

pub use s3::{
    DIGEST_METADATA, MAX_OBJECT_OVERSHOOT, MAX_PART_BYTES, MAX_PARTS, MAX_PUT_BYTES,
    MIN_PART_BYTES, OpenUpload, S3Emitter, S3EmitterBuilder, ServerSideEncryption,
    UploadSettingsError, check_upload_settings,
};

/// What [`Emitter::emit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emitted {
    /// The object was written under the key.
    Written,
    /// This very object was already under the key (an earlier attempt of
    /// the same upload succeeded, and a crash or a lost answer hid it); it
    /// was left as it is.
    AlreadyThere,
    /// A different object is under the key; it was left as it is, and this
    /// one was not written.
    Occupied,
}

use crate::buffer::{BufferError, SealedObject};

/// Emitter errors. Uploads are retried by the pipeline; these say why one
/// attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The object's buffered body could not be read.
    #[error(transparent)]
    Buffer(#[from] BufferError),
    /// The destination refused or failed.
    #[error("{operation} {key}: {message}{}", fix_suffix(.failure))]
    Destination {
        /// What was attempted.
        operation: &'static str,
        /// The object key.
        key: String,
        /// The error and its causes.
        message: String,
        /// Whether retrying can help ([`Failure::Permanent`] says what to fix).
        failure: Failure,
    },
    /// The destination does not implement this operation (HTTP 501; some
    /// S3-compatible stores have no ListMultipartUploads).
    #[error("{operation} is not implemented by the destination")]
    Unsupported {
        /// What was attempted.
        operation: &'static str,
    },
}

fn fix_suffix(failure: &Failure) -> String {
    match failure {
        Failure::Retryable => String::new(),
        Failure::Permanent(fix) => format!(" — {fix}"),
    }
}

impl EmitError {
    /// What to fix, when no retry can help (a missing bucket, denied
    /// access, a wrong region, an unusable KMS key).
    pub fn permanent(&self) -> Option<&'static str> {
        match self {
            EmitError::Destination {
                failure: Failure::Permanent(fix),
                ..
            } => Some(fix),
            _ => None,
        }
    }
}

/// Writes sealed objects to their destination, under a key the pipeline
/// chose. An emitter never replaces an object already under the key (S3:
/// a conditional write, `If-None-Match: *`): it says so instead, and the
/// caller decides — the connector adopts it (a key names its records, so the
/// object there holds the same ones), the journal keeps it if it is its own
/// and otherwise writes its object under the next number.
pub trait Emitter: Send + Sync + 'static {
    /// Writes `object` under `key` unless an object is there already.
    fn emit<'a>(
        &'a self,
        key: &'a str,
        object: &'a SealedObject,
    ) -> BoxFuture<'a, Result<Emitted, EmitError>>;

    /// Whether an object exists under `key`.
    fn exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, EmitError>>;
}
