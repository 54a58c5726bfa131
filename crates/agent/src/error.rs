//! Why the agent could not start or carry out a request. An update that fails its checks is not
//! an error: it is an [`crate::Outcome`] with the reason.

/// Errors of the update agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent's thread has stopped; no update can be applied.
    #[error("the update agent has stopped")]
    Stopped,
    /// The version store failed.
    #[error(transparent)]
    Store(#[from] nonstop_store::StoreError),
    /// The runtime failed to load an installed version.
    #[error(transparent)]
    Runtime(#[from] nonstop_runtime::RuntimeError),
}
