-- nonstop: expand
-- Reads that grew with the hospital's history, each now bounded by what it asks for. Without
-- statistics SQLite picks an index by its equality columns, and for these it picked a status.
--
-- A patient's appointments in one department, by status: read inside every registration (the
-- quota rule's earlier visits) and every check-in (a returning patient's queue priority). It read
-- every fulfilled appointment the hospital ever had, so registrations and check-ins slowed as
-- the history grew, and a new program, its cache cold, read them all from disk. Found by the
-- program upgrade benchmark (issue 10): its upgraded node answered 0.5 of the other's requests
-- in the seconds after a handover, and fewer with each upgrade.
CREATE INDEX appointment_patient_department ON appointment (patient_id, department_id, status);
-- The sweeper's paid registrations of past days that never checked in: it read every booked
-- appointment of every day, the booking window ahead included, every few seconds.
CREATE INDEX appointment_status_visit ON appointment (status, visit_date);
-- The sessions of one day, which the registration desk lists: it read every session ever held.
CREATE INDEX schedule_day ON schedule (session_date);
