-- nonstop: expand
-- PostgreSQL twin of migrations/sqlite/0007_invoice_cancelled_reason.sql.
-- Why an invoice was cancelled (FHIR Invoice.cancelledReason): refunded after payment (退号 or
-- refund of what was not consumed), or voided before payment because its hold was released.
-- Invoices cancelled before this column existed keep NULL.

ALTER TABLE invoice ADD COLUMN cancelled_reason TEXT;
