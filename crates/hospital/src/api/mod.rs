//! The node's HTTP JSON API under `/api/v1`. Handlers are thin: they check the caller's role,
//! call the hospital core, and turn its errors into responses in one place ([`ApiError`]): a
//! machine-readable code, the field at fault if any, and a message. Patient data is never served
//! without a token; each endpoint admits only the roles that need it, and every answer that shows
//! a patient's identifying data or invoices is first recorded in the read audit
//! ([`Caller::saw`], [`crate::read_audit`]). An auditor reaches the audits and nothing else.
//!
//! Here: the desks' and the doctor's endpoints and the extractors all share. The hospital's
//! set-up, kept by its administrator, is in [`clinic`] (departments, doctors, sessions) and
//! [`staff`] (accounts, sign-out, own password); patient search and history in [`patients`];
//! the cashier's day closing in [`closing`]; the read audit's query in [`reads`].

mod clinic;
mod closing;
mod patients;
mod reads;
mod screens;
mod staff;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{
    ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State,
};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use std::net::SocketAddr;
use std::sync::Arc;

use nonstop_agent::Agent;

use crate::auth::{Role, Staff};
use crate::billing::{PaymentRequest, RefundRequest};
use crate::patient::NewPatient;
use crate::queue::CheckIn;
use crate::read_audit::ReadKind;
use crate::registration::NewRegistration;
use crate::{Hospital, HospitalError};

/// The OpenAPI document served at `/api/v1/openapi.json`; a test checks it lists every route.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// What the handlers share: the hospital core and, in a node, its update agent.
#[derive(Clone)]
pub struct AppState {
    /// The hospital core.
    pub hospital: Hospital,
    /// The update agent, which takes pushed bundles: set once it runs (a program that takes
    /// over from another starts its agent once the other has let the version store go).
    pub agent: AgentSlot,
}

/// Where the update agent is, once it runs.
pub type AgentSlot = Arc<std::sync::OnceLock<Arc<Agent>>>;

/// The API's router.
pub fn router(state: AppState) -> Router {
    // A pushed bundle may be as large as the default bundle limits (1 MiB of manifest, 256 MiB of
    // a program's payload, and the container; the agent enforces the configured ones, and a rule
    // module's smaller limit, on what it reads);
    // every other body is JSON, at most 64 KiB, its nesting bounded by serde_json's recursion
    // limit.
    let limits = nonstop_bundle::BundleLimits::default();
    let bundle_limit =
        (limits.max_manifest_bytes + limits.max_any_payload_bytes()) as usize + 64 * 1024;
    Router::new()
        .merge(clinic::routes())
        .merge(staff::routes())
        .merge(patients::routes())
        .merge(closing::routes())
        .merge(screens::routes())
        .merge(reads::routes())
        .route("/health", get(|| async { "ok" }))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/sessions", post(login))
        .route("/api/v1/users", post(add_user).get(staff::accounts))
        .route("/api/v1/patients", post(add_patient).get(patients::search))
        .route("/api/v1/records/check", post(check_records))
        .route("/api/v1/registrations", post(register))
        .route("/api/v1/registrations/quote", post(quote_registration))
        .route("/api/v1/payments/quote", post(quote_payment))
        .route("/api/v1/registrations/{id}/cancel", post(cancel))
        .route("/api/v1/payments", post(pay))
        .route("/api/v1/refunds", post(refund))
        .route("/api/v1/invoices/{id}", get(invoice))
        .route("/api/v1/cashier/totals", get(totals))
        .route("/api/v1/check-ins", post(check_in))
        .route("/api/v1/practitioners/{id}/day", get(doctor_day))
        .route("/api/v1/schedules/{id}/call-next", post(call_next))
        .route("/api/v1/schedules/{id}/queue", get(queue))
        .route("/api/v1/schedules/{id}/waiting-room", get(waiting_room))
        .route("/api/v1/tickets/{id}/{action}", post(ticket_action))
        .route("/api/v1/audit/{entity}/{id}", get(audit))
        .route("/api/v1/rules", get(rules))
        .route(
            "/api/v1/updates",
            post(push_update).layer(axum::extract::DefaultBodyLimit::max(bundle_limit)),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not-found",
                None,
                "no such endpoint".into(),
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

/// An error response: `{"error": {"code", "field", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    field: Option<String>,
    message: String,
    /// The record a duplicate would have repeated.
    existing_id: Option<i64>,
    /// Seconds a throttled client should wait (`Retry-After`).
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, field: Option<String>, message: String) -> Self {
        ApiError {
            status,
            code,
            field,
            message,
            existing_id: None,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body =
            json!({"error": {"code": self.code, "field": self.field, "message": self.message}});
        if let Some(id) = self.existing_id {
            body["error"]["existing_id"] = id.into();
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<HospitalError> for ApiError {
    fn from(e: HospitalError) -> Self {
        let message = e.to_string();
        if let HospitalError::Duplicate {
            field, existing_id, ..
        } = &e
        {
            let mut error = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                Some(field.to_string()),
                message,
            );
            error.existing_id = Some(*existing_id);
            return error;
        }
        if let HospitalError::Throttled {
            retry_after_secs, ..
        } = &e
        {
            let mut error =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "throttled", None, message);
            error.retry_after = Some(*retry_after_secs);
            return error;
        }
        if let HospitalError::Overloaded {
            retry_after_secs, ..
        } = &e
        {
            let mut error =
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", None, message);
            error.retry_after = Some(*retry_after_secs);
            return error;
        }
        // PostgreSQL refuses text holding the NUL character (22021; a Rust string is otherwise
        // always valid UTF-8): the request is malformed, not the server failing.
        if let HospitalError::Db(sqlx::Error::Database(d)) = &e
            && d.code().as_deref() == Some("22021")
        {
            return bad_request("a text value holds the NUL character (\\u0000)".into());
        }
        let (status, code, field) = match &e {
            HospitalError::Invalid { field, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                Some(field.to_string()),
            ),
            HospitalError::NotFound { .. } => (StatusCode::NOT_FOUND, "not-found", None),
            HospitalError::Duplicate { field, .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                Some(field.to_string()),
            ),
            HospitalError::Refused { .. } => (StatusCode::CONFLICT, "refused", None),
            HospitalError::QuotaExhausted { .. } => (StatusCode::CONFLICT, "quota-exhausted", None),
            HospitalError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            HospitalError::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "throttled", None),
            HospitalError::Overloaded { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded", None)
            }
            HospitalError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            HospitalError::Rule(_) => (StatusCode::SERVICE_UNAVAILABLE, "rule-unavailable", None),
            HospitalError::ReadAudit(_) => {
                tracing::error!(error = %e, "a read was not recorded");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "read-audit-unavailable",
                    None,
                )
            }
            HospitalError::Db(_)
            | HospitalError::Sqlite(_)
            | HospitalError::Migrate(_)
            | HospitalError::Auth(_)
            | HospitalError::Commit(_) => {
                tracing::error!(error = %e, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", None)
            }
        };
        ApiError::new(status, code, field, message)
    }
}

pub(crate) type ApiResult<T> = Result<Json<T>, ApiError>;

/// A `201 Created` answer.
pub(crate) type Created<T> = Result<(StatusCode, Json<T>), ApiError>;

/// A JSON body whose rejection (malformed JSON, unknown or missing field) becomes a 400 naming it.
pub struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(bad_body(&rejection)),
        }
    }
}

fn bad_body(rejection: &JsonRejection) -> ApiError {
    bad_request(rejection.body_text())
}

/// A 400 for a request axum could not read, naming the field when the message does.
fn bad_request(message: String) -> ApiError {
    let field = field_of(&message);
    ApiError::new(StatusCode::BAD_REQUEST, "bad-request", field, message)
}

/// The field a deserialization message is about: serde names an unknown or missing field in
/// backticks, and axum puts the path of a field of the wrong type before serde's message
/// ("...target type: patient_id: invalid type...", "...query string: wait: unknown
/// variant..."). axum's rejection keeps only the text, so the field is read back from it.
fn field_of(message: &str) -> Option<String> {
    for marker in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.split(marker).nth(1) {
            return rest.split('`').next().map(str::to_owned);
        }
    }
    let rest = ["target type: ", "query string: "]
        .iter()
        .find_map(|marker| message.split(marker).nth(1))?;
    let (path, _) = rest.split_once(": ")?;
    let is_path = !path.is_empty()
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'));
    is_path.then(|| path.to_owned())
}

/// Path parameters whose rejection (an id that is not a number) becomes a 400 naming it.
pub struct Ids<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Ids<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Ids(v)),
            Err(rejection) => Err(bad_request(rejection.body_text())),
        }
    }
}

/// Query parameters whose rejection becomes a 400 naming the parameter.
pub struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Params(v)),
            Err(rejection) => Err(bad_query(&rejection)),
        }
    }
}

fn bad_query(rejection: &QueryRejection) -> ApiError {
    bad_request(rejection.body_text())
}

/// The authenticated caller, from `Authorization: Bearer <token>`; the token's id; and the
/// address the request came from, as the read audit records it.
pub struct Caller(Staff, i64, String);

/// What an auditor may reach: the audits, and their own account.
const AUDITOR_PATHS: &[&str] = &[
    "/api/v1/read-audit",
    "/api/v1/audit/{entity}/{id}",
    "/api/v1/me",
    "/api/v1/me/password",
    "/api/v1/today",
    "/api/v1/sessions/current",
];

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let hospital = &state.hospital;
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::from(HospitalError::Unauthorized(
                    "an Authorization: Bearer token is required".into(),
                ))
            })?;
        let (token_id, staff) = hospital.token_owner(token).await?;
        // An auditor is refused everywhere else here, whatever a handler's own list says.
        if staff.role == Role::Auditor {
            let path = parts
                .extensions
                .get::<MatchedPath>()
                .map(MatchedPath::as_str);
            if !path.is_some_and(|p| AUDITOR_PATHS.contains(&p)) {
                return Err(HospitalError::Forbidden(format!(
                    "{} is an auditor, who reads the audits and nothing else",
                    staff.username
                ))
                .into());
            }
        }
        let client = client_of(parts, hospital);
        Ok(Caller(staff, token_id, client))
    }
}

/// The client's address, as the read audit records it (a trusted proxy's `X-Forwarded-For`
/// believed), before anyone has signed in.
pub(crate) struct ClientAddress(pub(crate) String);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(ClientAddress(client_of(parts, &state.hospital)))
    }
}

/// The client's address of a request: the peer, or what a trusted proxy forwarded.
fn client_of(parts: &Parts, hospital: &Hospital) -> String {
    // Absent when the router is served without connect info (a test's own server).
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let forwarded: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded = (!forwarded.is_empty()).then(|| forwarded.join(","));
    hospital.client_address(peer, forwarded.as_deref())
}

impl Caller {
    /// The caller's username if their role is one of `roles`.
    pub(crate) fn allow(&self, roles: &[Role]) -> Result<&str, ApiError> {
        if roles.contains(&self.0.role) {
            Ok(&self.0.username)
        } else {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(HospitalError::Forbidden(format!(
                "this needs the role {}; {} is {}",
                names.join(" or "),
                self.0.username,
                self.0.role.as_str()
            ))
            .into())
        }
    }
}

impl Caller {
    /// Records in the read audit that the caller saw `patients` by a read of `kind` of the
    /// record `target`. Called before the answer is sent: if it fails, the answer is not.
    pub(crate) async fn saw(
        &self,
        h: &Hospital,
        kind: ReadKind,
        target: Option<i64>,
        patients: impl IntoIterator<Item = i64>,
    ) -> Result<(), ApiError> {
        Ok(h.record_read(&self.0, kind, target, &self.2, patients)
            .await?)
    }

    /// A doctor whose account names a practitioner acts only in that practitioner's sessions.
    pub(crate) async fn own_session(
        &self,
        h: &Hospital,
        of: crate::SessionOf,
    ) -> Result<(), ApiError> {
        let Some(mine) = self.0.practitioner_id else {
            return Ok(());
        };
        self.may_see(h.practitioner_of(of).await?, mine)
    }

    /// Whether a doctor linked to practitioner `mine` may see or act for practitioner `theirs`.
    fn may_see(&self, theirs: i64, mine: i64) -> Result<(), ApiError> {
        if theirs == mine {
            return Ok(());
        }
        Err(HospitalError::Forbidden(format!(
            "{} is practitioner {mine}, not practitioner {theirs}",
            self.0.username
        ))
        .into())
    }
}

/// Every member of staff (a kiosk is not one: it may only pay).
pub(crate) const ALL: &[Role] = &[Role::Clerk, Role::Cashier, Role::Doctor, Role::Admin];

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    username: String,
    password: String,
}

async fn login(
    State(AppState { hospital: h, .. }): State<AppState>,
    ClientAddress(address): ClientAddress,
    Body(l): Body<Login>,
) -> ApiResult<serde_json::Value> {
    let (token, staff) = h.login_from(&address, &l.username, &l.password).await?;
    Ok(Json(
        json!({"token": token, "username": staff.username, "role": staff.role}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    role: Role,
    #[serde(default)]
    practitioner_id: Option<i64>,
    password: String,
}

async fn add_user(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(u): Body<NewUser>,
) -> ApiResult<serde_json::Value> {
    let actor = c.allow(&[Role::Admin])?;
    Ok(Json(
        json!({"id": h.add_user(actor, &u.username, u.role, u.practitioner_id, &u.password).await?}),
    ))
}

async fn add_patient(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(p): Body<NewPatient>,
) -> ApiResult<serde_json::Value> {
    let actor = c.allow(&[Role::Clerk, Role::Admin])?;
    Ok(Json(json!({"id": h.add_patient(actor, &p).await?})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    #[serde(default = "default_limit")]
    pub(crate) limit: i64,
    #[serde(default)]
    pub(crate) offset: i64,
}

pub(crate) fn default_limit() -> i64 {
    50
}

impl Page {
    pub(crate) fn check(&self) -> Result<(), HospitalError> {
        if !(1..=500).contains(&self.limit) {
            return Err(HospitalError::Invalid {
                field: "limit",
                reason: format!("{} is not 1 to 500", self.limit),
            });
        }
        if self.offset < 0 {
            return Err(HospitalError::Invalid {
                field: "offset",
                reason: format!("{} is negative", self.offset),
            });
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordIds {
    registrations: Vec<i64>,
    payments: Vec<i64>,
}

/// Whether acknowledged registrations and payments are in the database exactly once: what a
/// load generator or an update drill asks of a node it does not share a process with.
async fn check_records(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(r): Body<RecordIds>,
) -> ApiResult<crate::RecordCheck> {
    c.allow(&[Role::Admin])?;
    Ok(Json(h.verify_records(&r.registrations, &r.payments).await?))
}

async fn register(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(r): Body<NewRegistration>,
) -> ApiResult<crate::Registration> {
    let actor = c.allow(&[Role::Clerk, Role::Admin])?;
    Ok(Json(h.register(actor, &r).await?))
}

/// The fee a registration would be charged, line by line, before the desk confirms it.
async fn quote_registration(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(r): Body<NewRegistration>,
) -> ApiResult<crate::registration::FeeQuote> {
    let actor = c.allow(&[Role::Clerk, Role::Admin])?;
    Ok(Json(h.quote_registration(actor, &r).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitOf {
    invoice_id: i64,
    patient_id: i64,
}

/// The insurance split an unpaid invoice would get if paid now, before the cashier takes it.
async fn quote_payment(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(q): Body<SplitOf>,
) -> ApiResult<crate::billing::SplitQuote> {
    c.allow(&[Role::Cashier, Role::Kiosk, Role::Admin])?;
    let quote = h.quote_payment(q.invoice_id, q.patient_id).await?;
    c.saw(
        &h,
        ReadKind::PaymentQuote,
        Some(q.invoice_id),
        [q.patient_id],
    )
    .await?;
    Ok(Json(quote))
}

async fn cancel(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
) -> ApiResult<serde_json::Value> {
    let actor = c.allow(&[Role::Clerk, Role::Admin])?;
    if h.cancel_hold(actor, id).await? {
        return Ok(Json(json!({"released": true})));
    }
    let status = h.registration_status(id).await?;
    let reason = match status.as_str() {
        "booked" | "checked-in" => format!(
            "registration {id} is paid ({status}): cancel it by refunding its invoice (退号)"
        ),
        _ => format!("registration {id} is {status}, not held"),
    };
    Err(HospitalError::Refused {
        rule: "registration",
        reason,
    }
    .into())
}

async fn pay(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(p): Body<PaymentRequest>,
) -> ApiResult<crate::Payment> {
    let actor = c.allow(&[Role::Cashier, Role::Kiosk])?;
    if c.0.role == Role::Kiosk && p.method != "self-service" {
        return Err(HospitalError::Forbidden(format!(
            "a kiosk takes self-service payments only, not {:?}",
            p.method
        ))
        .into());
    }
    Ok(Json(h.pay(actor, &p).await?))
}

async fn refund(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(r): Body<RefundRequest>,
) -> ApiResult<crate::Payment> {
    let actor = c.allow(&[Role::Cashier])?;
    Ok(Json(h.refund(actor, &r).await?))
}

async fn invoice(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
) -> ApiResult<crate::InvoiceView> {
    c.allow(&[Role::Cashier, Role::Clerk, Role::Admin, Role::Kiosk])?;
    let invoice = h.invoice(id).await?;
    c.saw(&h, ReadKind::Invoice, Some(id), [invoice.patient_id])
        .await?;
    Ok(Json(invoice))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TotalsQuery {
    date: String,
    cashier: Option<String>,
}

async fn totals(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Params(q): Params<TotalsQuery>,
) -> ApiResult<crate::DailyTotals> {
    c.allow(&[Role::Cashier, Role::Admin])?;
    crate::patient::parse_date("date", &q.date)?;
    Ok(Json(h.daily_totals(&q.date, q.cashier.as_deref()).await?))
}

async fn check_in(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Body(ci): Body<CheckIn>,
) -> ApiResult<crate::QueueEntry> {
    let actor = c.allow(&[Role::Clerk, Role::Admin])?;
    Ok(Json(h.check_in(actor, &ci).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Room {
    room: String,
}

async fn call_next(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
    Body(r): Body<Room>,
) -> Result<Response, ApiError> {
    let actor = c.allow(&[Role::Doctor])?;
    c.own_session(&h, crate::SessionOf::Schedule(id)).await?;
    Ok(match h.call_next(actor, id, &r.room).await? {
        Some(entry) => Json(entry).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn queue(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
    Params(p): Params<Page>,
) -> ApiResult<serde_json::Value> {
    c.allow(&[Role::Doctor, Role::Clerk, Role::Admin])?;
    p.check()?;
    let (items, total) = h.queue(id, p.limit, p.offset).await?;
    c.saw(
        &h,
        ReadKind::Queue,
        Some(id),
        items.iter().map(|e| e.patient_id),
    )
    .await?;
    Ok(Json(
        json!({"items": items, "limit": p.limit, "offset": p.offset, "total": total}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaybeDay {
    date: Option<String>,
}

/// The doctor's view: a practitioner's sessions of a day (today by default), each with its queue
/// and who has paid. A doctor linked to a practitioner sees their own.
async fn doctor_day(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
    Params(d): Params<MaybeDay>,
) -> ApiResult<crate::DoctorDay> {
    c.allow(&[Role::Doctor, Role::Clerk, Role::Admin])?;
    if let Some(mine) = c.0.practitioner_id {
        c.may_see(id, mine)?;
    }
    let date = d.date.unwrap_or_else(|| h.business_date().to_string());
    let day = h.doctor_day(id, &date).await?;
    let shown: Vec<i64> = day
        .sessions
        .iter()
        .flat_map(|s| s.queue.iter().map(|e| e.patient_id))
        .collect();
    c.saw(&h, ReadKind::DoctorDay, Some(id), shown).await?;
    Ok(Json(day))
}

/// The waiting-room screen: who is called to which room, and who waits, by surname only.
#[derive(Serialize)]
struct Board {
    ticket_id: i64,
    patient: String,
    status: String,
    room: Option<String>,
}

async fn waiting_room(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids(id): Ids<i64>,
    Params(p): Params<Page>,
) -> ApiResult<serde_json::Value> {
    c.allow(ALL)?;
    p.check()?;
    let (entries, total) = h.board(id, p.limit, p.offset).await?;
    c.saw(
        &h,
        ReadKind::WaitingRoom,
        Some(id),
        entries.iter().map(|e| e.patient_id),
    )
    .await?;
    let items: Vec<Board> = entries
        .into_iter()
        .map(|e| Board {
            ticket_id: e.ticket_id,
            patient: crate::screen::surname(&e.patient_name),
            status: e.status,
            room: e.room,
        })
        .collect();
    Ok(Json(
        json!({"items": items, "limit": p.limit, "offset": p.offset, "total": total}),
    ))
}

async fn ticket_action(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids((id, action)): Ids<(i64, String)>,
) -> ApiResult<crate::QueueEntry> {
    c.own_session(&h, crate::SessionOf::Ticket(id)).await?;
    let entry = match action.as_str() {
        "start" => h.start_consultation(c.allow(&[Role::Doctor])?, id).await?,
        "finish" => h.finish_consultation(c.allow(&[Role::Doctor])?, id).await?,
        "miss" => h.miss(c.allow(&[Role::Doctor])?, id).await?,
        "suspend" => h.suspend(c.allow(&[Role::Doctor])?, id).await?,
        "resume" => h.resume(c.allow(&[Role::Doctor, Role::Clerk])?, id).await?,
        other => {
            return Err(HospitalError::Invalid {
                field: "action",
                reason: format!("{other:?} is not start, finish, miss, suspend or resume"),
            }
            .into());
        }
    };
    Ok(Json(entry))
}

async fn audit(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
    Ids((entity, id)): Ids<(String, i64)>,
) -> ApiResult<serde_json::Value> {
    c.allow(&[Role::Admin, Role::Auditor])?;
    let trail = h.audit_trail(&entity, id).await?;
    // A patient's trail names what was corrected and why (and the masked ID number).
    if entity == "patient" && !trail.is_empty() {
        c.saw(&h, ReadKind::ChangeAudit, Some(id), [id]).await?;
    }
    let items: Vec<_> = trail
        .into_iter()
        .map(|(actor, action, detail)| json!({"actor": actor, "action": action, "detail": detail}))
        .collect();
    Ok(Json(json!({"items": items})))
}

async fn rules(
    State(AppState { hospital: h, .. }): State<AppState>,
    c: Caller,
) -> ApiResult<serde_json::Value> {
    c.allow(ALL)?;
    let items: Vec<_> = h
        .live_rules()
        .into_iter()
        .map(|(component, version, digest)| json!({"component": component, "version": version, "digest": digest}))
        .collect();
    Ok(Json(json!({"items": items})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushQuery {
    /// `watch` (default): reply when the update has ended, after the watch window if it went
    /// live; `live`: reply as soon as it is live (the watch goes on, and still rolls back).
    #[serde(default)]
    wait: Wait,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "kebab-case")]
enum Wait {
    #[default]
    Watch,
    Live,
}

/// An update bundle pushed to this node (the body is the bundle file). The agent verifies,
/// stages, checks and promotes it on its own thread; the reply is its report, sent when the
/// update has ended (after the watch window if it went live), or with `?wait=live` as soon as it
/// is live.
async fn push_update(
    State(app): State<AppState>,
    c: Caller,
    Params(q): Params<PushQuery>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    c.allow(&[Role::Admin])?;
    let Some(agent) = app.agent.get().cloned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-agent",
            None,
            "this server has no update agent".into(),
        ));
    };
    let report = tokio::task::spawn_blocking(move || match q.wait {
        Wait::Watch => agent.install_and_wait(body.to_vec()),
        Wait::Live => agent.install_until_live(body.to_vec()),
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            None,
            e.to_string(),
        )
    })?
    .map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-agent",
            None,
            e.to_string(),
        )
    })?;
    Ok(Json(report).into_response())
}
