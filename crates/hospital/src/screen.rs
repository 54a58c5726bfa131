//! Waiting-room screens (叫号屏): a wall screen shows who is called to which room and who waits,
//! by surname only, for the sessions it is opened for. It signs in with a screen token of its
//! own, which reads the board and nothing else; the administrator creates and revokes them.
//! Screens are told of changes as they happen ([`Hospital::changes`]): every committed write
//! moves a counter that the board's event stream waits on.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::random_secret;
use crate::{Hospital, HospitalError, args, now_ms};

/// The most sessions one screen shows.
pub const MAX_SESSIONS: usize = 12;
/// The most waiting patients a screen lists per session (the rest are counted).
const WAITING_SHOWN: i64 = 10;

/// A screen as the administrator sees it (never its token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Screen {
    /// Id.
    pub id: i64,
    /// Where it hangs (`内科候诊区`).
    pub name: String,
    /// When created (Unix ms).
    pub created_at: i64,
    /// Who created it.
    pub created_by: String,
    /// When revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// A patient on the board: surname and `**`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BoardPatient {
    /// The ticket.
    pub ticket_id: i64,
    /// Surname only.
    pub patient: String,
    /// The room a called patient goes to.
    pub room: Option<String>,
}

/// One session on a screen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BoardSession {
    /// The session.
    pub schedule_id: i64,
    /// The doctor's name.
    pub practitioner: String,
    /// Department name.
    pub department: String,
    /// Period.
    pub period: String,
    /// The session's room.
    pub room: Option<String>,
    /// `active`, `cancelled` or `stopped`.
    pub status: String,
    /// Called patients, most recent call first.
    pub called: Vec<BoardPatient>,
    /// The first waiting patients, in calling order.
    pub waiting: Vec<BoardPatient>,
    /// How many wait in all.
    pub waiting_total: i64,
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A name as a public screen shows it: the surname, then `**`.
pub fn surname(name: &str) -> String {
    name.chars().take(1).chain("**".chars()).collect()
}

impl Hospital {
    /// Creates a screen; returns it and its token (shown once: only its SHA-256 is kept).
    pub async fn add_screen(
        &self,
        actor: &str,
        name: &str,
    ) -> Result<(Screen, String), HospitalError> {
        if name.trim().is_empty() || name.chars().count() > 64 {
            return Err(HospitalError::Invalid {
                field: "name",
                reason: "must be 1 to 64 characters".into(),
            });
        }
        // 256 random bits: a SHA-256 lookup is enough, no argon2 (nothing to guess).
        let token = random_secret();
        let (actor, name, secret) = (actor.to_owned(), name.trim().to_owned(), digest(&token));
        let screen = self
            .write(move |tx| {
                let created_at = now_ms();
                let id: i64 = tx.one(
                    "INSERT INTO screen (name, secret_sha256, created_at, created_by) VALUES ($1, $2, $3, $4) RETURNING id",
                    args![&name, &secret, created_at, &actor],
                )?;
                crate::audit(tx, &actor, "screen", id, "create", &name)?;
                Ok(Screen {
                    id,
                    name,
                    created_at,
                    created_by: actor,
                    revoked_at: None,
                })
            })
            .await?;
        Ok((screen, token))
    }

    /// Every screen, newest first.
    pub async fn screens(&self) -> Result<Vec<Screen>, HospitalError> {
        let rows: Vec<(i64, String, i64, String, Option<i64>)> = sqlx::query_as(
            "SELECT id, name, created_at, created_by, revoked_at FROM screen ORDER BY id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Screen {
                id: r.0,
                name: r.1,
                created_at: r.2,
                created_by: r.3,
                revoked_at: r.4,
            })
            .collect())
    }

    /// Revokes a screen: its token stops working at once.
    pub async fn revoke_screen(&self, actor: &str, id: i64) -> Result<(), HospitalError> {
        let actor = actor.to_owned();
        self.write(move |tx| {
            let changed = tx.execute(
                "UPDATE screen SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                args![now_ms(), id],
            )?;
            if changed == 0 {
                return Err(HospitalError::NotFound { what: "screen", id });
            }
            crate::audit(tx, &actor, "screen", id, "revoke", "")
        })
        .await
    }

    /// The screen a token belongs to, if it is not revoked.
    pub async fn screen_of(&self, token: &str) -> Result<i64, HospitalError> {
        sqlx::query_scalar("SELECT id FROM screen WHERE secret_sha256 = $1 AND revoked_at IS NULL")
            .bind(digest(token))
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| HospitalError::Unauthorized("the screen token is not valid".into()))
    }

    /// The board of some sessions: who is called where, who waits, by surname only.
    pub async fn screen_board(
        &self,
        schedule_ids: &[i64],
    ) -> Result<Vec<BoardSession>, HospitalError> {
        let mut out = Vec::with_capacity(schedule_ids.len());
        for id in schedule_ids {
            let session = self.session(*id).await?;
            let (entries, total) = self.board(*id, 100, 0).await?;
            let (mut called, mut waiting) = (Vec::new(), Vec::new());
            for e in entries {
                let patient = BoardPatient {
                    ticket_id: e.ticket_id,
                    patient: surname(&e.patient_name),
                    room: e.room.clone(),
                };
                match e.status.as_str() {
                    "called" => called.push(patient),
                    _ if (waiting.len() as i64) < WAITING_SHOWN => waiting.push(patient),
                    _ => {}
                }
            }
            // The most recent call first: a later ticket called later, as call-next goes.
            called.sort_by_key(|p| std::cmp::Reverse(p.ticket_id));
            let waiting_total = total - called.len() as i64;
            out.push(BoardSession {
                schedule_id: session.id,
                practitioner: session.practitioner,
                department: session.department,
                period: session.period,
                room: session.room,
                status: session.status,
                called,
                waiting,
                waiting_total,
            });
        }
        Ok(out)
    }

    /// A counter every committed write moves: screens wait on it for something to show.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Ends the long-lived streams (the waiting-room screens'): the node is stopping, and its
    /// screens reconnect to whichever process serves next, which sends them the whole board.
    pub fn end_streams(&self) {
        self.ending.send_replace(true);
    }

    /// Becomes true when the streams must end ([`Hospital::end_streams`]).
    pub fn ending(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ending.subscribe()
    }
}
