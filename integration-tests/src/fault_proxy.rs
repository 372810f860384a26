//! A fault-injecting HTTP proxy in front of a Kinesis endpoint, for what no
//! emulator does: 5xx answers, throttled requests, partial failures, answers
//! lost after the request was applied, and a stalled endpoint.
//!
//! Only PutRecords calls are faulted; every other call is forwarded as is
//! (SubscribeToShard's event stream passed through as it comes),
//! unless the whole endpoint is stalled ([`FaultProxy::stall_every_call`]:
//! any service, e.g. in front of DynamoDB).
//! The successful answers of any one operation can also be rewritten
//! ([`FaultProxy::rewrite_responses`]), for what an emulator does not report
//! (the embedded Kinesis leaves `MaxRecordSizeInKiB` out of
//! DescribeStreamSummary, say).
//! The proxy can also add `ChildShards` to the GetRecords answer that ends a
//! closed shard ([`FaultProxy::fill_child_shards`]), which AWS sends and the
//! embedded Kinesis does not.
//! Faults that are not forwarded (`fail`, `throttle`, the failed part of
//! `partial`) store nothing, so a producer that retries them must not create
//! duplicates; `drop_response` forwards the call and then answers 500, the one
//! fault after which a duplicate is legitimate (and counted).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Error;

/// Probabilities (0.0 to 1.0) of each fault per PutRecords call (per call of
/// any operation with `every_call`); they are exclusive, and their sum
/// should stay at most 1.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Fault every call, of any operation and service (Kinesis, DynamoDB or
    /// S3, answered in that service's error format), not only PutRecords;
    /// `partial` still applies to PutRecords only.
    pub every_call: bool,
    /// Forward the call only after [`FaultProxy::set_slow_delay`] (default
    /// 2 s): past a client's attempt timeout, it is retried while the first
    /// attempt may still be applied.
    pub slow: f64,
    /// Answer 500 InternalFailure without forwarding.
    pub fail: f64,
    /// Answer 400 ProvisionedThroughputExceededException without forwarding.
    pub throttle: f64,
    /// Forward a random half of the records and answer the others with
    /// ProvisionedThroughputExceededException.
    pub partial: f64,
    /// Forward the call, then answer 500 as if the answer was lost.
    pub drop_response: f64,
    /// With `every_call`: answer access denied without forwarding (400 AccessDeniedException
    /// for Kinesis and DynamoDB, 403 AccessDenied for S3): a role without
    /// the permission.
    pub deny: f64,
}

/// What the proxy did, counted.
#[derive(Debug, Default)]
pub struct FaultCounts {
    /// PutRecords calls received.
    pub put_records_calls: AtomicU64,
    /// Calls answered 500 without forwarding.
    pub failed: AtomicU64,
    /// Calls answered 400 throttled without forwarding.
    pub throttled: AtomicU64,
    /// Calls partly forwarded.
    pub partial: AtomicU64,
    /// Records refused within partly forwarded calls.
    pub partial_records_refused: AtomicU64,
    /// Calls forwarded whose answer was then replaced by a 500.
    pub dropped_responses: AtomicU64,
    /// Kinesis records stored by calls whose answer was dropped.
    pub dropped_records: AtomicU64,
    /// User records (after deaggregation) inside those Kinesis records: the
    /// most duplicates a correct producer can cause.
    pub dropped_user_records: AtomicU64,
    /// Calls held while the proxy was stalled.
    pub stalled: AtomicU64,
    /// Calls of any operation faulted (with `every_call`).
    pub calls_faulted: AtomicU64,
    /// Calls forwarded late (`slow`).
    pub slowed: AtomicU64,
    /// Every call received, by operation (`X-Amz-Target`'s last part; S3
    /// calls as their HTTP method).
    pub by_operation: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl FaultCounts {
    /// A copy of [`by_operation`](Self::by_operation).
    pub fn operations(&self) -> std::collections::BTreeMap<String, u64> {
        self.by_operation
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

impl FaultCounts {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Changes an operation's JSON answer in place.
type Rewrite = Arc<dyn Fn(&mut Value) + Send + Sync>;

struct State {
    upstream: String,
    /// By operation name (the `X-Amz-Target` after its last dot).
    rewrites: Mutex<HashMap<String, Rewrite>>,
    client: Client<HttpConnector, Full<Bytes>>,
    faults: Mutex<Faults>,
    counts: Arc<FaultCounts>,
    stalled: watch::Receiver<bool>,
    /// Every call is held, whatever its operation.
    stalled_all: watch::Receiver<bool>,
    /// How long a `slow` call is held before it is forwarded.
    slow_delay: Mutex<std::time::Duration>,
    fill_child_shards: std::sync::atomic::AtomicBool,
}

/// A running fault-injecting proxy.
pub struct FaultProxy {
    url: String,
    state: Arc<State>,
    stall: watch::Sender<bool>,
    stall_all: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy on an ephemeral loopback port in front of `upstream`
    /// (an `http://host:port` URL).
    pub async fn start(upstream: &str, faults: Faults) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| Error::Io {
                what: "binding the fault proxy",
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            what: "binding the fault proxy",
            source,
        })?;
        let (stall, stalled) = watch::channel(false);
        let (stall_all, stalled_all) = watch::channel(false);
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_owned(),
            rewrites: Mutex::new(HashMap::new()),
            client: Client::builder(TokioExecutor::new()).build_http(),
            faults: Mutex::new(faults),
            counts: Arc::new(FaultCounts::default()),
            stalled,
            stalled_all,
            slow_delay: Mutex::new(std::time::Duration::from_secs(2)),
            fill_child_shards: std::sync::atomic::AtomicBool::new(false),
        });
        let served = state.clone();
        let task = tokio::spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let state = served.clone();
                let service =
                    hyper::service::service_fn(move |request| handle(request, state.clone()));
                let connection = http
                    .serve_connection(TokioIo::new(socket), service)
                    .into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        });
        Ok(Self {
            url: format!("http://{addr}"),
            state,
            stall,
            stall_all,
            task,
        })
    }

    /// The proxy's URL, to use as the Kinesis endpoint.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the proxy has done so far.
    pub fn counts(&self) -> &FaultCounts {
        &self.state.counts
    }

    /// Changes the fault probabilities.
    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut current) = self.state.faults.lock() {
            *current = faults;
        }
    }

    /// Rewrites every successful (200) JSON answer to `operation` (as named
    /// in `X-Amz-Target` after the dot: `"DescribeStreamSummary"`) with
    /// `rewrite` before the client sees it; replaces an earlier rewrite of
    /// the same operation. Error answers, and answers that are not JSON, pass
    /// unchanged.
    ///
    /// ```no_run
    /// # fn demo(proxy: &integration_tests::FaultProxy) {
    /// proxy.rewrite_responses("DescribeStreamSummary", |answer| {
    ///     answer["StreamDescriptionSummary"]["MaxRecordSizeInKiB"] = 2048.into();
    /// });
    /// # }
    /// ```
    pub fn rewrite_responses(
        &self,
        operation: &str,
        rewrite: impl Fn(&mut Value) + Send + Sync + 'static,
    ) {
        if let Ok(mut rewrites) = self.state.rewrites.lock() {
            rewrites.insert(operation.to_owned(), Arc::new(rewrite));
        }
    }

    /// Adds `ChildShards` (from the upstream's ListShards) to every GetRecords
    /// answer that ends a closed shard (no `NextShardIterator`) without
    /// naming its children, as AWS names them. The embedded Kinesis leaves
    /// them out, and the Java KCL 2.x then retries that GetRecords forever
    /// instead of ending the shard.
    pub fn fill_child_shards(&self, fill: bool) {
        self.state.fill_child_shards.store(fill, Ordering::Relaxed);
    }

    /// Stalls (`true`) or resumes (`false`) PutRecords: while stalled, calls
    /// are held unanswered; on resume, the held ones are answered 503 without
    /// being forwarded (their clients have timed out).
    pub fn stall(&self, stalled: bool) {
        let _ = self.stall.send(stalled);
    }

    /// How long a `slow` call is held before it is forwarded.
    pub fn set_slow_delay(&self, delay: std::time::Duration) {
        if let Ok(mut slow) = self.state.slow_delay.lock() {
            *slow = delay;
        }
    }

    /// Stalls (`true`) or resumes (`false`) every call, of any operation or
    /// service: an endpoint that accepts connections and never answers. On
    /// resume, the held calls are answered 503 without being forwarded.
    pub fn stall_every_call(&self, stalled: bool) {
        let _ = self.stall_all.send(stalled);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response<Bytes> {
    let body = json!({ "__type": code, "message": message }).to_string();
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    response
}

/// A response body: whole (most answers) or streamed (SubscribeToShard).
type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<ProxyBody>, Infallible> {
    let operation = request
        .headers()
        .get("x-amz-target")
        .and_then(|target| target.to_str().ok())
        .and_then(|target| target.rsplit('.').next())
        .map_or_else(|| request.method().to_string(), str::to_owned);
    if let Ok(mut counts) = state.counts.by_operation.lock() {
        *counts.entry(operation).or_default() += 1;
    }
    let subscribe = request
        .headers()
        .get("x-amz-target")
        .is_some_and(|target| target.as_bytes().ends_with(b".SubscribeToShard"));
    if subscribe {
        return Ok(subscribe_to_shard(request, &state).await);
    }
    Ok(decide(request, state).await.map(whole))
}

fn whole(body: Bytes) -> ProxyBody {
    Full::new(body).map_err(|never| match never {}).boxed()
}

fn streamed(body: Incoming) -> ProxyBody {
    body.map_err(BoxError::from).boxed()
}

/// SubscribeToShard, whose answer is an event stream lasting minutes: it is
/// passed through as it comes, never buffered. With `every_call`, `fail`
/// answers 500, `throttle` 400 LimitExceededException and `deny` 400
/// AccessDeniedException without forwarding, and `drop_response` forwards
/// the call and aborts the stream after its first frame (a connection lost
/// mid-subscription: the reader must subscribe again from its last
/// continuation sequence number); `stall_every_call` holds it.
async fn subscribe_to_shard(request: Request<Incoming>, state: &State) -> Response<ProxyBody> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let faults = state.faults.lock().map(|f| *f).unwrap_or_default();
    let counts = &state.counts;
    if *state.stalled_all.borrow() {
        FaultCounts::add(&counts.stalled, 1);
        let mut stalled = state.stalled_all.clone();
        let _ = stalled.wait_for(|stalled| !*stalled).await;
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "stalled",
        )
        .map(whole);
    }
    let mut keep_frames = None;
    if faults.every_call {
        let roll: f64 = rand::random();
        if roll < faults.fail {
            FaultCounts::add(&counts.calls_faulted, 1);
            FaultCounts::add(&counts.failed, 1);
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure",
                "injected failure",
            )
            .map(whole);
        }
        if roll < faults.fail + faults.throttle {
            FaultCounts::add(&counts.calls_faulted, 1);
            FaultCounts::add(&counts.throttled, 1);
            return error_response(
                StatusCode::BAD_REQUEST,
                "LimitExceededException",
                "injected",
            )
            .map(whole);
        }
        let denied = faults.fail + faults.throttle + faults.deny;
        if roll >= faults.fail + faults.throttle && roll < denied {
            FaultCounts::add(&counts.calls_faulted, 1);
            return error_response(
                StatusCode::BAD_REQUEST,
                "AccessDeniedException",
                "User is not authorized to perform this action (injected)",
            )
            .map(whole);
        }
        if roll >= denied && roll < denied + faults.drop_response {
            FaultCounts::add(&counts.calls_faulted, 1);
            FaultCounts::add(&counts.dropped_responses, 1);
            keep_frames = Some(1);
        }
    }
    let Some(request) = upstream_request(state, parts, body) else {
        return error_response(StatusCode::BAD_GATEWAY, "ProxyError", "bad upstream URI")
            .map(whole);
    };
    match state.client.request(request).await {
        Ok(response) => response.map(|body| match keep_frames {
            Some(frames) => Truncated { body, frames }.boxed(),
            None => streamed(body),
        }),
        Err(error) => {
            error_response(StatusCode::BAD_GATEWAY, "ProxyError", &error.to_string()).map(whole)
        }
    }
}

/// A streamed body cut after its first `frames` frames with an error, so
/// that the connection is aborted as a lost one is (not ended cleanly).
struct Truncated {
    body: Incoming,
    frames: usize,
}

impl hyper::body::Body for Truncated {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        if self.frames == 0 {
            return std::task::Poll::Ready(Some(Err("subscription cut (injected)".into())));
        }
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(_))) = &polled {
            self.frames -= 1;
        }
        polled.map(|frame| frame.map(|result| result.map_err(BoxError::from)))
    }
}

/// The answer to a request: faulted or forwarded, then rewritten if asked.
async fn decide(request: Request<Incoming>, state: Arc<State>) -> Response<Bytes> {
    let operation = request
        .headers()
        .get("x-amz-target")
        .and_then(|target| target.to_str().ok())
        .and_then(|target| target.rsplit('.').next())
        .map(str::to_owned);
    let response = fault_or_forward(request, &state).await;
    let rewrite = operation.and_then(|operation| {
        let rewrites = state.rewrites.lock().ok()?;
        rewrites.get(&operation).cloned()
    });
    match rewrite {
        Some(rewrite) if response.status() == StatusCode::OK => rewritten(response, &*rewrite),
        _ => response,
    }
}

fn rewritten(
    response: Response<Bytes>,
    rewrite: &(dyn Fn(&mut Value) + Send + Sync),
) -> Response<Bytes> {
    let Some(mut answer) = parse(response.body()) else {
        return response;
    };
    rewrite(&mut answer);
    let (mut parts, _) = response.into_parts();
    let body = Bytes::from(answer.to_string());
    parts.headers.insert(
        hyper::header::CONTENT_LENGTH,
        hyper::header::HeaderValue::from(body.len()),
    );
    Response::from_parts(parts, body)
}

async fn fault_or_forward(request: Request<Incoming>, state: &Arc<State>) -> Response<Bytes> {
    let (parts, body) = request.into_parts();
    let is_put_records = parts
        .headers
        .get("x-amz-target")
        .is_some_and(|target| target.as_bytes().ends_with(b".PutRecords"));
    let counts = &state.counts;
    if *state.stalled_all.borrow() {
        FaultCounts::add(&counts.stalled, 1);
        let mut stalled = state.stalled_all.clone();
        let _ = stalled.wait_for(|stalled| !*stalled).await;
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "stalled",
        );
    }
    if is_put_records && *state.stalled.borrow() {
        // Held without reading the body: a stalled endpoint buffers nothing.
        FaultCounts::add(&counts.stalled, 1);
        let mut stalled = state.stalled.clone();
        let _ = stalled.wait_for(|stalled| !*stalled).await;
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "stalled",
        );
    }
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let faults = state.faults.lock().map(|f| *f).unwrap_or_default();
    if !is_put_records {
        let is_get_records = parts
            .headers
            .get("x-amz-target")
            .is_some_and(|target| target.as_bytes().ends_with(b".GetRecords"));
        if is_get_records && state.fill_child_shards.load(Ordering::Relaxed) {
            return get_records_with_children(state, parts, body).await;
        }
        return if faults.every_call {
            any_call(state, parts, body, faults).await
        } else {
            forward(state, parts, body).await
        };
    }
    FaultCounts::add(&counts.put_records_calls, 1);
    let roll: f64 = rand::random();
    let mut threshold = faults.fail;
    if roll < threshold {
        FaultCounts::add(&counts.failed, 1);
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "injected failure",
        );
    }
    threshold += faults.throttle;
    if roll < threshold {
        FaultCounts::add(&counts.throttled, 1);
        return error_response(
            StatusCode::BAD_REQUEST,
            "ProvisionedThroughputExceededException",
            "Rate exceeded for stream (injected)",
        );
    }
    threshold += faults.partial;
    if roll < threshold {
        FaultCounts::add(&counts.partial, 1);
        return partial(state, parts, body).await;
    }
    threshold += faults.drop_response;
    if roll < threshold {
        let request = parse(&body);
        let response = forward(state, parts, body).await;
        if response.status() == StatusCode::OK {
            FaultCounts::add(&counts.dropped_responses, 1);
            if let (Some(request), Some(answer)) = (request, parse(response.body())) {
                let (records, user_records) = stored_records(&request, &answer);
                FaultCounts::add(&counts.dropped_records, records);
                FaultCounts::add(&counts.dropped_user_records, user_records);
            }
        }
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "answer lost (injected)",
        );
    }
    forward(state, parts, body).await
}

/// The service a request is for, by its headers: the JSON protocols name
/// their target (`Kinesis_20131202.*`, `DynamoDB_20120810.*`); S3 does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Kinesis,
    DynamoDb,
    S3,
}

fn service_of(parts: &hyper::http::request::Parts) -> Service {
    match parts.headers.get("x-amz-target").map(|t| t.as_bytes()) {
        Some(target) if target.starts_with(b"DynamoDB") => Service::DynamoDb,
        Some(_) => Service::Kinesis,
        None => Service::S3,
    }
}

/// An error answer in the service's own format.
fn service_error(
    service: Service,
    status: StatusCode,
    code: &str,
    message: &str,
) -> Response<Bytes> {
    match service {
        Service::Kinesis => error_response(status, code, message),
        Service::DynamoDb => {
            let body = json!({
                "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"),
                "message": message,
            })
            .to_string();
            let mut response = Response::new(Bytes::from(body));
            *response.status_mut() = status;
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/x-amz-json-1.0"),
            );
            response
        }
        Service::S3 => {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
            );
            let mut response = Response::new(Bytes::from(body));
            *response.status_mut() = status;
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/xml"),
            );
            response
        }
    }
}

/// A fault for a call other than PutRecords (`every_call`), or the call
/// forwarded.
async fn any_call(
    state: &State,
    parts: hyper::http::request::Parts,
    body: Bytes,
    faults: Faults,
) -> Response<Bytes> {
    let service = service_of(&parts);
    let counts = &state.counts;
    let roll: f64 = rand::random();
    let mut threshold = faults.fail;
    if roll < threshold {
        FaultCounts::add(&counts.calls_faulted, 1);
        FaultCounts::add(&counts.failed, 1);
        let code = match service {
            Service::Kinesis => "InternalFailure",
            Service::DynamoDb => "InternalServerError",
            Service::S3 => "InternalError",
        };
        return service_error(
            service,
            StatusCode::INTERNAL_SERVER_ERROR,
            code,
            "injected failure",
        );
    }
    threshold += faults.throttle;
    if roll < threshold {
        FaultCounts::add(&counts.calls_faulted, 1);
        FaultCounts::add(&counts.throttled, 1);
        return match service {
            Service::S3 => service_error(
                service,
                StatusCode::SERVICE_UNAVAILABLE,
                "SlowDown",
                "injected",
            ),
            _ => service_error(
                service,
                StatusCode::BAD_REQUEST,
                "ProvisionedThroughputExceededException",
                "injected",
            ),
        };
    }
    threshold += faults.deny;
    if roll < threshold {
        FaultCounts::add(&counts.calls_faulted, 1);
        return match service {
            Service::S3 => service_error(
                service,
                StatusCode::FORBIDDEN,
                "AccessDenied",
                "Access Denied (injected)",
            ),
            _ => service_error(
                service,
                StatusCode::BAD_REQUEST,
                "AccessDeniedException",
                "User is not authorized to perform this action (injected)",
            ),
        };
    }
    threshold += faults.drop_response;
    if roll < threshold {
        FaultCounts::add(&counts.calls_faulted, 1);
        FaultCounts::add(&counts.dropped_responses, 1);
        let _ = forward(state, parts, body).await;
        return service_error(
            service,
            StatusCode::INTERNAL_SERVER_ERROR,
            match service {
                Service::Kinesis => "InternalFailure",
                Service::DynamoDb => "InternalServerError",
                Service::S3 => "InternalError",
            },
            "answer lost (injected)",
        );
    }
    threshold += faults.slow;
    if roll < threshold {
        FaultCounts::add(&counts.calls_faulted, 1);
        FaultCounts::add(&counts.slowed, 1);
        let delay = state
            .slow_delay
            .lock()
            .map(|d| *d)
            .unwrap_or(std::time::Duration::from_secs(2));
        tokio::time::sleep(delay).await;
    }
    forward(state, parts, body).await
}

/// Forwards a GetRecords call and, when its answer ends the shard without
/// naming the children, adds them (see [`FaultProxy::fill_child_shards`]).
async fn get_records_with_children(
    state: &Arc<State>,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Response<Bytes> {
    let shard = parse(&body)
        .and_then(|request| request["ShardIterator"].as_str().map(str::to_owned))
        .and_then(|iterator| ferrokinesis::shard_iterator::decode_shard_iterator(&iterator).ok())
        .map(|(_, stream, shard, _)| (stream, shard));
    let headers = parts.headers.clone();
    let uri = parts.uri.clone();
    let response = forward(state, parts, body).await;
    let Some((stream, shard)) = shard else {
        return response;
    };
    if response.status() != StatusCode::OK {
        return response;
    }
    let Some(mut answer) = parse(response.body()) else {
        return response;
    };
    let ended = answer.get("NextShardIterator").is_none_or(Value::is_null);
    let named = answer["ChildShards"]
        .as_array()
        .is_some_and(|children| !children.is_empty());
    if !ended || named {
        return response;
    }
    // The stream's shards, asked with the caller's own headers.
    let mut list = hyper::http::request::Builder::new()
        .method(hyper::Method::POST)
        .uri(uri);
    for (name, value) in &headers {
        if name != hyper::header::CONTENT_LENGTH && name != "x-amz-target" {
            list = list.header(name, value);
        }
    }
    let list_body = Bytes::from(json!({ "StreamName": stream }).to_string());
    let Ok(list) = list
        .header("x-amz-target", "Kinesis_20131202.ListShards")
        .body(())
    else {
        return response;
    };
    let (list_parts, ()) = list.into_parts();
    let listed = forward(state, list_parts, list_body).await;
    let Some(shards) = parse(listed.body()).and_then(|l| l["Shards"].as_array().cloned()) else {
        return response;
    };
    let children: Vec<Value> = shards
        .iter()
        .filter(|s| {
            s["ParentShardId"].as_str() == Some(shard.as_str())
                || s["AdjacentParentShardId"].as_str() == Some(shard.as_str())
        })
        .map(|s| {
            let parents: Vec<&Value> = [&s["ParentShardId"], &s["AdjacentParentShardId"]]
                .into_iter()
                .filter(|p| p.is_string())
                .collect();
            json!({
                "ShardId": s["ShardId"],
                "ParentShards": parents,
                "HashKeyRange": s["HashKeyRange"],
            })
        })
        .collect();
    if children.is_empty() {
        return response;
    }
    answer["ChildShards"] = Value::Array(children);
    let (mut parts, _) = response.into_parts();
    let body = Bytes::from(answer.to_string());
    parts.headers.insert(
        hyper::header::CONTENT_LENGTH,
        hyper::header::HeaderValue::from(body.len()),
    );
    Response::from_parts(parts, body)
}

fn parse(body: &Bytes) -> Option<Value> {
    serde_json::from_slice(body).ok()
}

/// `(Kinesis records, user records)` a PutRecords call stored, from its
/// request and its answer.
fn stored_records(request: &Value, answer: &Value) -> (u64, u64) {
    use base64::Engine;
    let (Some(sent), Some(results)) = (request["Records"].as_array(), answer["Records"].as_array())
    else {
        return (0, 0);
    };
    let mut records = 0;
    let mut user_records = 0;
    for (entry, result) in sent.iter().zip(results) {
        if result.get("SequenceNumber").is_none() {
            continue;
        }
        records += 1;
        let data = entry["Data"]
            .as_str()
            .and_then(|data| base64::engine::general_purpose::STANDARD.decode(data).ok())
            .unwrap_or_default();
        user_records += kpl::aggregation::deaggregate("", None, Bytes::from(data)).len() as u64;
    }
    (records, user_records)
}

/// Forwards half of the records, refuses the others as throttled, and merges
/// the answers in the original order.
async fn partial(
    state: &State,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Response<Bytes> {
    let Ok(mut request) = serde_json::from_slice::<Value>(&body) else {
        return forward(state, parts, body).await;
    };
    let Some(records) = request["Records"].as_array().cloned() else {
        return forward(state, parts, body).await;
    };
    let keep: Vec<bool> = records.iter().map(|_| rand::random::<bool>()).collect();
    let refused = keep.iter().filter(|k| !**k).count();
    FaultCounts::add(&state.counts.partial_records_refused, refused as u64);
    let kept: Vec<Value> = records
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(r, _)| r.clone())
        .collect();
    let mut upstream_results = Vec::new().into_iter();
    let mut upstream_failed = 0;
    if !kept.is_empty() {
        request["Records"] = Value::Array(kept);
        let forwarded = forward(state, parts, Bytes::from(request.to_string())).await;
        if forwarded.status() != StatusCode::OK {
            return forwarded;
        }
        let Some(answer) = parse(forwarded.body()) else {
            return forwarded;
        };
        upstream_failed = answer["FailedRecordCount"].as_u64().unwrap_or(0);
        upstream_results = answer["Records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter();
    }
    let merged: Vec<Value> = keep
        .iter()
        .map(|kept| {
            if *kept {
                upstream_results.next().unwrap_or_else(|| json!({"ErrorCode": "InternalFailure", "ErrorMessage": "missing"}))
            } else {
                json!({"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded (injected)"})
            }
        })
        .collect();
    let answer =
        json!({ "FailedRecordCount": upstream_failed + refused as u64, "Records": merged });
    let mut response = Response::new(Bytes::from(answer.to_string()));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    response
}

/// The request to send upstream.
fn upstream_request(
    state: &State,
    mut parts: hyper::http::request::Parts,
    body: Bytes,
) -> Option<Request<Full<Bytes>>> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("{}{}", state.upstream, path).parse().ok()?;
    // The Host header is kept as the client signed it (SigV4 covers it; the
    // embedded S3 checks the signature).
    parts.headers.insert(
        hyper::header::CONTENT_LENGTH,
        hyper::header::HeaderValue::from(body.len()),
    );
    Some(Request::from_parts(parts, Full::new(body)))
}

async fn forward(
    state: &State,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Response<Bytes> {
    let Some(request) = upstream_request(state, parts, body) else {
        return error_response(StatusCode::BAD_GATEWAY, "ProxyError", "bad upstream URI");
    };
    match state.client.request(request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            parts.headers.remove(hyper::header::TRANSFER_ENCODING);
            parts.headers.insert(
                hyper::header::CONTENT_LENGTH,
                hyper::header::HeaderValue::from(body.len()),
            );
            Response::from_parts(parts, body)
        }
        Err(error) => error_response(StatusCode::BAD_GATEWAY, "ProxyError", &error.to_string()),
    }
}
