//! The hospital core against both databases: every test in `conformance` runs on SQLite, and on
//! PostgreSQL when `DATABASE_URL` names one (each test in a schema of its own).

mod billing;
mod conformance;
mod fuzz;
mod migrations;
mod queue;
mod read_audit;
mod setup;
mod upgrade;

use std::path::PathBuf;

use nonstop_bundle::Digest;
use nonstop_hospital::Hospital;
use nonstop_runtime::{RuleEngine, Rules, RuntimeConfig, VersionTag};

/// A hospital on one backend, with what keeps its database alive.
pub struct Backend {
    pub name: &'static str,
    pub hospital: Hospital,
    /// Its database, for a test to change what no API may (a session's date, moved to the past).
    pub(crate) url: String,
    /// PostgreSQL: the test's schema, dropped with the backend.
    _schema: Option<PgSchema>,
    pub(crate) _dir: tempfile::TempDir,
}

/// A PostgreSQL schema of a test's own, dropped with it.
pub struct PgSchema {
    base: String,
    name: String,
}

impl PgSchema {
    /// Creates a schema named after `prefix`, this process and `dir` on the server `base`, and
    /// returns it with a URL whose connections use it.
    pub async fn create(base: &str, prefix: &str, dir: &std::path::Path) -> (PgSchema, String) {
        let name = format!("{prefix}{}", std::process::id())
            + &dir
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace(['.', '-'], "_")
                .to_lowercase();
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(base).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        (
            PgSchema {
                base: base.to_owned(),
                name,
            },
            url,
        )
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (base, schema) = (self.base.clone(), self.name.clone());
        // Drop runs inside the test's runtime, so the clean-up gets a thread and runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(admin) = sqlx::AnyPool::connect(&base).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                        .execute(&admin)
                        .await;
                }
            });
        })
        .join();
    }
}

impl Backend {
    /// Runs one statement on the backend's database, beside the hospital.
    pub async fn sql(&self, statement: &str) {
        let pool = sqlx::AnyPool::connect(&self.url).await.unwrap();
        sqlx::query(statement).execute(&pool).await.unwrap();
        pool.close().await;
    }
}

/// Live rules loaded from the reference modules: fees 1.0.0 and quota 1.0.0.
pub fn rules(dir: &std::path::Path) -> Rules {
    let engine = RuleEngine::new(RuntimeConfig::default()).unwrap();
    let rules = Rules::new();
    for (component, module) in [
        ("fees", "fees-v1"),
        ("quota", "quota-v1"),
        ("insurance", "insurance-v1"),
        ("triage", "triage-v1"),
    ] {
        let source = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../modules/dist")
            .join(format!("{module}.wasm"));
        let path = dir.join(format!("{module}.wasm"));
        std::fs::copy(&source, &path).unwrap();
        let tag = VersionTag {
            component: component.into(),
            version: "1.0.0".parse().unwrap(),
            digest: Digest::of(&std::fs::read(&path).unwrap()),
        };
        rules
            .slot(component)
            .unwrap()
            .load(&engine, tag, &path, false)
            .unwrap();
    }
    rules
}

/// A fresh hospital on each available backend, seeded with the demo hospital from today.
pub async fn backends() -> Vec<Backend> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("hospital.db").display()
    );
    let hospital = Hospital::open(&url, 8, rules(dir.path())).await.unwrap();
    out.push(Backend {
        name: "sqlite",
        hospital,
        url: url.clone(),
        _schema: None,
        _dir: dir,
    });
    match std::env::var("DATABASE_URL") {
        Ok(base) if base.starts_with("postgres") => {
            let dir = tempfile::tempdir().unwrap();
            let (schema, url) = PgSchema::create(&base, "t", dir.path()).await;
            let hospital = Hospital::open(&url, 8, rules(dir.path())).await.unwrap();
            out.push(Backend {
                name: "postgres",
                hospital,
                url: url.clone(),
                _schema: Some(schema),
                _dir: dir,
            });
        }
        _ => eprintln!(
            "NOTICE: DATABASE_URL is not set to a PostgreSQL URL: the conformance tests ran on SQLite only"
        ),
    }
    for b in &out {
        b.hospital
            .seed_demo(b.hospital.business_date())
            .await
            .unwrap();
    }
    out
}

/// A valid 18-character ID number for someone born on `birth` (`YYYYMMDD`), number `seq`.
pub fn id_number(birth: &str, seq: u32) -> String {
    let body = format!("110105{birth}{:03}", seq % 1000);
    let check = nonstop_hospital::patient::id_check_character(&body);
    format!("{body}{check}")
}
