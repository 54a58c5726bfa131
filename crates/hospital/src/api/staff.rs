//! Staff accounts (administrator), and for anyone signed in: who they are, the hospital's day,
//! their own password, signing out.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use serde::Deserialize;
use serde_json::json;

use super::{ApiResult, AppState, Body, Caller, Ids};
use crate::Role;
use crate::staff::{Account, AccountChange};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/me", get(me))
        .route("/api/v1/today", get(today))
        .route("/api/v1/me/password", post(change_own_password))
        .route("/api/v1/sessions/current", axum::routing::delete(sign_out))
        .route("/api/v1/users/{id}", patch(change).get(account))
        .route("/api/v1/users/{id}/password", post(reset_password))
}

/// Every account (`GET /api/v1/users`, routed beside its `POST`).
pub(super) async fn accounts(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
) -> ApiResult<serde_json::Value> {
    c.allow(&[Role::Admin])?;
    Ok(Json(json!({"items": h.accounts().await?})))
}

async fn account(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
) -> ApiResult<Account> {
    c.allow(&[Role::Admin])?;
    Ok(Json(h.account(id).await?))
}

async fn me(c: Caller) -> ApiResult<serde_json::Value> {
    Ok(Json(json!({
        "id": c.0.user_id,
        "username": c.0.username,
        "role": c.0.role,
        "practitioner_id": c.0.practitioner_id,
    })))
}

/// The hospital's business day and its offset from UTC: the pages show the hospital's day and
/// times, not those of the browser's computer, which may be set to another time zone.
async fn today(
    State(AppState { hospital: h, .. }): State<AppState>,
    _: Caller,
) -> ApiResult<serde_json::Value> {
    Ok(Json(json!({
        "business_date": h.business_date().to_string(),
        "utc_offset_minutes": h.utc_offset_minutes(),
    })))
}

async fn change(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
    Body(change): Body<AccountChange>,
) -> ApiResult<Account> {
    let actor = c.allow(&[Role::Admin])?;
    Ok(Json(
        h.change_account(actor, c.0.user_id, id, &change).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

async fn reset_password(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
    Body(p): Body<NewPassword>,
) -> ApiResult<serde_json::Value> {
    let actor = c.allow(&[Role::Admin])?;
    h.reset_password(actor, id, &p.password).await?;
    Ok(Json(json!({"reset": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

async fn change_own_password(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(p): Body<PasswordChange>,
) -> ApiResult<serde_json::Value> {
    h.change_own_password(c.0.user_id, c.1, &p.current_password, &p.new_password)
        .await?;
    Ok(Json(json!({"changed": true})))
}

async fn sign_out(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
) -> Result<StatusCode, super::ApiError> {
    h.sign_out(&c.0, c.1).await?;
    Ok(StatusCode::NO_CONTENT)
}
