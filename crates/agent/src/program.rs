//! Updates of the node program itself (issue 10): the same five steps as a rule module's, on a
//! whole `nonstop` executable. The agent verifies and stages it; whoever runs the program's
//! generations (the supervisor, crate `nonstop-program`, behind [`ProgramHost`]) starts the
//! staged copy as a second process that serves nobody, tests its running state, and hands it the
//! listening socket once it passes. The store records the new program live and the old standby;
//! the new program's agent watches it and, on failure, puts the standby back.

use std::path::Path;

/// The component name of the node program in bundles and in the version store.
pub const PROGRAM: &str = "node";

/// What the agent needs from whoever runs the program's generations.
pub trait ProgramHost: Send + Sync {
    /// The version of the program running in this process.
    fn running_version(&self) -> semver::Version;

    /// Starts `program` (`version`) as a candidate: a second process on a private loopback port,
    /// against the same data, holding its writes, serving nobody. Returns once it answers there,
    /// or why it did not (it exited, or did not answer within the time limit).
    fn start_candidate(&self, program: &Path, version: &semver::Version) -> Result<(), String>;

    /// Tests the running candidate against the preset requirements (its health, the API's
    /// contract, a replay of the live program's reads, its memory). `Ok` with what was checked.
    fn test_candidate(&self) -> Result<String, String>;

    /// Stops the candidate and forgets it.
    fn discard_candidate(&self);

    /// Hands the listening socket to the tested candidate. Once it accepts there, this process
    /// stops accepting, finishes what it serves and exits.
    fn hand_over(&self) -> Result<(), String>;

    /// Replaces this program, which failed its watch window, with the store's live one (the
    /// rollback is recorded in the store already): it starts, takes over, and this one exits.
    fn replace_with_live(&self, reason: &str) -> Result<(), String>;

    /// The new program passed its watch window: finish what had to wait until the program
    /// before it could no longer come back (the database's contract migrations). `Some` with
    /// what was done when that retires the standby program, `None` when nothing waited.
    fn settled(&self) -> Result<Option<String>, String>;

    /// Requests this program has answered, and of them those that failed (status 5xx other than
    /// a load-shedding 503): the watch window judges its error rate on these.
    fn counts(&self) -> (u64, u64);
}
