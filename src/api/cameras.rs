//! `/api/cameras` and `/api/reload`: the cameras' state, and changing them while running.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::control::Refused;
use super::{ApiError, ApiState};
use crate::events::snapshot::encode_preview;

impl From<Refused> for ApiError {
    fn from(e: Refused) -> Self {
        Self(super::status_of(e.kind), crate::redact::redact(&e.reason))
    }
}

/// Every camera's state.
pub async fn list(State(state): State<Arc<ApiState>>) -> Response {
    axum::Json(state.cameras.reports()).into_response()
}

/// One camera's state and where its settings come from (`file` or `api`).
pub async fn one(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(axum::Json(describe(&state, &id).await?).into_response())
}

/// Width of the page's camera previews: a tile, not evidence (snapshots are full size).
const PREVIEW_WIDTH: u32 = 640;
/// How long a first request waits for the camera's next frame once it has asked for one.
const PREVIEW_WAIT: Duration = Duration::from_millis(1500);

/// `GET /api/cameras/{id}/frame`: the camera's latest analysed frame as a small JPEG, with the
/// time it left the decoder in `Last-Modified`. Asking keeps previews coming for a few seconds; the
/// first request waits for the next frame, and a camera with none (not streaming, or run by
/// another process) is a 404.
pub async fn frame(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let status =
        state.cameras.get(&id).ok_or_else(|| ApiError::not_found(format!("camera `{id}` does not run here")))?;
    let deadline = tokio::time::Instant::now() + PREVIEW_WAIT;
    let frame = loop {
        if let Some(latest) = status.preview.latest() {
            break latest;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::not_found(format!("no frame from camera `{id}` yet")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let when = frame.wall;
    let failed = |e: &dyn std::fmt::Display| ApiError::unavailable(format!("encoding the preview failed: {e}"));
    let jpeg = tokio::task::spawn_blocking(move || encode_preview(&frame, PREVIEW_WIDTH, 75))
        .await
        .map_err(|e| failed(&e))?
        .map_err(|e| failed(&e))?;
    let headers = [
        (header::CONTENT_TYPE, "image/jpeg".to_string()),
        (header::CACHE_CONTROL, "no-store".to_string()),
        (header::LAST_MODIFIED, when.format("%a, %d %b %Y %H:%M:%S GMT").to_string()),
    ];
    Ok((headers, jpeg).into_response())
}

/// `POST /api/cameras`: add and start a camera; 201 with its state URL.
pub async fn add(State(state): State<Arc<ApiState>>, body: Bytes) -> Result<Response, ApiError> {
    let (fleet, body) = (state.fleet.clone(), json_body(&body)?);
    let id = to_completion(async move { fleet.add(body).await }).await?;
    let location = format!("/api/cameras/{id}");
    let mut camera = describe(&state, &id).await?;
    camera["url"] = location.clone().into();
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(camera)).into_response())
}

/// `PUT /api/cameras/{id}`: replace an API camera's settings and restart it.
pub async fn replace(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (fleet, body, which) = (state.fleet.clone(), json_body(&body)?, id.clone());
    to_completion(async move { fleet.replace(&which, body).await }).await?;
    Ok(axum::Json(describe(&state, &id).await?).into_response())
}

/// `DELETE /api/cameras/{id}`: stop an API camera, ending its tracks, and forget it.
pub async fn remove(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let fleet = state.fleet.clone();
    to_completion(async move { fleet.remove(&id).await }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/reload`: re-read the config file and apply the difference.
pub async fn reload(State(state): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let fleet = state.fleet.clone();
    Ok(axum::Json(to_completion(async move { fleet.reload().await }).await?).into_response())
}

/// Run a change to the fleet in its own task, so that it completes, and leaves the cameras and
/// the database agreeing, even if the client hangs up or the request times out meanwhile.
async fn to_completion<T: Send + 'static>(
    change: impl Future<Output = Result<T, Refused>> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::spawn(change).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(ApiError::unavailable(format!("the change did not complete: {e}"))),
    }
}

fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))
}

/// The camera's state here, or `elsewhere` when another process of a cluster runs it (or will,
/// once it takes the lease).
async fn describe(state: &ApiState, id: &str) -> Result<Value, ApiError> {
    let Some((origin, here)) = state.fleet.origin(id) else {
        return Err(ApiError::not_found(format!("no camera `{id}`")));
    };
    let mut camera = match state.cameras.report(id).filter(|_| here) {
        Some(report) => json!(report),
        None => json!({ "id": id, "state": "elsewhere" }),
    };
    camera["source"] = json!(origin);
    Ok(camera)
}
