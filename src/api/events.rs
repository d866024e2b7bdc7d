//! `/api/events`: listing with filters and keyset pages, one event, its snapshot, and the live
//! SSE stream with replay.

use std::convert::Infallible;
use std::path::{Component, Path};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{ApiError, ApiState};
use crate::events::{Event, EventQuery, EventType, PlateMatch, parse_ts};

/// The most rows one page may hold.
const MAX_LIMIT: i64 = 1000;

/// Parse the query string strictly: unknown keys and bad values are a 400 naming them.
fn parse_query(raw: Option<&str>) -> Result<EventQuery, ApiError> {
    let mut q = EventQuery::default();
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let bad = |what: &str| ApiError::bad_request(format!("`{key}`: {what}"));
        let word = |v: &str| {
            !v.is_empty() && v.len() <= 64 && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_ ".contains(c))
        };
        match key.as_ref() {
            "camera" if word(&value) => q.camera = Some(value.into_owned()),
            "type" => {
                q.event_type =
                    Some(EventType::parse(&value).ok_or_else(|| bad("one of motion, tracking, anpr, camera"))?)
            }
            "label" if word(&value) => q.label = Some(value.into_owned()),
            "plate" => {
                let (text, prefix) = match value.strip_suffix('*') {
                    Some(p) => (p.to_ascii_uppercase(), true),
                    None => (value.to_ascii_uppercase(), false),
                };
                if text.is_empty() || text.len() > 16 || !text.chars().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(bad("letters and digits, with a trailing * for a prefix"));
                }
                q.plate = Some(if prefix { PlateMatch::Prefix(text) } else { PlateMatch::Exact(text) });
            }
            "since" => q.since = Some(parse_ts(&value).map_err(|_| bad("an RFC 3339 time"))?),
            "until" => q.until = Some(parse_ts(&value).map_err(|_| bad("an RFC 3339 time"))?),
            "after_id" => {
                q.after_id = Some(value.parse().ok().filter(|v: &i64| *v >= 0).ok_or_else(|| bad("a non-negative id"))?)
            }
            "limit" => {
                q.limit = value.parse().ok().filter(|v| (1..=MAX_LIMIT).contains(v)).ok_or_else(|| bad("1 to 1000"))?;
            }
            "order" => {
                q.newest_first = match value.as_ref() {
                    "newest" => true,
                    "oldest" => false,
                    _ => return Err(bad("newest or oldest")),
                }
            }
            "access_token" => {}
            "camera" | "label" => return Err(bad("letters, digits, -, _ or space")),
            _ => return Err(ApiError::bad_request(format!("unknown parameter `{key}`"))),
        }
    }
    Ok(q)
}

fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .ok()
        .filter(|v: &i64| *v >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("`{raw}` is not an event id")))
}

/// `GET /api/events`: one page; `next_after_id` continues it.
pub async fn list(State(state): State<Arc<ApiState>>, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let q = parse_query(raw.as_deref())?;
    let events = state.store.list(&q).await?;
    let next = (events.len() as i64 == q.limit).then(|| events.last().map(|e| e.id)).flatten();
    Ok(axum::Json(json!({ "events": events, "next_after_id": next })).into_response())
}

/// `GET /api/events/{id}`.
pub async fn one(State(state): State<Arc<ApiState>>, UrlPath(id): UrlPath<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    match state.store.get(id).await? {
        Some(ev) => Ok(axum::Json(ev).into_response()),
        None => Err(ApiError::not_found(format!("no event {id}"))),
    }
}

/// `GET /api/events/{id}/snapshot`: the JPEG, never a file outside `snapshots_dir`.
pub async fn snapshot(State(state): State<Arc<ApiState>>, UrlPath(id): UrlPath<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let ev = state.store.get(id).await?;
    image(&state, ev.and_then(|ev| ev.snapshot_path), || format!("no snapshot for event {id}")).await
}

/// `GET /api/events/{id}/crop`: the JPEG of the event's object or plate alone (`crop_path`).
pub async fn crop(State(state): State<Arc<ApiState>>, UrlPath(id): UrlPath<String>) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let ev = state.store.get(id).await?;
    let rel = ev.and_then(|ev| ev.event_data["crop_path"].as_str().map(str::to_string));
    image(&state, rel, || format!("no crop for event {id}")).await
}

/// The JPEG at `rel` under the snapshots directory. A path that is missing, climbs out of the
/// directory or leads out through a link is the same 404 as no image at all.
async fn image(state: &ApiState, rel: Option<String>, missing: impl Fn() -> String) -> Result<Response, ApiError> {
    let missing = || ApiError::not_found(missing());
    let rel = rel.ok_or_else(missing)?;
    let rel = Path::new(&rel);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(missing());
    }
    let root = tokio::fs::canonicalize(&state.snapshots_dir).await.map_err(|_| missing())?;
    let file = tokio::fs::canonicalize(root.join(rel)).await.map_err(|_| missing())?;
    if !file.starts_with(&root) {
        return Err(missing());
    }
    let bytes = tokio::fs::read(&file).await.map_err(|_| missing())?;
    Ok(([(header::CONTENT_TYPE, "image/jpeg")], bytes).into_response())
}

/// `GET /api/events/stream`: Server-Sent Events. With `Last-Event-ID` or `after_id`, first
/// replays what was saved after that id from the database, then goes live; filters apply to both.
pub async fn stream(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let mut q = parse_query(raw.as_deref())?;
    let Ok(slot) = state.sse_slots.clone().try_acquire_owned() else {
        return Err(ApiError::unavailable("too many live event streams are open ([server] max_sse_clients)"));
    };
    // The SSE `id:` is the change sequence, so a client resuming with Last-Event-ID also gets
    // the revisions saved while it was away; `after_id` starts after an event id.
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(parse_id).transpose()?;
    let start = match (resume, q.after_id.take()) {
        (Some(seq), _) => Some(Cursor::Seq(seq)),
        (None, Some(id)) => Some(Cursor::Id(id)),
        (None, None) => None,
    };
    q.newest_first = false;
    q.limit = 500;
    // Subscribe before replaying, so nothing saved in between is missed.
    let live = state.live.subscribe();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        relay(state, q, start, live, tx).await;
        drop(slot);
    });
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}

/// Where an SSE stream starts.
#[derive(Clone, Copy)]
enum Cursor {
    /// After this event id.
    Id(i64),
    /// After this change (`Event::seq`).
    Seq(i64),
}

async fn relay(
    state: Arc<ApiState>,
    mut q: EventQuery,
    start: Option<Cursor>,
    mut live: broadcast::Receiver<Event>,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    let send = |ev: &Event| {
        let data = serde_json::to_string(ev).expect("events serialise");
        Ok(SseEvent::default().id(ev.seq.to_string()).data(data))
    };
    // The newest change sent: live events at or below it were in the replay.
    let mut last_seq = match start {
        Some(Cursor::Seq(seq)) => seq,
        _ => 0,
    };
    let mut replay = start;
    loop {
        if let Some(cursor) = replay.take() {
            // Replay from the database (also how a lagging subscriber catches up).
            let mut last_id = match cursor {
                Cursor::Id(id) => Some(id),
                Cursor::Seq(_) => None,
            };
            loop {
                (q.after_id, q.after_seq) = match last_id {
                    Some(id) => (Some(id), None),
                    None => (None, Some(last_seq)),
                };
                let Ok(page) = state.store.list(&q).await else { return };
                for ev in &page {
                    if tx.send(send(ev)).await.is_err() {
                        return;
                    }
                    last_seq = last_seq.max(ev.seq);
                    last_id = last_id.map(|_| ev.id);
                }
                if page.len() < q.limit as usize {
                    break;
                }
            }
        }
        let next = tokio::select! {
            next = live.recv() => next,
            // The client went away: give its slot back now, not at the next event.
            _ = tx.closed() => return,
            _ = state.shutdown.cancelled() => return,
        };
        match next {
            Ok(ev) if ev.seq > last_seq && q.matches(&ev) => {
                if tx.send(send(&ev)).await.is_err() {
                    return;
                }
                last_seq = ev.seq;
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => replay = Some(Cursor::Seq(last_seq)),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
