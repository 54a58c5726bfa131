//! The plans SQLite makes for reads on the request path that would otherwise grow with the
//! hospital's history. Without statistics SQLite chooses an index by its equality columns; for
//! these it chose a status, and every registration and check-in read every fulfilled
//! appointment ever recorded (migration 0013). Each read here must be bounded by what it asks
//! for: one patient's appointments, or one status of past days.

use crate::{Hospital, Rules};

/// What SQLite plans for `sql` on the shipped schema at `path`.
fn plan(path: &std::path::Path, sql: &str) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    // The plan does not depend on the values: NULL for each parameter.
    let nulls = vec![rusqlite::types::Null; stmt.parameter_count()];
    let rows = stmt
        .query_map(rusqlite::params_from_iter(nulls), |row| {
            row.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows.join("\n")
}

#[tokio::test]
async fn reads_on_the_request_path_are_bounded_by_the_patient_or_the_day_not_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plans.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    drop(Hospital::open(&url, 1, Rules::new()).await.unwrap());
    for (name, sql, index) in [
        (
            "check-in's returning visits",
            crate::queue::REVISITS,
            "appointment_patient_department (patient_id=? AND department_id=? AND status=?)",
        ),
        (
            "registration's earlier visits",
            crate::registration::PATIENT_IN_DEPARTMENT,
            "appointment_patient_department (patient_id=? AND department_id=? AND status=?)",
        ),
        (
            "the sweeper's no-shows",
            crate::billing::UNATTENDED,
            "appointment_status_visit (status=? AND visit_date<?)",
        ),
    ] {
        let plan = plan(&path, sql);
        assert!(plan.contains(index), "{name}: planned as\n{plan}");
        assert!(!plan.contains("SCAN"), "{name}: planned as\n{plan}");
    }
}
