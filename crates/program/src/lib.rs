//! Updates of the node program itself, while it serves (issue 10): the patent's five steps on a
//! whole `nonstop` executable instead of a rule module.
//!
//! - [`supervisor`]: the small process that owns the listening socket across program
//!   generations, starts candidates, hands the socket over, and puts the standby back when a new
//!   program crashes in its watch window.
//! - [`generation`]: a generation's side: the sockets it was handed, its control channel, and
//!   the [`nonstop_agent::ProgramHost`] its update agent drives.
//! - [`checks`]: the preset requirements a candidate must meet (health, contract, shadow
//!   replay, memory); [`sample`]: the live program's reads kept for that replay.
//! - [`protocol`]: what the supervisor and a generation say to each other.

#![deny(missing_docs)]

pub mod checks;
pub mod generation;
pub mod protocol;
pub mod sample;
pub mod supervisor;

pub use checks::ProgramChecks;
pub use generation::{Control, Handed, Hooks, Role, SupervisedHost};
pub use sample::Sample;
pub use supervisor::{StopHandle, SupervisorConfig, supervise};
