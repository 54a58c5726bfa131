//! A node's SQLite database made by an earlier release upgrades in place at start-up: the
//! migrations that rebuild a table keep its rows and the rows that point at them.

use nonstop_hospital::{Hospital, Role};
use sqlx::AnyPool;

use crate::rules;

/// A new SQLite database in a temporary directory, migrated by every migration numbered before
/// `before` (as an earlier release left it): the directory, its URL and a pool on it.
async fn migrated_before(before: &str) -> (tempfile::TempDir, String, AnyPool) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/h.db?mode=rwc", dir.path().display());
    sqlx::any::install_default_drivers();
    let earlier = dir.path().join("earlier-migrations");
    std::fs::create_dir(&earlier).unwrap();
    let ours = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for entry in std::fs::read_dir(&ours).unwrap() {
        let name = entry.unwrap().file_name();
        if name.to_string_lossy().as_ref() < before {
            std::fs::copy(ours.join(&name), earlier.join(&name)).unwrap();
        }
    }
    let pool = AnyPool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(earlier.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    (dir, url, pool)
}

/// Migration 0008 rebuilds `app_user` (SQLite cannot change a CHECK constraint) to allow kiosk
/// accounts: the accounts, their link to a practitioner and their tokens survive it.
#[tokio::test]
async fn staff_accounts_and_their_tokens_survive_the_table_rebuild_for_kiosks() {
    // The database as a node with migrations up to 0007 left it, with a linked doctor and a token.
    let (dir, url, pool) = migrated_before("0008").await;
    for sql in [
        "INSERT INTO department (id, code, name) VALUES (1, 'IM', 'Internal Medicine')",
        "INSERT INTO practitioner (id, name, title, department_id) VALUES (7, 'Dr Wang', 'chief', 1)",
        "INSERT INTO app_user (id, username, role, password_hash, created_at, practitioner_id)
             VALUES (3, 'dr-wang', 'doctor', 'hash', 1, 7)",
        "INSERT INTO api_token (id, user_id, secret_hash, created_at, expires_at) VALUES (5, 3, 'h', 1, 2)",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let h = Hospital::open(&url, 4, rules(dir.path())).await.unwrap();
    h.add_user("admin", "kiosk-1", Role::Kiosk, None, "kiosk-password-1")
        .await
        .unwrap();

    let pool = AnyPool::connect(&url).await.unwrap();
    let doctor: (String, String, i64) =
        sqlx::query_as("SELECT username, role, practitioner_id FROM app_user WHERE id = 3")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(doctor, ("dr-wang".into(), "doctor".into(), 7));
    let token_owner: i64 = sqlx::query_scalar("SELECT user_id FROM api_token WHERE id = 5")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(token_owner, 3);
    let dangling: Vec<(String,)> = sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(dangling.is_empty(), "{dangling:?}");
    let parent: String =
        sqlx::query_scalar("SELECT \"table\" FROM pragma_foreign_key_list('api_token')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(parent, "app_user", "tokens point at the rebuilt table");
    // The rebuilt table still refuses what it refused.
    let nurse = sqlx::query(
        "INSERT INTO app_user (username, role, password_hash, created_at) VALUES ('n', 'nurse', 'h', 1)",
    )
    .execute(&pool)
    .await;
    assert!(nurse.unwrap_err().to_string().contains("CHECK"));
}

/// Migration 0012 rebuilds `app_user` again, for auditors: an account's lock, failed sign-ins
/// and disabled flag (columns 0010 added), its tokens and the index on them survive it.
#[tokio::test]
async fn staff_accounts_keep_their_state_through_the_table_rebuild_for_auditors() {
    // The database as a node with migrations up to 0011 left it.
    let (dir, url, pool) = migrated_before("0012").await;
    for sql in [
        "INSERT INTO department (id, code, name) VALUES (1, 'IM', 'Internal Medicine')",
        "INSERT INTO practitioner (id, name, title, department_id) VALUES (7, 'Dr Wang', 'chief', 1)",
        "INSERT INTO app_user (id, username, role, password_hash, created_at, practitioner_id,
             disabled, failed_logins, locked_until)
             VALUES (3, 'dr-wang', 'doctor', 'hash', 1, 7, 1, 4, 99)",
        "INSERT INTO app_user (id, username, role, password_hash, created_at) VALUES (4, 'kiosk-1', 'kiosk', 'h', 2)",
        "INSERT INTO api_token (id, user_id, secret_hash, created_at, expires_at) VALUES (5, 3, 'h', 1, 2)",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let h = Hospital::open(&url, 4, rules(dir.path())).await.unwrap();
    h.add_user(
        "admin",
        "auditor-1",
        Role::Auditor,
        None,
        "auditor-password-1",
    )
    .await
    .unwrap();

    let pool = AnyPool::connect(&url).await.unwrap();
    type Kept = (String, String, i64, i64, i64, i64);
    let doctor: Kept = sqlx::query_as(
        "SELECT username, role, practitioner_id, disabled, failed_logins, locked_until FROM app_user WHERE id = 3",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(doctor, ("dr-wang".into(), "doctor".into(), 7, 1, 4, 99));
    let roles: Vec<String> = sqlx::query_scalar("SELECT role FROM app_user ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(roles, ["doctor", "kiosk", "auditor"]);
    let token_owner: i64 = sqlx::query_scalar("SELECT user_id FROM api_token WHERE id = 5")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(token_owner, 3);
    let dangling: Vec<(String,)> = sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(dangling.is_empty(), "{dangling:?}");
    let parent: String =
        sqlx::query_scalar("SELECT \"table\" FROM pragma_foreign_key_list('api_token')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(parent, "app_user", "tokens point at the rebuilt table");
    let index: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = 'api_token_user'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(index, 1, "the index on tokens' accounts is there again");
    let nurse = sqlx::query(
        "INSERT INTO app_user (username, role, password_hash, created_at) VALUES ('n', 'nurse', 'h', 1)",
    )
    .execute(&pool)
    .await;
    assert!(nurse.unwrap_err().to_string().contains("CHECK"));
}
