-- nonstop: expand
-- PostgreSQL twin of migrations/sqlite/0006_indexes.sql.
-- Indexes for queries that otherwise read a growing table whole. Found by `nonstop loadgen`
-- slowing down as payments accumulated: the insurance year's total of a patient, read inside
-- every payment's transaction, scanned every payment of the year through payment_day; the
-- sweeper scanned every appointment for lapsed holds and no-shows every 15 seconds.

CREATE INDEX payment_invoice ON payment (invoice_id, kind);
CREATE INDEX appointment_status ON appointment (status, hold_expires_at);
