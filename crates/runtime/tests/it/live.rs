//! The live handle under concurrent calls: swaps never fail a call, every answer comes whole from
//! one version, and a failing live version is covered by the standby.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nonstop_runtime::rules::fees_types::{ClinicType, DoctorTitle, FeeRequest};
use nonstop_runtime::{Fees, LiveModule};

use crate::{engine, load};

fn night(age: u32) -> FeeRequest {
    FeeRequest {
        registration_level: 3,
        doctor_title: DoctorTitle::Attending,
        clinic_type: ClinicType::Night,
        patient_age_years: age,
        first_visit: true,
    }
}

#[test]
fn thousands_of_swaps_under_concurrent_calls_fail_no_call_and_mix_no_versions() {
    let e = engine();
    let v1 = load::<Fees>(&e, "fees-v1", "1.0.0").unwrap();
    let v2 = load::<Fees>(&e, "fees-v2", "2.0.0").unwrap();
    let module = Arc::new(LiveModule::<Fees>::new());
    module.swap_in(v1.clone());
    let stop = Arc::new(AtomicBool::new(false));
    // Calls answered so far: the swapper waits for new answers between swaps, so every swap
    // happens while calls are running, not before the callers have started.
    let answered = Arc::new(AtomicU64::new(0));

    let callers: Vec<_> = (0..2)
        .map(|t| {
            let (module, stop, answered) = (module.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut calls = [0u64; 2];
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    // Age 62: version 1 charges full price, version 2 the elderly half price.
                    let age = if i % 2 == 0 { 62 } else { 30 };
                    let answer = module
                        .call(&night(age))
                        .expect("no call may fail during swaps");
                    assert_eq!(answer.live_failure, None, "the live version failed a call");
                    let quote = answer.output.expect("a fee quote");
                    // Every line and the total must come from the version the answer names.
                    let expected = match (answer.version.version.major, age) {
                        (1, _) => [2000, 500, 100],
                        (2, 62) => [1000, 800, 100],
                        (2, _) => [2000, 800, 100],
                        other => panic!("unexpected version {other:?}"),
                    };
                    let got: Vec<i64> = quote.lines.iter().map(|l| l.amount_fen).collect();
                    assert_eq!(got, expected, "answer of {} mixes versions", answer.version);
                    assert_eq!(quote.total_fen, expected.iter().sum::<i64>());
                    calls[answer.version.version.major as usize - 1] += 1;
                    answered.fetch_add(1, Ordering::Release);
                }
                calls
            })
        })
        .collect();

    for n in 0..5000 {
        let seen = answered.load(Ordering::Acquire);
        while answered.load(Ordering::Acquire) == seen {
            std::thread::yield_now();
        }
        module.swap_in(if n % 2 == 0 { v2.clone() } else { v1.clone() });
    }
    stop.store(true, Ordering::Relaxed);
    let mut per_version = [0u64; 2];
    for c in callers {
        let calls = c.join().expect("a caller thread panicked");
        per_version[0] += calls[0];
        per_version[1] += calls[1];
    }
    assert!(
        per_version[0] > 0 && per_version[1] > 0,
        "both versions served calls: {per_version:?}"
    );
    assert!(
        per_version[0] + per_version[1] >= 5000,
        "calls ran between all 5,000 swaps: {per_version:?}"
    );
}

#[test]
fn a_live_version_that_traps_is_covered_by_the_standby_and_the_failure_reported() {
    let e = engine();
    let module = LiveModule::<Fees>::new();
    module.swap_in(load::<Fees>(&e, "fees-v1", "1.0.0").unwrap());
    module.swap_in(load::<Fees>(&e, "bad-trap", "1.1.0").unwrap());

    let general = FeeRequest {
        clinic_type: ClinicType::General,
        ..night(30)
    };
    let answer = module.call(&general).unwrap();
    assert_eq!(
        (answer.version.version.to_string(), answer.live_failure),
        ("1.1.0".to_string(), None)
    );

    let answer = module.call(&night(30)).unwrap();
    assert_eq!(
        answer.version.version.to_string(),
        "1.0.0",
        "the standby answered"
    );
    let failure = answer
        .live_failure
        .expect("the live failure is reported")
        .to_string();
    assert!(failure.starts_with("trapped:"), "{failure}");
    let counts = module.live().unwrap().stats().counts();
    assert_eq!((counts.calls, counts.failures), (2, 1));

    // Rolled back, the standby is live again and nothing traps.
    module.rollback().unwrap();
    assert_eq!(module.call(&night(30)).unwrap().live_failure, None);
}

#[test]
fn with_no_standby_a_failing_call_names_the_version_and_the_cause() {
    let e = engine();
    let module = LiveModule::<Fees>::new();
    assert_eq!(
        module.call(&night(30)).unwrap_err().to_string(),
        "component fees has no live version loaded"
    );
    module.swap_in(load::<Fees>(&e, "bad-loop", "1.0.0").unwrap());
    let err = module.call(&night(30)).unwrap_err().to_string();
    assert_eq!(
        err,
        "fees 1.0.0: ran out of its fuel budget of 50000000 units"
    );
}

#[test]
fn an_old_version_lives_until_its_last_call_ends() {
    let e = engine();
    let v1 = load::<Fees>(&e, "fees-v1", "1.0.0").unwrap();
    let old = Arc::downgrade(&v1);
    let module = LiveModule::<Fees>::new();
    module.swap_in(v1);
    // A call in flight holds the version it started on.
    let in_flight = module.live().unwrap();
    module.swap_in(load::<Fees>(&e, "fees-v2", "2.0.0").unwrap());
    module.swap_in(load::<Fees>(&e, "fees-v2", "2.0.1").unwrap());
    assert!(
        old.upgrade().is_some(),
        "dropped while a call was still running on it"
    );
    assert_eq!(in_flight.call(&night(30)).unwrap().unwrap().total_fen, 2600);
    drop(in_flight);
    assert!(old.upgrade().is_none(), "kept after its last call ended");
}
