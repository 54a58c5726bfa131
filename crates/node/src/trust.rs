//! The node's root of trust, shared by the link (which receives new roots and statements from the
//! update server), the bundle verifier (which must see a rotation at once) and the API (which
//! shows it). Everything is kept by [`nonstop_trust::TrustHolder`] in `<data_dir>/trust/`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axum::Json;
use axum::extract::State;
use nonstop_bundle::{TrustedKeys, Verifier};
use nonstop_trust::{TrustHolder, TrustStatus};
use serde::Deserialize;
use time::OffsetDateTime;

/// `[trust_root]` in the node's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// A root of trust to start from (a file made with `nonstop trust`), used when the node holds
    /// none yet. Without one, the node trusts its trusted keys alone (each enough to sign) until
    /// its update server sends it a root those keys signed.
    pub file: Option<PathBuf>,
    /// A node that has heard no signed statement of what is current for longer than this says
    /// so in its status and metrics (someone may be holding back its updates).
    pub freshness_secs: u64,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            file: None,
            freshness_secs: 3600,
        }
    }
}

/// The node's trust: its holder and the verifier that must follow it.
pub struct NodeTrust {
    holder: Mutex<TrustHolder>,
    verifier: Verifier,
    freshness_secs: u64,
}

impl NodeTrust {
    /// Opens `<data_dir>/trust/` with `base` as the implicit root's keys and points `verifier`
    /// at the publisher keys the current root names.
    pub fn open(
        data_dir: &Path,
        base: &TrustedKeys,
        config: &TrustConfig,
        verifier: Verifier,
    ) -> Result<NodeTrust, String> {
        let initial = match &config.file {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?)
            }
            None => None,
        };
        let holder =
            TrustHolder::open(&data_dir.join("trust"), base, initial.as_deref()).map_err(|e| {
                format!(
                    "the root of trust in {}: {e}",
                    data_dir.join("trust").display()
                )
            })?;
        verifier.set_trusted(holder.release_keys());
        tracing::info!(root = holder.current().version(), "root of trust");
        Ok(NodeTrust {
            holder: Mutex::new(holder),
            verifier,
            freshness_secs: config.freshness_secs,
        })
    }

    /// The root version held.
    pub fn root_version(&self) -> u64 {
        self.holder.lock().expect("trust").current().version()
    }

    /// Accepts roots in order (those already held are skipped); the verifier trusts the newest
    /// at once. Returns whether anything changed, or the first refusal.
    pub fn accept_roots(&self, roots: &[String]) -> Result<bool, String> {
        let mut holder = self.holder.lock().expect("trust");
        let mut changed = false;
        let mut result = Ok(());
        for text in roots {
            match holder.accept_root(text.as_bytes()) {
                Ok(new) => changed |= new,
                Err(e) => {
                    result = Err(e.to_string());
                    break;
                }
            }
        }
        if changed {
            self.verifier.set_trusted(holder.release_keys());
            let revoked: Vec<String> = holder
                .revoked()
                .iter()
                .map(|r| r.key_id.to_string())
                .collect();
            tracing::info!(
                root = holder.current().version(),
                ?revoked,
                "accepted a new root of trust"
            );
        }
        result.map(|()| changed)
    }

    /// Accepts a statement of what is current.
    pub fn accept_statement(&self, text: &str) -> Result<bool, String> {
        self.holder
            .lock()
            .expect("trust")
            .accept_statement(text.as_bytes(), OffsetDateTime::now_utc())
            .map_err(|e| e.to_string())
    }

    /// The trust as the status shows it, now.
    pub fn status(&self) -> TrustStatus {
        self.holder
            .lock()
            .expect("trust")
            .status(OffsetDateTime::now_utc(), self.freshness_secs)
    }
}

/// `GET /api/v1/trust`: the root version, the publisher keys and threshold, revoked keys, and
/// whether a fresh statement of what is current has been heard. Public, like the certificate:
/// it holds nothing secret, and a monitor must read it without a staff account.
pub async fn serve(State(trust): State<std::sync::Arc<NodeTrust>>) -> Json<TrustStatus> {
    Json(trust.status())
}
