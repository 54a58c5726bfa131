-- nonstop: expand
-- Billing (收费 / 医保): an invoice per registration (FHIR Invoice: issued = unpaid, balanced =
-- paid, cancelled = voided or refunded), its charge items (FHIR ChargeItem) split into insurance
-- fund and self-pay parts, and every payment and refund, each with a unique idempotency key.

CREATE TABLE invoice (
    id              INTEGER PRIMARY KEY,
    patient_id      INTEGER NOT NULL REFERENCES patient(id),
    appointment_id  INTEGER NOT NULL REFERENCES appointment(id),
    status          TEXT NOT NULL CHECK (status IN ('issued', 'balanced', 'cancelled')),
    total_fen       INTEGER NOT NULL CHECK (total_fen >= 0),
    fund_fen        INTEGER NOT NULL DEFAULT 0 CHECK (fund_fen >= 0),
    self_pay_fen    INTEGER NOT NULL DEFAULT 0 CHECK (self_pay_fen >= 0),
    deductible_fen  INTEGER NOT NULL DEFAULT 0,
    insurance_rule  TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    CHECK (status <> 'balanced' OR fund_fen + self_pay_fen = total_fen)
);
CREATE INDEX invoice_patient ON invoice (patient_id, status);
CREATE UNIQUE INDEX invoice_appointment ON invoice (appointment_id);

CREATE TABLE charge_item (
    id            INTEGER PRIMARY KEY,
    invoice_id    INTEGER NOT NULL REFERENCES invoice(id),
    code          TEXT NOT NULL,
    description   TEXT NOT NULL,
    amount_fen    INTEGER NOT NULL CHECK (amount_fen >= 0),
    item_class    TEXT NOT NULL CHECK (item_class IN ('class-a', 'class-b', 'class-c')),
    fund_fen      INTEGER NOT NULL DEFAULT 0,
    self_pay_fen  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX charge_item_invoice ON charge_item (invoice_id);

CREATE TABLE payment (
    id               INTEGER PRIMARY KEY,
    invoice_id       INTEGER NOT NULL REFERENCES invoice(id),
    kind             TEXT NOT NULL CHECK (kind IN ('payment', 'refund')),
    method           TEXT NOT NULL CHECK (method IN ('cash', 'card', 'wechat', 'alipay', 'self-service')),
    self_pay_fen     INTEGER NOT NULL CHECK (self_pay_fen >= 0),
    fund_fen         INTEGER NOT NULL CHECK (fund_fen >= 0),
    cashier          TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL UNIQUE,
    business_date    TEXT NOT NULL,
    at               INTEGER NOT NULL
);
CREATE INDEX payment_day ON payment (business_date, cashier);
