-- nonstop: expand
-- PostgreSQL twin of migrations/sqlite/0012_read_audit.sql.
-- Access must be traceable (personal-information law): the read audit says who saw which
-- patient's identifying data or invoices, when, by which read and from which address, as the
-- change audit (`audit_event`) says who changed what. Auditors (审计员) read both audits and
-- nothing else.

ALTER TABLE app_user DROP CONSTRAINT app_user_role_check;
ALTER TABLE app_user ADD CONSTRAINT app_user_role_check
    CHECK (role IN ('clerk', 'cashier', 'doctor', 'admin', 'kiosk', 'auditor'));

-- One row per patient a read showed, appended only. The account's name and role are kept as they
-- were at the read; no foreign keys, so a row costs no lookups.
CREATE TABLE read_audit (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    user_id    BIGINT NOT NULL,
    username   TEXT NOT NULL,
    role       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    target     BIGINT,
    patient_id BIGINT NOT NULL,
    client     TEXT NOT NULL
);
-- Newest first, by time, by patient or by member of staff.
CREATE INDEX read_audit_at ON read_audit (at, id);
CREATE INDEX read_audit_patient ON read_audit (patient_id, at, id);
CREATE INDEX read_audit_staff ON read_audit (username, at, id);
