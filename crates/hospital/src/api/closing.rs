//! The cashier's day closing (日结): a cashier closes their own day; an administrator may close
//! any cashier's or kiosk's.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

use super::{ApiResult, AppState, Body, Caller, Created, Params};
use crate::closing::Closing;
use crate::{HospitalError, Role};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/cashier/closings", post(close).get(closings))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Close {
    /// The day, today by default.
    #[serde(default)]
    date: Option<String>,
    /// Whose day: the caller's by default; an administrator names a cashier.
    #[serde(default)]
    cashier: Option<String>,
}

async fn close(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(r): Body<Close>,
) -> Created<Closing> {
    let actor = c.allow(&[Role::Cashier, Role::Admin])?;
    let cashier = match (&r.cashier, c.0.role) {
        (Some(other), Role::Cashier) if other != actor => {
            return Err(HospitalError::Forbidden(format!(
                "{actor} closes their own day, not {other}'s"
            ))
            .into());
        }
        (Some(cashier), _) => cashier.clone(),
        (None, Role::Admin) => {
            return Err(HospitalError::Invalid {
                field: "cashier",
                reason: "an administrator names the cashier whose day is closed".into(),
            }
            .into());
        }
        (None, _) => actor.to_owned(),
    };
    Ok((
        StatusCode::CREATED,
        Json(h.close_day(actor, &cashier, r.date.as_deref()).await?),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Which {
    date: Option<String>,
    cashier: Option<String>,
}

async fn closings(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Params(q): Params<Which>,
) -> ApiResult<serde_json::Value> {
    let actor = c.allow(&[Role::Cashier, Role::Admin])?;
    // A cashier sees their own closings.
    let cashier = match c.0.role {
        Role::Cashier => Some(actor.to_owned()),
        _ => q.cashier,
    };
    Ok(Json(
        json!({"items": h.closings(q.date.as_deref(), cashier.as_deref()).await?}),
    ))
}
