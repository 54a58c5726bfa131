-- nonstop: expand
-- Triage queue (分诊叫号): one ticket per checked-in registration, ordered by the sort weight the
-- triage rule computed (recorded with the rule's version). A missed patient waits until
-- `requeue_behind` more patients have been called (`eligible_after_call` against the session's
-- `calls_made`), and the ticket expires after the rule's maximum of misses. Flags are 0 / 1.

ALTER TABLE schedule ADD COLUMN calls_made INTEGER NOT NULL DEFAULT 0;

CREATE TABLE queue_ticket (
    id                  INTEGER PRIMARY KEY,
    appointment_id      INTEGER NOT NULL UNIQUE REFERENCES appointment(id),
    schedule_id         INTEGER NOT NULL REFERENCES schedule(id),
    status              TEXT NOT NULL CHECK (status IN ('waiting', 'called', 'in-service', 'done', 'suspended', 'expired')),
    weight              INTEGER NOT NULL,
    triage_rule         TEXT NOT NULL,
    emergency_level     INTEGER NOT NULL DEFAULT 0,
    disabled            INTEGER NOT NULL DEFAULT 0,
    military            INTEGER NOT NULL DEFAULT 0,
    returned_from_tests INTEGER NOT NULL DEFAULT 0,
    revisit             INTEGER NOT NULL DEFAULT 0,
    missed_calls        INTEGER NOT NULL DEFAULT 0,
    max_misses          INTEGER NOT NULL,
    requeue_behind      INTEGER NOT NULL,
    eligible_after_call INTEGER NOT NULL DEFAULT 0,
    room                TEXT,
    checked_in_at       INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE INDEX queue_ticket_order ON queue_ticket (schedule_id, status, weight);
