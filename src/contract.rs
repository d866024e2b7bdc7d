//! The event as every consumer sees it (DESIGN.md): its type, its JSON and its timestamps. A
//! leaf: it imports nothing of ours, so config, events and the API can all depend on it.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The kinds of event, as they appear in `event_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Motion,
    Tracking,
    Anpr,
    Camera,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Motion => "motion",
            EventType::Tracking => "tracking",
            EventType::Anpr => "anpr",
            EventType::Camera => "camera",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Motion, Self::Tracking, Self::Anpr, Self::Camera].into_iter().find(|t| t.as_str() == s)
    }
}

/// A saved event: exactly the JSON every consumer sees (channel, API, table). Two are equal
/// when their JSON is (`seq` aside).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: i64,
    /// 0 when first saved; + 1 each time the event is improved (sent again under the same id).
    #[serde(default)]
    pub revision: i64,
    /// The change sequence: new at every save and revision; SSE ids and webhook cursors follow
    /// it. Not part of the JSON.
    #[serde(skip)]
    pub seq: i64,
    pub event_type: EventType,
    pub camera_id: String,
    #[serde(with = "rfc3339_ms")]
    pub timestamp: DateTime<Utc>,
    pub frame_number: Option<i64>,
    pub snapshot_path: Option<String>,
    pub event_data: serde_json::Value,
    #[serde(with = "rfc3339_ms")]
    pub created_at: DateTime<Utc>,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.revision == other.revision
            && self.event_type == other.event_type
            && self.camera_id == other.camera_id
            && self.timestamp == other.timestamp
            && self.frame_number == other.frame_number
            && self.snapshot_path == other.snapshot_path
            && self.event_data == other.event_data
            && self.created_at == other.created_at
    }
}

/// `2026-11-22T10:00:00.123Z`: UTC, milliseconds, fixed width (sorts as text).
pub fn format_ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parse a timestamp written by [`format_ts`] (or any RFC 3339 time).
pub fn parse_ts(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc))
}

mod rfc3339_ms {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_ts(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_ts(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_contract_shape() {
        let t = parse_ts("2026-11-22T10:00:00.123Z").unwrap();
        let ev = Event {
            id: 123,
            revision: 1,
            seq: 0,
            event_type: EventType::Tracking,
            camera_id: "gate-1".into(),
            timestamp: t,
            frame_number: Some(1234),
            snapshot_path: Some("gate-1/2026-11-22/123.jpg".into()),
            event_data: serde_json::json!({}),
            created_at: t + chrono::Duration::milliseconds(17),
        };
        let json: serde_json::Value = serde_json::to_value(&ev).unwrap();
        let keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 9);
        assert_eq!(json["revision"], 1);
        assert_eq!(json["timestamp"], "2026-11-22T10:00:00.123Z");
        assert_eq!(json["created_at"], "2026-11-22T10:00:00.140Z");
        assert_eq!(json["event_type"], "tracking");
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), ev);
    }
}
