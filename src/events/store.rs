//! The event table: SQLite (default, one file) or PostgreSQL, chosen by URL, through sqlx's `Any`
//! driver so one set of portable queries serves both. Migrations run at connect.
//!
//! Queries use `$N` placeholders, each once and in order, which both backends accept.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use super::{Event, EventType, NewEvent, format_ts, parse_ts, snapshot};
use crate::error::{ErrorKind, Kinded, Refusal};
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
    #[error("camera {camera} is now run by another process (lease token {token} is stale); event refused")]
    Fenced { camera: String, token: i64 },
}

impl Kinded for StoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Connect { .. } => ErrorKind::Retry,
            Self::Migrate(_) => ErrorKind::Fatal,
            Self::Row { .. } => ErrorKind::Refuse(Refusal::Invalid),
            Self::Fenced { .. } => ErrorKind::Refuse(Refusal::Conflict),
            Self::Query(e) => match e {
                // The statement broke a rule of the schema: the same write fails every time.
                sqlx::Error::Database(db) if db.kind() != sqlx::error::ErrorKind::Other => {
                    ErrorKind::Refuse(Refusal::Conflict)
                }
                // PostgreSQL's SQLSTATE classes: 22, the data cannot be stored (a NUL in JSON,
                // say); 42, the schema is not what this release expects. Every other class
                // (connection, resources, shutting down, serialisation) may pass.
                sqlx::Error::Database(db) if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() => {
                    match db.code().as_deref().map(|c| &c[..2.min(c.len())]) {
                        Some("22") => ErrorKind::Refuse(Refusal::Invalid),
                        Some("42") => ErrorKind::Fatal,
                        _ => ErrorKind::Retry,
                    }
                }
                sqlx::Error::ColumnDecode { .. }
                | sqlx::Error::ColumnNotFound(_)
                | sqlx::Error::TypeNotFound { .. }
                | sqlx::Error::Decode(_)
                | sqlx::Error::Encode(_) => ErrorKind::Fatal,
                // Connections, pools, timeouts, and the server's own transient states.
                _ => ErrorKind::Retry,
            },
        }
    }
}

/// The PostgreSQL advisory lock that orders event writes by commit (any constant; "vigl").
const COMMIT_ORDER_LOCK: i64 = 0x7669_676c;

/// `SELECT` of every contract column, as a literal so queries stay `&'static str`.
macro_rules! select_events {
    ($rest:literal) => {
        concat!("SELECT id, revision, seq, event_type, camera_id, timestamp, frame_number, snapshot_path, event_data, created_at FROM events ", $rest)
    };
}

/// A connection pool to the event database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// SQLite (else PostgreSQL): where the two differ in how `seq` is taken.
    sqlite: bool,
    /// Lease tokens this process writes under, by camera (see [`Store::fence`]).
    fences: Arc<RwLock<HashMap<String, i64>>>,
}

impl Store {
    /// Open (creating a SQLite file if needed) and migrate.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let sqlite = url.starts_with("sqlite:");
        let pool = Self::pool(url, if sqlite { 4 } else { 8 }).await?;
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
        Ok(Self { pool, sqlite, fences: Arc::default() })
    }

    /// A second, small pool on an already migrated database, for readers that must never take
    /// the connections event writes need (the API's lists and live-stream replays): under any
    /// load they wait for one of their own `connections`.
    pub async fn connect_reader(url: &str, connections: u32) -> Result<Self, StoreError> {
        Ok(Self {
            pool: Self::pool(url, connections).await?,
            sqlite: url.starts_with("sqlite:"),
            fences: Arc::default(),
        })
    }

    async fn pool(url: &str, connections: u32) -> Result<AnyPool, StoreError> {
        sqlx::any::install_default_drivers();
        let full = if url.starts_with("sqlite:") && !url.contains('?') && !url.contains(":memory:") {
            format!("{url}?mode=rwc")
        } else {
            url.to_string()
        };
        AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&full)
            .await
            .map_err(|source| StoreError::Connect { url: Redacted(url).to_string(), source })
    }

    /// Save an event and, inside the same transaction, its snapshot file (and the crop, whose
    /// path goes into `event_data.crop_path`), so no reader ever sees the row without the paths
    /// it will have. A snapshot that cannot be written leaves the path null; the event is saved
    /// regardless.
    pub async fn save(
        &self,
        ev: &NewEvent,
        snapshot: Option<(&[u8], Option<&[u8]>)>,
        snapshots_dir: &Path,
    ) -> Result<(Event, Option<std::io::Error>), StoreError> {
        self.write(None, ev, snapshot, snapshots_dir).await
    }

    /// Replace saved event `id`'s time, data and snapshot with `ev`'s, and mark it unpublished so
    /// the outbox sends it again under the same id.
    pub async fn revise(
        &self,
        id: i64,
        ev: &NewEvent,
        snapshot: Option<(&[u8], Option<&[u8]>)>,
        snapshots_dir: &Path,
    ) -> Result<(Event, Option<std::io::Error>), StoreError> {
        self.write(Some(id), ev, snapshot, snapshots_dir).await
    }

    async fn write(
        &self,
        revise: Option<i64>,
        ev: &NewEvent,
        snapshot: Option<(&[u8], Option<&[u8]>)>,
        snapshots_dir: &Path,
    ) -> Result<(Event, Option<std::io::Error>), StoreError> {
        // The JPEGs go to disk first, under temporary names, outside any lock; inside the
        // transaction they only get their final, id-based names.
        let mut snapshot_error = None;
        let staged = match snapshot {
            Some(jpegs) => match snapshot::stage(snapshots_dir, &ev.camera_id, &ev.timestamp, jpegs).await {
                Ok(staged) => Some(staged),
                Err(e) => {
                    snapshot_error = Some(e);
                    None
                }
            },
            None => None,
        };
        let written = self.commit_ordered(revise, ev, staged.as_ref(), snapshots_dir).await;
        let placed = matches!(&written, Ok((_, None)));
        if let (Some(staged), false) = (&staged, placed) {
            // After a failed write, or a rename that failed: nothing refers to these.
            staged.discard().await;
        }
        let (event, rename_error) = written?;
        Ok((event, snapshot_error.or(rename_error)))
    }

    /// The row's part of [`Store::write`]. Ids and change numbers are taken in commit order:
    /// on PostgreSQL the transaction holds an advisory lock from taking them to its commit
    /// (SQLite's single writer does the same), so a reader that has seen id or `seq` N has
    /// seen every committed row below it, and a cursor never passes a row that commits late.
    async fn commit_ordered(
        &self,
        revise: Option<i64>,
        ev: &NewEvent,
        staged: Option<&snapshot::Staged>,
        snapshots_dir: &Path,
    ) -> Result<(Event, Option<std::io::Error>), StoreError> {
        let mut tx = self.pool.begin().await?;
        let token = self.fences.read().unwrap_or_else(|p| p.into_inner()).get(&ev.camera_id).copied();
        if let Some(token) = token {
            // Also a row lock on PostgreSQL: a new owner's fence waits until this write is done.
            let current = sqlx::query("UPDATE camera_fences SET token = token WHERE camera_id = $1 AND token <= $2")
                .bind(&ev.camera_id)
                .bind(token)
                .execute(&mut *tx)
                .await?;
            if current.rows_affected() == 0 {
                return Err(StoreError::Fenced { camera: ev.camera_id.clone(), token });
            }
        }
        if !self.sqlite {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(COMMIT_ORDER_LOCK).execute(&mut *tx).await?;
        }
        // SQLite has one writer at a time, so MAX + 1 inside the write is unique and in commit
        // order; PostgreSQL takes it from a sequence, under the lock above.
        let next_seq =
            if self.sqlite { "(SELECT COALESCE(MAX(seq), 0) + 1 FROM events)" } else { "nextval('events_seq')" };
        let (id, revision, seq, created_at, old_snapshot): (i64, i32, i64, String, Option<String>) = match revise {
            None => {
                let created_at = format_ts(&Utc::now());
                let sql = format!(
                    "INSERT INTO events (event_type, camera_id, timestamp, frame_number, event_data, created_at, label, plate, seq) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {next_seq}) RETURNING id, seq"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(ev.event_type.as_str())
                    .bind(&ev.camera_id)
                    .bind(format_ts(&ev.timestamp))
                    .bind(ev.frame_number)
                    .bind(ev.data.to_string())
                    .bind(&created_at)
                    .bind(ev.data["label"].as_str())
                    .bind(ev.data["plate"].as_str())
                    .fetch_one(&mut *tx)
                    .await?;
                (row.try_get("id")?, 0, row.try_get("seq")?, created_at, None)
            }
            Some(id) => {
                let sql = format!(
                    "UPDATE events SET timestamp = $1, frame_number = $2, event_data = $3, label = $4, plate = $5, \
                     published = FALSE, revision = revision + 1, seq = {next_seq} WHERE id = $6 \
                     RETURNING revision, seq, created_at, snapshot_path"
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(format_ts(&ev.timestamp))
                    .bind(ev.frame_number)
                    .bind(ev.data.to_string())
                    .bind(ev.data["label"].as_str())
                    .bind(ev.data["plate"].as_str())
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                (
                    id,
                    row.try_get("revision")?,
                    row.try_get("seq")?,
                    row.try_get("created_at")?,
                    row.try_get("snapshot_path")?,
                )
            }
        };
        let created_at = parse_ts(&created_at).unwrap_or_else(|_| Utc::now());
        let mut data = ev.data.clone();
        let mut snapshot_path = old_snapshot;
        let mut snapshot_error = None;
        if let Some(staged) = staged {
            match staged.place(snapshots_dir, &ev.camera_id, &ev.timestamp, id).await {
                Ok((rel, crop_rel)) => {
                    if let Some(crop_rel) = crop_rel {
                        data["crop_path"] = serde_json::Value::String(crop_rel);
                    }
                    sqlx::query("UPDATE events SET snapshot_path = $1, event_data = $2 WHERE id = $3")
                        .bind(&rel)
                        .bind(data.to_string())
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
            revision: revision.into(),
            seq,
            event_type: ev.event_type,
            camera_id: ev.camera_id.clone(),
            timestamp: ev.timestamp,
            frame_number: ev.frame_number,
            snapshot_path,
            event_data: data,
            created_at,
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

    /// Mark events as delivered to Redis, each only at the revision that was sent: a revision
    /// saved meanwhile stays unpublished and goes out too.
    pub async fn mark_published(&self, sent: &[(i64, i64)]) -> Result<(), StoreError> {
        if sent.is_empty() {
            return Ok(());
        }
        // Integers from our own rows, so inlining them is safe and keeps one round trip.
        let list =
            sent.iter().map(|(id, rev)| format!("(id = {id} AND revision = {rev})")).collect::<Vec<_>>().join(" OR ");
        let sql = format!("UPDATE events SET published = TRUE WHERE published = FALSE AND ({list})");
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&self.pool).await?;
        Ok(())
    }

    /// One event by id.
    pub async fn get(&self, id: i64) -> Result<Option<Event>, StoreError> {
        let row = sqlx::query(select_events!("WHERE id = $1")).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(row_to_event).transpose()
    }

    /// Events matching `q`, in its order, one page of at most `q.limit`.
    pub async fn list(&self, q: &EventQuery) -> Result<Vec<Event>, StoreError> {
        let mut sql = String::from(select_events!("WHERE TRUE"));
        let mut binds: Vec<Bind> = Vec::new();
        let mut clause = |sql_part: &str, bind: Bind| {
            binds.push(bind);
            sql.push_str(&format!(" AND {sql_part} ${}", binds.len()));
        };
        if let Some(c) = &q.camera {
            clause("camera_id =", Bind::Text(c.clone()));
        }
        if let Some(t) = q.event_type {
            clause("event_type =", Bind::Text(t.as_str().into()));
        }
        if let Some(l) = &q.label {
            clause("label =", Bind::Text(l.clone()));
        }
        match &q.plate {
            Some(PlateMatch::Exact(p)) => clause("plate =", Bind::Text(p.clone())),
            // Plates are A–Z0–9 (checked by the caller) and at most 16 long, so every plate with
            // this prefix lies between the prefix and the prefix padded with 'Z': an index range
            // scan on both backends, where LIKE would scan the table.
            Some(PlateMatch::Prefix(p)) => {
                clause("plate >=", Bind::Text(p.clone()));
                clause("plate <=", Bind::Text(format!("{p}{}", "Z".repeat(16))));
            }
            None => {}
        }
        if let Some(s) = &q.since {
            clause("timestamp >=", Bind::Text(format_ts(s)));
        }
        if let Some(u) = &q.until {
            clause("timestamp <", Bind::Text(format_ts(u)));
        }
        if let Some(a) = q.after_id {
            clause(if q.newest_first { "id <" } else { "id >" }, Bind::Int(a));
        }
        let order = match q.after_seq {
            Some(seq) => {
                clause("seq >", Bind::Int(seq));
                "seq"
            }
            None => "id",
        };
        binds.push(Bind::Int(q.limit));
        sql.push_str(&format!(
            " ORDER BY {order} {} LIMIT ${}",
            if q.newest_first { "DESC" } else { "ASC" },
            binds.len()
        ));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            query = match b {
                Bind::Text(s) => query.bind(s),
                Bind::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(row_to_event).collect()
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Events saved or revised after change `seq`, in change order (see the `seq` migration).
    pub async fn changed_after(&self, seq: i64, limit: i64) -> Result<Vec<Event>, StoreError> {
        self.page(select_events!("WHERE seq > $1 ORDER BY seq LIMIT $2"), seq, limit).await
    }

    /// Events with id greater than `after_id`, oldest first.
    pub async fn after(&self, after_id: i64, limit: i64) -> Result<Vec<Event>, StoreError> {
        self.page(select_events!("WHERE id > $1 ORDER BY id LIMIT $2"), after_id, limit).await
    }

    /// One page of a keyset query taking a cursor and a limit.
    async fn page(&self, sql: &'static str, cursor: i64, limit: i64) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(sql).bind(cursor).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(row_to_event).collect()
    }

    /// Delete up to `limit` of the oldest events (only those before `cutoff`, if given), in one
    /// statement; the snapshot and crop paths of each.
    pub async fn delete_oldest(
        &self,
        cutoff: Option<&DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<[Option<String>; 2]>, StoreError> {
        let rows = match cutoff {
            Some(cutoff) => {
                sqlx::query(
                    "DELETE FROM events WHERE id IN \
                     (SELECT id FROM events WHERE timestamp < $1 ORDER BY timestamp LIMIT $2) \
                     RETURNING snapshot_path, event_data",
                )
                .bind(format_ts(cutoff))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT $1) \
                     RETURNING snapshot_path, event_data",
                )
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter()
            .map(|r| Ok([r.try_get("snapshot_path")?, crop_path(&r.try_get::<String, _>("event_data")?)]))
            .collect()
    }

    /// Which of `ids` are events.
    pub async fn existing_ids(&self, ids: &[i64]) -> Result<std::collections::HashSet<i64>, StoreError> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        // Integers parsed from file names, so inlining them is safe.
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let sql = format!("SELECT id FROM events WHERE id IN ({list})");
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?.into_iter().collect())
    }

    /// Up to `limit` events after `after_id` that name files: id, snapshot path, crop path.
    pub async fn with_files(
        &self,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Option<String>, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, snapshot_path, event_data FROM events WHERE id > $1 AND snapshot_path IS NOT NULL \
             ORDER BY id LIMIT $2",
        )
        .bind(after_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((r.try_get("id")?, r.try_get("snapshot_path")?, crop_path(&r.try_get::<String, _>("event_data")?)))
            })
            .collect()
    }

    /// Event `id`'s snapshot (and so its crop too), or only its crop, is gone from disk.
    pub async fn forget_files(&self, id: i64, snapshot: bool, crop: bool) -> Result<(), StoreError> {
        let Some(ev) = self.get(id).await? else { return Ok(()) };
        let mut data = ev.event_data;
        if let Some(fields) = data.as_object_mut()
            && (snapshot || crop)
        {
            fields.remove("crop_path");
        }
        let path = if snapshot { None } else { ev.snapshot_path };
        sqlx::query("UPDATE events SET snapshot_path = $1, event_data = $2 WHERE id = $3")
            .bind(path)
            .bind(data.to_string())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Cameras added through the API: each id with the JSON that added it.
    pub async fn saved_cameras(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT id, config FROM cameras ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("id")?, r.try_get("config")?))).collect()
    }

    /// Save a new API camera's JSON; false (and nothing written) when the id is already saved.
    pub async fn add_camera(&self, id: &str, config: &str) -> Result<bool, StoreError> {
        self.write_camera(
            "INSERT INTO cameras (id, config, updated_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
            id,
            config,
        )
        .await
    }

    /// Replace a saved API camera's JSON; false when no camera `id` is saved.
    pub async fn update_camera(&self, id: &str, config: &str) -> Result<bool, StoreError> {
        self.write_camera("UPDATE cameras SET config = $2, updated_at = $3 WHERE id = $1", id, config).await
    }

    /// Run `sql` with ($1 id, $2 config, $3 now); whether it wrote the row.
    async fn write_camera(&self, sql: &'static str, id: &str, config: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(sql).bind(id).bind(config).bind(format_ts(&Utc::now())).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forget an API camera.
    pub async fn forget_camera(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM cameras WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Write camera `camera`'s events under lease `token` from now on, and raise its fence to
    /// `token` so writes under any older token (another process's) are refused. Returns the
    /// fence now stored: larger than `token` if the token was already stale.
    pub async fn fence(&self, camera: &str, token: i64) -> Result<i64, StoreError> {
        sqlx::query(
            "INSERT INTO camera_fences (camera_id, token) VALUES ($1, $2) \
             ON CONFLICT (camera_id) DO UPDATE SET token = excluded.token WHERE camera_fences.token < excluded.token",
        )
        .bind(camera)
        .bind(token)
        .execute(&self.pool)
        .await?;
        let stored: i64 = sqlx::query_scalar("SELECT token FROM camera_fences WHERE camera_id = $1")
            .bind(camera)
            .fetch_one(&self.pool)
            .await?;
        if stored == token {
            self.fences.write().unwrap_or_else(|p| p.into_inner()).insert(camera.to_string(), token);
        }
        Ok(stored)
    }

    /// Webhook `name`'s cursor; a new webhook starts after the newest event, so it is not sent
    /// the history. A cursor saved under `legacy` (the name an earlier version used) is renamed
    /// to `name` first, so an upgrade neither skips nor repeats events.
    pub async fn webhook_cursor(&self, name: &str, legacy: Option<&str>) -> Result<i64, StoreError> {
        if let Some(old) = legacy.filter(|old| *old != name) {
            sqlx::query(
                "UPDATE webhook_cursors SET name = $1 WHERE name = $2 \
                 AND NOT EXISTS (SELECT 1 FROM webhook_cursors WHERE name = $3)",
            )
            .bind(name)
            .bind(old)
            .bind(name)
            .execute(&self.pool)
            .await?;
            sqlx::query("DELETE FROM webhook_cursors WHERE name = $1").bind(old).execute(&self.pool).await?;
        }
        let saved: Option<i64> = sqlx::query_scalar("SELECT last_id FROM webhook_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(id) = saved {
            return Ok(id);
        }
        let newest: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events").fetch_one(&self.pool).await?;
        self.set_webhook_cursor(name, newest).await?;
        Ok(newest)
    }

    /// Record that webhook `name` is done with every event up to `last_id`.
    pub async fn set_webhook_cursor(&self, name: &str, last_id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_cursors (name, last_id) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id",
        )
        .bind(name)
        .bind(last_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Close the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

enum Bind {
    Text(String),
    Int(i64),
}

/// How to match a plate.
#[derive(Debug, Clone, PartialEq)]
pub enum PlateMatch {
    Exact(String),
    Prefix(String),
}

/// A filtered, keyset-paginated listing.
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    pub camera: Option<String>,
    pub event_type: Option<EventType>,
    pub label: Option<String>,
    pub plate: Option<PlateMatch>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The last id of the previous page (in listing order).
    pub after_id: Option<i64>,
    /// Only events saved or revised after this change (`Event::seq`), in change order.
    pub after_seq: Option<i64>,
    pub limit: i64,
    pub newest_first: bool,
}

impl Default for EventQuery {
    fn default() -> Self {
        Self {
            camera: None,
            event_type: None,
            label: None,
            plate: None,
            since: None,
            until: None,
            after_id: None,
            after_seq: None,
            limit: 100,
            newest_first: true,
        }
    }
}

impl EventQuery {
    /// Whether a (live) event passes the filters; paging fields are not considered.
    pub fn matches(&self, ev: &Event) -> bool {
        let data_str = |k: &str| ev.event_data[k].as_str();
        self.camera.as_ref().is_none_or(|c| *c == ev.camera_id)
            && self.event_type.is_none_or(|t| t == ev.event_type)
            && self.label.as_deref().is_none_or(|l| data_str("label") == Some(l))
            && match &self.plate {
                Some(PlateMatch::Exact(p)) => data_str("plate") == Some(p.as_str()),
                Some(PlateMatch::Prefix(p)) => data_str("plate").is_some_and(|v| v.starts_with(p.as_str())),
                None => true,
            }
            && self.since.is_none_or(|s| ev.timestamp >= s)
            && self.until.is_none_or(|u| ev.timestamp < u)
    }
}

/// `event_data.crop_path` of a row's JSON text.
fn crop_path(event_data: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(event_data).ok()?["crop_path"].as_str().map(String::from)
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
    let revision: i32 = row.try_get("revision")?;
    Ok(Event {
        id,
        revision: revision.into(),
        seq: row.try_get("seq")?,
        event_type: EventType::parse(&event_type).ok_or_else(|| bad(format!("unknown event_type `{event_type}`")))?,
        camera_id: row.try_get("camera_id")?,
        timestamp: ts("timestamp")?,
        frame_number: row.try_get("frame_number")?,
        snapshot_path: row.try_get("snapshot_path")?,
        event_data: serde_json::from_str(&data).map_err(|e| bad(format!("event_data: {e}")))?,
        created_at: ts("created_at")?,
    })
}
