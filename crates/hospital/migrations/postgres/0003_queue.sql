-- nonstop: expand
-- PostgreSQL twin of migrations/sqlite/0003_queue.sql: the same schema, with BIGSERIAL / BIGINT ids.
-- Triage queue (分诊叫号): one ticket per checked-in registration, ordered by the sort weight the
-- triage rule computed (recorded with the rule's version). A missed patient waits until
-- `requeue_behind` more patients have been called (`eligible_after_call` against the session's
-- `calls_made`), and the ticket expires after the rule's maximum of misses. Flags are 0 / 1.

ALTER TABLE schedule ADD COLUMN calls_made BIGINT NOT NULL DEFAULT 0;

CREATE TABLE queue_ticket (
    id                  BIGSERIAL PRIMARY KEY,
    appointment_id      BIGINT NOT NULL UNIQUE REFERENCES appointment(id),
    schedule_id         BIGINT NOT NULL REFERENCES schedule(id),
    status              TEXT NOT NULL CHECK (status IN ('waiting', 'called', 'in-service', 'done', 'suspended', 'expired')),
    weight              BIGINT NOT NULL,
    triage_rule         TEXT NOT NULL,
    emergency_level     BIGINT NOT NULL DEFAULT 0,
    disabled            BIGINT NOT NULL DEFAULT 0,
    military            BIGINT NOT NULL DEFAULT 0,
    returned_from_tests BIGINT NOT NULL DEFAULT 0,
    revisit             BIGINT NOT NULL DEFAULT 0,
    missed_calls        BIGINT NOT NULL DEFAULT 0,
    max_misses          BIGINT NOT NULL,
    requeue_behind      BIGINT NOT NULL,
    eligible_after_call BIGINT NOT NULL DEFAULT 0,
    room                TEXT,
    checked_in_at       BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);
CREATE INDEX queue_ticket_order ON queue_ticket (schedule_id, status, weight);
