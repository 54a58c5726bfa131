//! The root of trust: which publisher keys a node accepts bundles from and how many of them must
//! sign one (k of n), how those keys are rotated and revoked, and how a node knows it is not
//! being kept from its updates. Learnt from TUF (The Update Framework):
//!
//! - a [`Root`] lists the keys and, per role, which of them must sign and how many: `root`
//!   (signs the next root; kept offline), `release` (the publishers, signing bundles) and
//!   `timestamp` (the update server's online key);
//! - a root is replaced only by the next version, signed by the threshold of the current root's
//!   `root` keys and of its own ([`Root::successor`]); the update server carries new roots to
//!   its nodes, which accept them in order however long they were offline; a key a new root
//!   leaves out is revoked, and every bundle it signed is refused from then on, however old;
//! - a [`Statement`], signed with the timestamp key, says what is current; a holder keeps the
//!   newest, refuses an older or expired one (replay), and reports when it has heard none fresh
//!   within its configured time (a freeze attack) ([`TrustHolder::freshness`]).
//!
//! [`TrustHolder`] keeps all of it on disk. What it trusts reaches the bundle verifier as
//! [`nonstop_bundle::TrustedKeys`] ([`TrustHolder::release_keys`]).

#![deny(missing_docs)]

mod envelope;
mod error;
mod holder;
mod root;
mod statement;

pub use error::TrustError;
pub use holder::{Freshness, Revoked, TrustHolder, TrustStatus};
pub use root::{MAX_ROOT_BYTES, Role, Roles, Root, RootBody, RootDraft};
pub use statement::{CurrentRelease, MAX_STATEMENT_BYTES, Statement, StatementBody};
