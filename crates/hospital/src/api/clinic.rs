//! The hospital's organisation, kept by its administrator: departments, doctors and their clinic
//! sessions (create, plan a week, change quotas, cancel, stop). Every member of staff reads them.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, routing::patch};
use serde::Deserialize;
use serde_json::json;

use super::{ALL, ApiResult, AppState, Body, Caller, Created, Ids, Params};
use crate::Role;
use crate::clinic::{
    Cancellation, Department, DepartmentChange, NewDepartment, NewPractitioner, NewSchedule,
    Practitioner, PractitionerChange, Quotas, Session, WeekPlan,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/departments", get(departments).post(add_department))
        .route("/api/v1/departments/{id}", patch(change_department))
        .route(
            "/api/v1/practitioners",
            get(practitioners).post(add_practitioner),
        )
        .route("/api/v1/practitioners/{id}", patch(change_practitioner))
        .route("/api/v1/schedules", get(sessions).post(add_session))
        .route("/api/v1/schedules/week", post(plan_week))
        .route("/api/v1/schedules/{id}", get(session))
        .route("/api/v1/schedules/{id}/quotas", put(set_quotas))
        .route("/api/v1/schedules/{id}/cancel", post(cancel))
        .route("/api/v1/schedules/{id}/stop", post(stop))
}

async fn departments(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
) -> ApiResult<serde_json::Value> {
    c.allow(ALL)?;
    Ok(Json(json!({"items": h.departments().await?})))
}

async fn add_department(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(d): Body<NewDepartment>,
) -> Created<Department> {
    let actor = c.allow(&[Role::Admin])?;
    Ok((
        StatusCode::CREATED,
        Json(h.add_department(actor, &d).await?),
    ))
}

async fn change_department(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
    Body(d): Body<DepartmentChange>,
) -> ApiResult<Department> {
    let actor = c.allow(&[Role::Admin])?;
    Ok(Json(h.change_department(actor, id, &d).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OfDepartment {
    department_id: Option<i64>,
}

async fn practitioners(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Params(q): Params<OfDepartment>,
) -> ApiResult<serde_json::Value> {
    c.allow(ALL)?;
    Ok(Json(
        json!({"items": h.practitioner_list(q.department_id).await?}),
    ))
}

async fn add_practitioner(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(p): Body<NewPractitioner>,
) -> Created<Practitioner> {
    let actor = c.allow(&[Role::Admin])?;
    Ok((
        StatusCode::CREATED,
        Json(h.add_practitioner(actor, &p).await?),
    ))
}

async fn change_practitioner(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
    Body(p): Body<PractitionerChange>,
) -> ApiResult<Practitioner> {
    let actor = c.allow(&[Role::Admin])?;
    Ok(Json(h.change_practitioner(actor, id, &p).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsOn {
    date: String,
    department_id: Option<i64>,
}

async fn sessions(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Params(q): Params<SessionsOn>,
) -> ApiResult<serde_json::Value> {
    c.allow(ALL)?;
    Ok(Json(
        json!({"items": h.sessions_on(&q.date, q.department_id).await?}),
    ))
}

async fn add_session(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(s): Body<NewSchedule>,
) -> Created<serde_json::Value> {
    let actor = c.allow(&[Role::Admin])?;
    let id = h.add_session(actor, &s).await?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

async fn plan_week(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(plan): Body<WeekPlan>,
) -> Created<serde_json::Value> {
    let actor = c.allow(&[Role::Admin])?;
    let ids = h.plan_week(actor, &plan).await?;
    Ok((StatusCode::CREATED, Json(json!({ "ids": ids }))))
}

async fn session(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
) -> ApiResult<Session> {
    c.allow(ALL)?;
    Ok(Json(h.session(id).await?))
}

async fn set_quotas(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
    Body(q): Body<Quotas>,
) -> ApiResult<Session> {
    let actor = c.allow(&[Role::Admin])?;
    Ok(Json(h.set_quotas(actor, id, q).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reason {
    reason: String,
}

async fn cancel(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
    Body(r): Body<Reason>,
) -> ApiResult<Cancellation> {
    let actor = c.allow(&[Role::Admin])?;
    Ok(Json(h.cancel_session(actor, id, &r.reason, false).await?))
}

/// 停诊: the doctor stops mid-session; an administrator or the doctor themself (a doctor
/// linked to a practitioner, for their own session) may stop it.
async fn stop(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
    Body(r): Body<Reason>,
) -> ApiResult<Cancellation> {
    let actor = c.allow(&[Role::Admin, Role::Doctor])?.to_owned();
    if c.0.role == Role::Doctor {
        if c.0.practitioner_id.is_none() {
            return Err(crate::HospitalError::Forbidden(format!(
                "{actor} is not linked to a practitioner: an administrator stops the session"
            ))
            .into());
        }
        c.own_session(&h, crate::SessionOf::Schedule(id)).await?;
    }
    let mut stopped = h.cancel_session(&actor, id, &r.reason, true).await?;
    // Whom to tell is the desk's work: a doctor sees no patient's phone number.
    if c.0.role == Role::Doctor {
        for notice in &mut stopped.notices {
            notice.phone = crate::patient::mask_phone(&notice.phone);
        }
    }
    Ok(Json(stopped))
}
