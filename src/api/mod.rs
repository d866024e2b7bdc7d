//! The HTTP API on `[server] listen`: events (list, one, snapshot, live SSE), cameras (state,
//! add, replace, remove, reload), Prometheus metrics, health, and the web page at `/`.
//!
//! Every `/api/*` route needs the bearer token when `[server] token` is set. It can also come
//! as `?access_token=` because browsers' EventSource and `<img>` cannot send headers. Errors are
//! JSON `{"error": "…"}` with a 4xx status; nothing a client sends can cause a 5xx except a
//! database that is down.

mod cameras;
mod events;
mod page;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::events::{Event, Store};
use crate::metrics::Metrics;
use crate::status::Registry;
use crate::supervisor::fleet::Fleet;

/// What the handlers share.
pub struct ApiState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub cameras: Arc<Registry>,
    /// Changes the running cameras.
    pub fleet: Arc<Fleet>,
    /// Every event as it is saved.
    pub live: broadcast::Sender<Event>,
    /// Whether the last Redis publish succeeded.
    pub redis_up: Arc<AtomicBool>,
    pub snapshots_dir: PathBuf,
    pub token: Option<String>,
    /// Ends live streams at shutdown, so the server can stop.
    pub shutdown: CancellationToken,
}

/// An error answer: a status and a message, sent as JSON.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad_request(msg: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, msg.into())
    }

    fn not_found(msg: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, msg.into())
    }
}

impl From<crate::events::StoreError> for ApiError {
    fn from(e: crate::events::StoreError) -> Self {
        tracing::warn!("api: {e}");
        Self(StatusCode::SERVICE_UNAVAILABLE, "database unavailable".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

/// All routes.
pub fn router(state: Arc<ApiState>) -> Router {
    let api = Router::new()
        .route("/api/events", get(events::list))
        .route("/api/events/stream", get(events::stream))
        .route("/api/events/{id}", get(events::one))
        .route("/api/events/{id}/snapshot", get(events::snapshot))
        .route("/api/cameras", get(cameras::list).post(cameras::add))
        .route("/api/cameras/{id}", get(cameras::one).put(cameras::replace).delete(cameras::remove))
        .route("/api/reload", post(cameras::reload))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .merge(api)
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
}

/// Serve until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn auth(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else { return next.run(req).await };
    let bearer =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let query = req.uri().query().unwrap_or("");
    let in_query =
        url::form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "access_token" && v == token.as_str());
    if bearer == Some(token.as_str()) || in_query {
        next.run(req).await
    } else {
        ApiError(StatusCode::UNAUTHORIZED, "missing or wrong bearer token".into()).into_response()
    }
}

async fn ready(State(state): State<Arc<ApiState>>) -> Response {
    let db = state.store.ping().await;
    let redis = if state.redis_up.load(Ordering::Relaxed) { "up" } else { "down" };
    let status = if db { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(json!({ "database": if db { "up" } else { "down" }, "redis": redis }))).into_response()
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let families = state.metrics.registry.gather();
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
