//! Rollouts: a release sent to a set of nodes in waves (say one canary, then 25% of the fleet,
//! then the rest). A wave starts only when every node of the waves before reports the version
//! live and its watch window closed healthy; a node that rejects, refuses or rolls back the
//! release halts the rollout, naming the node and why. An operator can pause, resume, abort, or
//! roll the rollout back (each node that took it returns to its standby).
//!
//! All of it is rows in the database, so any server process can drive any node; the fleet
//! ([`crate::fleet`]) sends what these rows say is due.

use nonstop_link::Step;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::auth::NodeIdentity;
use crate::db::now_ms;
use crate::{Server, ServerError};

/// A rollout's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    /// Waves go out as the ones before them finish.
    Running,
    /// No new node is sent the release; updates under way finish.
    Paused,
    /// A node rejected, refused or rolled back the release; nothing more is sent.
    Halted,
    /// Stopped by an operator; nodes that took the release keep it.
    Aborted,
    /// Every node runs the release, healthy.
    Completed,
    /// Nodes that took the release are returning to their standby.
    RollingBack,
    /// Every node that took the release has returned to its standby.
    RolledBack,
}

impl RolloutState {
    fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Halted => "halted",
            RolloutState::Aborted => "aborted",
            RolloutState::Completed => "completed",
            RolloutState::RollingBack => "rolling-back",
            RolloutState::RolledBack => "rolled-back",
        }
    }

    fn parse(s: &str) -> Result<Self, ServerError> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| ServerError::Io(format!("unknown rollout state {s:?} in the database")))
    }
}

/// Which nodes a rollout goes to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Targets {
    /// Every enrolled node.
    All,
    /// The nodes of one group.
    Group(String),
    /// These nodes, in this order (the first ones are the canaries).
    Nodes(Vec<String>),
}

/// A request to start a rollout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRollout {
    /// The release: its id or `component@version`.
    pub release: String,
    /// Which nodes.
    pub targets: Targets,
    /// The waves, cumulative: a count of nodes (`1`), a share of the targets (`25%`), or `rest`.
    /// Default `1,25%,rest`.
    #[serde(default)]
    pub waves: Option<String>,
}

/// Splits `total` targets into waves by `plan` (see [`NewRollout::waves`]); returns each wave's
/// size, empty waves left out.
pub fn plan_waves(plan: &str, total: usize) -> Result<Vec<usize>, ServerError> {
    let mut sizes = Vec::new();
    let mut done = 0usize;
    for item in plan.split(',').map(str::trim) {
        let upto = if item == "rest" || item == "all" {
            total
        } else if let Some(p) = item.strip_suffix('%') {
            let p: f64 = p
                .parse()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| {
                    ServerError::invalid(
                        "waves",
                        format!("{item:?} is not a share from 0% to 100%"),
                    )
                })?;
            (total as f64 * p / 100.0).ceil() as usize
        } else {
            item.parse::<usize>().map_err(|_| {
                ServerError::invalid(
                    "waves",
                    format!("{item:?} is not a count, a share (25%) or rest"),
                )
            })?
        }
        .min(total);
        if upto > done {
            sizes.push(upto - done);
            done = upto;
        }
    }
    if done < total {
        sizes.push(total - done);
    }
    Ok(sizes)
}

/// One node of a rollout.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The node.
    pub node: String,
    /// Its wave, from 0.
    pub wave: i64,
    /// `pending`, `sent`, then the node's steps (`received`, `staged`, `testing`, `live`,
    /// `healthy`, `rejected`, `refused`, `failed`, `rolled-back`), or `skipped`,
    /// `rollback-pending`, `rollback-sent`.
    pub state: String,
    /// The node's last report, as it sent it.
    pub detail: Option<serde_json::Value>,
    /// From the push arriving at the node to live, as the node measured it.
    pub live_ms: Option<i64>,
    /// Last change, milliseconds since the Unix epoch.
    pub updated_at: i64,
}

/// A rollout and its nodes.
#[derive(Debug, Clone, Serialize)]
pub struct Rollout {
    /// Its id.
    pub id: i64,
    /// The release's id.
    pub release: i64,
    /// Its component.
    pub component: String,
    /// Its version.
    pub version: String,
    /// The state.
    pub state: RolloutState,
    /// The wave under way, from 0.
    pub current_wave: i64,
    /// How many waves.
    pub waves: i64,
    /// The plan it was started with.
    pub wave_plan: String,
    /// Why it halted, was aborted or rolled back.
    pub reason: Option<String>,
    /// Who started it.
    pub created_by: String,
    /// When.
    pub created_at: i64,
    /// Its nodes, by wave.
    pub targets: Vec<Target>,
}

const STEP_STATES: [&str; 5] = ["received", "staged", "testing", "live", "sent"];

impl Server {
    /// Starts a rollout; the first wave is sent at once.
    pub async fn start_rollout(&self, actor: &str, r: &NewRollout) -> Result<Rollout, ServerError> {
        let release = self.find_release(&r.release).await?;
        // Published under an earlier root, it must still be signed as the current root asks
        // (a revoked publisher key, a higher threshold): nodes would refuse it anyway.
        let bytes = self.bundle_bytes(&release.bundle_digest).await?;
        nonstop_bundle::Verifier::new(
            self.inner.trust.release_keys(),
            self.inner.config.bundle_limits.clone(),
        )
        .open(&bytes, None)?;
        let plan = r.waves.clone().unwrap_or_else(|| "1,25%,rest".into());
        let mut w = self.write().await?;
        let nodes: Vec<(i64, String)> = match &r.targets {
            Targets::All => {
                sqlx::query_as("SELECT id, name FROM node ORDER BY name")
                    .fetch_all(&mut *w.tx)
                    .await?
            }
            Targets::Group(g) => {
                sqlx::query_as("SELECT id, name FROM node WHERE node_group = $1 ORDER BY name")
                    .bind(g)
                    .fetch_all(&mut *w.tx)
                    .await?
            }
            Targets::Nodes(names) => {
                let mut out = Vec::new();
                for name in names {
                    let row: Option<(i64, String)> =
                        sqlx::query_as("SELECT id, name FROM node WHERE name = $1")
                            .bind(name)
                            .fetch_optional(&mut *w.tx)
                            .await?;
                    out.push(row.ok_or_else(|| ServerError::not_found("node", name))?);
                }
                out
            }
        };
        if nodes.is_empty() {
            return Err(ServerError::invalid("targets", "no node matches"));
        }
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM rollout r JOIN release e ON e.id = r.release_id \
             WHERE e.component = $1 AND r.state IN ('running', 'paused', 'rolling-back')",
        )
        .bind(&release.component)
        .fetch_one(&mut *w.tx)
        .await?;
        if active > 0 {
            return Err(ServerError::Conflict(format!(
                "a rollout of {} is under way: finish, abort or roll it back first",
                release.component
            )));
        }
        let sizes = plan_waves(&plan, nodes.len())?;
        let now = now_ms();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO rollout (release_id, state, current_wave, waves, wave_plan, created_by, created_at, updated_at) \
             VALUES ($1, 'running', 0, $2, $3, $4, $5, $5) RETURNING id",
        )
        .bind(release.id)
        .bind(sizes.len() as i64)
        .bind(&plan)
        .bind(actor)
        .bind(now)
        .fetch_one(&mut *w.tx)
        .await?;
        let mut next = nodes.iter();
        let mut waves = Vec::new();
        let mut rows: Vec<(i64, i64)> = Vec::with_capacity(nodes.len());
        for (wave, size) in sizes.iter().enumerate() {
            let mut names = Vec::new();
            for (node, name) in next.by_ref().take(*size) {
                rows.push((*node, wave as i64));
                names.push(name.clone());
            }
            waves.push(names);
        }
        // Many rows per statement (200: 402 parameters, under SQLite's oldest limit of 999), so
        // a rollout to ten thousand nodes is fifty statements, not ten thousand.
        for chunk in rows.chunks(200) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("($1, ${}, ${}, 'pending', $2)", 3 + 2 * i, 4 + 2 * i))
                .collect();
            let sql = format!(
                "INSERT INTO rollout_target (rollout_id, node_id, wave, state, updated_at) VALUES {}",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(id).bind(now);
            for (node, wave) in chunk {
                q = q.bind(*node).bind(*wave);
            }
            q.execute(&mut *w.tx).await?;
        }
        w.audit(
            actor,
            "rollout.started",
            &format!("rollout {id}"),
            &serde_json::json!({"release": format!("{}@{}", release.component, release.version), "bundle_digest": release.bundle_digest, "waves": waves}),
        )
        .await?;
        w.commit().await?;
        tracing::info!(rollout = id, component = %release.component, version = %release.version, waves = sizes.len(), "rollout started");
        self.changed();
        self.rollout(id).await
    }

    /// One rollout with its nodes.
    pub async fn rollout(&self, id: i64) -> Result<Rollout, ServerError> {
        let row = sqlx::query(
            "SELECT r.id, r.release_id, e.component, e.version, r.state, r.current_wave, r.waves, r.wave_plan, r.reason, r.created_by, r.created_at \
             FROM rollout r JOIN release e ON e.id = r.release_id WHERE r.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.inner.pool)
        .await?
        .ok_or_else(|| ServerError::not_found("rollout", id))?;
        let targets = sqlx::query(
            "SELECT n.name, t.wave, t.state, t.detail, t.live_ms, t.updated_at FROM rollout_target t \
             JOIN node n ON n.id = t.node_id WHERE t.rollout_id = $1 ORDER BY t.wave, n.name",
        )
        .bind(id)
        .fetch_all(&self.inner.pool)
        .await?
        .iter()
        .map(|t| {
            let detail: Option<String> = t.try_get(3)?;
            Ok(Target {
                node: t.try_get(0)?,
                wave: t.try_get(1)?,
                state: t.try_get(2)?,
                detail: detail.and_then(|d| serde_json::from_str(&d).ok()),
                live_ms: t.try_get(4)?,
                updated_at: t.try_get(5)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let state: String = row.try_get(4)?;
        Ok(Rollout {
            id: row.try_get(0)?,
            release: row.try_get(1)?,
            component: row.try_get(2)?,
            version: row.try_get(3)?,
            state: RolloutState::parse(&state)?,
            current_wave: row.try_get(5)?,
            waves: row.try_get(6)?,
            wave_plan: row.try_get(7)?,
            reason: row.try_get(8)?,
            created_by: row.try_get(9)?,
            created_at: row.try_get(10)?,
            targets,
        })
    }

    /// Every rollout's id, newest first.
    pub async fn rollout_ids(&self) -> Result<Vec<i64>, ServerError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM rollout ORDER BY id DESC")
                .fetch_all(&self.inner.pool)
                .await?,
        )
    }

    /// Pause, resume, abort or roll back a rollout, by an operator.
    pub async fn rollout_action(
        &self,
        actor: &str,
        id: i64,
        action: RolloutAction,
        reason: &str,
    ) -> Result<Rollout, ServerError> {
        let mut w = self.write().await?;
        let state: Option<String> = sqlx::query_scalar("SELECT state FROM rollout WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *w.tx)
            .await?;
        let state =
            RolloutState::parse(&state.ok_or_else(|| ServerError::not_found("rollout", id))?)?;
        use RolloutState as S;
        let new = match (action, state) {
            (RolloutAction::Pause, S::Running) => S::Paused,
            (RolloutAction::Resume, S::Paused) => S::Running,
            (RolloutAction::Abort, S::Running | S::Paused | S::Halted) => S::Aborted,
            (
                RolloutAction::Rollback,
                S::Running | S::Paused | S::Halted | S::Aborted | S::Completed,
            ) => S::RollingBack,
            (action, state) => {
                return Err(ServerError::Conflict(format!(
                    "a {} rollout cannot be {}",
                    state.as_str(),
                    action.past()
                )));
            }
        };
        let now = now_ms();
        match new {
            S::Aborted => {
                sqlx::query("UPDATE rollout_target SET state = 'skipped', updated_at = $2 WHERE rollout_id = $1 AND state = 'pending'")
                    .bind(id)
                    .bind(now)
                    .execute(&mut *w.tx)
                    .await?;
            }
            S::RollingBack => {
                sqlx::query("UPDATE rollout_target SET state = 'skipped', updated_at = $2 WHERE rollout_id = $1 AND state = 'pending'")
                    .bind(id)
                    .bind(now)
                    .execute(&mut *w.tx)
                    .await?;
                // Every node that was sent the release is told to return to its standby; one
                // where it never went live says so and changes nothing.
                sqlx::query(
                    "UPDATE rollout_target SET state = 'rollback-pending', updated_at = $2 WHERE rollout_id = $1 \
                     AND state IN ('sent', 'received', 'staged', 'testing', 'live', 'healthy')",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *w.tx)
                .await?;
            }
            _ => {}
        }
        sqlx::query("UPDATE rollout SET state = $2, reason = COALESCE($3, reason), updated_at = $4 WHERE id = $1")
            .bind(id)
            .bind(new.as_str())
            .bind((!reason.is_empty()).then(|| reason.to_owned()))
            .bind(now)
            .execute(&mut *w.tx)
            .await?;
        w.audit(
            actor,
            &format!("rollout.{}", action.past()),
            &format!("rollout {id}"),
            &serde_json::json!({"from": state, "to": new, "reason": reason}),
        )
        .await?;
        if new == S::Running {
            // Waves that finished while it was paused move on now.
            let row = sqlx::query("SELECT current_wave, waves FROM rollout WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *w.tx)
                .await?;
            advance(&mut w, id, row.try_get(0)?, row.try_get(1)?, now).await?;
        }
        finish_rolling_back(&mut w, id).await?;
        w.commit().await?;
        tracing::info!(
            rollout = id,
            action = action.past(),
            "rollout changed by an operator"
        );
        self.changed();
        self.rollout(id).await
    }

    /// Records a step a node reported, and moves the rollout on: the next wave once this one is
    /// healthy, a halt when a node did not take the release.
    pub async fn record_step(
        &self,
        node: &NodeIdentity,
        rollout: i64,
        component: &str,
        version: &str,
        step: &Step,
    ) -> Result<(), ServerError> {
        let mut w = self.write().await?;
        let row = sqlx::query(
            "SELECT t.state, r.state, r.current_wave, r.waves, e.component, e.version FROM rollout_target t \
             JOIN rollout r ON r.id = t.rollout_id JOIN release e ON e.id = r.release_id \
             WHERE t.rollout_id = $1 AND t.node_id = $2",
        )
        .bind(rollout)
        .bind(node.id)
        .fetch_optional(&mut *w.tx)
        .await?;
        let Some(row) = row else {
            return Err(ServerError::not_found(
                "rollout target",
                format!("{rollout}/{}", node.name),
            ));
        };
        let (target_state, rollout_state): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        let (current_wave, waves): (i64, i64) = (row.try_get(2)?, row.try_get(3)?);
        if row.try_get::<String, _>(4)? != component || row.try_get::<String, _>(5)? != version {
            return Err(ServerError::invalid(
                "step",
                "names another release than its rollout's",
            ));
        }
        let rollout_state = RolloutState::parse(&rollout_state)?;
        let now = now_ms();
        let detail = serde_json::to_value(step).unwrap_or_default();
        let live_ms = match step {
            Step::Live { ms, .. } => Some(*ms as i64),
            _ => None,
        };
        // A late step of an install under way does not undo a rollback order already queued.
        let rolling_back = target_state.starts_with("rollback-");
        let new_state =
            if rolling_back && !matches!(step, Step::RolledBack { .. } | Step::Failed { .. }) {
                target_state.clone()
            } else {
                step.name().to_owned()
            };
        sqlx::query(
            "UPDATE rollout_target SET state = $3, detail = $4, live_ms = COALESCE($5, live_ms), updated_at = $6 \
             WHERE rollout_id = $1 AND node_id = $2",
        )
        .bind(rollout)
        .bind(node.id)
        .bind(&new_state)
        .bind(detail.to_string())
        .bind(live_ms)
        .bind(now)
        .execute(&mut *w.tx)
        .await?;
        w.audit(
            &format!("node:{}", node.name),
            "node.step",
            &format!("rollout {rollout}"),
            &serde_json::json!({"component": component, "version": version, "from": target_state, "report": detail}),
        )
        .await?;
        let did_not_take = matches!(
            step,
            Step::Rejected { .. }
                | Step::Refused { .. }
                | Step::Failed { .. }
                | Step::RolledBack { .. }
        );
        if did_not_take && matches!(rollout_state, RolloutState::Running | RolloutState::Paused) {
            let why = match step {
                Step::Rejected { reason }
                | Step::Refused { reason }
                | Step::Failed { reason }
                | Step::RolledBack { reason } => reason.as_str(),
                _ => "",
            };
            let reason = format!("node {}: {}: {why}", node.name, step.name());
            sqlx::query(
                "UPDATE rollout SET state = 'halted', reason = $2, updated_at = $3 WHERE id = $1",
            )
            .bind(rollout)
            .bind(&reason)
            .bind(now)
            .execute(&mut *w.tx)
            .await?;
            w.audit(
                "server",
                "rollout.halted",
                &format!("rollout {rollout}"),
                &serde_json::json!({"reason": reason}),
            )
            .await?;
            tracing::warn!(rollout, node = %node.name, %reason, "rollout halted");
        } else if matches!(step, Step::Healthy { .. }) && rollout_state == RolloutState::Running {
            advance(&mut w, rollout, current_wave, waves, now).await?;
        }
        if rollout_state == RolloutState::RollingBack {
            finish_rolling_back(&mut w, rollout).await?;
        }
        w.commit().await?;
        self.changed();
        Ok(())
    }
}

/// Starts the next wave(s) while every node of the waves so far is healthy; completes the rollout
/// after the last.
async fn advance(
    w: &mut crate::db::Write<'_>,
    rollout: i64,
    mut current: i64,
    waves: i64,
    now: i64,
) -> Result<(), ServerError> {
    loop {
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM rollout_target WHERE rollout_id = $1 AND wave <= $2 AND state <> 'healthy'",
        )
        .bind(rollout)
        .bind(current)
        .fetch_one(&mut *w.tx)
        .await?;
        if unfinished > 0 {
            return Ok(());
        }
        current += 1;
        if current >= waves {
            sqlx::query("UPDATE rollout SET state = 'completed', current_wave = $2, updated_at = $3 WHERE id = $1")
                .bind(rollout)
                .bind(waves - 1)
                .bind(now)
                .execute(&mut *w.tx)
                .await?;
            w.audit(
                "server",
                "rollout.completed",
                &format!("rollout {rollout}"),
                &serde_json::json!({}),
            )
            .await?;
            tracing::info!(rollout, "rollout completed");
            return Ok(());
        }
        sqlx::query("UPDATE rollout SET current_wave = $2, updated_at = $3 WHERE id = $1")
            .bind(rollout)
            .bind(current)
            .bind(now)
            .execute(&mut *w.tx)
            .await?;
        w.audit(
            "server",
            "rollout.wave",
            &format!("rollout {rollout}"),
            &serde_json::json!({"wave": current}),
        )
        .await?;
        tracing::info!(rollout, wave = current, "next wave");
    }
}

/// A rolling-back rollout is rolled back once no node has a rollback order outstanding.
async fn finish_rolling_back(
    w: &mut crate::db::Write<'_>,
    rollout: i64,
) -> Result<(), ServerError> {
    let state: String = sqlx::query_scalar("SELECT state FROM rollout WHERE id = $1")
        .bind(rollout)
        .fetch_one(&mut *w.tx)
        .await?;
    if state != "rolling-back" {
        return Ok(());
    }
    let outstanding: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM rollout_target WHERE rollout_id = $1 AND state IN ('rollback-pending', 'rollback-sent')",
    )
    .bind(rollout)
    .fetch_one(&mut *w.tx)
    .await?;
    if outstanding == 0 {
        sqlx::query("UPDATE rollout SET state = 'rolled-back', updated_at = $2 WHERE id = $1")
            .bind(rollout)
            .bind(now_ms())
            .execute(&mut *w.tx)
            .await?;
        w.audit(
            "server",
            "rollout.rolled-back",
            &format!("rollout {rollout}"),
            &serde_json::json!({}),
        )
        .await?;
    }
    Ok(())
}

/// What an operator can do to a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutAction {
    /// Send no more nodes the release.
    Pause,
    /// Go on after a pause.
    Resume,
    /// Stop for good; nodes keep what they took.
    Abort,
    /// Return every node that took it to its standby.
    Rollback,
}

impl RolloutAction {
    fn past(self) -> &'static str {
        match self {
            RolloutAction::Pause => "paused",
            RolloutAction::Resume => "resumed",
            RolloutAction::Abort => "aborted",
            RolloutAction::Rollback => "rolled-back",
        }
    }
}

/// States in which a node has been sent the release and not yet finished with it: sent again
/// when the node reconnects.
pub(crate) fn in_flight(state: &str) -> bool {
    STEP_STATES.contains(&state)
}

#[cfg(test)]
mod tests {
    use super::plan_waves;

    #[test]
    fn waves_are_cumulative_and_never_empty() {
        assert_eq!(plan_waves("1,25%,rest", 3).unwrap(), vec![1, 2]);
        assert_eq!(plan_waves("1,25%,rest", 20).unwrap(), vec![1, 4, 15]);
        assert_eq!(plan_waves("1,25%,rest", 1).unwrap(), vec![1]);
        assert_eq!(plan_waves("2", 5).unwrap(), vec![2, 3]);
        assert_eq!(plan_waves("100%", 4).unwrap(), vec![4]);
        assert!(plan_waves("1,x", 4).is_err());
        assert!(plan_waves("150%", 4).is_err());
    }
}
