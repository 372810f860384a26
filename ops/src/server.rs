//! The HTTP listener: `/metrics` (Prometheus text format), `/health/live`
//! and `/health/ready` (200 or 503, with a short JSON reason).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::health::{Health, Status};

/// How often the exporter's upkeep runs (it drains histogram samples).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Served {
    prometheus: Option<PrometheusHandle>,
    health: Health,
}

/// Serves `/metrics` (when `prometheus` is given; 404 otherwise),
/// `/health/live` and `/health/ready` on `listener` until `shutdown`
/// completes, then finishes the requests under way and returns. Also runs
/// the exporter's periodic upkeep. Spawn it and keep the handle: it is the
/// listener's owner.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use std::time::Duration;
/// let health = kinesis_ops::health::Health::new(Duration::from_secs(30));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9102").await?;
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let task = tokio::spawn(kinesis_ops::server::serve(listener, None, health, async {
///     let _ = stopped.await;
/// }));
/// let _ = stop.send(());
/// task.await??;
/// # Ok(()) }
/// ```
pub async fn serve(
    listener: TcpListener,
    prometheus: Option<PrometheusHandle>,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let upkeep = prometheus.clone().map(|handle| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        })
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(Served { prometheus, health });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    if let Some(upkeep) = upkeep {
        upkeep.abort();
    }
    served
}

async fn metrics(State(served): State<Served>) -> Response {
    match served.prometheus {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics exporter installed\n").into_response(),
    }
}

fn answer(status: Status) -> Response {
    let code = if status.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        status.to_json(),
    )
        .into_response()
}

async fn live(State(served): State<Served>) -> Response {
    answer(served.health.live())
}

async fn ready(State(served): State<Served>) -> Response {
    answer(served.health.ready())
}
