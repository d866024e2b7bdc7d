//! `/api/cameras` and `/api/reload`: the cameras' state, and changing them while running.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::control::Refused;
use super::{ApiError, ApiState};

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
