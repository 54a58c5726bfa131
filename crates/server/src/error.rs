//! Every way an update server operation can fail, each naming what was wrong.

/// Why an update server operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The database's schema could not be brought up to date.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A bundle was refused (signature, key, digest, limits, version).
    #[error("bundle refused: {0}")]
    Bundle(#[from] nonstop_bundle::BundleError),
    /// A field of a request is not valid.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The thing named does not exist.
    #[error("{what} {name} does not exist")]
    NotFound {
        /// What kind of thing (release, node, rollout...).
        what: &'static str,
        /// Its name or id.
        name: String,
    },
    /// It exists already, or the request conflicts with its state.
    #[error("{0}")]
    Conflict(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Valid credentials whose role may not do this.
    #[error("role {role} may not {action}")]
    Forbidden {
        /// The caller's role.
        role: String,
        /// What was asked.
        action: String,
    },
    /// A file of the server's data directory.
    #[error("{0}")]
    Io(String),
}

impl ServerError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ServerError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn not_found(what: &'static str, name: impl ToString) -> Self {
        ServerError::NotFound {
            what,
            name: name.to_string(),
        }
    }
}
