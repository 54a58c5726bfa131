//! The candidate program's checks, as far as they work without processes (the supervisor and the
//! handover are tested with real processes in crates/cli's `program.rs`).

use std::sync::Arc;

use axum::routing::get;
use nonstop_program::Sample;
use nonstop_program::checks::{allowing_additions, schema_difference, shape_difference};
use serde_json::json;
use tower::ServiceExt;

#[test]
fn an_answer_of_another_shape_is_a_difference_and_one_that_only_adds_is_not() {
    let live =
        json!({"id": 7, "patient": {"name": "王芳", "phone": null}, "lines": [{"fen": 500}]});
    // Added fields, a null now set, and other values of the same types: the same shape.
    let grown = json!({"id": 8, "patient": {"name": "李雷", "phone": "139", "sex": "M"}, "lines": [{"fen": 1, "code": "A"}], "new": true});
    assert_eq!(shape_difference(&live, &grown, ""), None);
    // An empty array matches any array: the data may have moved on.
    assert_eq!(
        shape_difference(
            &live,
            &json!({"id": 1, "patient": {"name": "x"}, "lines": []}),
            ""
        ),
        None
    );
    let missing = json!({"id": 7, "patient": {"phone": null}, "lines": []});
    assert_eq!(
        shape_difference(&live, &missing, "").as_deref(),
        Some("`.patient.name` is missing from the candidate's answer")
    );
    let retyped = json!({"id": "7", "patient": {"name": "王芳"}, "lines": []});
    assert_eq!(
        shape_difference(&live, &retyped, "").as_deref(),
        Some("`.id` is a string in the candidate's answer and a number in the live one's")
    );
    let deep = json!({"id": 7, "patient": {"name": "王芳"}, "lines": [{"fen": "500"}]});
    assert!(
        shape_difference(&live, &deep, "")
            .unwrap()
            .starts_with("`.lines[].fen`")
    );
}

/// The node's own OpenAPI document, as the contract check reads it from a candidate.
const OPENAPI: &str = include_str!("../../../hospital/src/openapi.json");

#[test]
fn an_answer_is_checked_against_its_documented_schema_and_status() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    // The error answer every endpoint documents for a missing token: `$ref` to a response.
    let unauthorized =
        json!({"error": {"code": "unauthorized", "field": null, "message": "sign in"}});
    assert_eq!(
        schema_difference(&doc, "get", "/api/v1/rules", 401, &unauthorized),
        None
    );
    let wrong = json!({"error": {"code": 401, "message": "sign in"}});
    let d = schema_difference(&doc, "get", "/api/v1/rules", 401, &wrong).unwrap();
    assert!(d.contains("/error/code"), "{d}");
    let live = json!({"items": [{"component": "fees", "version": "1.0.0", "digest": "ab"}]});
    assert_eq!(
        schema_difference(&doc, "get", "/api/v1/rules", 200, &live),
        None
    );
    let renamed = json!({"rules": []});
    let d = schema_difference(&doc, "get", "/api/v1/rules", 200, &renamed).unwrap();
    assert!(d.contains("items"), "{d}");
    assert_eq!(
        schema_difference(&doc, "get", "/api/v1/program", 404, &live).as_deref(),
        Some("status 404 is not documented")
    );
}

/// A newer program may add a field to a documented answer: its own document is strict, the live
/// program's document (as the contract check reads it) lets the field in; a field taken away or
/// changed is refused by both.
#[test]
fn a_field_added_to_an_answer_meets_the_older_document_and_one_taken_away_does_not() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    let older = allowing_additions(&doc);
    let me = json!({"id": 1, "username": "wang", "role": "doctor", "practitioner_id": 3});
    let mut added = me.clone();
    added["display_name"] = json!("Dr Wang");
    assert_eq!(schema_difference(&doc, "get", "/api/v1/me", 200, &me), None);
    assert!(
        schema_difference(&doc, "get", "/api/v1/me", 200, &added)
            .unwrap()
            .contains("display_name")
    );
    assert_eq!(
        schema_difference(&older, "get", "/api/v1/me", 200, &added),
        None
    );
    let mut taken = me.clone();
    taken.as_object_mut().unwrap().remove("role");
    let mut changed = me.clone();
    changed["id"] = json!("1");
    for wrong in [&taken, &changed] {
        for d in [&doc, &older] {
            assert!(
                schema_difference(d, "get", "/api/v1/me", 200, wrong).is_some(),
                "{wrong} met the document"
            );
        }
    }
}

async fn call(app: &axum::Router, path: &str, auth: Option<&str>) -> u16 {
    let mut request = axum::http::Request::get(path);
    if let Some(a) = auth {
        request = request.header("authorization", a);
    }
    app.clone()
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_sample_keeps_one_json_read_in_n_with_its_answer_and_credentials() {
    let sample = Sample::new(2, 3);
    let app = axum::Router::new()
        .route(
            "/api/v1/patients/{id}",
            get(
                |axum::extract::Path(id): axum::extract::Path<i64>| async move {
                    axum::Json(json!({"id": id}))
                },
            ),
        )
        .route("/api/v1/page", get(|| async { "<html></html>" }))
        .route(
            "/api/v1/broken",
            get(|| async {
                (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(json!({})),
                )
            }),
        )
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&sample),
            nonstop_program::sample::record,
        ));
    for id in 1..=8 {
        assert_eq!(
            call(&app, &format!("/api/v1/patients/{id}"), Some("Bearer t")).await,
            200
        );
    }
    // One in two kept, the three most recent, each with its answer and credentials.
    let kept = sample.recent();
    assert_eq!(
        kept.iter().map(|s| s.path.as_str()).collect::<Vec<_>>(),
        [
            "/api/v1/patients/3",
            "/api/v1/patients/5",
            "/api/v1/patients/7"
        ]
    );
    assert_eq!(kept[2].body, json!({"id": 7}));
    assert_eq!(kept[2].authorization.as_deref(), Some("Bearer t"));
    assert_eq!(kept[2].status, 200);
    // Pages and server errors are no baseline.
    for _ in 0..4 {
        call(&app, "/api/v1/page", None).await;
        call(&app, "/api/v1/broken", None).await;
    }
    assert_eq!(sample.recent().len(), 3);
    assert_eq!(sample.recent()[2].path, "/api/v1/patients/7");
}
