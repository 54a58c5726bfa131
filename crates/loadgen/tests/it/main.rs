//! The load generator against a node of its own: every acknowledged record is found exactly once.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_finds_every_acknowledged_record_exactly_once() {
    let report = nonstop_loadgen::run(nonstop_loadgen::LoadConfig {
        target: nonstop_loadgen::Target::OwnNode(None),
        duration: Duration::from_secs(2),
        desks: 4,
        doctors: 2,
        screens: 1,
        trust: None,
    })
    .await
    .unwrap();
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.refused, 0, "{report:?}");
    assert!(
        report.acknowledged.0 > 0 && report.acknowledged.1 > 0,
        "{report:?}"
    );
    assert_eq!(report.records.registrations_found, report.acknowledged.0);
    assert_eq!(report.records.payments_found, report.acknowledged.1);
    assert_eq!(report.records.invoices_paid_twice, 0);
    assert!(
        report
            .endpoints
            .iter()
            .any(|e| e.endpoint == "POST /payments")
    );
}

/// Open-loop traffic against a node of its own: every request it scheduled is made, none fails,
/// and every record the node acknowledged is found exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_traffic_issues_its_schedule_and_finds_every_acknowledged_record() {
    let report = nonstop_loadgen::run_open_loop(
        nonstop_loadgen::LoadConfig {
            target: nonstop_loadgen::Target::OwnNode(None),
            duration: Duration::from_secs(2),
            desks: 0,
            doctors: 0,
            screens: 0,
            trust: None,
        },
        nonstop_loadgen::OpenLoop { rate: 100.0 },
    )
    .await
    .unwrap();
    let offered = report
        .offered
        .expect("an open-loop report says what it offered");
    assert_eq!(offered.issued, 200, "{report:?}");
    assert_eq!(report.requests, 200, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.refused, 0, "{report:?}");
    assert!(
        report.acknowledged.0 > 0 && report.acknowledged.1 > 0,
        "{report:?}"
    );
    assert_eq!(report.records.registrations_found, report.acknowledged.0);
    assert_eq!(report.records.payments_found, report.acknowledged.1);
    assert_eq!(report.records.invoices_paid_twice, 0);
}
