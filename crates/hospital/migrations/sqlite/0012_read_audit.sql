-- nonstop: expand
-- Access must be traceable (personal-information law): the read audit says who saw which
-- patient's identifying data or invoices, when, by which read and from which address, as the
-- change audit (`audit_event`) says who changed what. Auditors (审计员) read both audits and
-- nothing else.
--
-- SQLite cannot change a CHECK constraint, so `app_user` is rebuilt as in 0008, with the columns
-- 0010 added, and so is `api_token`, which points at it (see 0008 for why in this order), and
-- the index 0010 put on it.

CREATE TABLE app_user_new (
    id              INTEGER PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    role            TEXT NOT NULL CHECK (role IN ('clerk', 'cashier', 'doctor', 'admin', 'kiosk', 'auditor')),
    password_hash   TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    practitioner_id INTEGER REFERENCES practitioner(id),
    disabled        INTEGER NOT NULL DEFAULT 0,
    failed_logins   INTEGER NOT NULL DEFAULT 0,
    locked_until    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO app_user_new (id, username, role, password_hash, created_at, practitioner_id, disabled,
                          failed_logins, locked_until)
    SELECT id, username, role, password_hash, created_at, practitioner_id, disabled, failed_logins,
           locked_until FROM app_user;

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
CREATE INDEX api_token_user ON api_token (user_id);

-- One row per patient a read showed, appended only. The account's name and role are kept as they
-- were at the read; no foreign keys, so a row costs no lookups and outlives any rebuild.
CREATE TABLE read_audit (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    user_id    INTEGER NOT NULL,
    username   TEXT NOT NULL,
    role       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    target     INTEGER,
    patient_id INTEGER NOT NULL,
    client     TEXT NOT NULL
);
-- Newest first, by time, by patient or by member of staff (each index ends with the rowid).
CREATE INDEX read_audit_at ON read_audit (at);
CREATE INDEX read_audit_patient ON read_audit (patient_id, at);
CREATE INDEX read_audit_staff ON read_audit (username, at);
