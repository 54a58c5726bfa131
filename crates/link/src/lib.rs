//! The link between a node and its update server. A node opens one WebSocket to the server
//! (outbound: hospitals sit behind firewalls), authenticated by the credential it got at
//! enrolment, and keeps it open. Both ends speak JSON text frames of the types here:
//!
//! - the node says [`NodeMessage::Hello`] with the versions it runs, then a
//!   [`NodeMessage::Step`] for every step of every update as it happens, and
//!   [`NodeMessage::Samples`] of its traffic (requests, errors, p99) every few seconds, so the
//!   server can show what each update cost;
//! - the server pushes [`ServerMessage::Install`] (fetch this bundle and install it),
//!   [`ServerMessage::Rollback`] (return this component to its standby), [`ServerMessage::Roots`]
//!   (the roots of trust newer than the node's, in order) and [`ServerMessage::Timestamp`] (a
//!   fresh signed statement of what is current); the node answers a root or statement it
//!   refuses with [`NodeMessage::TrustRefused`].
//!
//! *Not* here: transport, authentication, what either end does with a message.

#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

/// Path of the WebSocket on the update server.
pub const LINK_PATH: &str = "/api/v1/link";

/// One installed version of a component, as the node's version store has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// Semantic version.
    pub version: String,
    /// `sha256:<hex>` of its payload.
    pub digest: String,
}

/// What a node holds of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentVersions {
    /// The component (`fees`, `triage`, ...).
    pub component: String,
    /// Serving live traffic.
    pub live: Option<Installed>,
    /// Under test, never serving.
    pub candidate: Option<Installed>,
    /// The previous live version, kept for rollback.
    pub standby: Option<Installed>,
}

/// A message from a node to its server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum NodeMessage {
    /// First message on a stream, and again whenever its versions change.
    Hello {
        /// Every component the node's store holds.
        components: Vec<ComponentVersions>,
        /// The version of the root of trust the node holds (0: none, its trusted keys alone).
        #[serde(default)]
        root_version: u64,
    },
    /// Sent once after the first hello of a run: components that started on their standby
    /// because their live version was damaged or could not be loaded.
    FellBack {
        /// `component damaged -> live: reason`, one per component.
        components: Vec<String>,
    },
    /// The node refused a root of trust or a statement the server sent, and why.
    TrustRefused {
        /// `root` or `timestamp statement`.
        what: String,
        /// Why, as the node's trust holder said.
        reason: String,
    },
    /// One step of one update, sent as it happens.
    Step {
        /// The rollout that sent the update.
        rollout: i64,
        /// The component updated.
        component: String,
        /// The version it was updated to.
        version: String,
        /// What happened.
        step: Step,
    },
    /// Traffic samples, oldest first: one per interval, and those a closed link held back.
    Samples {
        /// The samples.
        samples: Vec<Sample>,
    },
}

/// The node's traffic over one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// End of the interval, milliseconds since the Unix epoch (the node's clock).
    pub at: i64,
    /// Length of the interval, milliseconds.
    pub ms: u64,
    /// HTTP requests answered in it.
    pub requests: u64,
    /// Of them, answered with a server error (5xx).
    pub errors: u64,
    /// 99th percentile of their latency, milliseconds (0 with no requests).
    pub p99_ms: f64,
}

/// One step of an update on a node, in the order they happen. The last one an update reports is
/// `healthy`, `rejected`, `refused`, `failed` or `rolled-back`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    /// The bundle was downloaded and its digest matched the release's.
    Received {
        /// Bytes downloaded.
        bytes: u64,
        /// How long the download took.
        ms: u64,
    },
    /// Verified (signature, digest, version) and staged as a candidate beside the live version.
    Staged,
    /// Checks 1 and 2 passed (compiles, exports its interface, test vectors); check 3 (shadow
    /// traffic) is running.
    Testing {
        /// Test vectors passed.
        vectors: usize,
    },
    /// Every check passed and the candidate is live; its watch window is open.
    Live {
        /// What check 3 saw: shadow calls, answers that differed, latency ratio, examples.
        shadow: Option<serde_json::Value>,
        /// From the push's arrival at the node to live.
        ms: u64,
    },
    /// The watch window closed with the version live and healthy: the update is done.
    Healthy {
        /// Live calls the window watched.
        calls: u64,
        /// Of them, failed (answered by the standby).
        failures: u64,
    },
    /// A check failed; the candidate was set aside and the live version never changed.
    Rejected {
        /// Which check, and why.
        reason: String,
    },
    /// The bundle was refused before staging (signature, digest, limits, version).
    Refused {
        /// Why.
        reason: String,
    },
    /// The version went live and was rolled back to the standby (by its watch window, or by the
    /// server's order).
    RolledBack {
        /// Why.
        reason: String,
    },
    /// The update could not be carried out (download failed, the agent stopped); the live
    /// version never changed.
    Failed {
        /// Why.
        reason: String,
    },
}

impl Step {
    /// The step's wire name, as the server records it (`received`, `staged`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Step::Received { .. } => "received",
            Step::Staged => "staged",
            Step::Testing { .. } => "testing",
            Step::Live { .. } => "live",
            Step::Healthy { .. } => "healthy",
            Step::Rejected { .. } => "rejected",
            Step::Refused { .. } => "refused",
            Step::RolledBack { .. } => "rolled-back",
            Step::Failed { .. } => "failed",
        }
    }

    /// Whether the update ended with this step.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Step::Healthy { .. }
                | Step::Rejected { .. }
                | Step::Refused { .. }
                | Step::RolledBack { .. }
                | Step::Failed { .. }
        )
    }
}

/// A message from the server to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMessage {
    /// Fetch this release's bundle (`GET {bundle_path}` with the node's credential; `Range` to
    /// resume) and install it.
    Install {
        /// The rollout this is part of; the node reports its steps under it.
        rollout: i64,
        /// The component.
        component: String,
        /// The version.
        version: String,
        /// `sha256:<hex>` of the whole bundle file: checked before the agent sees it.
        bundle_digest: String,
        /// The bundle's size in bytes.
        size: u64,
        /// Where to fetch it on the server.
        bundle_path: String,
    },
    /// Return `component` to its standby (an operator rolled the rollout back); the node's
    /// store records `reason`.
    Rollback {
        /// The rollout being rolled back.
        rollout: i64,
        /// The component.
        component: String,
        /// The version being rolled back: a node whose live version is another one leaves it.
        version: String,
        /// Why, as the operator gave it.
        reason: String,
    },
    /// Roots of trust newer than the one the node said it holds, oldest first, as files
    /// (`nonstop trust`): the node accepts each only if the one before signed it.
    Roots {
        /// The root files' text.
        roots: Vec<String>,
    },
    /// A signed statement of what is current, sent on connecting and every few minutes.
    Timestamp {
        /// The statement file's text.
        statement: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_use_their_wire_names() {
        let m = NodeMessage::Step {
            rollout: 3,
            component: "fees".into(),
            version: "2.0.0".into(),
            step: Step::RolledBack {
                reason: "watch window".into(),
            },
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            r#"{"type":"step","rollout":3,"component":"fees","version":"2.0.0","step":{"step":"rolled-back","reason":"watch window"}}"#
        );
        assert_eq!(serde_json::from_str::<NodeMessage>(&text).unwrap(), m);
    }
}
