-- nonstop: expand
-- A doctor's staff account names the practitioner it is (FHIR PractitionerRole): the doctor's
-- view shows that practitioner's sessions, and a linked doctor calls and treats only their own
-- patients. Other roles, and doctor accounts made before this link, have none.

ALTER TABLE app_user ADD COLUMN practitioner_id INTEGER REFERENCES practitioner(id);
