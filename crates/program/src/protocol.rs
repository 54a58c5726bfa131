//! What the supervisor and a program generation say to each other: one JSON object per line on
//! a Unix socket pair the supervisor makes for each generation (its end in the generation is the
//! file descriptor [`CONTROL_FD`]).

use serde::{Deserialize, Serialize};

/// The generation's end of its control socket.
pub const CONTROL_FD: i32 = 3;
/// The listening socket the hospital's clients connect to, shared by every generation.
pub const LISTEN_FD: i32 = 4;
/// A candidate's private loopback socket, where it is tested.
pub const PRIVATE_FD: i32 = 5;
/// Set in a generation's environment when the supervisor started it after putting the standby
/// program back: why (the node reports it to its update server).
pub const FELL_BACK_ENV: &str = "NONSTOP_PROGRAM_FELL_BACK";
/// Set in a generation's environment: the version the version store records for the program it
/// runs (absent for the program installed on disk).
pub const VERSION_ENV: &str = "NONSTOP_PROGRAM_VERSION";

/// From a generation to the supervisor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToSupervisor {
    /// Serving at `addr`: a candidate on its private socket, a live generation on the shared one.
    Serving {
        /// The address it answers on.
        addr: String,
    },
    /// Start this program as a candidate (the live generation asks, from its update agent).
    StartCandidate {
        /// The staged executable.
        program: String,
        /// Its version.
        version: semver::Version,
    },
    /// Stop the candidate: it failed its checks.
    DiscardCandidate,
    /// Give the shared socket to the tested candidate, then drain the asking generation.
    HandOver {
        /// What the asking generation hands the next one to start warm (the tokens it has
        /// verified), passed on as it is.
        warm: serde_json::Value,
    },
    /// The asking generation failed its watch window and the store has the standby live again:
    /// start that, give it the socket, then drain the asking one.
    ReplaceWithLive {
        /// Why.
        reason: String,
        /// As in `HandOver`.
        warm: serde_json::Value,
    },
}

/// From the supervisor to a generation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToGeneration {
    /// The candidate serves on its private address.
    CandidateServing {
        /// Where to test it.
        addr: String,
        /// Its process id (its memory is read from `/proc`).
        pid: u32,
    },
    /// The candidate did not come up.
    CandidateFailed {
        /// Why: how it exited, or that it did not answer in time, with its last words.
        reason: String,
    },
    /// The other generation accepts on the shared socket now (answer to `HandOver` and
    /// `ReplaceWithLive`); a `Drain` follows.
    HandedOver,
    /// The handover did not happen; the asking generation keeps serving.
    HandOverFailed {
        /// Why.
        reason: String,
    },
    /// To a candidate: start accepting on the shared socket, take writes, become live.
    Accept {
        /// What the generation before handed over (see `ToSupervisor::HandOver`).
        warm: serde_json::Value,
    },
    /// To the old generation: stop accepting, finish what is in flight, exit.
    Drain,
}
