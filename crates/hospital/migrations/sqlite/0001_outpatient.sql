-- nonstop: expand
-- Outpatient core. Names follow HL7 FHIR R4 where one fits: practitioner (doctor), schedule (a
-- doctor's clinic session and its slots), appointment (a registration, 挂号), audit_event.
-- Times are Unix milliseconds; dates are ISO 8601 text; money is integer fen.

CREATE TABLE department (
    id      INTEGER PRIMARY KEY,
    code    TEXT NOT NULL UNIQUE,
    name    TEXT NOT NULL
);

CREATE TABLE practitioner (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    title         TEXT NOT NULL CHECK (title IN ('chief', 'associate-chief', 'attending', 'resident')),
    department_id INTEGER NOT NULL REFERENCES department(id)
);

CREATE TABLE schedule (
    id                 INTEGER PRIMARY KEY,
    practitioner_id    INTEGER NOT NULL REFERENCES practitioner(id),
    department_id      INTEGER NOT NULL REFERENCES department(id),
    session_date       TEXT NOT NULL,
    period             TEXT NOT NULL CHECK (period IN ('morning', 'afternoon', 'night')),
    clinic_type        TEXT NOT NULL CHECK (clinic_type IN ('general', 'specialist', 'emergency', 'night', 'holiday')),
    registration_level INTEGER NOT NULL,
    quota_on_site      INTEGER NOT NULL,
    quota_online       INTEGER NOT NULL,
    quota_elderly      INTEGER NOT NULL,
    taken_on_site      INTEGER NOT NULL DEFAULT 0 CHECK (taken_on_site BETWEEN 0 AND quota_on_site),
    taken_online       INTEGER NOT NULL DEFAULT 0 CHECK (taken_online BETWEEN 0 AND quota_online),
    taken_elderly      INTEGER NOT NULL DEFAULT 0 CHECK (taken_elderly BETWEEN 0 AND quota_elderly),
    UNIQUE (practitioner_id, session_date, period)
);

CREATE TABLE patient (
    id                 INTEGER PRIMARY KEY,
    name               TEXT NOT NULL,
    gender             TEXT NOT NULL CHECK (gender IN ('male', 'female', 'other', 'unknown')),
    birth_date         TEXT NOT NULL,
    id_number          TEXT NOT NULL UNIQUE,
    phone              TEXT NOT NULL,
    insurance_category TEXT NOT NULL CHECK (insurance_category IN ('none', 'employee', 'resident')),
    insurance_number   TEXT,
    created_at         INTEGER NOT NULL
);

CREATE TABLE appointment (
    id                INTEGER PRIMARY KEY,
    patient_id        INTEGER NOT NULL REFERENCES patient(id),
    schedule_id       INTEGER NOT NULL REFERENCES schedule(id),
    department_id     INTEGER NOT NULL REFERENCES department(id),
    visit_date        TEXT NOT NULL,
    channel           TEXT NOT NULL CHECK (channel IN ('on-site', 'online', 'elderly-reserved')),
    pool              TEXT NOT NULL CHECK (pool IN ('on-site', 'online', 'elderly-reserved')),
    status            TEXT NOT NULL CHECK (status IN ('pending', 'booked', 'checked-in', 'fulfilled', 'cancelled', 'noshow')),
    hold_expires_at   INTEGER NOT NULL,
    fee_fen           INTEGER NOT NULL CHECK (fee_fen >= 0),
    fee_lines         TEXT NOT NULL,
    fee_rule          TEXT NOT NULL,
    quota_rule        TEXT NOT NULL,
    created_by        TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX appointment_patient_day ON appointment (patient_id, visit_date);
CREATE INDEX appointment_schedule ON appointment (schedule_id, status);

CREATE TABLE audit_event (
    id        INTEGER PRIMARY KEY,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    entity    TEXT NOT NULL,
    entity_id INTEGER NOT NULL,
    action    TEXT NOT NULL,
    detail    TEXT NOT NULL
);
CREATE INDEX audit_event_entity ON audit_event (entity, entity_id);
