//! Candidate checks against every reference module and every bad one: good modules pass, each bad
//! one is refused with the check it failed, and the live version keeps answering meanwhile.

use std::time::Duration;

use nonstop_runtime::checks::{CheckFailure, run_vectors, shadow};
use nonstop_runtime::rules::fees_types::{ClinicType, DoctorTitle, FeeRequest};
use nonstop_runtime::{CallFailure, Fees, Insurance, LiveModule, Quota, RuntimeError, Triage};

use nonstop_runtime::RuntimeConfig;
use nonstop_runtime::checks::ShadowLimits;

use crate::{engine, engine_with, load, module_checks, module_path, tag};

fn limits(calls: u32, max_latency_ratio: f64) -> ShadowLimits {
    ShadowLimits {
        calls,
        timeout: Duration::from_secs(30),
        max_latency_ratio,
        max_new_refusal_rate: 0.01,
        // Live traffic runs throughout these tests: no replay.
        idle: Duration::from_secs(30),
        replay: Vec::new(),
    }
}

fn night_visit(age: u32) -> FeeRequest {
    FeeRequest {
        registration_level: 3,
        doctor_title: DoctorTitle::Attending,
        clinic_type: ClinicType::Night,
        patient_age_years: age,
        first_visit: false,
    }
}

#[test]
fn every_reference_module_passes_its_own_test_vectors() {
    let e = engine();
    let n = |r: Result<usize, CheckFailure>| r.unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(
        n(run_vectors(
            &*load::<Fees>(&e, "fees-v1", "1.0.0").unwrap(),
            &module_checks("fees-v1").test_vectors,
            1
        )),
        5
    );
    assert_eq!(
        n(run_vectors(
            &*load::<Fees>(&e, "fees-v2", "2.0.0").unwrap(),
            &module_checks("fees-v2").test_vectors,
            1
        )),
        5
    );
    assert_eq!(
        n(run_vectors(
            &*load::<Insurance>(&e, "insurance-v1", "1.0.0").unwrap(),
            &module_checks("insurance-v1").test_vectors,
            1
        )),
        5
    );
    assert_eq!(
        n(run_vectors(
            &*load::<Triage>(&e, "triage-v1", "1.0.0").unwrap(),
            &module_checks("triage-v1").test_vectors,
            1
        )),
        4
    );
    assert_eq!(
        n(run_vectors(
            &*load::<Triage>(&e, "triage-v2", "2.0.0").unwrap(),
            &module_checks("triage-v2").test_vectors,
            1
        )),
        4
    );
    assert_eq!(
        n(run_vectors(
            &*load::<Quota>(&e, "quota-v1", "1.0.0").unwrap(),
            &module_checks("quota-v1").test_vectors,
            1
        )),
        5
    );
}

#[test]
fn version_two_changes_the_rules_visibly() {
    let e = engine();
    let v1 = load::<Fees>(&e, "fees-v1", "1.0.0").unwrap();
    let v2 = load::<Fees>(&e, "fees-v2", "2.0.0").unwrap();
    let total = |v: &nonstop_runtime::LoadedVersion<Fees>| {
        v.call(&night_visit(40)).unwrap().unwrap().total_fen
    };
    assert_eq!(
        (total(&v1), total(&v2)),
        (2500, 2800),
        "night clinic surcharge 5 -> 8 yuan"
    );
}

#[test]
fn a_module_exporting_the_wrong_interface_fails_check_one() {
    let err = load::<Fees>(&engine(), "bad-interface", "9.0.0")
        .err()
        .expect("refused");
    assert!(matches!(err, RuntimeError::WrongInterface { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "component does not export nonstop:his-rules/fees@0.1.0 (it exports: nonstop:his-rules/triage@0.1.0)"
    );
}

#[test]
fn bytes_that_are_not_a_component_fail_check_one() {
    let err = engine()
        .compile(b"\0asm\x01\0\0\0 truncated")
        .expect_err("refused");
    assert!(
        err.to_string().starts_with("component does not compile:"),
        "{err}"
    );
}

#[test]
fn a_module_with_wrong_answers_fails_its_test_vectors() {
    let bad = load::<Fees>(&engine(), "bad-answers", "9.0.0").unwrap();
    let err = run_vectors(&*bad, &module_checks("bad-answers").test_vectors, 1).unwrap_err();
    assert!(
        matches!(err, CheckFailure::VectorMismatch { index: 0, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("check 2 (test vector 0): expected {\"Ok\":{\"lines\""),
        "{err}"
    );
}

#[test]
fn a_module_that_loops_forever_runs_out_of_fuel() {
    let bad = load::<Fees>(&engine(), "bad-loop", "9.0.0").unwrap();
    let err = run_vectors(&*bad, &module_checks("bad-loop").test_vectors, 1).unwrap_err();
    match err {
        CheckFailure::VectorCall {
            failure: CallFailure::Fuel(50_000_000),
            ..
        } => {}
        other => panic!("{other}"),
    }
}

#[test]
fn with_fuel_off_the_wall_clock_deadline_stops_a_loop() {
    let e = engine_with(RuntimeConfig {
        fuel_per_call: None,
        call_deadline_ms: 20,
        ..RuntimeConfig::default()
    });
    let bad = load::<Fees>(&e, "bad-loop", "9.0.0").unwrap();
    let err = run_vectors(&*bad, &module_checks("bad-loop").test_vectors, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "check 2 (test vector 0): ran past its deadline of 20 ms and was stopped"
    );
}

#[test]
fn a_module_that_keeps_state_between_patients_is_caught_when_instances_are_reused() {
    // Fresh instance per call (the default): every patient sees a new instance.
    let fresh = load::<Fees>(&engine(), "bad-state", "9.0.0").unwrap();
    assert_eq!(
        run_vectors(&*fresh, &module_checks("bad-state").test_vectors, 1).unwrap(),
        1
    );
    // Reused instances: the second identical call gets another answer, and check 2 says so.
    let reuse = engine_with(RuntimeConfig {
        calls_per_instance: 1000,
        ..RuntimeConfig::default()
    });
    let reused = load::<Fees>(&reuse, "bad-state", "9.0.0").unwrap();
    let err = run_vectors(&*reused, &module_checks("bad-state").test_vectors, 1).unwrap_err();
    assert!(
        matches!(err, CheckFailure::Nondeterministic { index: 0, .. }),
        "{err}"
    );
}

#[test]
fn a_module_that_eats_memory_is_stopped_at_its_limit() {
    let bad = load::<Fees>(&engine(), "bad-memory", "9.0.0").unwrap();
    let err = run_vectors(&*bad, &module_checks("bad-memory").test_vectors, 1).unwrap_err();
    match &err {
        CheckFailure::VectorCall {
            failure: CallFailure::Memory(detail),
            ..
        } => {
            assert!(
                detail.contains("memory limit of 4194304 bytes exceeded"),
                "{detail}"
            )
        }
        other => panic!("{other}"),
    }
}

#[test]
fn too_few_test_vectors_fail_check_two() {
    let good = load::<Fees>(&engine(), "fees-v1", "1.0.0").unwrap();
    let err = run_vectors(&*good, &[], 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "check 2 (test vectors): the bundle carries 0, the node requires at least 1"
    );
}

/// Drives live traffic on `module` from another thread until `stop` is set; returns failed calls.
fn traffic(
    module: std::sync::Arc<LiveModule<Fees>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut failed = 0;
        let mut age = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            age = (age + 7) % 90;
            let mut input = night_visit(age);
            input.clinic_type = if age % 2 == 0 {
                ClinicType::Night
            } else {
                ClinicType::General
            };
            if module.call(&input).is_err() {
                failed += 1;
            }
        }
        failed
    })
}

#[test]
fn shadow_traffic_reveals_a_module_that_traps_on_live_inputs_and_the_live_version_keeps_answering()
{
    let e = engine();
    let module = std::sync::Arc::new(LiveModule::<Fees>::new());
    module.swap_in(load::<Fees>(&e, "fees-v1", "1.0.0").unwrap());
    let bad = load::<Fees>(&e, "bad-trap", "1.1.0").unwrap();
    // Its own vectors avoid night clinics, so checks 1 and 2 pass.
    run_vectors(&*bad, &module_checks("bad-trap").test_vectors, 1).unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = traffic(module.clone(), stop.clone());
    let err = shadow(&module, &bad, &limits(200, 3.0)).unwrap_err();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        worker.join().unwrap(),
        0,
        "live calls failed during the shadow check"
    );
    match &err {
        CheckFailure::ShadowCall {
            failure: CallFailure::Trap(_),
            input,
            ..
        } => assert!(input.contains("\"Night\""), "{input}"),
        other => panic!("{other}"),
    }
    assert_eq!(module.live().unwrap().tag().version.to_string(), "1.0.0");
}

#[test]
fn shadow_traffic_counts_the_differences_a_rule_change_makes() {
    let e = engine();
    let module = std::sync::Arc::new(LiveModule::<Fees>::new());
    module.swap_in(load::<Fees>(&e, "fees-v1", "1.0.0").unwrap());
    let v2 = load::<Fees>(&e, "fees-v2", "2.0.0").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = traffic(module.clone(), stop.clone());
    let report = shadow(&module, &v2, &limits(200, 50.0)).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(worker.join().unwrap(), 0);
    assert_eq!(report.calls, 200);
    // Night clinics (half the traffic) cost 3 yuan more; ages 60 to 64 get the elderly price.
    assert!(
        report.differences >= 100 && report.differences < 200,
        "{report:?}"
    );
    assert!(!report.examples.is_empty());
    assert!(report.latency_ratio > 0.0);
}

#[test]
fn the_slot_interface_runs_checks_one_and_two_by_component_name() {
    let e = engine();
    let rules = nonstop_runtime::Rules::new();
    let slot = rules.slot("fees").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.wasm");
    std::fs::copy(module_path("fees-v1"), &path).unwrap();
    slot.load(&e, tag("fees", "fees-v1", "1.0.0"), &path, false)
        .unwrap();
    let digest = tag("fees", "fees-v1", "1.0.0").digest;
    assert!(
        e.cache_path(&path, &digest).is_file(),
        "compiled code is cached beside the payload"
    );

    std::fs::copy(module_path("bad-interface"), dir.path().join("bad.wasm")).unwrap();
    let err = slot
        .check_candidate(
            &e,
            tag("fees", "bad-interface", "2.0.0"),
            &dir.path().join("bad.wasm"),
            &module_checks("bad-interface"),
            1,
        )
        .unwrap_err();
    assert!(err.to_string().starts_with("check 1 (compiles and exports the interface): component does not export nonstop:his-rules/fees@0.1.0"), "{err}");
    let (out, version) = slot
        .call_json(serde_json::to_value(night_visit(30)).unwrap())
        .unwrap();
    assert_eq!(out["Ok"]["total_fen"], 2500);
    assert_eq!(version.version.to_string(), "1.0.0");
    assert!(rules.slot("pharmacy").is_err());
}

#[test]
fn a_cached_compilation_is_used_instead_of_compiling_again() {
    let e = engine();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.wasm");
    std::fs::copy(module_path("triage-v1"), &path).unwrap();
    let digest = tag("triage", "triage-v1", "1.0.0").digest;
    e.load(&path, &digest).unwrap();
    // With the payload gone, only the cache can provide the component.
    std::fs::remove_file(&path).unwrap();
    let component = e.load(&path, &digest).unwrap();
    // A cache is bound to its payload's digest: another content never picks it up.
    assert!(
        e.load(&path, &nonstop_bundle::Digest::of(b"other"))
            .is_err()
    );
    assert!(
        nonstop_runtime::LoadedVersion::<Triage>::new(
            &e,
            tag("triage", "triage-v1", "1.0.0"),
            &component,
            &[]
        )
        .is_ok()
    );
}

#[test]
fn a_payload_that_does_not_match_its_digest_is_neither_compiled_nor_cached() {
    let e = engine();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.wasm");
    std::fs::copy(module_path("fees-v1"), &path).unwrap();
    // The store recorded triage's digest; the file holds fees (changed after it was installed).
    let recorded = tag("triage", "triage-v1", "1.0.0").digest;
    let err = e.load(&path, &recorded).unwrap_err();
    assert!(
        matches!(err, nonstop_runtime::RuntimeError::DigestMismatch { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("does not match its digest"),
        "{err}"
    );
    assert!(!e.cache_path(&path, &recorded).exists());
    // Nothing but the payload is left in its directory (no temporary file either).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|d| d.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("rules.wasm")]);
}

#[test]
fn with_no_live_traffic_the_candidate_is_shadowed_on_replayed_inputs() {
    let e = engine();
    let module = LiveModule::<Fees>::new();
    module.swap_in(load::<Fees>(&e, "fees-v1", "1.0.0").unwrap());
    let v2 = load::<Fees>(&e, "fees-v2", "2.0.0").unwrap();
    let replay: Vec<_> = module_checks("fees-v2")
        .test_vectors
        .iter()
        .map(|v| v.input.clone())
        .collect();
    let idle = ShadowLimits {
        idle: Duration::ZERO,
        replay,
        ..limits(40, 50.0)
    };
    // Nobody calls the live version: an idle node at night.
    let report = shadow(&module, &v2, &idle).unwrap();
    assert_eq!((report.calls, report.replayed), (40, 40));
    assert!(
        report.differences > 0,
        "fees 2.0.0 changes prices: {report:?}"
    );
    assert_eq!(
        module.live().unwrap().stats().counts().calls,
        0,
        "replays do not count as live calls"
    );

    // Nothing to replay and no traffic: the candidate is refused when the wait ends.
    let starved = ShadowLimits {
        idle: Duration::ZERO,
        timeout: Duration::from_millis(300),
        ..limits(40, 50.0)
    };
    let err = shadow(&module, &v2, &starved).unwrap_err();
    assert!(
        matches!(err, CheckFailure::ShadowStarved { seen: 0, .. }),
        "{err}"
    );
}

#[test]
fn a_candidate_slower_than_the_limit_fails_check_three() {
    let e = engine();
    let module = std::sync::Arc::new(LiveModule::<Fees>::new());
    module.swap_in(load::<Fees>(&e, "fees-v1", "1.0.0").unwrap());
    let v2 = load::<Fees>(&e, "fees-v2", "2.0.0").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = traffic(module.clone(), stop.clone());
    // No candidate is faster than zero times the live version.
    let err = shadow(&module, &v2, &limits(20, 0.0)).unwrap_err();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    worker.join().unwrap();
    assert!(matches!(err, CheckFailure::TooSlow { .. }), "{err}");
    assert!(err.to_string().contains("over the limit of 0x"), "{err}");
}
