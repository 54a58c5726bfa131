//! Staff accounts, kept by the administrator: list them, change an account's role or the
//! practitioner it is, disable it (its tokens stop working at once), reset its password; and
//! for anyone signed in, change their own password and sign out (which revokes the token).
//! Every change is audited in its own transaction; a password never appears in the audit.

use serde::{Deserialize, Serialize};

use crate::auth::{Role, hash_secret};
use crate::{Hospital, HospitalError, Tx, args, now_ms};

/// Passwords nobody should use, whatever their length.
const COMMON: [&str; 8] = [
    "password1234",
    "123456789012",
    "qwertyuiop12",
    "1234567890ab",
    "abcdefghijkl",
    "passwordpassword",
    "administrator",
    "adminadmin123",
];

/// Checks a new password: 12 to 128 characters, at least 5 different ones, not the username,
/// not a well-known one.
pub fn check_password(
    field: &'static str,
    username: &str,
    password: &str,
) -> Result<(), HospitalError> {
    let bad = |reason: &str| {
        Err(HospitalError::Invalid {
            field,
            reason: reason.into(),
        })
    };
    let length = password.chars().count();
    if !(12..=128).contains(&length) {
        return bad("must be 12 to 128 characters");
    }
    let mut distinct: Vec<char> = password.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 5 {
        return bad("must have at least 5 different characters");
    }
    if password.eq_ignore_ascii_case(username) {
        return bad("must not be the username");
    }
    if COMMON.iter().any(|c| password.eq_ignore_ascii_case(c)) {
        return bad("is a well-known password");
    }
    Ok(())
}

/// A staff account as the administrator sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Account {
    /// Id.
    pub id: i64,
    /// Username.
    pub username: String,
    /// Role.
    pub role: Role,
    /// The practitioner a doctor's account is.
    pub practitioner_id: Option<i64>,
    /// A disabled account cannot sign in, and its tokens do not work.
    pub disabled: bool,
    /// Until when it is locked after failed sign-ins (Unix ms), if it is.
    pub locked_until: Option<i64>,
    /// When it was created (Unix ms).
    pub created_at: i64,
}

/// A change to an account.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountChange {
    /// New role.
    #[serde(default)]
    pub role: Option<Role>,
    /// The practitioner a doctor's account is; `null` unlinks it.
    #[serde(default, deserialize_with = "crate::present")]
    pub practitioner_id: Option<Option<i64>>,
    /// Disable (true) or enable (false).
    #[serde(default)]
    pub disabled: Option<bool>,
}

type AccountRow = (i64, String, String, Option<i64>, i64, i64, i64);

fn account_of(r: AccountRow) -> Result<Account, HospitalError> {
    let now = now_ms();
    Ok(Account {
        id: r.0,
        username: r.1,
        role: Role::parse(&r.2)
            .ok_or_else(|| HospitalError::Auth(format!("unknown role {}", r.2)))?,
        practitioner_id: r.3,
        disabled: r.4 != 0,
        locked_until: Some(r.5).filter(|until| *until > now),
        created_at: r.6,
    })
}

const ACCOUNT_SELECT: &str =
    "SELECT id, username, role, practitioner_id, disabled, locked_until, created_at FROM app_user";

/// Revokes every token of an account but `keep`, in `tx`.
fn revoke_tokens(tx: &mut Tx<'_>, user_id: i64, keep: Option<i64>) -> Result<u64, HospitalError> {
    tx.execute(
        "DELETE FROM api_token WHERE user_id = $1 AND id <> $2",
        args![user_id, keep.unwrap_or(0)],
    )
}

impl Hospital {
    /// Every staff account, in username order.
    pub async fn accounts(&self) -> Result<Vec<Account>, HospitalError> {
        let rows: Vec<AccountRow> = sqlx::query_as(&format!("{ACCOUNT_SELECT} ORDER BY username"))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(account_of).collect()
    }

    /// One staff account.
    pub async fn account(&self, id: i64) -> Result<Account, HospitalError> {
        let row: AccountRow = sqlx::query_as(&format!("{ACCOUNT_SELECT} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(HospitalError::NotFound { what: "user", id })?;
        account_of(row)
    }

    /// Changes an account's role, linked practitioner, or whether it is disabled. Disabling
    /// revokes its tokens; a changed role or link applies to its next request. An
    /// administrator cannot disable or demote their own account (someone must stay able to
    /// administer).
    pub async fn change_account(
        &self,
        actor: &str,
        actor_id: i64,
        id: i64,
        c: &AccountChange,
    ) -> Result<Account, HospitalError> {
        if id == actor_id && (c.disabled == Some(true) || c.role.is_some_and(|r| r != Role::Admin))
        {
            return Err(HospitalError::Refused {
                rule: "staff",
                reason: "an administrator cannot disable or demote their own account".into(),
            });
        }
        let (c, actor) = (c.clone(), actor.to_owned());
        self.write(move |tx| {
            let (role, practitioner_id, disabled): (String, Option<i64>, i64) = tx
                .row("SELECT role, practitioner_id, disabled FROM app_user WHERE id = $1", args![id])?
                .ok_or(HospitalError::NotFound { what: "user", id })?;
            let new_role = c.role.map_or(role.clone(), |r| r.as_str().to_owned());
            let new_practitioner = c.practitioner_id.unwrap_or(practitioner_id);
            let new_disabled = c.disabled.map_or(disabled, i64::from);
            if let Some(p) = new_practitioner {
                if new_role != "doctor" {
                    return Err(HospitalError::Invalid {
                        field: "practitioner_id",
                        reason: format!("only a doctor's account names a practitioner, not a {new_role}'s"),
                    });
                }
                let known: i64 = tx.one("SELECT COUNT(*) FROM practitioner WHERE id = $1", args![p])?;
                if known == 0 {
                    return Err(HospitalError::NotFound { what: "practitioner", id: p });
                }
            }
            // Changes of accounts one at a time, so two administrators cannot disable or
            // demote each other at once and leave nobody to administer.
            tx.lock("app_user:admins", false)?;
            tx.execute(
                "UPDATE app_user SET role = $1, practitioner_id = $2, disabled = $3 WHERE id = $4",
                args![&new_role, new_practitioner, new_disabled, id],
            )?;
            let admins: i64 = tx.one(
                "SELECT COUNT(*) FROM app_user WHERE role = 'admin' AND disabled = 0",
                args![],
            )?;
            if admins == 0 {
                return Err(HospitalError::Refused {
                    rule: "staff",
                    reason: "this would leave no enabled administrator".into(),
                });
            }
            let mut detail = format!("role {role} -> {new_role}, practitioner {practitioner_id:?} -> {new_practitioner:?}");
            if new_disabled != disabled {
                detail += if new_disabled != 0 { ", disabled" } else { ", enabled" };
            }
            if new_disabled != 0 {
                let revoked = revoke_tokens(tx, id, None)?;
                detail += &format!(", {revoked} tokens revoked");
            }
            crate::audit(tx, &actor, "app_user", id, "change", &detail)?;
            Ok(())
        })
        .await?;
        self.tokens.forget_user(id, None);
        self.account(id).await
    }

    /// Sets an account's password (an administrator's reset): its tokens are revoked and a
    /// lock from failed sign-ins is lifted.
    pub async fn reset_password(
        &self,
        actor: &str,
        id: i64,
        password: &str,
    ) -> Result<(), HospitalError> {
        let username: String = sqlx::query_scalar("SELECT username FROM app_user WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(HospitalError::NotFound { what: "user", id })?;
        check_password("password", &username, password)?;
        let hash = hash_blocking(password).await?;
        let actor = actor.to_owned();
        self.write(move |tx| {
            tx.execute(
                "UPDATE app_user SET password_hash = $1, failed_logins = 0, locked_until = 0 WHERE id = $2",
                args![hash, id],
            )?;
            let revoked = revoke_tokens(tx, id, None)?;
            let detail = format!("password reset, lock lifted, {revoked} tokens revoked");
            crate::audit(tx, &actor, "app_user", id, "reset-password", &detail)
        })
        .await?;
        self.tokens.forget_user(id, None);
        Ok(())
    }

    /// Changes the caller's own password, given their current one; their other tokens are
    /// revoked, the one they use (`token_id`) stays.
    pub async fn change_own_password(
        &self,
        user_id: i64,
        token_id: i64,
        current: &str,
        new: &str,
    ) -> Result<(), HospitalError> {
        let (username, hash): (String, String) =
            sqlx::query_as("SELECT username, password_hash FROM app_user WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(HospitalError::NotFound {
                    what: "user",
                    id: user_id,
                })?;
        if !self.verify_slowly(current.to_owned(), hash).await {
            // Counted like a failed sign-in: a stolen token cannot guess the password freely.
            self.failed_login(user_id, &username).await?;
            return Err(HospitalError::Invalid {
                field: "current_password",
                reason: "is not the account's password".into(),
            });
        }
        check_password("new_password", &username, new)?;
        if new == current {
            return Err(HospitalError::Invalid {
                field: "new_password",
                reason: "is the current password".into(),
            });
        }
        let hash = hash_blocking(new).await?;
        self.write(move |tx| {
            tx.execute(
                "UPDATE app_user SET password_hash = $1 WHERE id = $2",
                args![hash, user_id],
            )?;
            let revoked = revoke_tokens(tx, user_id, Some(token_id))?;
            let detail = format!("own password changed, {revoked} other tokens revoked");
            crate::audit(
                tx,
                &username,
                "app_user",
                user_id,
                "change-password",
                &detail,
            )
        })
        .await?;
        self.tokens.forget_user(user_id, Some(token_id));
        Ok(())
    }

    /// Signs out: revokes the token the caller used.
    pub async fn sign_out(&self, staff: &crate::Staff, token_id: i64) -> Result<(), HospitalError> {
        let (user_id, username) = (staff.user_id, staff.username.clone());
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM api_token WHERE id = $1 AND user_id = $2",
                args![token_id, user_id],
            )?;
            crate::audit(
                tx,
                &username,
                "app_user",
                user_id,
                "sign-out",
                &format!("token {token_id}"),
            )
        })
        .await?;
        self.tokens.forget(token_id);
        Ok(())
    }
}

async fn hash_blocking(password: &str) -> Result<String, HospitalError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_secret(&password))
        .await
        .map_err(|e| HospitalError::Auth(e.to_string()))?
}
