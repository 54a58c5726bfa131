//! The update server's HTTP API under `/api/v1`: thin handlers over [`Server`], errors turned
//! into responses in one place, each endpoint admitting only the roles that need it. Nodes use
//! two endpoints with their credential: the link (`/api/v1/link`) and bundle downloads.

use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{
    DefaultBodyLimit, FromRequestParts, MatchedPath, Path, Query, Request, State, WebSocketUpgrade,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::AuditQuery;
use crate::auth::{NodeIdentity, Operator, OperatorRole};
use crate::rollouts::{NewRollout, RolloutAction};
use crate::{Server, ServerError};

use OperatorRole::{Admin, Auditor, Operator as Op, Publisher};

const EVERYONE: &[OperatorRole] = &[Admin, Publisher, Op, Auditor];

/// The largest JSON body any endpoint but a bundle upload takes. (Its nesting is bounded by
/// serde_json's recursion limit of 128.)
const JSON_BODY_LIMIT: usize = 64 * 1024;

/// The routes.
pub fn router(server: Server) -> Router {
    let limits = &server.inner.config.bundle_limits;
    // A bundle: its manifest and payload, and the container's headers and signature.
    let bundle_limit =
        (limits.max_manifest_bytes + limits.max_any_payload_bytes()) as usize + 64 * 1024;
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/sessions", post(login))
        .route("/api/v1/operators", post(add_operator))
        .route(
            "/api/v1/releases",
            post(publish)
                .layer(DefaultBodyLimit::max(bundle_limit))
                .get(releases),
        )
        .route("/api/v1/releases/{id}", get(release))
        .route("/api/v1/trust", get(trust))
        .route("/api/v1/trust/roots", post(add_root))
        .route("/api/v1/nodes", post(add_node).get(nodes))
        .route("/api/v1/nodes/{name}/traffic", get(traffic))
        .route("/api/v1/enrolments", post(enrol))
        .route(nonstop_link::LINK_PATH, get(link))
        .route("/api/v1/bundles/{digest}", get(bundle))
        .route("/api/v1/rollouts", post(start_rollout).get(rollouts))
        .route("/api/v1/rollouts/{id}", get(rollout))
        .route("/api/v1/rollouts/{id}/{action}", post(rollout_action))
        .route("/api/v1/status", get(status))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/audit/verify", get(audit_verify))
        .route("/api/v1/events", get(events))
        .merge(nonstop_pages::console())
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(server.clone(), count))
        .with_state(server)
}

/// Counts every request by its route template and status.
async fn count(State(server): State<Server>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(req).await;
    server.metrics().request(
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ServerError::Bundle(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bundle-refused"),
            ServerError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid"),
            ServerError::NotFound { .. } => (StatusCode::NOT_FOUND, "not-found"),
            ServerError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ServerError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ServerError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            ServerError::Database(_) | ServerError::Migrate(_) | ServerError::Io(_) => {
                tracing::error!(error = %self, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let field = match &self {
            ServerError::Invalid { field, .. } => Some(*field),
            _ => None,
        };
        (
            status,
            Json(json!({"code": code, "field": field, "message": self.to_string()})),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ServerError>;

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

impl FromRequestParts<Server> for Operator {
    type Rejection = ServerError;
    async fn from_request_parts(parts: &mut Parts, server: &Server) -> Result<Self, ServerError> {
        let token = bearer(&parts.headers)
            .ok_or_else(|| ServerError::Unauthorized("sign in first: no bearer token".into()))?;
        server.operator_by_token(token).await
    }
}

impl FromRequestParts<Server> for NodeIdentity {
    type Rejection = ServerError;
    async fn from_request_parts(parts: &mut Parts, server: &Server) -> Result<Self, ServerError> {
        let token = bearer(&parts.headers)
            .ok_or_else(|| ServerError::Unauthorized("no node credential".into()))?;
        server.node_by_credential(token).await
    }
}

/// A JSON body whose rejection is a [`ServerError`] naming what was wrong.
struct Body<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ServerError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ServerError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| Body(v))
            .map_err(|e| ServerError::invalid("body", e.body_text()))
    }
}

async fn metrics(State(s): State<Server>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics().render(),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    username: String,
    password: String,
}

async fn login(State(s): State<Server>, Body(b): Body<Login>) -> ApiResult<Json<Value>> {
    let token = s.login(&b.username, &b.password).await?;
    // Who signed in, so a console shows each role only what it may do.
    let operator = s.operator_by_token(&token).await?;
    Ok(Json(
        json!({ "token": token, "username": operator.username, "role": operator.role }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOperator {
    username: String,
    role: OperatorRole,
    password: String,
}

async fn add_operator(
    State(s): State<Server>,
    o: Operator,
    Body(b): Body<NewOperator>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    o.allow(&[Admin], "add operators")?;
    s.add_operator(&o.actor(), &b.username, b.role, &b.password)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"username": b.username, "role": b.role})),
    ))
}

async fn publish(
    State(s): State<Server>,
    o: Operator,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    o.allow(&[Admin, Publisher], "publish releases")?;
    let release = s.publish(&o.actor(), &body).await?;
    Ok((StatusCode::CREATED, Json(json!(release))))
}

async fn trust(State(s): State<Server>, o: Operator) -> ApiResult<Json<Value>> {
    o.allow(EVERYONE, "read the root of trust")?;
    Ok(Json(json!(s.trust_info())))
}

/// The body is the root file exactly as signed: its signatures are over those bytes.
async fn add_root(
    State(s): State<Server>,
    o: Operator,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    o.allow(&[Admin], "change the root of trust")?;
    let info = s.add_root(&o.actor(), &body).await?;
    Ok((StatusCode::CREATED, Json(json!(info))))
}

async fn releases(State(s): State<Server>, o: Operator) -> ApiResult<Json<Value>> {
    o.allow(EVERYONE, "list releases")?;
    Ok(Json(json!({ "items": s.releases().await? })))
}

async fn release(
    State(s): State<Server>,
    o: Operator,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    o.allow(EVERYONE, "read releases")?;
    Ok(Json(json!(s.find_release(&id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNode {
    name: String,
    #[serde(default = "default_group")]
    group: String,
}

fn default_group() -> String {
    "default".into()
}

async fn add_node(
    State(s): State<Server>,
    o: Operator,
    Body(b): Body<NewNode>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    o.allow(&[Admin, Op], "enrol nodes")?;
    let token = s.add_node(&o.actor(), &b.name, &b.group).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": b.name, "group": b.group, "enrolment_token": token})),
    ))
}

async fn nodes(State(s): State<Server>, o: Operator) -> ApiResult<Json<Value>> {
    o.allow(EVERYONE, "list nodes")?;
    Ok(Json(json!({ "items": s.nodes().await? })))
}

async fn traffic(
    State(s): State<Server>,
    o: Operator,
    Path(name): Path<String>,
    Query(q): Query<crate::traffic::ChartQuery>,
) -> ApiResult<Json<crate::traffic::Chart>> {
    o.allow(EVERYONE, "see a node's traffic")?;
    Ok(Json(s.chart(&name, &q).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Enrol {
    token: String,
}

async fn enrol(State(s): State<Server>, Body(b): Body<Enrol>) -> ApiResult<Json<Value>> {
    let (node, credential) = s.enrol(&b.token).await?;
    Ok(Json(json!({"node": node, "credential": credential})))
}

async fn link(State(s): State<Server>, node: NodeIdentity, ws: WebSocketUpgrade) -> Response {
    // Link messages are small (bundles travel over HTTP), and a server holds thousands of links:
    // small buffers instead of tungstenite's 128 KiB defaults keep a link to a few KiB.
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| s.serve_link(node, socket))
}

/// A bundle by digest, for nodes (their credential) and operators. `Range: bytes=N-` or
/// `bytes=N-M` resumes a cut download.
async fn bundle(
    State(s): State<Server>,
    headers: HeaderMap,
    Path(digest): Path<String>,
) -> ApiResult<Response> {
    let token =
        bearer(&headers).ok_or_else(|| ServerError::Unauthorized("no credential".into()))?;
    if s.node_by_credential(token).await.is_err() {
        s.operator_by_token(token).await?;
    }
    let bytes = s.bundle_bytes(&digest).await?;
    let total = bytes.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| parse_range(r, total));
    match range {
        None => Ok(([(header::ACCEPT_RANGES, "bytes")], bytes).into_response()),
        Some(Some((start, end))) => Ok((
            StatusCode::PARTIAL_CONTENT,
            [
                (header::ACCEPT_RANGES, "bytes".to_owned()),
                (
                    header::CONTENT_RANGE,
                    format!("bytes {start}-{end}/{total}"),
                ),
            ],
            bytes.slice(start as usize..=end as usize),
        )
            .into_response()),
        Some(None) => Ok((
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{total}"))],
        )
            .into_response()),
    }
}

/// One range of `bytes=N-`, `bytes=N-M` or `bytes=-K` within `total`, as inclusive offsets;
/// `None` if it cannot be satisfied. Written here because only this one form is ever needed
/// (a node resuming its own download): a multi-range parser would be dead weight.
fn parse_range(header: &str, total: u64) -> Option<(u64, u64)> {
    let spec = header.strip_prefix("bytes=")?.trim();
    if spec.contains(',') || total == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", k) => {
            let k: u64 = k.parse().ok()?;
            (total.saturating_sub(k), total - 1)
        }
        (n, "") => (n.parse().ok()?, total - 1),
        (n, m) => (n.parse().ok()?, m.parse::<u64>().ok()?.min(total - 1)),
    };
    (start <= end && start < total).then_some((start, end))
}

async fn start_rollout(
    State(s): State<Server>,
    o: Operator,
    Body(b): Body<NewRollout>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    o.allow(&[Admin, Op], "start rollouts")?;
    let r = s.start_rollout(&o.actor(), &b).await?;
    Ok((StatusCode::CREATED, Json(json!(r))))
}

async fn rollouts(State(s): State<Server>, o: Operator) -> ApiResult<Json<Value>> {
    o.allow(EVERYONE, "list rollouts")?;
    Ok(Json(json!({ "items": s.rollouts().await? })))
}

async fn rollout(
    State(s): State<Server>,
    o: Operator,
    Path(id): Path<i64>,
) -> ApiResult<Json<Value>> {
    o.allow(EVERYONE, "read rollouts")?;
    Ok(Json(json!(s.rollout(id).await?)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    #[serde(default)]
    reason: String,
}

async fn rollout_action(
    State(s): State<Server>,
    o: Operator,
    Path((id, action)): Path<(i64, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    o.allow(&[Admin, Op], "change rollouts")?;
    let action: RolloutAction =
        serde_json::from_value(Value::String(action.clone())).map_err(|_| {
            ServerError::invalid(
                "action",
                format!("{action:?} is not pause, resume, abort or rollback"),
            )
        })?;
    // The body is optional: `{"reason": "..."}` or nothing.
    let reason = if body.is_empty() {
        String::new()
    } else {
        serde_json::from_slice::<ActionBody>(&body)
            .map_err(|e| ServerError::invalid("body", e.to_string()))?
            .reason
    };
    Ok(Json(json!(
        s.rollout_action(&o.actor(), id, action, &reason).await?
    )))
}

async fn status(State(s): State<Server>, o: Operator) -> ApiResult<Json<Value>> {
    o.allow(EVERYONE, "read the status")?;
    Ok(Json(json!(s.status().await?)))
}

async fn audit(
    State(s): State<Server>,
    o: Operator,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Value>> {
    o.allow(&[Admin, Auditor], "read the audit log")?;
    Ok(Json(
        json!({ "items": crate::audit::list(&s.inner.pool, &q).await? }),
    ))
}

async fn audit_verify(State(s): State<Server>, o: Operator) -> ApiResult<Json<Value>> {
    o.allow(&[Admin, Auditor], "read the audit log")?;
    Ok(Json(json!(crate::audit::verify(&s.inner.pool).await?)))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_resume_downloads() {
        assert_eq!(parse_range("bytes=10-", 100), Some((10, 99)));
        assert_eq!(parse_range("bytes=10-19", 100), Some((10, 19)));
        assert_eq!(parse_range("bytes=-5", 100), Some((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("lines=1-2", 100), None);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    token: String,
}

/// How long changes are gathered into one event: a wave of a thousand nodes reporting steps
/// becomes a few events a second, and each console re-reads what it shows at most that often.
const GATHER: std::time::Duration = std::time::Duration::from_millis(500);
/// How often a quiet stream checks that its operator's token still stands.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(15);

/// The console's server-sent events: a `change` event (its data a counter) at once and whenever
/// the fleet changed; the page then reads again what it shows. The token travels in the query
/// because `EventSource` cannot send headers.
async fn events(
    State(s): State<Server>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<
    axum::response::sse::Sse<
        impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
    >,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    s.operator_by_token(&q.token).await?;
    let changes = s.changes();
    // The stream ends when the server stops, so a stop does not wait for it to drain.
    let closing = s.inner.closing.subscribe();
    let stream = futures_util::stream::unfold(
        (s, changes, closing, q.token, true),
        |(s, mut changes, mut closing, token, first)| async move {
            if *closing.borrow() {
                return None;
            }
            if !first {
                loop {
                    tokio::select! {
                        changed = tokio::time::timeout(RECHECK, changes.changed()) => match changed {
                            Ok(Ok(())) => break,
                            Ok(Err(_)) => return None,
                            Err(_) if s.operator_by_token(&token).await.is_err() => return None,
                            Err(_) => {}
                        },
                        // It only ever changes to true.
                        _ = closing.changed() => return None,
                    }
                }
                tokio::time::sleep(GATHER).await;
            }
            let n = *changes.borrow_and_update();
            let event = Event::default().event("change").data(n.to_string());
            Some((Ok(event), (s, changes, closing, token, false)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
