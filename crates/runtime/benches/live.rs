//! What the live handle costs, measured side by side in one run (`cargo bench -p nonstop-runtime`):
//!
//! 1. a fees call through `LiveModule::call` vs the same call on a directly held instance
//!    (goal: under 2x, under 2 µs absolute on a warm instance);
//! 2. a warm reused instance vs a fresh instance per call (the default: the isolation trade-off),
//!    and what per-call fuel costs;
//! 3. the swap itself: p50 / p99 of 10,000 `swap_in` calls (goal: p99 under 1 µs);
//! 4. calls per second on 2 threads with no swaps vs while 1,000 swaps happen (goal: 0 failed
//!    calls, throughput within 10%).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use nonstop_bundle::Digest;
use nonstop_runtime::rules::fees_types::{ClinicType, DoctorTitle, FeeRequest};
use nonstop_runtime::{Fees, LiveModule, LoadedVersion, RuleEngine, RuntimeConfig, VersionTag};

fn load(engine: &RuleEngine, module: &str, version: &str) -> Arc<LoadedVersion<Fees>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../modules/dist")
        .join(format!("{module}.wasm"));
    let bytes = std::fs::read(&path).unwrap();
    let component = engine.compile(&bytes).unwrap();
    let tag = VersionTag {
        component: "fees".into(),
        version: version.parse().unwrap(),
        digest: Digest::of(&bytes),
    };
    Arc::new(LoadedVersion::new(engine, tag, &component, &[]).unwrap())
}

fn request() -> FeeRequest {
    FeeRequest {
        registration_level: 2,
        doctor_title: DoctorTitle::Chief,
        clinic_type: ClinicType::Night,
        patient_age_years: 67,
        first_visit: true,
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    // Warm instances reused (what the < 2 µs goal is about); fresh instances per call (the
    // default, for isolation between patients) are measured beside them.
    let engine = RuleEngine::new(RuntimeConfig {
        calls_per_instance: 1000,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let v1 = load(&engine, "fees-v1", "1.0.0");
    let v2 = load(&engine, "fees-v2", "2.0.0");
    let live = Arc::new(LiveModule::<Fees>::new());
    live.swap_in(v1.clone());
    let input = request();

    let mut g = c.benchmark_group("fees call");
    let mut held = v1.held_instance().unwrap();
    g.bench_function("held instance (baseline)", |b| {
        b.iter(|| held.call(black_box(&input)).unwrap())
    });
    g.bench_function("live handle", |b| {
        b.iter(|| live.call(black_box(&input)).unwrap())
    });
    let fresh_engine = RuleEngine::new(RuntimeConfig::default()).unwrap();
    let nofuel_engine = RuleEngine::new(RuntimeConfig {
        calls_per_instance: 1000,
        fuel_per_call: None,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let nofuel = LiveModule::<Fees>::new();
    nofuel.swap_in(load(&nofuel_engine, "fees-v1", "1.0.0"));
    let fresh = LiveModule::<Fees>::new();
    fresh.swap_in(load(&fresh_engine, "fees-v1", "1.0.0"));
    g.bench_function("live handle, fresh instance per call", |b| {
        b.iter(|| fresh.call(black_box(&input)).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("swap");
    g.bench_function("swap_in", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            live.swap_in(if n.is_multiple_of(2) {
                v1.clone()
            } else {
                v2.clone()
            });
        })
    });
    g.finish();

    // The same numbers as ratios, and what criterion does not give: swap percentiles and
    // throughput under swaps.
    let per_call = |f: &mut dyn FnMut()| {
        let n = 200_000;
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    };
    let held_us = per_call(&mut || {
        held.call(&input).unwrap().unwrap();
    });
    let live_us = per_call(&mut || {
        live.call(&input).unwrap();
    });
    let fresh_us = per_call(&mut || {
        fresh.call(&input).unwrap();
    });
    let nofuel_us = per_call(&mut || {
        nofuel.call(&input).unwrap();
    });

    let mut swaps: Vec<f64> = (0..10_000)
        .map(|n| {
            let next = if n % 2 == 0 { v1.clone() } else { v2.clone() };
            let t = Instant::now();
            live.swap_in(next);
            t.elapsed().as_secs_f64() * 1e9
        })
        .collect();
    swaps.sort_by(f64::total_cmp);
    let (p50, p99) = (swaps[swaps.len() / 2], swaps[swaps.len() * 99 / 100]);

    let run = |swapping: bool| -> (u64, u64, u64) {
        let stop = Arc::new(AtomicBool::new(false));
        let (calls, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (live, stop, calls, failed) =
                    (live.clone(), stop.clone(), calls.clone(), failed.clone());
                std::thread::spawn(move || {
                    let input = request();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        // An answer the standby gave for a failed live call counts as failed too.
                        if live.call(&input).map_or(true, |a| a.live_failure.is_some()) {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        n += 1;
                    }
                    calls.fetch_add(n, Ordering::Relaxed);
                })
            })
            .collect();
        let window = Duration::from_secs(2);
        let mut swapped = 0;
        let start = Instant::now();
        while start.elapsed() < window {
            if swapping && swapped < 1000 {
                live.swap_in(if swapped % 2 == 0 {
                    v2.clone()
                } else {
                    v1.clone()
                });
                swapped += 1;
                std::thread::sleep(window / 1500);
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        (
            calls.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
            swapped,
        )
    };
    let (quiet, quiet_failed, _) = run(false);
    let (busy, busy_failed, swapped) = run(true);

    println!();
    println!(
        "== nonstop-runtime: live handle, side by side (fees quote, warm instances, fuel on) =="
    );
    println!("call on a held instance      {held_us:8.3} µs");
    println!(
        "call through the live handle {live_us:8.3} µs   ratio {:.2}x (goal < 2x, < 2 µs)",
        live_us / held_us
    );
    println!(
        "fresh instance per call      {fresh_us:8.3} µs   ratio {:.2}x vs reused (isolation cost)",
        fresh_us / live_us
    );
    println!(
        "warm call with fuel off      {nofuel_us:8.3} µs   fuel costs {:.2}x",
        live_us / nofuel_us
    );
    println!("swap_in                      p50 {p50:.0} ns, p99 {p99:.0} ns (goal p99 < 1 µs)");
    println!(
        "2 threads, 2 s, no swaps     {:.0} calls/s, {quiet_failed} failed",
        quiet as f64 / 2.0
    );
    println!(
        "2 threads, 2 s, {swapped} swaps  {:.0} calls/s, {busy_failed} failed, throughput ratio {:.3}",
        busy as f64 / 2.0,
        busy as f64 / quiet as f64
    );
    c.final_summary();
}
