//! The HTTP API on `[server] listen`: events (list, one, snapshot, crop, live SSE), cameras (state,
//! latest frame, add, replace, remove, reload), Prometheus metrics, health, and the web page at `/`.
//!
//! Who may do what is decided in one place, [`guard`]:
//! - with a token, every `/api/*` route needs `Authorization: Bearer …`, and so does `/metrics`
//!   unless `public_metrics`. Only the GET routes a browser cannot send headers to (the SSE
//!   stream, and the snapshot, crop and camera frame images) also take `?access_token=`;
//! - write routes take only `application/json` bodies, so a web page's plain form or
//!   `text/plain` fetch (no CORS preflight) cannot reach them;
//! - without a token (loopback only), requests must name a loopback host, so a page on another
//!   site that rebinds its DNS name to 127.0.0.1 cannot use the API either.
//!
//! Errors are JSON `{"error": "…"}` with a 4xx status; nothing a client sends can cause a 5xx
//! except a database that is down or a request that runs out of time.

mod cameras;
pub mod control;
mod events;
mod page;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use crate::config::{ApiToken, ServerConfig};
use crate::error::{ErrorKind, Kinded, Refusal};
use crate::events::{Event, Store};
use crate::metrics::Metrics;
use crate::status::Registry;
use control::CameraControl;

/// What the handlers share.
pub struct ApiState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub cameras: Arc<Registry>,
    /// Changes the running cameras.
    pub fleet: Arc<dyn CameraControl>,
    /// Every event as it is saved.
    pub live: broadcast::Sender<Event>,
    /// Whether the last Redis publish succeeded.
    pub redis_up: Arc<AtomicBool>,
    pub snapshots_dir: PathBuf,
    pub access: Access,
    /// One permit per live event stream that may be open.
    pub sse_slots: Arc<Semaphore>,
    /// Ends live streams at shutdown, so the server can stop.
    pub shutdown: CancellationToken,
}

/// Who may use the API, and how long a request may take.
#[derive(Debug, Clone)]
pub struct Access {
    /// The bearer token; `None` serves the API to anyone who can reach it.
    pub token: Option<ApiToken>,
    /// `/metrics` without the token.
    pub public_metrics: bool,
    /// Answer only requests whose `Host` is a loopback name (no token, loopback listener).
    pub loopback_hosts_only: bool,
    pub request_timeout: Duration,
}

impl Access {
    /// The rules `[server]` sets; fails only where [`ServerConfig::validate`] would.
    pub fn from_config(server: &ServerConfig) -> Result<Self, String> {
        let token = server.token().map_err(|(field, reason)| format!("[server] {field}: {reason}"))?;
        let loopback = server.addr()?.ip().is_loopback();
        Ok(Self {
            loopback_hosts_only: token.is_none() && loopback,
            token,
            public_metrics: server.public_metrics,
            request_timeout: server.request_timeout(),
        })
    }
}

impl Default for Access {
    /// A loopback API without a token.
    fn default() -> Self {
        Self { token: None, public_metrics: false, loopback_hosts_only: true, request_timeout: Duration::from_secs(30) }
    }
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

    fn unavailable(msg: impl Into<String>) -> Self {
        Self(StatusCode::SERVICE_UNAVAILABLE, msg.into())
    }
}

/// The HTTP status for each kind of error: the one place the API decides it.
fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Refuse(Refusal::Invalid) => StatusCode::BAD_REQUEST,
        ErrorKind::Refuse(Refusal::Missing) => StatusCode::NOT_FOUND,
        ErrorKind::Refuse(Refusal::Conflict) => StatusCode::CONFLICT,
        // Nothing the client sent is wrong: an outage, shutting down, or a broken model or
        // schema that an operator must fix. All of them may answer differently later.
        ErrorKind::Retry | ErrorKind::Fatal => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl From<crate::events::StoreError> for ApiError {
    fn from(e: crate::events::StoreError) -> Self {
        tracing::warn!("api: {e}");
        let kind = e.kind();
        Self(status_of(kind), if kind == ErrorKind::Retry { "database unavailable" } else { "database error" }.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

/// All routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/events", get(events::list))
        .route("/api/events/stream", get(events::stream))
        .route("/api/events/{id}", get(events::one))
        .route("/api/events/{id}/snapshot", get(events::snapshot))
        .route("/api/events/{id}/crop", get(events::crop))
        .route("/api/cameras", get(cameras::list).post(cameras::add))
        .route("/api/cameras/{id}", get(cameras::one).put(cameras::replace).delete(cameras::remove))
        .route("/api/cameras/{id}/frame", get(cameras::frame))
        .route("/api/reload", post(cameras::reload))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
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

/// The routes a browser reaches without headers (EventSource, `<img>`): the only ones that take
/// `?access_token=`, and only for GET.
const QUERY_TOKEN_ROUTES: &[&str] =
    &["/api/events/stream", "/api/events/{id}/snapshot", "/api/events/{id}/crop", "/api/cameras/{id}/frame"];

/// Every request passes here: host, token, content type, then the time limit.
async fn guard(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let access = &state.access;
    if access.loopback_hosts_only
        && let Some(host) = req.headers().get(header::HOST)
        && !host.to_str().is_ok_and(is_loopback_host)
    {
        let why = "this API serves only loopback host names without a token ([server] token)";
        return ApiError(StatusCode::FORBIDDEN, why.into()).into_response();
    }
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_default();
    let needs_token = route.starts_with("/api/") || (route == "/metrics" && !access.public_metrics);
    if let Some(token) = &access.token
        && needs_token
        && !authorised(token, &req, &route)
    {
        return ApiError(StatusCode::UNAUTHORIZED, "missing or wrong bearer token".into()).into_response();
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) && !json_body(&req) {
        let why = "write requests take only Content-Type: application/json";
        return ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, why.into()).into_response();
    }
    match tokio::time::timeout(access.request_timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::unavailable(format!(
            "the request took longer than {:?} ([server] request_timeout_secs)",
            access.request_timeout
        ))
        .into_response(),
    }
}

fn authorised(token: &ApiToken, req: &Request, route: &str) -> bool {
    let bearer =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|b| token.matches(b)) {
        return true;
    }
    req.method() == Method::GET
        && QUERY_TOKEN_ROUTES.contains(&route)
        && url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .any(|(k, v)| k == "access_token" && token.matches(&v))
}

/// Whether a write request's body is declared JSON. A DELETE without a body may omit the type:
/// browsers cannot send a cross-site DELETE without a preflight, which this API never grants.
fn json_body(req: &Request) -> bool {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else { return req.method() == Method::DELETE };
    let essence = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// `localhost`, `*.localhost` or a loopback address, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => {
            host.rsplit_once(':').map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host })
        }
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
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

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_hosts() {
        for ok in ["127.0.0.1:8080", "localhost", "LOCALHOST:80", "[::1]:8080", "app.localhost", "127.1.2.3"] {
            assert!(super::is_loopback_host(ok), "{ok}");
        }
        for bad in ["evil.example:8080", "10.0.0.5", "localhost.evil.example", "[2001:db8::1]:80", ""] {
            assert!(!super::is_loopback_host(bad), "{bad}");
        }
    }
}
