//! Expand and contract migrations (issue 10): every shipped migration declares its kind and each
//! expand one is one; a contract migration shipped as an expand one is refused; a program that
//! opens the database applying expand migrations only leaves a pending contract one for later.
//! The database tests run on SQLite, and on PostgreSQL when `DATABASE_URL` names one.

use std::path::{Path, PathBuf};

use nonstop_hospital::schema::{MigrationError, MigrationKind, MigrationSet, Migrations};
use nonstop_hospital::{Backend, Hospital, HospitalError};
use sqlx::AnyPool;

use crate::rules;

fn shipped(backend: Backend) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(match backend {
        Backend::Sqlite => "migrations/sqlite",
        Backend::Postgres => "migrations/postgres",
    })
}

/// `files` ((name, text)) written into a new directory.
fn migrations_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, sql) in files {
        std::fs::write(dir.path().join(name), sql).unwrap();
    }
    dir
}

/// The shipped migrations of `backend` and `extra`, in a new directory.
fn shipped_and(backend: Backend, extra: (&str, &str)) -> tempfile::TempDir {
    let dir = migrations_dir(&[extra]);
    for entry in std::fs::read_dir(shipped(backend)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// The [`MigrationError`] inside a hospital's error.
fn migration_error(e: &HospitalError) -> &MigrationError {
    let HospitalError::Migrate(sqlx::migrate::MigrateError::Source(source)) = e else {
        panic!("not a migration error: {e}");
    };
    source.downcast_ref().unwrap()
}

#[test]
fn every_shipped_migration_declares_its_kind_and_each_expand_one_is_one() {
    let mut versions = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let set = MigrationSet::from_dir(backend, &shipped(backend)).unwrap_or_else(|e| {
            panic!("{backend:?}: {e}");
        });
        let files = std::fs::read_dir(shipped(backend)).unwrap().count();
        assert_eq!(
            set.files().len(),
            files,
            "{backend:?}: every file is a migration"
        );
        // The migrations up to 0012 were applied, by releases before kinds were declared, while
        // nothing older ran beside them: all are expand ones, table rebuilds included.
        for file in set.files().iter().filter(|f| f.version <= 12) {
            assert_eq!(file.kind, MigrationKind::Expand, "{}", file.name);
        }
        versions.push(
            set.files()
                .iter()
                .map(|f| (f.version, f.kind))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        versions[0], versions[1],
        "both backends have the same migrations, of the same kinds"
    );
}

#[test]
fn a_contract_migration_shipped_as_an_expand_one_is_refused_and_accepted_as_contract() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let body = "-- A patient's phone moves to patient_contact (0013).\n\
                    ALTER TABLE patient DROP COLUMN phone;\n";
        let name = "0014_drop_patient_phone.sql";
        let expand = format!("-- nonstop: expand\n{body}");
        let dir = shipped_and(backend, (name, &expand));
        let refused = MigrationSet::from_dir(backend, dir.path()).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "migration 0014_drop_patient_phone.sql is declared expand but drops (or renames) \
             column patient.phone, which the program before it may rely on: `ALTER TABLE patient \
             DROP COLUMN phone` (declare it `-- nonstop: contract`, applied once that program \
             cannot come back)",
            "{backend:?}"
        );
        assert!(
            matches!(&refused, MigrationError::NotExpand { file, statement, .. }
                if file == name && statement == "ALTER TABLE patient DROP COLUMN phone")
        );

        let contract = format!("-- nonstop: contract\n{body}");
        let dir = shipped_and(backend, (name, &contract));
        let set = MigrationSet::from_dir(backend, dir.path()).unwrap();
        let last = set.files().last().unwrap();
        assert_eq!(
            (last.name.as_str(), last.kind),
            (name, MigrationKind::Contract)
        );
    }
}

#[test]
fn a_migration_without_a_declaration_is_refused_naming_it() {
    let dir = shipped_and(
        Backend::Sqlite,
        (
            "0013_ward.sql",
            "CREATE TABLE ward (id INTEGER PRIMARY KEY);\n",
        ),
    );
    let refused = MigrationSet::from_dir(Backend::Sqlite, dir.path()).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "migration 0013_ward.sql does not declare its kind: its first line must be \
         `-- nonstop: expand` or `-- nonstop: contract`, not \"CREATE TABLE ward (id INTEGER \
         PRIMARY KEY);\""
    );
}

/// An empty database: SQLite in a temporary directory, or a schema of its own on PostgreSQL,
/// dropped with it.
struct Database {
    backend: Backend,
    url: String,
    pool: AnyPool,
    /// Dropped with it.
    _schema: Option<crate::PgSchema>,
    dir: tempfile::TempDir,
}

impl Database {
    async fn sql(&self, statement: &str) -> Result<(), sqlx::Error> {
        sqlx::query(statement).execute(&self.pool).await.map(drop)
    }
}

/// An empty database on SQLite, and on PostgreSQL when `DATABASE_URL` names one.
async fn databases() -> Vec<Database> {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("h.db").display());
    let mut out = vec![Database {
        backend: Backend::Sqlite,
        pool: AnyPool::connect(&url).await.unwrap(),
        url,
        _schema: None,
        dir,
    }];
    match std::env::var("DATABASE_URL") {
        Ok(base) if base.starts_with("postgres") => {
            let dir = tempfile::tempdir().unwrap();
            let (schema, url) = crate::PgSchema::create(&base, "m", dir.path()).await;
            out.push(Database {
                backend: Backend::Postgres,
                pool: AnyPool::connect(&url).await.unwrap(),
                url,
                _schema: Some(schema),
                dir,
            });
        }
        _ => eprintln!(
            "NOTICE: DATABASE_URL is not set to a PostgreSQL URL: the migration tests ran on SQLite only"
        ),
    }
    out
}

const VISIT: (&str, &str) = (
    "0001_visit.sql",
    "-- nonstop: expand\nCREATE TABLE visit (id INTEGER PRIMARY KEY, note TEXT NOT NULL);\n",
);
const VISIT_SUMMARY: (&str, &str) = (
    "0002_visit_summary.sql",
    "-- nonstop: expand\nALTER TABLE visit ADD COLUMN summary TEXT;\n",
);
const DROP_VISIT_NOTE: (&str, &str) = (
    "0003_drop_visit_note.sql",
    "-- nonstop: contract\n-- Every program now writes the summary.\nALTER TABLE visit DROP COLUMN note;\n",
);
const WARD: (&str, &str) = (
    "0004_ward.sql",
    "-- nonstop: expand\nCREATE TABLE ward (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n",
);

fn versions(files: &[nonstop_hospital::schema::MigrationFile]) -> Vec<(i64, MigrationKind)> {
    files.iter().map(|f| (f.version, f.kind)).collect()
}

#[tokio::test]
async fn expand_only_leaves_a_pending_contract_migration_until_it_is_applied() {
    use MigrationKind::{Contract, Expand};
    for db in databases().await {
        let name = format!("{:?}", db.backend);
        let dir = migrations_dir(&[VISIT, VISIT_SUMMARY, DROP_VISIT_NOTE, WARD]);
        let set = MigrationSet::from_dir(db.backend, dir.path()).unwrap();

        // The new program starts beside the old one: the expand migrations before the contract
        // one, nothing after it.
        let applied = set.apply(&db.pool, Migrations::ExpandOnly).await.unwrap();
        assert_eq!(versions(&applied), [(1, Expand), (2, Expand)], "{name}");
        let pending = set.pending(&db.pool).await.unwrap();
        assert_eq!(versions(&pending), [(3, Contract), (4, Expand)], "{name}");
        // The old program still writes what it knows.
        db.sql("INSERT INTO visit (id, note) VALUES (1, 'written by the old program')")
            .await
            .unwrap();
        assert!(db.sql("SELECT id FROM ward").await.is_err(), "{name}");
        // Opening again beside it changes nothing.
        let applied = set.apply(&db.pool, Migrations::ExpandOnly).await.unwrap();
        assert!(applied.is_empty(), "{name}");

        // The old program can no longer come back: the rest.
        let applied = set.apply(&db.pool, Migrations::All).await.unwrap();
        assert_eq!(versions(&applied), [(3, Contract), (4, Expand)], "{name}");
        assert!(set.pending(&db.pool).await.unwrap().is_empty(), "{name}");
        assert!(db.sql("SELECT note FROM visit").await.is_err(), "{name}");
        db.sql("INSERT INTO ward (id, name) VALUES (1, 'Ward 3')")
            .await
            .unwrap();
        assert!(
            set.apply(&db.pool, Migrations::All)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn an_older_program_opens_a_database_a_newer_one_expanded_but_not_one_it_contracted() {
    for db in databases().await {
        let older = migrations_dir(&[VISIT, VISIT_SUMMARY]);
        let older = MigrationSet::from_dir(db.backend, older.path()).unwrap();
        let ward = ("0003_ward.sql", WARD.1);
        let newer = migrations_dir(&[VISIT, VISIT_SUMMARY, ward]);
        let newer = MigrationSet::from_dir(db.backend, newer.path()).unwrap();
        newer.apply(&db.pool, Migrations::ExpandOnly).await.unwrap();
        // The older program comes back as the standby: the newer one's expand migration is no
        // obstacle.
        assert!(
            older
                .apply(&db.pool, Migrations::All)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(older.pending(&db.pool).await.unwrap().is_empty());

        let drop_note = ("0004_drop_visit_note.sql", DROP_VISIT_NOTE.1);
        let newest = migrations_dir(&[VISIT, VISIT_SUMMARY, ward, drop_note]);
        let newest = MigrationSet::from_dir(db.backend, newest.path()).unwrap();
        newest.apply(&db.pool, Migrations::All).await.unwrap();
        let refused = older.apply(&db.pool, Migrations::All).await.unwrap_err();
        assert!(
            matches!(
                migration_error(&refused),
                MigrationError::NewerContract { version: 4, .. }
            ),
            "{refused}"
        );
    }
}

/// The shipped migrations as an earlier release, whose files declared no kind, applied them;
/// and as plain sqlx applies the files as they are now (`sqlx migrate run`).
#[tokio::test]
async fn a_database_an_earlier_release_migrated_opens_and_needs_no_migration() {
    for declared in [false, true] {
        for db in databases().await {
            let earlier = tempfile::tempdir().unwrap();
            for entry in std::fs::read_dir(shipped(db.backend)).unwrap() {
                let path = entry.unwrap().path();
                let sql = std::fs::read_to_string(&path).unwrap();
                // An earlier release's file is the file without its first line, byte for byte.
                let sql = if declared {
                    sql.as_str()
                } else {
                    sql.split_once('\n').unwrap().1
                };
                std::fs::write(earlier.path().join(path.file_name().unwrap()), sql).unwrap();
            }
            sqlx::migrate::Migrator::new(earlier.path())
                .await
                .unwrap()
                .run(&db.pool)
                .await
                .unwrap();

            let h = Hospital::open_with(&db.url, 4, rules(db.dir.path()), Migrations::ExpandOnly)
                .await
                .unwrap_or_else(|e| panic!("{:?} (declared: {declared}): {e}", db.backend));
            assert!(h.pending_migrations().await.unwrap().is_empty());
            assert!(!h.contract_migrations_pending().await.unwrap());
            assert!(h.apply_contract_migrations().await.unwrap().is_empty());
            drop(h);
            Hospital::open(&db.url, 4, rules(db.dir.path()))
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn a_new_database_opened_with_expand_only_has_every_shipped_migration() {
    for db in databases().await {
        let h = Hospital::open_with(&db.url, 4, rules(db.dir.path()), Migrations::ExpandOnly)
            .await
            .unwrap();
        // Nothing shipped is a contract migration yet, so a candidate leaves nothing pending.
        assert!(h.pending_migrations().await.unwrap().is_empty());
        assert!(!h.contract_migrations_pending().await.unwrap());
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        let shipped = std::fs::read_dir(shipped(db.backend)).unwrap().count();
        assert_eq!(applied, shipped as i64);
    }
}
