//! The event table: SQLite (default, one file) or PostgreSQL, chosen by URL, through sqlx's `Any`
//! driver so one set of portable queries serves both. Migrations run at connect.
//!
//! Queries use `$N` placeholders, each once and in order, which both backends accept.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use super::{Event, EventType, NewEvent, format_ts, parse_ts, snapshot};
use crate::redact::Redacted;

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("database migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
    #[error("bad event row {id}: {reason}")]
    Row { id: i64, reason: String },
}

/// `SELECT` of every contract column, as a literal so queries stay `&'static str`.
macro_rules! select_events {
    ($rest:literal) => {
        concat!("SELECT id, event_type, camera_id, timestamp, frame_number, snapshot_path, event_data, created_at FROM events ", $rest)
    };
}

/// A connection pool to the event database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    /// Open (creating a SQLite file if needed) and migrate.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let full = if sqlite && !url.contains('?') && !url.contains(":memory:") {
            format!("{url}?mode=rwc")
        } else {
            url.to_string()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(5))
            .connect(&full)
            .await
            .map_err(|source| StoreError::Connect { url: Redacted(url).to_string(), source })?;
        if sqlite {
            // WAL lets the API read while the recorder writes; the setting persists in the file.
            sqlx::query("PRAGMA journal_mode=WAL").execute(&pool).await?;
        }
        // Another process may be migrating the same database right now (sqlx locks PostgreSQL
        // migrations but not SQLite ones); once it has committed, a retry finds nothing to do.
        let migrator = if sqlite { sqlx::migrate!("migrations/sqlite") } else { sqlx::migrate!("migrations/postgres") };
        let mut attempt = 0;
        while let Err(e) = migrator.run(&pool).await {
            attempt += 1;
            if attempt == 3 {
                return Err(e.into());
            }
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
        }
        Ok(Self { pool })
    }

    /// Save an event and, inside the same transaction, its snapshot file, so no reader ever sees
    /// the row without the path it will have. A snapshot that cannot be written leaves the path
    /// null; the event is saved regardless.
    pub async fn save(
        &self,
        ev: &NewEvent,
        jpeg: Option<&[u8]>,
        snapshots_dir: &Path,
    ) -> Result<(Event, Option<std::io::Error>), StoreError> {
        let created_at = Utc::now();
        let data = ev.data.to_string();
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (event_type, camera_id, timestamp, frame_number, event_data, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(ev.event_type.as_str())
        .bind(&ev.camera_id)
        .bind(format_ts(&ev.timestamp))
        .bind(ev.frame_number)
        .bind(&data)
        .bind(format_ts(&created_at))
        .fetch_one(&mut *tx)
        .await?;
        let mut snapshot_path = None;
        let mut snapshot_error = None;
        if let Some(bytes) = jpeg {
            let rel = snapshot::relative_path(&ev.camera_id, &ev.timestamp, id);
            match snapshot::write(snapshots_dir, &rel, bytes).await {
                Ok(()) => {
                    sqlx::query("UPDATE events SET snapshot_path = $1 WHERE id = $2")
                        .bind(&rel)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    snapshot_path = Some(rel);
                }
                Err(e) => snapshot_error = Some(e),
            }
        }
        tx.commit().await?;
        let event = Event {
            id,
            event_type: ev.event_type,
            camera_id: ev.camera_id.clone(),
            timestamp: ev.timestamp,
            frame_number: ev.frame_number,
            snapshot_path,
            event_data: ev.data.clone(),
            created_at: parse_ts(&format_ts(&created_at)).unwrap_or(created_at),
        };
        Ok((event, snapshot_error))
    }

    /// The oldest unpublished events, in id order.
    pub async fn unpublished(&self, limit: i64) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(select_events!("WHERE published = FALSE ORDER BY id LIMIT $1"))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_event).collect()
    }

    /// How many events are saved but not yet published.
    pub async fn unpublished_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE published = FALSE").fetch_one(&self.pool).await?)
    }

    /// Mark events as delivered to Redis.
    pub async fn mark_published(&self, ids: &[i64]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        // Ids are integers from our own rows, so inlining them is safe and keeps one round trip.
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let sql = format!("UPDATE events SET published = TRUE WHERE id IN ({list})");
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&self.pool).await?;
        Ok(())
    }

    /// One event by id.
    pub async fn get(&self, id: i64) -> Result<Option<Event>, StoreError> {
        let row = sqlx::query(select_events!("WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(row_to_event).transpose()
    }

    /// Events with id greater than `after_id`, oldest first.
    pub async fn after(&self, after_id: i64, limit: i64) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(select_events!("WHERE id > $1 ORDER BY id LIMIT $2"))
            .bind(after_id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(row_to_event).collect()
    }

    /// Delete published events older than `cutoff`, returning each one's snapshot path (if any).
    /// Unpublished events are kept whatever their age: the outbox must never lose one.
    pub async fn delete_before(&self, cutoff: &DateTime<Utc>) -> Result<Vec<Option<String>>, StoreError> {
        Ok(sqlx::query_scalar("DELETE FROM events WHERE timestamp < $1 AND published = TRUE RETURNING snapshot_path")
            .bind(format_ts(cutoff))
            .fetch_all(&self.pool)
            .await?)
    }

    /// Close the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn row_to_event(row: &AnyRow) -> Result<Event, StoreError> {
    let id: i64 = row.try_get("id")?;
    let bad = |reason: String| StoreError::Row { id, reason };
    let event_type: String = row.try_get("event_type")?;
    let ts = |col: &str| -> Result<DateTime<Utc>, StoreError> {
        let s: String = row.try_get(col)?;
        parse_ts(&s).map_err(|e| bad(format!("{col} `{s}`: {e}")))
    };
    let data: String = row.try_get("event_data")?;
    Ok(Event {
        id,
        event_type: EventType::parse(&event_type).ok_or_else(|| bad(format!("unknown event_type `{event_type}`")))?,
        camera_id: row.try_get("camera_id")?,
        timestamp: ts("timestamp")?,
        frame_number: row.try_get("frame_number")?,
        snapshot_path: row.try_get("snapshot_path")?,
        event_data: serde_json::from_str(&data).map_err(|e| bad(format!("event_data: {e}")))?,
        created_at: ts("created_at")?,
    })
}
