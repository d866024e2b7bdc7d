//! Cameras shared between several `vigil run` processes on one Redis and one database, either
//! statically (`--shard i/n`: a camera belongs to the shard its id hashes to) or dynamically by
//! leases in Redis (`[cluster] leases = true`).
//!
//! A lease is `SET {prefix}:lease:{camera} {node}:{token} NX PX lease_ms`, renewed every third of
//! the lease by a compare-and-expire script. Its token comes from `INCR {prefix}:fence:{camera}`,
//! so each new holder's token is larger; the database refuses events written under an older
//! token (see `Store::fence`), so a process that stalls past its lease cannot write for a camera
//! another process has taken. Live processes announce themselves in the sorted set
//! `{prefix}:nodes` (score: when their announcement expires), and each takes at most its fair
//! share of the cameras, so a process that joins gets cameras from the others.
//!
//! Either way, a camera added, replaced or removed through one process's API is announced on
//! the Pub/Sub channel `{prefix}:cameras` ([`CameraChanges`]), and every process reloads the
//! saved cameras, so the change reaches the process that runs (or should run) the camera.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::ClusterConfig;

/// `--shard INDEX/COUNT`: this process runs the cameras whose id hashes to `index`.
/// `--shard auto/COUNT` takes INDEX from the trailing `-N` of `HOSTNAME`, which is how a
/// Kubernetes StatefulSet names its pods (`vigil-0`, `vigil-1`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: expected INDEX/COUNT with INDEX < COUNT, such as 0/3, or auto/COUNT");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if i.trim() == "auto" {
            let host = std::env::var("HOSTNAME").map_err(|_| format!("`{s}`: HOSTNAME is not set"))?;
            return Self::of_pod(&host, count);
        }
        let index = i.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// The shard of the StatefulSet pod named `host` (`NAME-ORDINAL`) among `count` pods.
    pub fn of_pod(host: &str, count: u32) -> Result<Self, String> {
        let ordinal = host
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse::<u32>().ok())
            .ok_or_else(|| format!("HOSTNAME `{host}` does not end in -N, as a StatefulSet pod's name does"))?;
        if ordinal >= count {
            return Err(format!(
                "pod `{host}` is ordinal {ordinal}, but the shard count is {count}: the count must equal the \
                 StatefulSet's replicas (scale through the kustomization, which sets both)"
            ));
        }
        Ok(Self { index: ordinal, count })
    }

    /// Whether camera `id` belongs to this shard: FNV-1a of the id, modulo the count, which is
    /// the same in every process and every release.
    pub fn owns(&self, id: &str) -> bool {
        let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        hash % u64::from(self.count) == u64::from(self.index)
    }
}

/// Renews a lease only while this node still holds it.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/// Deletes a lease only while this node still holds it.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                       return redis.call('DEL', KEYS[1]) else return 0 end";

/// Raises a fence counter to at least ARGV[1].
const RAISE: &str = "local n = tonumber(redis.call('GET', KEYS[1]) or '0') \
                     if n < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end return 1";

/// This process's view of the camera leases in Redis.
pub struct Leases {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    /// This process: host, pid and start time, unique across restarts.
    node: String,
    lease: Duration,
}

impl Leases {
    /// Leases on the Redis at `url`; connects lazily.
    pub fn new(url: &str, cfg: &ClusterConfig) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let conn = connect_lazily(&client)?;
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let node = format!("{}-{}-{}", host.trim(), std::process::id(), now_ms());
        Ok(Self { client, conn, prefix: cfg.prefix.clone(), node, lease: Duration::from_secs_f64(cfg.lease_secs) })
    }

    /// The same node's leases on a connection of its own (for renewing them apart from the
    /// rest).
    pub fn twin(&self) -> redis::RedisResult<Self> {
        Ok(Self {
            client: self.client.clone(),
            conn: connect_lazily(&self.client)?,
            prefix: self.prefix.clone(),
            node: self.node.clone(),
            lease: self.lease,
        })
    }

    /// This process's name in Redis.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// How long a lease lasts.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Announce this process alive for one lease; returns how many processes are alive.
    pub async fn heartbeat(&mut self) -> redis::RedisResult<usize> {
        let now = now_ms();
        let key = format!("{}:nodes", self.prefix);
        let (_, _, alive): ((), (), usize) = redis::pipe()
            .zadd(&key, &self.node, now + self.lease.as_millis() as u64)
            .zrembyscore(&key, "-inf", now)
            .zcard(&key)
            .query_async(&mut self.conn)
            .await?;
        Ok(alive)
    }

    /// Take camera `id`'s lease if it is free; returns the fencing token when taken.
    pub async fn acquire(&mut self, id: &str) -> redis::RedisResult<Option<i64>> {
        let token: i64 =
            redis::cmd("INCR").arg(format!("{}:fence:{id}", self.prefix)).query_async(&mut self.conn).await?;
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.key(id))
            .arg(self.value(token))
            .arg("NX")
            .arg("PX")
            .arg(self.lease.as_millis() as u64)
            .query_async(&mut self.conn)
            .await?;
        Ok(taken.map(|_| token))
    }

    /// Extend camera `id`'s lease; false if this process no longer holds it.
    pub async fn renew(&mut self, id: &str, token: i64) -> redis::RedisResult<bool> {
        let renewed: i64 = redis::Script::new(RENEW)
            .key(self.key(id))
            .arg(self.value(token))
            .arg(self.lease.as_millis() as u64)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(renewed == 1)
    }

    /// Give camera `id`'s lease up, so another process can take it at once.
    pub async fn release(&mut self, id: &str, token: i64) -> redis::RedisResult<()> {
        let _: i64 =
            redis::Script::new(RELEASE).key(self.key(id)).arg(self.value(token)).invoke_async(&mut self.conn).await?;
        Ok(())
    }

    /// Make camera `id`'s next token larger than `floor`.
    pub async fn raise(&mut self, id: &str, floor: i64) -> redis::RedisResult<()> {
        let _: i64 = redis::Script::new(RAISE)
            .key(format!("{}:fence:{id}", self.prefix))
            .arg(floor)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(())
    }

    /// Leave the set of live processes (at shutdown).
    pub async fn leave(&mut self) -> redis::RedisResult<()> {
        redis::cmd("ZREM").arg(format!("{}:nodes", self.prefix)).arg(&self.node).query_async(&mut self.conn).await
    }

    fn key(&self, id: &str) -> String {
        format!("{}:lease:{id}", self.prefix)
    }

    fn value(&self, token: i64) -> String {
        format!("{}:{token}", self.node)
    }
}

/// The Pub/Sub channel `{prefix}:cameras`, on which processes announce changes to the cameras
/// saved through the API.
#[derive(Clone)]
pub struct CameraChanges {
    client: redis::Client,
    conn: ConnectionManager,
    channel: String,
}

impl CameraChanges {
    /// Changes announced on the Redis at `url`; connects lazily.
    pub fn new(url: &str, cfg: &ClusterConfig) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let conn = connect_lazily(&client)?;
        Ok(Self { client, conn, channel: format!("{}:cameras", cfg.prefix) })
    }

    /// Tell the other processes that saved camera `id` changed.
    pub async fn announce(&self, id: &str) -> redis::RedisResult<()> {
        let _: i64 = redis::cmd("PUBLISH").arg(&self.channel).arg(id).query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Subscribe on a connection of its own; the stream yields the id of each camera changed,
    /// and ends when the connection is lost.
    pub async fn subscribe(&self) -> redis::RedisResult<impl futures::Stream<Item = String> + use<>> {
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::time::timeout(Duration::from_secs(2), connect)
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "no answer within 2 s")))??;
        Ok(futures::StreamExt::map(pubsub.into_on_message(), |msg| msg.get_payload().unwrap_or_default()))
    }
}

/// A connection that gives up quickly (a lease is only seconds long), made on first use.
fn connect_lazily(client: &redis::Client) -> redis::RedisResult<ConnectionManager> {
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(1)))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client.clone(), cfg)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::Shard;

    #[test]
    fn shards_split_every_camera_exactly_once() {
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        let ids: Vec<String> = (0..300).map(|i| format!("cam-{i}")).collect();
        for id in &ids {
            assert_eq!(shards.iter().filter(|s| s.owns(id)).count(), 1, "{id}");
        }
        let first = ids.iter().filter(|id| shards[0].owns(id)).count();
        assert!((70..=130).contains(&first), "roughly a third each: {first}");
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_statefulset_pod_takes_its_shard_from_its_name() {
        for i in 0..12 {
            assert_eq!(Shard::of_pod(&format!("vigil-{i}"), 12), Ok(Shard { index: i, count: 12 }));
        }
        // A release name with dashes in it: only the last part is the ordinal.
        assert_eq!(Shard::of_pod("cams-east-vigil-4", 5), Ok(Shard { index: 4, count: 5 }));
        let beyond = Shard::of_pod("vigil-12", 12).unwrap_err();
        assert!(beyond.contains("ordinal 12") && beyond.contains("replicas"), "{beyond}");
        for host in ["vigil", "vigil-", "vigil-x", "vigil-1x", ""] {
            assert!(Shard::of_pod(host, 3).is_err(), "{host}");
        }
        assert!("auto/0".parse::<Shard>().is_err());
    }
}
