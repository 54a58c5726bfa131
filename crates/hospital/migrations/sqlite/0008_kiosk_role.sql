-- nonstop: expand
-- Self-service kiosks (自助机) get accounts of their own, allowed only to take self-service
-- payments. SQLite cannot change a CHECK constraint, so `app_user` is rebuilt. This runs in the
-- migrator's transaction with foreign keys on, so `api_token`, the table that points at it, is
-- rebuilt too: its copy points at the new table, whose rename carries the reference along, and
-- the old tables are dropped with nothing pointing at them.

CREATE TABLE app_user_new (
    id              INTEGER PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL CHECK (role IN ('clerk', 'cashier', 'doctor', 'admin', 'kiosk')),
    password_hash   TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    practitioner_id INTEGER REFERENCES practitioner(id)
);
INSERT INTO app_user_new (id, username, role, password_hash, created_at, practitioner_id)
    SELECT id, username, role, password_hash, created_at, practitioner_id FROM app_user;

CREATE TABLE api_token_new (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES app_user_new(id),
    secret_hash TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
INSERT INTO api_token_new (id, user_id, secret_hash, created_at, expires_at)
    SELECT id, user_id, secret_hash, created_at, expires_at FROM api_token;

DROP TABLE api_token;
DROP TABLE app_user;
ALTER TABLE app_user_new RENAME TO app_user;
ALTER TABLE api_token_new RENAME TO api_token;
