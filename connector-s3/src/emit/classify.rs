//! S3 errors classified once: retried (throttling, 5xx, timeouts, dropped
//! connections) or permanent (no retry fixes them: a missing bucket, denied
//! access, a wrong region, an unusable KMS key), with what to fix.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// Whether retrying can help, and if not, what the operator must fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Throttling, a 5xx, a timeout, a dropped connection: retry with backoff.
    Retryable,
    /// No retry helps; the text says what to fix.
    Permanent(&'static str),
}

/// Classifies an S3 call's error by its error code and HTTP status.
///
/// Permanent: `NoSuchBucket`, `AccessDenied` (and any other 403),
/// `InvalidAccessKeyId`, `SignatureDoesNotMatch`, `InvalidToken`,
/// `PermanentRedirect` / `AuthorizationHeaderMalformed` / 301 (the bucket is
/// in another region), `KMS.*` errors (but KMS throttling, limits and
/// internal errors) and `InvalidArgument`. Everything else — `SlowDown`,
/// 5xx, 429, `RequestTimeTooSkewed`, `ExpiredToken`, timeouts, connection
/// errors, unknown codes — is retried.
pub fn classify<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Failure {
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = match error {
        SdkError::ServiceError(service) => service.err().code(),
        _ => return Failure::Retryable,
    };
    classify_code(code, status)
}

/// [`classify`] from an error code and an HTTP status.
pub fn classify_code(code: Option<&str>, status: Option<u16>) -> Failure {
    match code {
        // Transient although some come as a 403 or under `KMS.`: a clock
        // or credentials about to be refreshed, KMS throttling.
        Some(
            "RequestTimeTooSkewed"
            | "ExpiredToken"
            | "TokenRefreshRequired"
            | "KMS.ThrottlingException"
            | "KMS.LimitExceededException"
            | "KMS.KMSInternalException"
            | "KMS.DependencyTimeoutException",
        ) => Failure::Retryable,
        Some("NoSuchBucket") => Failure::Permanent(
            "the bucket does not exist: check `bucket` (and `region`) and create it",
        ),
        Some("AccessDenied" | "AllAccessDisabled" | "AccountProblem") => Failure::Permanent(
            "access denied: give the connector's role the permissions listed in the README (IAM policy)",
        ),
        Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "InvalidToken") => {
            Failure::Permanent("the credentials are not valid: check the AWS credentials")
        }
        Some(
            "PermanentRedirect"
            | "AuthorizationHeaderMalformed"
            | "IllegalLocationConstraintException",
        ) => Failure::Permanent(
            "the bucket is in another region: set `region` (AWS_REGION) to the bucket's region",
        ),
        Some(code) if code.starts_with("KMS.") => Failure::Permanent(
            "the KMS key cannot be used: check `sse_kms_key_id`, the key's state and its key policy",
        ),
        Some("InvalidArgument") => Failure::Permanent(
            "S3 refused an argument: check the `sse` and `sse_kms_key_id` settings",
        ),
        _ => match status {
            Some(301) => Failure::Permanent(
                "the bucket is in another region: set `region` (AWS_REGION) to the bucket's region",
            ),
            Some(403) => Failure::Permanent(
                "access denied: give the connector's role the permissions listed in the README (IAM policy)",
            ),
            _ => Failure::Retryable,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_errors_say_what_to_fix_and_the_rest_is_retried() {
        for (code, status) in [
            ("NoSuchBucket", 404),
            ("AccessDenied", 403),
            ("InvalidAccessKeyId", 403),
            ("PermanentRedirect", 301),
            ("KMS.NotFoundException", 400),
            ("KMS.DisabledException", 400),
        ] {
            assert!(
                matches!(
                    classify_code(Some(code), Some(status)),
                    Failure::Permanent(_)
                ),
                "{code}"
            );
        }
        for (code, status) in [
            (Some("SlowDown"), Some(503)),
            (Some("InternalError"), Some(500)),
            (Some("RequestTimeout"), Some(400)),
            (None, Some(502)),
            (None, None),
            (Some("KMS.ThrottlingException"), Some(400)),
            (Some("RequestTimeTooSkewed"), Some(403)),
            (Some("ExpiredToken"), Some(400)),
        ] {
            assert_eq!(classify_code(code, status), Failure::Retryable, "{code:?}");
        }
        assert!(matches!(
            classify_code(None, Some(403)),
            Failure::Permanent(_)
        ));
    }
}
