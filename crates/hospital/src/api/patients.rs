//! Patients: search (by name prefix, phone or full ID number: answers mask the ID number), one
//! patient's details, visits and invoices, corrections with the previous values kept.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::{ALL, ApiResult, AppState, Body, Caller, Ids, Params, default_limit};
use crate::patient::{PatientCorrection, PatientDetail, PatientSearch};
use crate::{HospitalError, ReadKind, Role};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/patients/{id}", get(patient).patch(correct))
        .route("/api/v1/patients/{id}/visits", get(visits))
        .route("/api/v1/patients/{id}/invoices", get(invoices))
        .route("/api/v1/patients/{id}/revisions", get(revisions))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Search {
    /// One search box: a full ID number, a phone number, or the beginning of a name.
    q: Option<String>,
    name: Option<String>,
    phone: Option<String>,
    id_number: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
    #[serde(default)]
    offset: i64,
}

impl Search {
    fn by(&self) -> Result<PatientSearch, HospitalError> {
        let given = [&self.q, &self.name, &self.phone, &self.id_number]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if given > 1 {
            return Err(HospitalError::Invalid {
                field: "q",
                reason: "search by one of q, name, phone or id_number".into(),
            });
        }
        let nonempty = |field: &'static str, v: &str| {
            let v = v.trim();
            if v.is_empty() || v.chars().count() > 64 {
                return Err(HospitalError::Invalid {
                    field,
                    reason: "must be 1 to 64 characters".into(),
                });
            }
            Ok(v.to_owned())
        };
        Ok(if let Some(q) = &self.q {
            PatientSearch::guess(q)?
        } else if let Some(n) = &self.name {
            PatientSearch::NamePrefix(nonempty("name", n)?)
        } else if let Some(p) = &self.phone {
            PatientSearch::Phone(nonempty("phone", p)?)
        } else if let Some(i) = &self.id_number {
            PatientSearch::IdNumber(nonempty("id_number", i)?)
        } else {
            PatientSearch::All
        })
    }
}

/// `GET /api/v1/patients`: every patient newest first, or those a search finds.
pub(super) async fn search(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Params(s): Params<Search>,
) -> ApiResult<serde_json::Value> {
    c.allow(ALL)?;
    let page = super::Page {
        limit: s.limit,
        offset: s.offset,
    };
    page.check()?;
    let (items, total) = h.search_patients(&s.by()?, s.limit, s.offset).await?;
    c.saw(
        &h,
        ReadKind::PatientSearch,
        None,
        items.iter().map(|p| p.id),
    )
    .await?;
    Ok(Json(
        json!({"items": items, "limit": s.limit, "offset": s.offset, "total": total}),
    ))
}

const DESKS: &[Role] = &[Role::Clerk, Role::Cashier, Role::Admin];

async fn patient(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
) -> ApiResult<PatientDetail> {
    c.allow(DESKS)?;
    let patient = h.patient(id).await?;
    c.saw(&h, ReadKind::Patient, Some(id), [id]).await?;
    Ok(Json(patient))
}

async fn correct(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
    Body(correction): Body<PatientCorrection>,
) -> ApiResult<PatientDetail> {
    let actor = c.allow(&[Role::Clerk, Role::Admin])?;
    Ok(Json(h.correct_patient(actor, id, &correction).await?))
}

async fn visits(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
) -> ApiResult<serde_json::Value> {
    c.allow(DESKS)?;
    let visits = h.visits(id).await?;
    c.saw(&h, ReadKind::Visits, Some(id), [id]).await?;
    Ok(Json(json!({ "items": visits })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvoiceStatus {
    status: Option<String>,
}

async fn invoices(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
    Params(q): Params<InvoiceStatus>,
) -> ApiResult<serde_json::Value> {
    c.allow(DESKS)?;
    let invoices = h.patient_invoices(id, q.status.as_deref()).await?;
    c.saw(&h, ReadKind::Invoices, Some(id), [id]).await?;
    Ok(Json(json!({ "items": invoices })))
}

async fn revisions(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
) -> ApiResult<serde_json::Value> {
    c.allow(&[Role::Admin])?;
    let revisions = h.patient_revisions(id).await?;
    c.saw(&h, ReadKind::Revisions, Some(id), [id]).await?;
    Ok(Json(json!({ "items": revisions })))
}
