//! Staff, roles and API tokens. Passwords and token secrets are stored as argon2 hashes only.
//! Verifying argon2 takes tens of milliseconds by design, so a token is verified once and then
//! remembered in memory by the SHA-256 of its secret until it expires: requests stay fast and
//! the database never holds anything a thief could replay.
//!
//! A remembered token is checked again against the database (a cheap read, no argon2) once it
//! is [`RECHECK`] old, so a token revoked by another process sharing the database stops within
//! that time; this process forgets the tokens it revokes at once. An account locks for a while
//! after repeated failed sign-ins, and the lock is audited.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    /// Auditor (审计员): reads the read audit and the change audit; nothing else.
    Auditor,
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
            Role::Auditor => "auditor",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Role> {
        match text {
            "clerk" => Some(Role::Clerk),
            "cashier" => Some(Role::Cashier),
            "doctor" => Some(Role::Doctor),
            "admin" => Some(Role::Admin),
            "kiosk" => Some(Role::Kiosk),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

/// How long a remembered token is trusted before the database is asked again whether it still
/// stands (revoked, account disabled, role changed).
pub const RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staff {
    /// The account's id.
    pub user_id: i64,
    /// Username, recorded as the actor of every change.
    pub username: String,
    /// Role.
    pub role: Role,
    /// The practitioner a doctor's account is (`None` for other roles, and for doctor accounts
    /// not linked to one).
    pub practitioner_id: Option<i64>,
}

/// A verified token: SHA-256 of its secret, who it belongs to, until when (Unix ms), and when
/// the database last said it stands.
#[derive(Clone)]
struct VerifiedToken {
    digest: [u8; 32],
    staff: Staff,
    until: i64,
    checked: std::time::Instant,
}

/// Tokens already verified, by token id, and how many times tokens were forgotten: a token
/// read from the database before a revocation is not remembered after it.
#[derive(Default, Clone)]
pub(crate) struct TokenCache(Arc<Mutex<(HashMap<i64, VerifiedToken>, u64)>>);

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<i64, VerifiedToken>, u64)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: i64) -> Option<VerifiedToken> {
        self.lock().0.get(&id).cloned()
    }

    /// How many revocations this process has seen.
    fn epoch(&self) -> u64 {
        self.lock().1
    }

    /// Remembers a verified token, unless a revocation happened since `epoch` (when it was
    /// read), forgetting the expired ones (so the cache holds only tokens that could still be
    /// used, however long the node runs).
    fn remember(&self, id: i64, token: VerifiedToken, epoch: u64) {
        let mut cache = self.lock();
        if cache.1 != epoch {
            return;
        }
        let now = now_ms();
        cache.0.retain(|_, t| t.until > now);
        cache.0.insert(id, token);
    }

    /// Forgets one token.
    pub(crate) fn forget(&self, id: i64) {
        let mut cache = self.lock();
        cache.0.remove(&id);
        cache.1 += 1;
    }

    /// Forgets every token of an account (revoked, or its role changed), but `keep`.
    pub(crate) fn forget_user(&self, user_id: i64, keep: Option<i64>) {
        let mut cache = self.lock();
        cache
            .0
            .retain(|id, t| t.staff.user_id != user_id || Some(*id) == keep);
        cache.1 += 1;
    }
}

/// A token this program has verified, as it hands it to the program that takes over from it
/// (issue 10), so that the new program does not verify every client's token again with argon2
/// in its first second: the SHA-256 of the secret, never the secret, and who it is. The new
/// program checks at its first use that the token still stands (a cheap read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RememberedToken {
    id: i64,
    /// SHA-256 of the secret, hex.
    digest: String,
    user_id: i64,
    username: String,
    role: Role,
    practitioner_id: Option<i64>,
    until: i64,
}

impl crate::Hospital {
    /// The tokens this program has verified and that have not expired.
    pub fn remembered_tokens(&self) -> Vec<RememberedToken> {
        let now = now_ms();
        self.tokens
            .lock()
            .0
            .iter()
            .filter(|(_, t)| t.until > now)
            .map(|(id, t)| RememberedToken {
                id: *id,
                digest: hex::encode(t.digest),
                user_id: t.staff.user_id,
                username: t.staff.username.clone(),
                role: t.staff.role,
                practitioner_id: t.staff.practitioner_id,
                until: t.until,
            })
            .collect()
    }

    /// Takes over tokens another program of this node verified; each is checked against the
    /// database at its first use here, as a remembered token is every [`RECHECK`].
    pub fn remember_tokens(&self, tokens: Vec<RememberedToken>) {
        let epoch = self.tokens.epoch();
        let due = std::time::Instant::now()
            .checked_sub(RECHECK)
            .unwrap_or_else(std::time::Instant::now);
        for t in tokens {
            let Ok(Ok(digest)) = hex::decode(&t.digest).map(<[u8; 32]>::try_from) else {
                continue;
            };
            self.tokens.remember(
                t.id,
                VerifiedToken {
                    digest,
                    staff: Staff {
                        user_id: t.user_id,
                        username: t.username,
                        role: t.role,
                        practitioner_id: t.practitioner_id,
                    },
                    until: t.until,
                    checked: due,
                },
                epoch,
            );
        }
    }
}

pub(crate) fn hash_secret(secret: &str) -> Result<String, HospitalError> {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HospitalError::Auth(e.to_string()))?;
    Ok(Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map_err(|e| HospitalError::Auth(e.to_string()))?
        .to_string())
}

pub(crate) fn verify_secret(secret: &str, hash: &str) -> bool {
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
    pub(crate) async fn verify_slowly(&self, secret: String, hash: String) -> bool {
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
        crate::staff::check_password("password", username, password)?;
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

    /// Checks a username and password; returns a new token `<id>.<secret>`. Refused for a
    /// disabled account, and for a locked one: [`crate::Policy::lockout_after`] failures in a
    /// row lock an account for [`crate::Policy::lockout_minutes`], and the lock is audited.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<(String, Staff), HospitalError> {
        type Account = (i64, String, String, Option<i64>, i64, i64);
        let row: Option<Account> = sqlx::query_as(
            "SELECT id, role, password_hash, practitioner_id, disabled, locked_until FROM app_user WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        let denied = || HospitalError::Unauthorized("wrong username or password".into());
        if let Some((_, _, _, _, _, locked_until)) = &row
            && *locked_until > now_ms()
        {
            return Err(HospitalError::Unauthorized(format!(
                "{username} is locked after repeated failed sign-ins for {} more minutes; an administrator can reset the password",
                (*locked_until - now_ms()) / 60_000 + 1
            )));
        }
        // An unknown user costs the same argon2 work as a known one, so timing does not tell
        // which usernames exist.
        let hash: String = match &row {
            Some(row) => row.2.clone(),
            None => UNKNOWN_USER_HASH
                .get_or_init(|| hash_secret("no such user").unwrap_or_default())
                .clone(),
        };
        let ok = self.verify_slowly(password.to_owned(), hash).await;
        let Some((user_id, role, _, practitioner_id, disabled, _)) = row else {
            return Err(denied());
        };
        if !ok {
            return Err(self.failed_login(user_id, username).await?);
        }
        if disabled != 0 {
            return Err(HospitalError::Unauthorized(format!(
                "{username}'s account is disabled"
            )));
        }
        let staff = Staff {
            user_id,
            username: username.to_owned(),
            role: Role::parse(&role).ok_or_else(denied)?,
            practitioner_id,
        };
        let secret = random_secret();
        let to_hash = secret.clone();
        let secret_hash = tokio::task::spawn_blocking(move || hash_secret(&to_hash))
            .await
            .map_err(|e| HospitalError::Auth(e.to_string()))??;
        let now = now_ms();
        let expires_at = now + self.token_lifetime_ms;
        // Issued only if the account is still enabled and unlocked now: a lock set, or a
        // disable done, while this sign-in waited for its argon2 slot still holds.
        let id: Option<i64> = self
            .write(move |tx| {
                let standing = tx.execute(
                    "UPDATE app_user SET failed_logins = 0 WHERE id = $1 AND disabled = 0 AND locked_until <= $2",
                    args![user_id, now],
                )?;
                if standing == 0 {
                    return Ok(None);
                }
                tx.one(
                    "INSERT INTO api_token (user_id, secret_hash, created_at, expires_at) VALUES ($1, $2, $3, $4) RETURNING id",
                    args![user_id, secret_hash, now, expires_at],
                )
                .map(Some)
            })
            .await?;
        let Some(id) = id else {
            return Err(HospitalError::Unauthorized(format!(
                "{username} is locked or disabled"
            )));
        };
        let epoch = self.tokens.epoch();
        self.tokens.remember(
            id,
            VerifiedToken {
                digest: Sha256::digest(secret.as_bytes()).into(),
                staff: staff.clone(),
                until: expires_at,
                checked: std::time::Instant::now(),
            },
            epoch,
        );
        Ok((format!("{id}.{secret}"), staff))
    }

    /// Counts a failed sign-in of an account, locking it at the policy's limit; returns the
    /// error to answer with.
    pub(crate) async fn failed_login(
        &self,
        user_id: i64,
        username: &str,
    ) -> Result<HospitalError, HospitalError> {
        let (limit, minutes) = (self.lockout_after, self.lockout_minutes);
        let locked = self
            .write(move |tx| {
                let failures: i64 = tx.one(
                    "UPDATE app_user SET failed_logins = failed_logins + 1 WHERE id = $1 RETURNING failed_logins",
                    args![user_id],
                )?;
                if limit == 0 || failures < limit {
                    return Ok(false);
                }
                tx.execute(
                    "UPDATE app_user SET failed_logins = 0, locked_until = $1 WHERE id = $2",
                    args![now_ms() + minutes * 60_000, user_id],
                )?;
                let detail = format!("locked for {minutes} minutes after {failures} failed sign-ins");
                crate::audit(tx, "system", "app_user", user_id, "lock", &detail)?;
                Ok(true)
            })
            .await?;
        Ok(if locked {
            tracing::warn!(username, "account locked after repeated failed sign-ins");
            HospitalError::Unauthorized(format!(
                "wrong username or password; {username} is now locked for {minutes} minutes"
            ))
        } else {
            HospitalError::Unauthorized("wrong username or password".into())
        })
    }

    /// Who a bearer token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Staff, HospitalError> {
        Ok(self.token_owner(token).await?.1)
    }

    /// A bearer token's id and who it belongs to.
    pub(crate) async fn token_owner(&self, token: &str) -> Result<(i64, Staff), HospitalError> {
        let denied = || HospitalError::Unauthorized("the token is not valid".into());
        let (id, secret) = token.split_once('.').ok_or_else(denied)?;
        let id: i64 = id.parse().map_err(|_| denied())?;
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let epoch = self.tokens.epoch();
        let known = self.tokens.get(id);
        if let Some(known) = known {
            if known.digest != digest || known.until <= now_ms() {
                return Err(denied());
            }
            if known.checked.elapsed() < RECHECK {
                return Ok((id, known.staff));
            }
            // Still standing? No argon2: the secret was verified when it was remembered.
            type Standing = (String, Option<i64>, i64);
            let standing: Option<Standing> = sqlx::query_as(
                "SELECT u.role, u.practitioner_id, u.disabled FROM api_token t JOIN app_user u ON u.id = t.user_id
                 WHERE t.id = $1 AND t.user_id = $2",
            )
            .bind(id)
            .bind(known.staff.user_id)
            .fetch_optional(&self.pool)
            .await?;
            let Some((role, practitioner_id, 0)) = standing else {
                self.tokens.forget(id);
                return Err(denied());
            };
            let staff = Staff {
                role: Role::parse(&role).ok_or_else(denied)?,
                practitioner_id,
                ..known.staff
            };
            self.tokens.remember(
                id,
                VerifiedToken {
                    staff: staff.clone(),
                    checked: std::time::Instant::now(),
                    ..known
                },
                epoch,
            );
            return Ok((id, staff));
        }
        type Stored = (String, i64, i64, String, String, Option<i64>);
        let (hash, until, user_id, username, role, practitioner_id): Stored = sqlx::query_as(
            "SELECT t.secret_hash, t.expires_at, u.id, u.username, u.role, u.practitioner_id FROM api_token t
             JOIN app_user u ON u.id = t.user_id WHERE t.id = $1 AND u.disabled = 0",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(denied)?;
        // Bounded like a login: after a restart, a flood of guessed tokens queues here.
        let ok = until > now_ms() && self.verify_slowly(secret.to_owned(), hash).await;
        if !ok {
            return Err(denied());
        }
        let staff = Staff {
            user_id,
            username,
            role: Role::parse(&role).ok_or_else(denied)?,
            practitioner_id,
        };
        self.tokens.remember(
            id,
            VerifiedToken {
                digest,
                staff: staff.clone(),
                until,
                checked: std::time::Instant::now(),
            },
            epoch,
        );
        Ok((id, staff))
    }
}
