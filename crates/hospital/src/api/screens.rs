//! Waiting-room screens: the administrator's screen tokens, and the board a screen shows, as a
//! snapshot or as server-sent events pushed when it changes. A screen's token travels in the
//! query (`EventSource` cannot send headers); the page keeps it in its URL's fragment, which
//! browsers never send, so it reaches no log but this endpoint's.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{delete, get, post};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiResult, AppState, Body, Caller, Created, Ids, Params};
use crate::screen::{BoardSession, MAX_SESSIONS};
use crate::{Hospital, HospitalError, Role};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/screens", post(add).get(list))
        .route("/api/v1/screens/{id}", delete(revoke))
        .route("/api/v1/board", get(board))
        .route("/api/v1/board/events", get(events))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewScreen {
    name: String,
}

async fn add(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(s): Body<NewScreen>,
) -> Created<serde_json::Value> {
    let actor = c.allow(&[Role::Admin])?;
    let (screen, token) = h.add_screen(actor, &s.name).await?;
    let mut answer = serde_json::to_value(screen).unwrap_or_default();
    answer["token"] = token.into();
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn list(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
) -> ApiResult<serde_json::Value> {
    c.allow(&[Role::Admin])?;
    Ok(Json(json!({"items": h.screens().await?})))
}

async fn revoke(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
) -> Result<StatusCode, ApiError> {
    let actor = c.allow(&[Role::Admin])?;
    h.revoke_screen(actor, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardQuery {
    token: String,
    /// Session ids, comma-separated.
    schedules: String,
}

impl BoardQuery {
    /// Checks the token; returns the sessions asked for.
    async fn sessions(&self, h: &Hospital) -> Result<Vec<i64>, HospitalError> {
        h.screen_of(&self.token).await?;
        let ids = self
            .schedules
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim().parse::<i64>().map_err(|_| HospitalError::Invalid {
                    field: "schedules",
                    reason: format!("{s:?} is not a session id"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if ids.is_empty() || ids.len() > MAX_SESSIONS {
            return Err(HospitalError::Invalid {
                field: "schedules",
                reason: format!("name 1 to {MAX_SESSIONS} sessions"),
            });
        }
        Ok(ids)
    }
}

async fn board(
    State(AppState { hospital: h, .. }): State<AppState>,
    Params(q): Params<BoardQuery>,
) -> ApiResult<serde_json::Value> {
    let ids = q.sessions(&h).await?;
    Ok(Json(json!({"items": h.screen_board(&ids).await?})))
}

/// How long changes are gathered before the board is read again: a burst of calls becomes one
/// event, and a screen costs at most a few board reads a second however busy the node is.
const GATHER: Duration = Duration::from_millis(250);
/// How often a quiet stream checks that its screen still stands (a revoked one ends).
const RECHECK: Duration = Duration::from_secs(15);

/// The board as server-sent events: one `board` event at once, then one each time it changes.
async fn events(
    State(AppState { hospital: h, .. }): State<AppState>,
    Params(q): Params<BoardQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let ids = q.sessions(&h).await?;
    let token = q.token;
    let changes = h.changes();
    let ending = h.ending();
    let stream = futures_util::stream::unfold(
        (h, changes, ending, String::new(), true),
        move |(h, mut changes, mut ending, last, first)| {
            let (ids, token) = (ids.clone(), token.clone());
            async move {
                let mut first = first;
                loop {
                    if *ending.borrow() {
                        return None;
                    }
                    if !first {
                        let changed = tokio::select! {
                            changed = tokio::time::timeout(RECHECK, changes.changed()) => changed,
                            // It only ever changes to true: the node is stopping.
                            _ = ending.changed() => return None,
                        };
                        if matches!(changed, Ok(Err(_))) || h.screen_of(&token).await.is_err() {
                            return None; // the node is stopping, or the screen was revoked
                        }
                        tokio::time::sleep(GATHER).await;
                        changes.borrow_and_update();
                    }
                    first = false;
                    let board: Vec<BoardSession> = match h.screen_board(&ids).await {
                        Ok(board) => board,
                        Err(e) => {
                            tracing::warn!(error = %e, "a screen's board could not be read");
                            continue;
                        }
                    };
                    let data = json!({ "items": board }).to_string();
                    if data != last {
                        let event = Event::default().event("board").data(data.clone());
                        return Some((Ok(event), (h, changes, ending, data, false)));
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
