//! The fleet: the nodes connected to this server process, and the task that pushes to them what
//! the database says is due. A node connects outbound on one WebSocket ([`nonstop_link`]); the
//! server pushes [`ServerMessage::Install`] for every release a running rollout's current wave
//! owes it (again after a reconnect, for an update it had not finished), and
//! [`ServerMessage::Rollback`] for every rollback order.
//!
//! Any change that may make something due (a rollout started, a wave finished, an operator's
//! action) wakes the dispatcher of this process and, on PostgreSQL, of every other process
//! through `NOTIFY`; a periodic pass catches whatever a lost notification missed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use nonstop_link::{NodeMessage, ServerMessage};
use sqlx::Row;
use tokio::sync::mpsc;

use crate::auth::NodeIdentity;
use crate::db::{Backend, now_ms};
use crate::{Server, ServerError};

/// The PostgreSQL channel server processes wake each other on.
pub const CHANNEL: &str = "nonstop_fleet";

/// This process's connected nodes: node id to the sender of its connection.
#[derive(Default)]
pub(crate) struct Connections {
    by_node: Mutex<HashMap<i64, (u64, mpsc::UnboundedSender<ServerMessage>)>>,
    next: AtomicU64,
}

impl Connections {
    fn add(&self, node: i64, tx: mpsc::UnboundedSender<ServerMessage>) -> u64 {
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        self.by_node
            .lock()
            .expect("connections")
            .insert(node, (generation, tx));
        generation
    }

    fn remove(&self, node: i64, generation: u64) -> bool {
        let mut map = self.by_node.lock().expect("connections");
        if map.get(&node).is_some_and(|(g, _)| *g == generation) {
            map.remove(&node);
            true
        } else {
            false
        }
    }

    pub(crate) fn send(&self, node: i64, m: ServerMessage) -> bool {
        self.by_node
            .lock()
            .expect("connections")
            .get(&node)
            .is_some_and(|(_, tx)| tx.send(m).is_ok())
    }

    pub(crate) fn ids(&self) -> Vec<i64> {
        self.by_node
            .lock()
            .expect("connections")
            .keys()
            .copied()
            .collect()
    }

    /// How many nodes are connected to this process.
    pub(crate) fn len(&self) -> usize {
        self.by_node.lock().expect("connections").len()
    }
}

impl Server {
    /// Serves one node's link until it closes.
    pub(crate) async fn serve_link(self, node: NodeIdentity, mut socket: WebSocket) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let generation = self.inner.connections.add(node.id, tx);
        self.inner.metrics.connected(self.inner.connections.len());
        tracing::info!(node = %node.name, "node connected");
        if let Err(e) = self.mark_connected(node.id, true).await {
            tracing::warn!(node = %node.name, error = %e, "cannot record the connection");
        }
        let ping_every = Duration::from_secs(self.inner.config.heartbeat_secs.max(1));
        let mut ping = tokio::time::interval(ping_every);
        let mut closing = self.inner.closing.subscribe();
        loop {
            tokio::select! {
                _ = closing.changed() => break,
                incoming = socket.recv() => {
                    let text = match incoming {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                        Some(Ok(_)) => continue,
                    };
                    match serde_json::from_str::<NodeMessage>(&text) {
                        Ok(m) => {
                            if let Err(e) = self.on_message(&node, m).await {
                                tracing::warn!(node = %node.name, error = %e, "a node's message was not recorded");
                            }
                        }
                        Err(e) => tracing::warn!(node = %node.name, error = %e, "unreadable message from a node"),
                    }
                }
                Some(m) = rx.recv() => {
                    let text = serde_json::to_string(&m).unwrap_or_default();
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                _ = ping.tick() => {
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        break;
                    }
                }
            }
        }
        if self.inner.connections.remove(node.id, generation) {
            let _ = self.mark_connected(node.id, false).await;
        }
        self.inner.metrics.connected(self.inner.connections.len());
        tracing::info!(node = %node.name, "node disconnected");
    }

    async fn on_message(&self, node: &NodeIdentity, m: NodeMessage) -> Result<(), ServerError> {
        match m {
            NodeMessage::Hello {
                components,
                root_version,
            } => {
                let versions = serde_json::to_string(&components).unwrap_or_default();
                // Only a change is written: a fleet reconnecting after a server restart says
                // hello ten thousand times with what the database already holds, and a commit
                // that changes nothing costs no disk flush. (`last_seen` is the heartbeat's.)
                let changed =
                    sqlx::query("UPDATE node SET versions = $2 WHERE id = $1 AND versions <> $2")
                        .bind(node.id)
                        .bind(versions)
                        .execute(&self.inner.pool)
                        .await?;
                if changed.rows_affected() > 0 {
                    self.inner.writes.changed();
                }
                sqlx::query(
                    "UPDATE node SET root_version = $2 WHERE id = $1 AND root_version <> $2",
                )
                .bind(node.id)
                .bind(root_version as i64)
                .execute(&self.inner.pool)
                .await?;
                // The roots it lacks and the newest statement, before any install: an install
                // signed as a newer root asks would be refused without them.
                self.send_trust(node.id, root_version).await?;
                // What it was sent and has not finished, and what is due, goes (again) now.
                self.dispatch(Some(node.id)).await
            }
            NodeMessage::FellBack { components } => {
                tracing::error!(node = %node.name, ?components, "a node started on its standby");
                let mut w = self.write().await?;
                w.audit(
                    &format!("node:{}", node.name),
                    "node.fell-back",
                    &format!("node {}", node.name),
                    &serde_json::json!({ "components": components }),
                )
                .await?;
                w.commit().await
            }
            NodeMessage::TrustRefused { what, reason } => {
                tracing::warn!(node = %node.name, %what, %reason, "a node refused what it was sent");
                let mut w = self.write().await?;
                w.audit(
                    &format!("node:{}", node.name),
                    "trust.refused",
                    &what,
                    &serde_json::json!({ "reason": reason }),
                )
                .await?;
                w.commit().await
            }
            NodeMessage::Step {
                rollout,
                component,
                version,
                step,
            } => {
                self.inner.metrics.step(step.name());
                self.record_step(node, rollout, &component, &version, &step)
                    .await
            }
            NodeMessage::Samples { samples } => self.record_samples(node.id, &samples).await,
        }
    }

    async fn mark_connected(&self, node: i64, connected: bool) -> Result<(), ServerError> {
        let sql = if connected {
            "UPDATE node SET connected_to = $2, last_seen = $3 WHERE id = $1"
        } else {
            "UPDATE node SET connected_to = NULL, last_seen = $3 WHERE id = $1 AND connected_to = $2"
        };
        sqlx::query(sql)
            .bind(node)
            .bind(&self.inner.instance)
            .bind(now_ms())
            .execute(&self.inner.pool)
            .await?;
        self.inner.writes.changed();
        Ok(())
    }

    /// Sends every connected node (or only `only`) what is due: installs of running rollouts'
    /// current waves, installs sent before and not finished (when `only` names a node that just
    /// said hello), and rollback orders.
    pub(crate) async fn dispatch(&self, only: Option<i64>) -> Result<(), ServerError> {
        // One pass at a time, so a pending install is not sent twice by two passes.
        let _pass = self.inner.dispatching.lock().await;
        let rows = sqlx::query(
            "SELECT t.rollout_id, t.node_id, t.state, e.component, e.version, e.bundle_digest, e.size, r.state, t.wave, r.current_wave, r.reason \
             FROM rollout_target t JOIN rollout r ON r.id = t.rollout_id JOIN release e ON e.id = r.release_id \
             WHERE (t.state = 'pending' AND r.state = 'running' AND t.wave <= r.current_wave) \
                OR t.state = 'rollback-pending' \
                OR ($1 >= 0 AND t.node_id = $1 AND t.state IN ('sent', 'received', 'staged', 'testing', 'live', 'rollback-sent') \
                    AND r.state IN ('running', 'paused', 'halted', 'rolling-back'))",
        )
        .bind(only.unwrap_or(-1))
        .fetch_all(&self.inner.pool)
        .await?;
        // rollout id -> (new state, nodes sent to)
        let mut sent: HashMap<(i64, &'static str, &'static str), Vec<i64>> = HashMap::new();
        for row in &rows {
            let node: i64 = row.try_get(1)?;
            if only.is_some_and(|n| n != node) {
                continue;
            }
            let rollout: i64 = row.try_get(0)?;
            let state: String = row.try_get(2)?;
            let component: String = row.try_get(3)?;
            let version: String = row.try_get(4)?;
            let rollback = state.starts_with("rollback-");
            let message = if rollback {
                let reason: Option<String> = row.try_get(10)?;
                ServerMessage::Rollback {
                    rollout,
                    component,
                    version,
                    reason: reason.unwrap_or_else(|| format!("rollout {rollout} rolled back")),
                }
            } else {
                if !crate::rollouts::in_flight(&state) && state != "pending" {
                    continue;
                }
                let digest: String = row.try_get(5)?;
                ServerMessage::Install {
                    rollout,
                    component,
                    version,
                    bundle_path: format!("/api/v1/bundles/{digest}"),
                    bundle_digest: digest,
                    size: row.try_get::<i64, _>(6)? as u64,
                }
            };
            if !self.inner.connections.send(node, message) {
                continue;
            }
            match state.as_str() {
                "pending" => sent
                    .entry((rollout, "pending", "sent"))
                    .or_default()
                    .push(node),
                "rollback-pending" => sent
                    .entry((rollout, "rollback-pending", "rollback-sent"))
                    .or_default()
                    .push(node),
                _ => {}
            }
        }
        if sent.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut w = self.write().await?;
        for ((rollout, from, to), nodes) in &sent {
            for chunk in nodes.chunks(500) {
                let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
                // Ids are integers from the database, not input: formatting them in is safe.
                sqlx::query(&format!(
                    "UPDATE rollout_target SET state = $2, sent_at = $3, updated_at = $3 \
                     WHERE rollout_id = $1 AND state = $4 AND node_id IN ({})",
                    list.join(",")
                ))
                .bind(rollout)
                .bind(*to)
                .bind(now)
                .bind(*from)
                .execute(&mut *w.tx)
                .await?;
            }
            w.audit(
                "server",
                if *to == "sent" {
                    "rollout.sent"
                } else {
                    "rollout.rollback-sent"
                },
                &format!("rollout {rollout}"),
                &serde_json::json!({ "nodes": nodes.len() }),
            )
            .await?;
        }
        w.commit().await?;
        self.inner.metrics.pushed(sent.values().map(Vec::len).sum());
        Ok(())
    }

    /// Wakes this process's dispatcher and, on PostgreSQL, every other server process's.
    pub(crate) fn changed(&self) {
        self.inner.wake.notify_one();
        if self.inner.backend == Backend::Postgres {
            let pool = self.inner.pool.clone();
            tokio::spawn(async move {
                if let Err(e) = sqlx::query(&format!("NOTIFY {CHANNEL}"))
                    .execute(&pool)
                    .await
                {
                    tracing::warn!(error = %e, "cannot notify the other server processes");
                }
            });
        }
    }

    /// The dispatcher: runs on a change here or elsewhere, and every `dispatch_secs` anyway; also
    /// keeps this process's nodes' `last_seen` fresh.
    pub(crate) async fn run_dispatcher(self) {
        let every = Duration::from_millis(self.inner.config.dispatch_ms.max(50));
        let mut heartbeat =
            tokio::time::interval(Duration::from_secs(self.inner.config.heartbeat_secs.max(1)));
        let mut beats: u64 = 0;
        let mut statements =
            tokio::time::interval(Duration::from_secs(self.inner.config.statement_secs.max(1)));
        loop {
            tokio::select! {
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(every) => {}
                _ = statements.tick() => {
                    // Roots another process added, then a fresh statement for every node here.
                    if let Err(e) = self.sync_roots().await {
                        tracing::warn!(error = %e, "cannot read the roots of trust");
                    }
                    self.refresh_statement().await;
                    continue;
                }
                _ = heartbeat.tick() => {
                    if let Err(e) = self.touch_connected().await {
                        tracing::warn!(error = %e, "cannot refresh the connected nodes");
                    }
                    // Old traffic samples go about every hundred heartbeats (8 minutes at 5 s).
                    if beats.is_multiple_of(100) {
                        match self.prune_samples().await {
                            Ok(n) if n > 0 => tracing::debug!(samples = n, "old traffic samples forgotten"),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "cannot forget old traffic samples"),
                        }
                    }
                    beats += 1;
                    continue;
                }
            }
            if let Err(e) = self.dispatch(None).await {
                tracing::warn!(error = %e, "dispatch failed");
            }
        }
    }

    async fn touch_connected(&self) -> Result<(), ServerError> {
        let ids = self.inner.connections.ids();
        let now = now_ms();
        for chunk in ids.chunks(500) {
            let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
            sqlx::query(&format!(
                "UPDATE node SET last_seen = $1, connected_to = $2 WHERE id IN ({})",
                list.join(",")
            ))
            .bind(now)
            .bind(&self.inner.instance)
            .execute(&self.inner.pool)
            .await?;
        }
        Ok(())
    }

    /// On PostgreSQL: wakes the dispatcher whenever another server process says something changed.
    pub(crate) async fn listen(self, url: String) {
        loop {
            match sqlx::postgres::PgListener::connect(&url).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(CHANNEL).await {
                        tracing::warn!(error = %e, "cannot LISTEN");
                    } else {
                        while listener.recv().await.is_ok() {
                            self.inner.wake.notify_one();
                            // Another process changed the fleet: this one's consoles look again.
                            self.inner.writes.changed();
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot connect the LISTEN connection"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
