//! Fuzz target for the API's JSON request bodies, through the real router (`api::router`, called
//! in-process with `tower::ServiceExt::oneshot`) of a hospital on SQLite, signed in with the role
//! each endpoint admits, so a body reaches the same extractor, deserialisation and validation a
//! client's does. Each input is a route line and a body, as in `__fuzz__/api/corpus/`:
//!
//! ```text
//! POST /api/v1/patients
//! {"name": "张三", ...}
//! ```
//!
//! An input that does not start with a known route line is a body for the route its first byte
//! picks. The property: nothing panics or hangs, no body gets a 5xx, every answer is one the
//! OpenAPI document gives for that operation and matches its schema, and an error names what
//! was wrong (`{"error": {"code", "field", "message"}}`, the field when a value is invalid).
//!
//! Left out: sign-in and the password endpoints (each valid body is an argon2 hash, seconds in a
//! debug build) and the bundle upload (fuzzed as a bundle in `nonstop-bundle`).
//!
//! Longer: `BOLERO_RANDOM_ITERATIONS=20000 cargo test -p nonstop-hospital --test it fuzz::`.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use nonstop_fuzzing::{Corpus, Target, recipes};
use nonstop_hospital::Role;
use nonstop_hospital::api::{AppState, OPENAPI, router};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Random inputs after the committed ones, for the replayed target and the mutated one. A
/// request takes about 0.3 ms in a debug build (most stop at the body's deserialisation); the
/// set-up before them, about 10 s, is mostly the argon2 hashes of three accounts.
const RANDOM: usize = 200;
const MUTATED: usize = 10_000;

/// The endpoints fuzzed: route line (`{spare}` is a clinic session of the fixture's own), the
/// OpenAPI path it is documented under, and the role that calls it (the administrator where the
/// desks' roles may call too: one account fewer to hash).
const ROUTES: &[(&str, &str, Role)] = &[
    ("POST /api/v1/patients", "/api/v1/patients", Role::Admin),
    (
        "PATCH /api/v1/patients/1",
        "/api/v1/patients/{id}",
        Role::Admin,
    ),
    (
        "POST /api/v1/registrations",
        "/api/v1/registrations",
        Role::Admin,
    ),
    (
        "POST /api/v1/registrations/quote",
        "/api/v1/registrations/quote",
        Role::Admin,
    ),
    ("POST /api/v1/payments", "/api/v1/payments", Role::Cashier),
    (
        "POST /api/v1/payments/quote",
        "/api/v1/payments/quote",
        Role::Cashier,
    ),
    ("POST /api/v1/refunds", "/api/v1/refunds", Role::Cashier),
    ("POST /api/v1/check-ins", "/api/v1/check-ins", Role::Admin),
    (
        "POST /api/v1/schedules/1/call-next",
        "/api/v1/schedules/{id}/call-next",
        Role::Doctor,
    ),
    (
        "POST /api/v1/departments",
        "/api/v1/departments",
        Role::Admin,
    ),
    (
        "PATCH /api/v1/departments/3",
        "/api/v1/departments/{id}",
        Role::Admin,
    ),
    (
        "POST /api/v1/practitioners",
        "/api/v1/practitioners",
        Role::Admin,
    ),
    (
        "PATCH /api/v1/practitioners/8",
        "/api/v1/practitioners/{id}",
        Role::Admin,
    ),
    ("POST /api/v1/schedules", "/api/v1/schedules", Role::Admin),
    (
        "POST /api/v1/schedules/week",
        "/api/v1/schedules/week",
        Role::Admin,
    ),
    (
        "PUT /api/v1/schedules/{spare}/quotas",
        "/api/v1/schedules/{id}/quotas",
        Role::Admin,
    ),
    (
        "POST /api/v1/schedules/{spare}/stop",
        "/api/v1/schedules/{id}/stop",
        Role::Admin,
    ),
    (
        "POST /api/v1/schedules/{spare}/cancel",
        "/api/v1/schedules/{id}/cancel",
        Role::Admin,
    ),
    (
        "POST /api/v1/cashier/closings",
        "/api/v1/cashier/closings",
        Role::Cashier,
    ),
    (
        "POST /api/v1/records/check",
        "/api/v1/records/check",
        Role::Admin,
    ),
    ("POST /api/v1/screens", "/api/v1/screens", Role::Admin),
];

fn target() -> Target {
    Target::new(
        "api",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it"),
        Path::new(env!("CARGO_TARGET_TMPDIR")),
    )
}

/// Both halves in one test, so they share one hospital (setting it up signs in three accounts,
/// each three argon2 hashes): the committed inputs and random bytes, then edited committed
/// bodies. On SQLite, and on PostgreSQL too when `DATABASE_URL` names one (fewer inputs: each
/// is a round trip to the server).
#[test]
fn api() {
    let t = target();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Edits go to the body only, so each stays a body for its own route.
    let corpus = t.corpus();
    let routes: Vec<&[u8]> = corpus.seeds().iter().map(|s| split(s).0).collect();
    let bodies = Corpus::new(corpus.seeds().iter().map(|s| split(s).1.to_vec()).collect())
        .with_words(&[
            b"\"patient_id\"",
            b"\"schedule_id\"",
            b"\"invoice_id\"",
            b"\"on-site\"",
        ]);
    for backend in runtime.block_on(crate::backends()) {
        let mutated = if backend.name == "sqlite" {
            MUTATED
        } else {
            MUTATED / 10
        };
        let hospital = AssertUnwindSafe(Fixture::new(runtime.handle().clone(), backend));
        bolero::check!(name = "api")
            .with_iterations(RANDOM)
            .for_each(|input| t.check(input, |input| hospital.answers_well(input)));
        bolero::check!(name = "api-mutated")
            .with_generator(recipes())
            .with_iterations(mutated)
            .with_shrink_time(Duration::ZERO)
            .for_each(|recipe| {
                let route = routes[usize::from(recipe.0) % routes.len()];
                let input = [route, b"\n", &bodies.mutate(recipe)].concat();
                t.check(&input, |input| hospital.answers_well(input))
            });
    }
}

/// The route line and body of an input.
fn split(input: &[u8]) -> (&[u8], &[u8]) {
    match input.iter().position(|&b| b == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (b"", input),
    }
}

/// A hospital with the demo clinic, an account of each role, and the records the committed
/// bodies name: patients 1 and 2; registration 1 (paid), 2 (paid, for the refund), 3 (unpaid);
/// and a session in the future that quotas, stop and cancel may change.
struct Fixture {
    runtime: tokio::runtime::Handle,
    backend: crate::Backend,
    router: Router,
    tokens: Vec<(Role, String)>,
    spare: i64,
    validators: Mutex<HashMap<String, jsonschema::Validator>>,
}

impl Fixture {
    /// `backend`'s hospital (the demo clinic seeded) with the fixture's accounts and records.
    fn new(runtime: tokio::runtime::Handle, backend: crate::Backend) -> Fixture {
        // Each account costs three argon2 hashes (most of the set-up time): made side by side.
        let account = |role: Role| {
            let hospital = backend.hospital.clone();
            async move {
                let (username, password) =
                    (format!("fuzz-{}", role.as_str()), "fuzzing-passphrase-7");
                hospital
                    .add_user("system", &username, role, None, password)
                    .await
                    .unwrap();
                (role, hospital.login(&username, password).await.unwrap().0)
            }
        };
        let (admin, cashier, doctor) = runtime.block_on(async {
            tokio::join!(
                account(Role::Admin),
                account(Role::Cashier),
                account(Role::Doctor)
            )
        });
        let mut fixture = Fixture {
            router: router(AppState {
                hospital: backend.hospital.clone(),
                agent: Default::default(),
            }),
            runtime,
            backend,
            tokens: vec![admin, cashier, doctor],
            spare: 0,
            validators: Mutex::new(HashMap::new()),
        };
        fixture.records();
        fixture
    }

    /// The records the committed bodies name, made through the API with committed bodies.
    fn records(&mut self) {
        let seed = |name: &str| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/it/__fuzz__/api/corpus")
                .join(name);
            let text = std::fs::read(&path).unwrap();
            serde_json::from_slice::<Value>(split(&text).1).unwrap()
        };
        let created = |role, method: Method, path: &str, body: Value| {
            let (status, answer) = self.call(role, method, path, body.to_string().into_bytes());
            assert!(status.is_success(), "{path}: {status} {answer}");
            answer["id"].as_i64().unwrap_or_default()
        };
        assert_eq!(
            created(
                Role::Admin,
                Method::POST,
                "/api/v1/patients",
                seed("patient-insured")
            ),
            1
        );
        assert_eq!(
            created(
                Role::Admin,
                Method::POST,
                "/api/v1/patients",
                seed("patient-self-pay")
            ),
            2
        );
        for (patient, schedule, paid) in [(1, 1, true), (2, 1, true), (1, 5, false)] {
            let body =
                json!({"patient_id": patient, "schedule_id": schedule, "channel": "on-site"});
            let id = created(Role::Admin, Method::POST, "/api/v1/registrations", body);
            if paid {
                let pay = json!({"invoice_id": id, "patient_id": patient, "method": "card", "idempotency_key": format!("fixture-{id}")});
                created(Role::Cashier, Method::POST, "/api/v1/payments", pay);
            }
        }
        // A session of its own, weeks ahead whatever today is, for the bodies that change one.
        let mut session = seed("schedule");
        let date = self.backend.hospital.business_date() + time::Duration::days(40);
        session["date"] = date.to_string().into();
        let spare = created(Role::Admin, Method::POST, "/api/v1/schedules", session);
        self.spare = spare;
    }

    /// One request as `role`: its status and JSON answer (`null` when it has no body).
    fn call(&self, role: Role, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let token = &self.tokens.iter().find(|(r, _)| *r == role).unwrap().1;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from(body))
            .unwrap();
        self.runtime.block_on(async {
            let answer = tokio::time::timeout(
                Duration::from_secs(15),
                self.router.clone().oneshot(request),
            )
            .await
            .expect("no answer within 15 s")
            .unwrap();
            let status = answer.status();
            let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20)
                .await
                .unwrap();
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "{path}: a {status} answer is not JSON ({e}): {}",
                        String::from_utf8_lossy(&bytes)
                    )
                })
            };
            (status, body)
        })
    }

    /// Sends `input` (a route line and body, or a body for the route its first byte picks) and
    /// checks the answer.
    fn answers_well(&self, input: &[u8]) {
        let (line, body) = split(input);
        let (route, body) = match ROUTES.iter().find(|(l, _, _)| l.as_bytes() == line) {
            Some(route) => (route, body),
            None => match input.split_first() {
                Some((first, rest)) => (&ROUTES[usize::from(*first) % ROUTES.len()], rest),
                None => (&ROUTES[0], input),
            },
        };
        let (line, documented, role) = route;
        let (method, path) = line.split_once(' ').unwrap();
        let path = path.replace("{spare}", &self.spare.to_string());
        let method: Method = method.parse().unwrap();
        let (status, answer) = self.call(*role, method.clone(), &path, body.to_vec());

        assert!(
            !status.is_server_error(),
            "{line}: {status} for a request body on {}: {answer}",
            self.backend.name
        );
        self.documented(&method, documented, status, &answer);
        if status.is_client_error() {
            let error = &answer["error"];
            let message = error["message"].as_str().unwrap_or_default();
            assert!(
                !message.is_empty(),
                "{line}: a {status} that does not say why: {answer}"
            );
            if status == StatusCode::UNPROCESSABLE_ENTITY {
                assert!(
                    error["field"].as_str().is_some_and(|f| !f.is_empty()),
                    "{line}: an invalid value that does not name its field: {answer}"
                );
            }
        }
    }

    /// The status is documented for the operation (or its `default`) and the answer matches
    /// that response's schema.
    fn documented(&self, method: &Method, path: &str, status: StatusCode, answer: &Value) {
        static DOC: std::sync::LazyLock<Value> =
            std::sync::LazyLock::new(|| serde_json::from_str(OPENAPI).unwrap());
        let responses = &DOC["paths"][path][method.as_str().to_lowercase()]["responses"];
        let mut response = responses
            .get(status.as_str())
            .or_else(|| responses.get("default"))
            .unwrap_or_else(|| panic!("{method} {path}: status {status} is not documented"));
        if let Some(name) = response["$ref"].as_str() {
            response = &DOC["components"]["responses"][name.rsplit('/').next().unwrap()];
        }
        let Some(schema) = response["content"]["application/json"].get("schema") else {
            return;
        };
        let key = format!("{method} {path} {status}");
        let mut validators = self.validators.lock().unwrap_or_else(|e| e.into_inner());
        let validator = validators.entry(key).or_insert_with(|| {
            let schema = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "allOf": [schema],
                "components": DOC["components"],
            });
            jsonschema::validator_for(&schema).unwrap()
        });
        let errors: Vec<String> = validator
            .iter_errors(answer)
            .map(|e| format!("{e} at {}", e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} ({status}) does not match its documented schema: {errors:?}\n{answer}"
        );
    }
}
