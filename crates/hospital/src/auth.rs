//! Staff, roles and API tokens. Passwords and token secrets are stored as argon2 hashes only.
//! Verifying argon2 takes tens of milliseconds by design, so a token is verified once and then
//! remembered in memory by the SHA-256 of its secret until it expires: requests stay fast and
//! the database never holds anything a thief could replay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::write::is_unique_violation;
use crate::{Hospital, HospitalError, args, now_ms};

/// What a member of staff may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Registration clerk (挂号员): patients, registrations, check-in.
    Clerk,
    /// Cashier (收费员): payments, refunds, daily totals.
    Cashier,
    /// Doctor: the queue and consultations.
    Doctor,
    /// Administrator: staff accounts, audit.
    Admin,
    /// A self-service kiosk (自助机): takes self-service payments, and shows the invoice it is
    /// paying; nothing else.
    Kiosk,
}

impl Role {
    /// The role's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clerk => "clerk",
            Role::Cashier => "cashier",
            Role::Doctor => "doctor",
            Role::Admin => "admin",
            Role::Kiosk => "kiosk",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        match text {
            "clerk" => Some(Role::Clerk),
            "cashier" => Some(Role::Cashier),
            "doctor" => Some(Role::Doctor),
            "admin" => Some(Role::Admin),
            "kiosk" => Some(Role::Kiosk),
            _ => None,
        }
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staff {
    /// Username, recorded as the actor of every change.
    pub username: String,
    /// Role.
    pub role: Role,
    /// The practitioner a doctor's account is (`None` for other roles, and for doctor accounts
    /// not linked to one).
    pub practitioner_id: Option<i64>,
}

/// A verified token: SHA-256 of its secret, who it belongs to, and until when (Unix ms).
type VerifiedToken = ([u8; 32], Staff, i64);

/// Tokens already verified, by token id.
#[derive(Default, Clone)]
pub(crate) struct TokenCache(Arc<Mutex<HashMap<i64, VerifiedToken>>>);

impl TokenCache {
    /// Remembers a verified token, forgetting the expired ones (so the cache holds only tokens
    /// that could still be used, however long the node runs).
    fn remember(&self, id: i64, token: VerifiedToken) {
        let mut tokens = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = now_ms();
        tokens.retain(|_, (_, _, until)| *until > now);
        tokens.insert(id, token);
    }
}

fn hash_secret(secret: &str) -> Result<String, HospitalError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HospitalError::Auth(e.to_string()))?;
    Ok(Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map_err(|e| HospitalError::Auth(e.to_string()))?
        .to_string())
}

fn verify_secret(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

/// A random secret of 32 bytes, hex.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The hash an unknown username is checked against (see `login`).
static UNKNOWN_USER_HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// argon2 verifications running at once: each takes about 19 MiB and tens of milliseconds, so
/// a flood of bad credentials queues here instead of exhausting memory.
static ARGON2_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

impl Hospital {
    /// Verifies a secret against its argon2 hash off the async workers, a bounded number at once.
    async fn verify_slowly(&self, secret: String, hash: String) -> bool {
        let Ok(_slot) = ARGON2_SLOTS.acquire().await else {
            return false;
        };
        tokio::task::spawn_blocking(move || verify_secret(&secret, &hash))
            .await
            .unwrap_or(false)
    }

    /// Creates a staff account; a doctor's may name the practitioner it is.
    pub async fn add_user(
        &self,
        actor: &str,
        username: &str,
        role: Role,
        practitioner_id: Option<i64>,
        password: &str,
    ) -> Result<i64, HospitalError> {
        if let Some(id) = practitioner_id {
            if role != Role::Doctor {
                return Err(HospitalError::Invalid {
                    field: "practitioner_id",
                    reason: format!(
                        "only a doctor's account names a practitioner, not a {}'s",
                        role.as_str()
                    ),
                });
            }
            let known: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM practitioner WHERE id = $1")
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
            if known == 0 {
                return Err(HospitalError::NotFound {
                    what: "practitioner",
                    id,
                });
            }
        }
        if username.is_empty()
            || username.len() > 64
            || !username
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(HospitalError::Invalid {
                field: "username",
                reason: "must be 1 to 64 of a-z, 0-9, '-' and '_'".into(),
            });
        }
        if password.len() < 12 {
            return Err(HospitalError::Invalid {
                field: "password",
                reason: "must be at least 12 characters".into(),
            });
        }
        let to_hash = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || hash_secret(&to_hash))
            .await
            .map_err(|e| HospitalError::Auth(e.to_string()))??;
        let (username, actor) = (username.to_owned(), actor.to_owned());
        self.write(move |tx| {
            let id: i64 = tx
                .one(
                    "INSERT INTO app_user (username, role, practitioner_id, password_hash, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    args![&username, role.as_str(), practitioner_id, hash, now_ms()],
                )
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        HospitalError::Invalid {
                            field: "username",
                            reason: format!("{username} exists already"),
                        }
                    } else {
                        e
                    }
                })?;
            let detail = match practitioner_id {
                Some(p) => format!("{} (practitioner {p})", role.as_str()),
                None => role.as_str().to_owned(),
            };
            crate::audit(tx, &actor, "app_user", id, "create", &detail)?;
            Ok(id)
        })
        .await
    }

    /// Whether any staff account exists (a new node creates its administrator).
    pub async fn has_users(&self) -> Result<bool, HospitalError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM app_user")
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Checks a username and password; returns a new token `<id>.<secret>`.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<(String, Staff), HospitalError> {
        let row = sqlx::query(
            "SELECT id, role, password_hash, practitioner_id FROM app_user WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        let denied = || HospitalError::Unauthorized("wrong username or password".into());
        // An unknown user costs the same argon2 work as a known one, so timing does not tell
        // which usernames exist.
        let hash: String = match &row {
            Some(row) => row.try_get(2)?,
            None => UNKNOWN_USER_HASH
                .get_or_init(|| hash_secret("no such user").unwrap_or_default())
                .clone(),
        };
        let ok = self.verify_slowly(password.to_owned(), hash).await;
        let Some(row) = row.filter(|_| ok) else {
            return Err(denied());
        };
        let staff = Staff {
            username: username.to_owned(),
            role: Role::parse(&row.try_get::<String, _>(1)?).ok_or_else(denied)?,
            practitioner_id: row.try_get(3)?,
        };
        let secret = random_secret();
        let to_hash = secret.clone();
        let secret_hash = tokio::task::spawn_blocking(move || hash_secret(&to_hash))
            .await
            .map_err(|e| HospitalError::Auth(e.to_string()))??;
        let now = now_ms();
        let (user_id, expires_at) = (row.try_get::<i64, _>(0)?, now + self.token_lifetime_ms);
        let id: i64 = self
            .write(move |tx| {
                tx.one(
                    "INSERT INTO api_token (user_id, secret_hash, created_at, expires_at) VALUES ($1, $2, $3, $4) RETURNING id",
                    args![user_id, secret_hash, now, expires_at],
                )
            })
            .await?;
        self.tokens.remember(
            id,
            (
                Sha256::digest(secret.as_bytes()).into(),
                staff.clone(),
                now + self.token_lifetime_ms,
            ),
        );
        Ok((format!("{id}.{secret}"), staff))
    }

    /// Who a bearer token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Staff, HospitalError> {
        let denied = || HospitalError::Unauthorized("the token is not valid".into());
        let (id, secret) = token.split_once('.').ok_or_else(denied)?;
        let id: i64 = id.parse().map_err(|_| denied())?;
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if let Some((known, staff, until)) = self
            .tokens
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
        {
            return if known == digest && until > now_ms() {
                Ok(staff)
            } else {
                Err(denied())
            };
        }
        let row = sqlx::query(
            "SELECT t.secret_hash, t.expires_at, u.username, u.role, u.practitioner_id FROM api_token t JOIN app_user u ON u.id = t.user_id WHERE t.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(denied)?;
        let until: i64 = row.try_get(1)?;
        let hash: String = row.try_get(0)?;
        // Bounded like a login: after a restart, a flood of guessed tokens queues here.
        let ok = until > now_ms() && self.verify_slowly(secret.to_owned(), hash).await;
        if !ok {
            return Err(denied());
        }
        let staff = Staff {
            username: row.try_get(2)?,
            role: Role::parse(&row.try_get::<String, _>(3)?).ok_or_else(denied)?,
            practitioner_id: row.try_get(4)?,
        };
        self.tokens.remember(id, (digest, staff.clone(), until));
        Ok(staff)
    }
}
