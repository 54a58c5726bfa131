//! Live rule modules: the hospital's frequently changing rules (fees, insurance split, triage
//! order, registration quota) as WebAssembly components, hot-swapped in-process while the node
//! keeps serving.
//!
//! - [`RuleEngine`]: the node's one wasmtime engine (pooling allocator, epoch deadlines, memory
//!   limit, compiled-code cache in the version store).
//! - [`LoadedVersion`]: one compiled version with warm instances and call counters.
//! - [`LiveModule`]: the live handle; a swap is one atomic pointer store and no call fails
//!   because of it.
//! - [`checks`]: the candidate checks that must pass before a version goes live.
//! - [`Rules`] / [`RuleSlot`]: the four handles, driven by name by the update agent.

#![deny(missing_docs)]

pub mod checks;
mod config;
mod engine;
mod error;
mod live;
mod module;
pub mod rules;
mod slot;

pub use config::{CheckConfig, RuntimeConfig};
pub use engine::{RuleEngine, Sandbox};
pub use error::{CallFailure, RuntimeError};
pub use live::{Answer, LiveModule};
pub use module::{CallCounts, CallStats, HeldInstance, LoadedVersion, VersionTag};
pub use rules::{Fees, Insurance, Quota, RuleKind, Triage};
pub use slot::{RuleSlot, Rules};
