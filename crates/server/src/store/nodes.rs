//! The node registry and placement of [`NodeStore`] in SQL, for both dialects. Every time that
//! matters across nodes is the database's clock (`db_now`), never a node's.

use super::sql::{backend, SqlStore};
use super::{Dialect, StoreError, StoredEvent};
use crate::cluster::store::{ClaimError, NodeClaim, NodeLoad, NodeRecord, NodeStore, Placement, Renewal};
use async_trait::async_trait;
use mayfly_proto::api::SessionState;
use mayfly_proto::nodes::{NodeCapacity, NodeMode};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::HashMap;

const NODE_COLUMNS: &str =
    "name, address, node_id, incarnation, mode, version, started_at, heartbeat_at, lease_until, stopped, clock_skew_ms, capacity";

/// The database's clock in Unix ms, as an SQL expression.
fn now_sql(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    }
}

/// Row locks for the rest of the transaction (PostgreSQL; SQLite's writer lock covers it).
fn for_update(d: Dialect, of: &str) -> String {
    match d {
        Dialect::Sqlite => String::new(),
        Dialect::Postgres if of.is_empty() => " FOR UPDATE".into(),
        Dialect::Postgres => format!(" FOR UPDATE OF {of}"),
    }
}

fn node(row: &AnyRow) -> Result<NodeRecord, StoreError> {
    let mode: String = row.get("mode");
    let capacity: String = row.get("capacity");
    Ok(NodeRecord {
        name: row.get("name"),
        address: row.get("address"),
        node_id: row.get("node_id"),
        incarnation: row.get("incarnation"),
        mode: NodeMode::parse(&mode).ok_or(StoreError::Corrupt { what: "node mode", value: mode.clone() })?,
        version: row.get("version"),
        started_at: row.get("started_at"),
        heartbeat_at: row.get("heartbeat_at"),
        lease_until: row.get("lease_until"),
        stopped: row.get::<i64, _>("stopped") != 0,
        clock_skew_ms: row.get("clock_skew_ms"),
        capacity: serde_json::from_str::<NodeCapacity>(&capacity)
            .map_err(|_| StoreError::Corrupt { what: "node capacity", value: capacity.clone() })?,
    })
}

fn ms_text(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(crate::manager::rfc3339)
        .unwrap_or_else(|_| ms.to_string())
}

async fn db_now(conn: &mut sqlx::AnyConnection, d: Dialect) -> Result<i64, StoreError> {
    sqlx::query_scalar(&format!("SELECT {}", now_sql(d))).fetch_one(&mut *conn).await.map_err(backend("reading the database clock"))
}

const LIVE: [SessionState; 4] = [SessionState::Creating, SessionState::Ready, SessionState::Stopping, SessionState::Lost];

#[async_trait]
impl NodeStore for SqlStore {
    async fn claim_node(&self, c: &NodeClaim) -> Result<i64, ClaimError> {
        let d = self.dialect();
        let mut tx = self.pool().begin().await.map_err(backend("begin"))?;
        let now = db_now(&mut tx, d).await?;
        let held = sqlx::query(&format!("SELECT node_id, address, lease_until, stopped FROM nodes WHERE name = $1{}", for_update(d, "")))
            .bind(&c.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend("reading the node registry"))?;
        if let Some(row) = held {
            let (node_id, address, lease_until, stopped): (String, String, i64, i64) =
                (row.get("node_id"), row.get("address"), row.get("lease_until"), row.get("stopped"));
            if node_id != c.node_id && lease_until > now && stopped == 0 {
                return Err(ClaimError::NameTaken { name: c.name.clone(), address, lease_until: ms_text(lease_until) });
            }
        }
        let capacity = serde_json::to_string(&c.capacity).expect("json");
        sqlx::query(
            "INSERT INTO nodes (name, address, node_id, incarnation, mode, version, started_at, heartbeat_at, lease_until, stopped, clock_skew_ms, capacity)
             VALUES ($1, $2, $3, $4, 'active', $5, $6, $6, $7, 0, $8, $9)
             ON CONFLICT (name) DO UPDATE SET address = excluded.address, node_id = excluded.node_id,
                incarnation = excluded.incarnation, version = excluded.version, started_at = excluded.started_at,
                heartbeat_at = excluded.heartbeat_at, lease_until = excluded.lease_until, stopped = 0,
                clock_skew_ms = excluded.clock_skew_ms, capacity = excluded.capacity",
        )
        .bind(&c.name)
        .bind(&c.address)
        .bind(&c.node_id)
        .bind(&c.incarnation)
        .bind(&c.version)
        .bind(now)
        .bind(now + c.lease_ms)
        .bind(c.clock_ms - now)
        .bind(capacity)
        .execute(&mut *tx)
        .await
        .map_err(|e| match e {
            // Another machine inserted the same name a moment ago.
            sqlx::Error::Database(db) if db.is_unique_violation() => ClaimError::NameTaken {
                name: c.name.clone(),
                address: "(another node starting now)".into(),
                lease_until: ms_text(now + c.lease_ms),
            },
            e => ClaimError::Store(backend("registering the node")(e)),
        })?;
        tx.commit().await.map_err(backend("commit"))?;
        Ok(now)
    }

    async fn renew_node(&self, name: &str, incarnation: &str, lease_ms: i64, clock_ms: i64, capacity: &NodeCapacity) -> Result<Renewal, StoreError> {
        let now = now_sql(self.dialect());
        let row = sqlx::query(&format!(
            "UPDATE nodes SET heartbeat_at = {now}, lease_until = {now} + $3, clock_skew_ms = $4 - {now}, capacity = $5, stopped = 0
             WHERE name = $1 AND incarnation = $2 RETURNING heartbeat_at, lease_until, mode"
        ))
        .bind(name)
        .bind(incarnation)
        .bind(lease_ms)
        .bind(clock_ms)
        .bind(serde_json::to_string(capacity).expect("json"))
        .fetch_optional(self.pool())
        .await
        .map_err(backend("renewing the node's lease"))?;
        let Some(row) = row else { return Ok(Renewal::Superseded) };
        let mode: String = row.get("mode");
        Ok(Renewal::Renewed {
            db_now: row.get("heartbeat_at"),
            lease_until: row.get("lease_until"),
            node_mode: NodeMode::parse(&mode).ok_or(StoreError::Corrupt { what: "node mode", value: mode.clone() })?,
        })
    }

    async fn release_node(&self, name: &str, incarnation: &str) -> Result<(), StoreError> {
        sqlx::query(&format!("UPDATE nodes SET lease_until = {}, stopped = 1 WHERE name = $1 AND incarnation = $2", now_sql(self.dialect())))
            .bind(name)
            .bind(incarnation)
            .execute(self.pool())
            .await
            .map_err(backend("releasing the node's lease"))?;
        Ok(())
    }

    async fn nodes(&self) -> Result<(Vec<NodeRecord>, i64), StoreError> {
        let mut conn = self.pool().acquire().await.map_err(backend("connect"))?;
        let now = db_now(&mut conn, self.dialect()).await?;
        let rows = sqlx::query(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY name"))
            .fetch_all(&mut *conn)
            .await
            .map_err(backend("listing nodes"))?;
        Ok((rows.iter().map(node).collect::<Result<_, _>>()?, now))
    }

    async fn set_node_mode(&self, name: &str, mode: NodeMode) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE nodes SET mode = $2 WHERE name = $1")
            .bind(name)
            .bind(mode.as_str())
            .execute(self.pool())
            .await
            .map_err(backend("setting a node's mode"))?;
        Ok(r.rows_affected() > 0)
    }

    async fn session_node(&self, id: &str) -> Result<Option<Option<String>>, StoreError> {
        let row = sqlx::query("SELECT node FROM sessions WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(backend("finding a session's node"))?;
        Ok(row.map(|r| r.get::<Option<String>, _>("node")))
    }

    async fn place(&self, image: &str, hold_ms: i64, exclude: &[String]) -> Result<Result<Placement, Vec<String>>, StoreError> {
        let d = self.dialect();
        let mut tx = self.pool().begin().await.map_err(backend("begin"))?;
        let now = db_now(&mut tx, d).await?;
        sqlx::query("DELETE FROM placements WHERE expires_at <= $1").bind(now).execute(&mut *tx).await.map_err(backend("placing a session"))?;
        let rows = sqlx::query(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY name{}", for_update(d, "")))
            .fetch_all(&mut *tx)
            .await
            .map_err(backend("placing a session"))?;
        let states = LIVE.iter().map(|s| format!("'{}'", s.as_str())).collect::<Vec<_>>().join(", ");
        let mut load: HashMap<String, i64> = HashMap::new();
        for q in [
            format!("SELECT node, COUNT(*) AS n FROM sessions WHERE node IS NOT NULL AND state IN ({states}) GROUP BY node"),
            "SELECT node, COUNT(*) AS n FROM placements GROUP BY node".to_string(),
        ] {
            for r in sqlx::query(&q).fetch_all(&mut *tx).await.map_err(backend("placing a session"))? {
                *load.entry(r.get("node")).or_default() += r.get::<i64, _>("n");
            }
        }
        let candidates: Vec<NodeLoad> = rows
            .iter()
            .map(node)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|n| !exclude.contains(&n.name))
            .map(|n| NodeLoad { live_sessions: load.get(&n.name).copied().unwrap_or(0).max(0) as u64, node: n })
            .collect();
        let chosen = match crate::cluster::placement::choose(&candidates, image, now) {
            Ok(i) => candidates[i].node.clone(),
            Err(why) => return Ok(Err(why)),
        };
        let token = crate::manager::new_session_id();
        sqlx::query("INSERT INTO placements (token, node, expires_at) VALUES ($1, $2, $3)")
            .bind(&token)
            .bind(&chosen.name)
            .bind(now + hold_ms)
            .execute(&mut *tx)
            .await
            .map_err(backend("placing a session"))?;
        tx.commit().await.map_err(backend("commit"))?;
        Ok(Ok(Placement { token, node: chosen }))
    }

    async fn release_placement(&self, token: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM placements WHERE token = $1").bind(token).execute(self.pool()).await.map_err(backend("releasing a placement"))?;
        Ok(())
    }

    async fn mark_lost(&self) -> Result<Vec<StoredEvent>, StoreError> {
        use SessionState::*;
        let d = self.dialect();
        let mut tx = self.pool().begin().await.map_err(backend("begin"))?;
        let now = db_now(&mut tx, d).await?;
        let rows = sqlx::query(&format!(
            "SELECT s.id, s.state, s.node, n.stopped, n.lease_until FROM sessions s JOIN nodes n ON s.node = n.name
             WHERE n.lease_until <= $1 AND s.state IN ('creating', 'ready', 'stopping'){}",
            for_update(d, "s")
        ))
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend("finding sessions of lost nodes"))?;
        let mut events = Vec::new();
        for r in rows {
            let (id, state, node, stopped, lease_until): (String, String, String, i64, i64) =
                (r.get("id"), r.get("state"), r.get("node"), r.get("stopped"), r.get("lease_until"));
            let from = super::parse_state(&state)?;
            let why = if stopped != 0 {
                format!("its node {node} stopped (a restart or an upgrade); the node takes it back when it starts again")
            } else {
                format!("its node {node} stopped renewing its lease at {} (crashed or cut off)", ms_text(lease_until))
            };
            let (to, reason) = match from {
                Ready => (Lost, why),
                Creating => (Failed, format!("{why}, while the session was being created")),
                _ => (Destroyed, format!("deleted; {why}, and reaps the VM if it returns")),
            };
            let failure = (to == Failed).then_some(reason.as_str());
            let changed = sqlx::query("UPDATE sessions SET state = $1, failure = COALESCE($2, failure), updated_at = $3 WHERE id = $4 AND state = $5")
                .bind(to.as_str())
                .bind(failure)
                .bind(now)
                .bind(&id)
                .bind(from.as_str())
                .execute(&mut *tx)
                .await
                .map_err(backend("marking a session lost"))?;
            if changed.rows_affected() == 1 {
                let at = super::sql::from_ms(now)?;
                events.push(super::sql::append_event(&mut tx, &id, Some(from), to, Some(&reason), at).await?);
            }
        }
        tx.commit().await.map_err(backend("commit"))?;
        Ok(events)
    }
}
