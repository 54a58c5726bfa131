-- nonstop: expand
-- Self-service kiosks (自助机) get accounts of their own, allowed only to take self-service
-- payments.

ALTER TABLE app_user DROP CONSTRAINT app_user_role_check;
ALTER TABLE app_user ADD CONSTRAINT app_user_role_check
    CHECK (role IN ('clerk', 'cashier', 'doctor', 'admin', 'kiosk'));
