//! Preflight: the cheap AWS calls that prove a connector's configuration
//! before it runs (`connector-s3 check-config --connect`, and `run` at
//! start-up), each failure naming the key or the permission to fix.
//!
//! - S3: HeadBucket (the bucket exists, is readable, and is in the client's
//!   region); with `write_test`, a PutObject and DeleteObject of a small
//!   object under the prefix.
//! - Kinesis: DescribeStreamSummary of each stream.
//! - DynamoDB: DescribeTable of the lease table (a missing table is fine:
//!   the consumer creates it, which needs `dynamodb:CreateTable`).

use aws_sdk_s3::error::ProvideErrorMetadata;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, e.g. `S3 bucket "archive" (HeadBucket)`.
    pub what: String,
    /// `Ok(note)`, or what is wrong and what to fix.
    pub outcome: Result<String, String>,
    /// The failure is a definite answer that the configuration is wrong (a
    /// bucket or stream that does not exist, a bucket in another region),
    /// not a missing permission for the check itself or a service that did
    /// not answer: `run` refuses to start only on these.
    pub fatal: bool,
}

impl Check {
    fn ok(what: String, note: impl Into<String>) -> Self {
        Self {
            what,
            outcome: Ok(note.into()),
            fatal: false,
        }
    }

    fn failed(what: String, problem: String) -> Self {
        Self {
            what,
            outcome: Err(problem),
            fatal: false,
        }
    }

    fn fatal(what: String, problem: String) -> Self {
        Self {
            what,
            outcome: Err(problem),
            fatal: true,
        }
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The bucket (`bucket`).
    pub bucket: &'a str,
    /// The key prefix (`prefix`).
    pub prefix: &'a str,
    /// The streams (`streams`).
    pub streams: &'a [String],
    /// The lease table (`application_name`).
    pub lease_table: &'a str,
    /// Also write and delete a small object under the prefix.
    pub write_test: bool,
}

fn error_text<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    error: &aws_sdk_s3::error::SdkError<E, R>,
) -> (Option<String>, String) {
    let code = error
        .as_service_error()
        .and_then(|e| e.code())
        .map(str::to_owned);
    let text = match error.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("service error"),
            service.message().unwrap_or_default()
        ),
        None => kcl::error_chain(error),
    };
    (code, kpl::error::elide_middle(&text, 300).into_owned())
}

/// Runs every check; never fails itself (each outcome says what it found).
///
/// ```no_run
/// # async fn demo(sdk_config: aws_config::SdkConfig) {
/// let s3 = aws_sdk_s3::Client::new(&sdk_config);
/// let streams = vec!["orders".to_owned()];
/// let target = connector_s3::preflight::Target {
///     bucket: "archive", prefix: "orders", streams: &streams,
///     lease_table: "orders-archiver", write_test: false,
/// };
/// for check in connector_s3::preflight::run(&sdk_config, &s3, &target).await {
///     println!("{}: {:?}", check.what, check.outcome);
/// }
/// # }
/// ```
pub async fn run(
    sdk_config: &aws_config::SdkConfig,
    s3: &aws_sdk_s3::Client,
    target: &Target<'_>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let bucket = target.bucket;
    let what = format!("S3 bucket {bucket:?} (HeadBucket)");
    let region = sdk_config.region().map(|r| r.to_string());
    let bucket_ok = match s3.head_bucket().bucket(bucket).send().await {
        Ok(out) => match (out.bucket_region(), region.as_deref()) {
            (Some(theirs), Some(ours)) if theirs != ours => {
                checks.push(Check::fatal(
                    what,
                    format!("the bucket is in {theirs}, the client in {ours}: set `region` (AWS_REGION) to {theirs}"),
                ));
                false
            }
            _ => {
                checks.push(Check::ok(what, "exists, readable"));
                true
            }
        },
        Err(error) => {
            let status = error.raw_response().map(|r| r.status().as_u16());
            let (_, text) = error_text(&error);
            let problem = match status {
                Some(404) => {
                    format!("the bucket does not exist: fix `bucket` or create it ({text})")
                }
                Some(403) => {
                    format!("access denied: the role needs s3:ListBucket on {bucket} ({text})")
                }
                Some(301) => {
                    format!("the bucket is in another region: set `region` (AWS_REGION) ({text})")
                }
                _ => format!("S3 did not answer: check the endpoint and network ({text})"),
            };
            let definite = matches!(status, Some(404 | 301));
            checks.push(if definite {
                Check::fatal(what, problem)
            } else {
                Check::failed(what, problem)
            });
            false
        }
    };
    if target.write_test && bucket_ok {
        let key = match target.prefix {
            "" => ".connector-s3-check".to_owned(),
            prefix => format!("{prefix}/.connector-s3-check"),
        };
        let what = format!("S3 write {bucket}/{key} (PutObject, DeleteObject)");
        let put = s3
            .put_object()
            .bucket(bucket)
            .key(&key)
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"check"))
            .send()
            .await;
        match put {
            Ok(_) => match s3.delete_object().bucket(bucket).key(&key).send().await {
                Ok(_) => checks.push(Check::ok(what, "written and deleted")),
                Err(error) => checks.push(Check::failed(
                    what,
                    format!(
                        "written but not deleted: the role needs s3:DeleteObject only for this check ({})",
                        error_text(&error).1
                    ),
                )),
            },
            Err(error) => {
                let (code, text) = error_text(&error);
                let problem = match code.as_deref() {
                    Some(kms) if kms.starts_with("KMS.") => format!(
                        "the KMS key cannot be used: check `sse_kms_key_id` and its key policy ({text})"
                    ),
                    _ => format!("the role needs s3:PutObject under {key} ({text})"),
                };
                checks.push(Check::failed(what, problem));
            }
        }
    }

    let kinesis =
        aws_sdk_kinesis::Client::new(&kcl::timeouts::ApiTimeouts::KINESIS.apply(sdk_config));
    for stream in target.streams {
        let what = format!("Kinesis stream {stream:?} (DescribeStreamSummary)");
        match kinesis
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
        {
            Ok(out) => {
                let shards = out
                    .stream_description_summary()
                    .map_or(0, |s| s.open_shard_count());
                checks.push(Check::ok(what, format!("{shards} open shards")));
            }
            Err(error) => {
                let not_found = error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception());
                let text = kpl::error::elide_middle(&kcl::error_chain(&error), 300).into_owned();
                let problem = if not_found {
                    format!(
                        "the stream does not exist in this region: fix `streams` or `region` ({text})"
                    )
                } else {
                    format!(
                        "the role needs kinesis:DescribeStreamSummary, ListShards, GetShardIterator and GetRecords ({text})"
                    )
                };
                checks.push(if not_found {
                    Check::fatal(what, problem)
                } else {
                    Check::failed(what, problem)
                });
            }
        }
    }

    let dynamodb =
        aws_sdk_dynamodb::Client::new(&kcl::timeouts::ApiTimeouts::DYNAMODB.apply(sdk_config));
    let table = target.lease_table;
    let what = format!("DynamoDB lease table {table:?} (DescribeTable)");
    match dynamodb.describe_table().table_name(table).send().await {
        Ok(_) => checks.push(Check::ok(what, "exists")),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            checks.push(Check::ok(
                what,
                "does not exist yet: created at start (needs dynamodb:CreateTable)",
            ));
        }
        Err(error) => checks.push(Check::failed(
            what,
            format!(
                "the role needs dynamodb:DescribeTable, Scan, GetItem, PutItem, UpdateItem, DeleteItem on it ({})",
                kpl::error::elide_middle(&kcl::error_chain(&error), 300)
            ),
        )),
    }
    checks
}
