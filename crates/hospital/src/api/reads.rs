//! The read audit's query: who saw which patient's data, for an administrator or an auditor.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;

use super::{ApiResult, AppState, Caller, Params};
use crate::Role;
use crate::read_audit::{ReadPage, ReadQuery};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/read-audit", get(read_audit))
}

/// `GET /api/v1/read-audit`: newest first, filtered by patient, staff and time; `next` pages on.
async fn read_audit(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Params(q): Params<ReadQuery>,
) -> ApiResult<ReadPage> {
    c.allow(&[Role::Admin, Role::Auditor])?;
    Ok(Json(h.read_audit(&q).await?))
}
