//! A TLS-terminating front for a plain-HTTP Kinesis endpoint, for clients
//! that speak only TLS: the AWS KPL's native client.
//!
//! The front serves HTTPS on an ephemeral loopback port with a self-signed
//! certificate made at start (the KPL then runs with `VerifyCertificate =
//! false`) and forwards every request to the upstream endpoint over plain
//! HTTP. Point the KPL's `StsEndpoint`/`StsPort` and
//! `CloudwatchEndpoint`/`CloudwatchPort` at the front too, so that nothing
//! leaves the loopback.
//!
//! For the AWS KPL 0.15, the front also answers STS `GetCallerIdentity`
//! itself: that KPL asked STS for the account to build the stream's ARN
//! before it sent anything to Kinesis, and failed without an answer. The
//! account is the embedded Kinesis' (`000000000000`), so the ARNs it built
//! named its streams. It then sent both `StreamName` and `StreamARN` in each
//! call, which AWS accepts when they name the same stream and the embedded
//! Kinesis refuses ("cannot be provided together"): the front drops
//! `StreamARN` from a JSON request that also has `StreamName`. The KPL 1.0
//! the tests run does neither (its native binary has no STS call:
//! [`TlsFront::sts_calls`] and [`TlsFront::stream_arns_dropped`] stay 0).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::Error;

/// The account the front's STS answers name (the embedded Kinesis' default).
pub const ACCOUNT_ID: &str = "000000000000";

struct State {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    forwarded: AtomicU64,
    sts_calls: AtomicU64,
    stream_arns_dropped: AtomicU64,
}

/// A running TLS front (see the module documentation).
pub struct TlsFront {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for TlsFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFront")
            .field("addr", &self.addr)
            .field("upstream", &self.state.upstream)
            .finish_non_exhaustive()
    }
}

impl TlsFront {
    /// Starts a front on an ephemeral loopback port before `upstream` (an
    /// `http://host:port` URL), with a new self-signed certificate for
    /// `localhost` and `127.0.0.1`.
    pub async fn start(upstream: &str) -> Result<Self, Error> {
        let acceptor = acceptor()?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| Error::Io {
                what: "binding the TLS front",
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            what: "binding the TLS front",
            source,
        })?;
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            forwarded: AtomicU64::new(0),
            sts_calls: AtomicU64::new(0),
            stream_arns_dropped: AtomicU64::new(0),
        });
        let served = state.clone();
        let task = tokio::spawn(async move {
            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = served.clone();
                let http = http.clone();
                tokio::spawn(async move {
                    let tls = match acceptor.accept(socket).await {
                        Ok(tls) => tls,
                        Err(error) => {
                            tracing::debug!(%error, "TLS front: handshake failed");
                            return;
                        }
                    };
                    let service =
                        hyper::service::service_fn(move |request| handle(request, state.clone()));
                    let _ = http.serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    /// The host to connect to: `127.0.0.1`.
    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// The port the front listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests forwarded to the upstream so far.
    pub fn forwarded(&self) -> u64 {
        self.state.forwarded.load(Ordering::Relaxed)
    }

    /// STS calls answered so far.
    pub fn sts_calls(&self) -> u64 {
        self.state.sts_calls.load(Ordering::Relaxed)
    }

    /// Requests forwarded without the `StreamARN` they had next to
    /// `StreamName` (see the module documentation).
    pub fn stream_arns_dropped(&self) -> u64 {
        self.state.stream_arns_dropped.load(Ordering::Relaxed)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS acceptor with a fresh self-signed certificate.
fn acceptor() -> Result<TlsAcceptor, Error> {
    let start_error = |message: String| Error::Start {
        service: "TLS front",
        message,
    };
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(|e| start_error(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| start_error(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .map_err(|e| start_error(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    // STS is the query protocol: a form body naming the action.
    if body.starts_with(b"Action=GetCallerIdentity") {
        state.sts_calls.fetch_add(1, Ordering::Relaxed);
        return Ok(sts_caller_identity());
    }
    state.forwarded.fetch_add(1, Ordering::Relaxed);
    let body = match without_stream_arn(&body) {
        Some(stripped) => {
            state.stream_arns_dropped.fetch_add(1, Ordering::Relaxed);
            stripped
        }
        None => body,
    };
    Ok(forward(&state, parts, body).await)
}

/// The request without `StreamARN` when it also names the stream by
/// `StreamName` (see the module documentation); `None` when there is nothing
/// to drop.
fn without_stream_arn(body: &[u8]) -> Option<Bytes> {
    let Ok(serde_json::Value::Object(mut request)) = serde_json::from_slice(body) else {
        return None;
    };
    if !request.contains_key("StreamName") || request.remove("StreamARN").is_none() {
        return None;
    }
    Some(Bytes::from(serde_json::Value::Object(request).to_string()))
}

fn sts_caller_identity() -> Response<Full<Bytes>> {
    let body = format!(
        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
         <GetCallerIdentityResult><Arn>arn:aws:iam::{ACCOUNT_ID}:user/test</Arn>\
         <UserId>AIDATESTTESTTESTTEST</UserId><Account>{ACCOUNT_ID}</Account>\
         </GetCallerIdentityResult><ResponseMetadata>\
         <RequestId>00000000-0000-0000-0000-000000000000</RequestId>\
         </ResponseMetadata></GetCallerIdentityResponse>"
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/xml"),
    );
    response
}

fn error_response(message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "__type": "ProxyError", "message": message }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

async fn forward(
    state: &State,
    mut parts: hyper::http::request::Parts,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{}{}", state.upstream, path).parse() else {
        return error_response("bad upstream URI");
    };
    parts.uri = uri;
    parts.version = hyper::Version::HTTP_11;
    parts.headers.remove(hyper::header::HOST);
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    parts.headers.insert(
        hyper::header::CONTENT_LENGTH,
        hyper::header::HeaderValue::from(body.len()),
    );
    let request = Request::from_parts(parts, Full::new(body));
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
            Response::from_parts(parts, Full::new(body))
        }
        Err(error) => error_response(&error.to_string()),
    }
}
