//! Who may talk to the server: operators (people, with roles and tokens) and nodes (with the
//! credential they got for their one-time enrolment token).
//!
//! Passwords are stored as argon2 hashes. Tokens, enrolment tokens and node credentials are 32
//! random bytes: guessing one is as hard as finding a SHA-256 preimage, so they are stored as
//! their SHA-256 (a slow hash would protect nothing more and cost every request tens of ms).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::now_ms;
use crate::{Server, ServerError};

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperatorRole {
    /// Everything, including operator accounts.
    Admin,
    /// Publishes releases.
    Publisher,
    /// Enrols nodes and runs rollouts.
    Operator,
    /// Reads status and the audit log, changes nothing.
    Auditor,
}

impl OperatorRole {
    /// The role's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Admin => "admin",
            OperatorRole::Publisher => "publisher",
            OperatorRole::Operator => "operator",
            OperatorRole::Auditor => "auditor",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
    }
}

/// Who made a request: an operator, with their role.
#[derive(Debug, Clone)]
pub struct Operator {
    /// Username.
    pub username: String,
    /// Role.
    pub role: OperatorRole,
}

impl Operator {
    /// The actor name the audit log gives them.
    pub fn actor(&self) -> String {
        format!("operator:{}", self.username)
    }

    /// Ok if their role is one of `roles`.
    pub fn allow(&self, roles: &[OperatorRole], action: &str) -> Result<(), ServerError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ServerError::Forbidden {
                role: self.role.as_str().into(),
                action: action.into(),
            })
        }
    }
}

/// A node, as its credential names it.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// The node's id.
    pub id: i64,
    /// Its name.
    pub name: String,
}

/// A random secret of 32 bytes, hex.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub(crate) fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn hash_password(password: &str) -> Result<String, ServerError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServerError::invalid("password", e.to_string()))
}

/// The smallest password the server accepts.
pub const MIN_PASSWORD_CHARS: usize = 12;

impl Server {
    /// Whether any operator exists (a new server creates its first administrator).
    pub async fn has_operators(&self) -> Result<bool, ServerError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM operator")
            .fetch_one(&self.inner.pool)
            .await?;
        Ok(n > 0)
    }

    /// Creates an operator account.
    pub async fn add_operator(
        &self,
        actor: &str,
        username: &str,
        role: OperatorRole,
        password: &str,
    ) -> Result<(), ServerError> {
        if username.is_empty() || username.len() > 64 || username.contains(char::is_whitespace) {
            return Err(ServerError::invalid(
                "username",
                "must be 1 to 64 characters without spaces",
            ));
        }
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(ServerError::invalid(
                "password",
                format!("must be at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        let hash = {
            let password = password.to_owned();
            tokio::task::spawn_blocking(move || hash_password(&password))
                .await
                .map_err(|e| ServerError::Io(e.to_string()))??
        };
        let mut w = self.write().await?;
        let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM operator WHERE username = $1")
            .bind(username)
            .fetch_one(&mut *w.tx)
            .await?;
        if exists > 0 {
            return Err(ServerError::Conflict(format!(
                "operator {username} exists already"
            )));
        }
        sqlx::query(
            "INSERT INTO operator (username, role, password_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(username)
        .bind(role.as_str())
        .bind(hash)
        .bind(now_ms())
        .execute(&mut *w.tx)
        .await?;
        w.audit(
            actor,
            "operator.added",
            &format!("operator {username}"),
            &serde_json::json!({ "role": role }),
        )
        .await?;
        w.commit().await
    }

    /// Signs an operator in: a token valid for `token_lifetime_hours`.
    pub async fn login(&self, username: &str, password: &str) -> Result<String, ServerError> {
        let row = sqlx::query("SELECT id, password_hash FROM operator WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.inner.pool)
            .await?;
        let refused = || ServerError::Unauthorized("wrong username or password".into());
        let (id, hash): (i64, String) = match row {
            Some(r) => (r.try_get(0)?, r.try_get(1)?),
            None => return Err(refused()),
        };
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        if !ok {
            return Err(refused());
        }
        let token = random_secret();
        let lifetime = i64::from(self.inner.config.token_lifetime_hours) * 3_600_000;
        sqlx::query(
            "INSERT INTO operator_token (token_hash, operator_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(secret_hash(&token))
        .bind(id)
        .bind(now_ms() + lifetime)
        .execute(&self.inner.pool)
        .await?;
        Ok(token)
    }

    /// The operator a token belongs to.
    pub async fn operator_by_token(&self, token: &str) -> Result<Operator, ServerError> {
        let row = sqlx::query(
            "SELECT o.username, o.role FROM operator_token t JOIN operator o ON o.id = t.operator_id \
             WHERE t.token_hash = $1 AND t.expires_at > $2",
        )
        .bind(secret_hash(token))
        .bind(now_ms())
        .fetch_optional(&self.inner.pool)
        .await?;
        let row =
            row.ok_or_else(|| ServerError::Unauthorized("unknown or expired token".into()))?;
        let role: String = row.try_get(1)?;
        Ok(Operator {
            username: row.try_get(0)?,
            role: OperatorRole::parse(&role)
                .ok_or_else(|| ServerError::Unauthorized(format!("unknown role {role}")))?,
        })
    }

    /// The node a credential belongs to.
    pub async fn node_by_credential(&self, credential: &str) -> Result<NodeIdentity, ServerError> {
        let row = sqlx::query("SELECT id, name FROM node WHERE credential_hash = $1")
            .bind(secret_hash(credential))
            .fetch_optional(&self.inner.pool)
            .await?;
        let row = row.ok_or_else(|| ServerError::Unauthorized("unknown node credential".into()))?;
        Ok(NodeIdentity {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
        })
    }

    /// Adds a node to the fleet and returns its one-time enrolment token.
    pub async fn add_node(
        &self,
        actor: &str,
        name: &str,
        group: &str,
    ) -> Result<String, ServerError> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !valid(name) {
            return Err(ServerError::invalid(
                "name",
                "must be 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        if !valid(group) {
            return Err(ServerError::invalid(
                "group",
                "must be 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        let token = random_secret();
        let mut w = self.write().await?;
        let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM node WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *w.tx)
            .await?;
        if exists > 0 {
            return Err(ServerError::Conflict(format!("node {name} exists already")));
        }
        sqlx::query(
            "INSERT INTO node (name, node_group, enrol_token_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(name)
        .bind(group)
        .bind(secret_hash(&token))
        .bind(now_ms())
        .execute(&mut *w.tx)
        .await?;
        w.audit(
            actor,
            "node.added",
            &format!("node {name}"),
            &serde_json::json!({ "group": group }),
        )
        .await?;
        w.commit().await?;
        Ok(token)
    }

    /// Exchanges a one-time enrolment token for the node's name and credential.
    pub async fn enrol(&self, token: &str) -> Result<(String, String), ServerError> {
        let credential = random_secret();
        let mut w = self.write().await?;
        let row = sqlx::query("SELECT id, name FROM node WHERE enrol_token_hash = $1")
            .bind(secret_hash(token))
            .fetch_optional(&mut *w.tx)
            .await?;
        let Some(row) = row else {
            return Err(ServerError::Unauthorized(
                "unknown or already used enrolment token".into(),
            ));
        };
        let (id, name): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        sqlx::query(
            "UPDATE node SET enrol_token_hash = NULL, credential_hash = $1, enrolled_at = $2 WHERE id = $3",
        )
        .bind(secret_hash(&credential))
        .bind(now_ms())
        .bind(id)
        .execute(&mut *w.tx)
        .await?;
        w.audit(
            &format!("node:{name}"),
            "node.enrolled",
            &format!("node {name}"),
            &serde_json::json!({}),
        )
        .await?;
        w.commit().await?;
        Ok((name, credential))
    }
}
