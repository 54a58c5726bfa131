-- nonstop: expand
-- PostgreSQL twin of migrations/sqlite/0010_hospital_setup.sql.
-- A hospital sets itself up from an empty database: departments and doctors can be deactivated
-- (history stays, nothing new is scheduled for them); a clinic session has a room and can be
-- cancelled or stopped mid-session (停诊) with the reason; staff accounts can be disabled and
-- lock after repeated failed sign-ins; patients are found by name prefix or phone; a patient's
-- corrected details keep their previous values; a cashier's day is closed (日结) with frozen totals.

ALTER TABLE department ADD COLUMN active BIGINT NOT NULL DEFAULT 1;
ALTER TABLE practitioner ADD COLUMN active BIGINT NOT NULL DEFAULT 1;

ALTER TABLE schedule ADD COLUMN room TEXT;
ALTER TABLE schedule ADD COLUMN status TEXT NOT NULL DEFAULT 'active'
    CHECK (status IN ('active', 'cancelled', 'stopped'));
ALTER TABLE schedule ADD COLUMN status_reason TEXT;

ALTER TABLE app_user ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE app_user ADD COLUMN failed_logins BIGINT NOT NULL DEFAULT 0;
ALTER TABLE app_user ADD COLUMN locked_until BIGINT NOT NULL DEFAULT 0;
CREATE INDEX api_token_user ON api_token (user_id);

-- Name prefixes are ranges in byte order, whatever the database's collation.
CREATE INDEX patient_name ON patient (name COLLATE "C");
CREATE INDEX patient_phone ON patient (phone);

-- A patient's details before each correction, as JSON, with who corrected them and why.
CREATE TABLE patient_revision (
    id          BIGSERIAL PRIMARY KEY,
    patient_id  BIGINT NOT NULL REFERENCES patient(id),
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    previous    TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX patient_revision_patient ON patient_revision (patient_id, id);

-- A cashier's closed business day: its totals, frozen. Payments the cashier takes afterwards
-- carry the next open business day.
CREATE TABLE cashier_closing (
    id                BIGSERIAL PRIMARY KEY,
    cashier           TEXT NOT NULL,
    business_date     TEXT NOT NULL,
    closed_at         BIGINT NOT NULL,
    closed_by         TEXT NOT NULL,
    payments          BIGINT NOT NULL,
    refunds           BIGINT NOT NULL,
    paid_fen          BIGINT NOT NULL,
    refunded_fen      BIGINT NOT NULL,
    fund_paid_fen     BIGINT NOT NULL,
    fund_refunded_fen BIGINT NOT NULL,
    by_method         TEXT NOT NULL,
    UNIQUE (cashier, business_date)
);
CREATE INDEX payment_cashier_day ON payment (cashier, business_date);
