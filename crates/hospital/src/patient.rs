//! Patients (FHIR Patient): registration of a patient with a validated resident ID number.

use serde::{Deserialize, Serialize};
use time::Date;

use crate::write::is_unique_violation;
use crate::{Hospital, HospitalError, Tx, args, now_ms};

/// Refuses an ID number registered already to another patient than `except`, naming them.
fn refuse_duplicate(
    tx: &mut Tx<'_>,
    id_number: &str,
    except: Option<i64>,
) -> Result<(), HospitalError> {
    let existing: Option<i64> = tx.row(
        "SELECT id FROM patient WHERE id_number = $1 AND id <> $2",
        args![id_number.to_ascii_uppercase(), except.unwrap_or(0)],
    )?;
    match existing {
        Some(existing_id) => Err(HospitalError::Duplicate {
            field: "id_number",
            // The existing patient's id travels in its own field (`existing_id` in the API).
            reason: "a patient with this ID number is already registered".into(),
            existing_id,
        }),
        None => Ok(()),
    }
}

/// Insurance category of a patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InsuranceCategory {
    /// Self-paying.
    None,
    /// Urban employee basic medical insurance (职工医保).
    Employee,
    /// Urban and rural resident medical insurance (居民医保).
    Resident,
}

impl InsuranceCategory {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            InsuranceCategory::None => "none",
            InsuranceCategory::Employee => "employee",
            InsuranceCategory::Resident => "resident",
        }
    }
}

/// A patient to register.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPatient {
    /// Full name.
    pub name: String,
    /// `male`, `female`, `other` or `unknown` (FHIR AdministrativeGender).
    pub gender: String,
    /// Birth date, `YYYY-MM-DD`; must match the ID number.
    pub birth_date: String,
    /// 18-character resident identity card number (GB 11643), check digit verified.
    pub id_number: String,
    /// Phone number.
    pub phone: String,
    /// Insurance category.
    pub insurance_category: InsuranceCategory,
    /// Insurance card number, if insured.
    pub insurance_number: Option<String>,
}

/// Checks an 18-character resident ID number: 17 digits, then a check character computed by
/// ISO 7064 MOD 11-2 as GB 11643 prescribes, with the birth date at positions 7 to 14.
pub fn validate_id_number(id: &str, birth_date: Date) -> Result<(), HospitalError> {
    let bad = |reason: String| HospitalError::Invalid {
        field: "id_number",
        reason,
    };
    let chars: Vec<char> = id.chars().collect();
    if chars.len() != 18 || !chars[..17].iter().all(|c| c.is_ascii_digit()) {
        return Err(bad("must be 17 digits and a check character".into()));
    }
    let expected = id_check_character(&id[..17]);
    if chars[17].to_ascii_uppercase() != expected {
        return Err(bad(format!(
            "check character is {}, expected {expected}",
            chars[17]
        )));
    }
    let embedded: String = chars[6..14].iter().collect();
    let given = format!(
        "{:04}{:02}{:02}",
        birth_date.year(),
        u8::from(birth_date.month()),
        birth_date.day()
    );
    if embedded != given {
        return Err(bad(format!(
            "holds birth date {embedded}, but birth_date is {given}"
        )));
    }
    Ok(())
}

/// The check character of an ID number's first 17 digits (ISO 7064 MOD 11-2, GB 11643); a
/// character that is not a digit counts as 0.
pub fn id_check_character(first_17: &str) -> char {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first_17
        .chars()
        .zip(WEIGHTS)
        .map(|(c, w)| c.to_digit(10).unwrap_or(0) * w)
        .sum();
    b"10X98765432"[(sum % 11) as usize] as char
}

/// The ID number as lists show it: region and last four only.
pub fn mask_id_number(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() < 10 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 10))
}

pub(crate) fn parse_date(field: &'static str, text: &str) -> Result<Date, HospitalError> {
    Date::parse(text, &time::format_description::well_known::Iso8601::DATE).map_err(|e| {
        HospitalError::Invalid {
            field,
            reason: format!("{text:?} is not a YYYY-MM-DD date: {e}"),
        }
    })
}

/// Whole years from `birth` to `on`.
pub(crate) fn age_on(birth: Date, on: Date) -> u32 {
    let mut years = on.year() - birth.year();
    if (u8::from(on.month()), on.day()) < (u8::from(birth.month()), birth.day()) {
        years -= 1;
    }
    years.max(0) as u32
}

impl Hospital {
    /// Checks every field of a patient's details.
    fn check_patient(&self, p: &NewPatient) -> Result<(), HospitalError> {
        check_patient(p, self.business_date())
    }
}

/// Checks every field of a patient's details, on the business day `today`.
fn check_patient(p: &NewPatient, today: Date) -> Result<(), HospitalError> {
    if p.name.trim().is_empty() || p.name.chars().count() > 64 {
        return Err(HospitalError::Invalid {
            field: "name",
            reason: "must be 1 to 64 characters".into(),
        });
    }
    if !matches!(p.gender.as_str(), "male" | "female" | "other" | "unknown") {
        return Err(HospitalError::Invalid {
            field: "gender",
            reason: format!("{:?} is not male, female, other or unknown", p.gender),
        });
    }
    let birth = parse_date("birth_date", &p.birth_date)?;
    if birth > today {
        return Err(HospitalError::Invalid {
            field: "birth_date",
            reason: format!("{} is in the future", p.birth_date),
        });
    }
    validate_id_number(&p.id_number, birth)?;
    if let Some(number) = &p.insurance_number
        && (number.is_empty()
            || number.len() > 32
            || !number.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(HospitalError::Invalid {
            field: "insurance_number",
            reason: "must be 1 to 32 letters or digits".into(),
        });
    }
    if !(6..=20).contains(&p.phone.len())
        || !p
            .phone
            .chars()
            .all(|c| c.is_ascii_digit() || c == '+' || c == '-')
    {
        return Err(HospitalError::Invalid {
            field: "phone",
            reason: "must be 6 to 20 digits".into(),
        });
    }
    Ok(())
}

impl Hospital {
    /// Registers a patient after validating every field; returns the new patient's id. A
    /// second patient with an ID number already registered is refused with the first one's id.
    pub async fn add_patient(&self, actor: &str, p: &NewPatient) -> Result<i64, HospitalError> {
        self.check_patient(p)?;
        let (p, actor) = (p.clone(), actor.to_owned());
        self.write(move |tx| {
            refuse_duplicate(tx, &p.id_number, None)?;
            let id: i64 = tx
                .one(
                    "INSERT INTO patient (name, gender, birth_date, id_number, phone, insurance_category, insurance_number, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                    args![
                        &p.name,
                        &p.gender,
                        &p.birth_date,
                        p.id_number.to_ascii_uppercase(),
                        &p.phone,
                        p.insurance_category.as_str(),
                        p.insurance_number.clone(),
                        now_ms(),
                    ],
                )
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        HospitalError::Invalid {
                            field: "id_number",
                            reason: "a patient with this ID number is already registered".into(),
                        }
                    } else {
                        e
                    }
                })?;
            crate::audit(
                tx,
                &actor,
                "patient",
                id,
                "create",
                &mask_id_number(&p.id_number),
            )?;
            Ok(id)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> Date {
        parse_date("d", s).unwrap()
    }

    #[test]
    fn id_numbers_are_checked_by_their_check_character_and_birth_date() {
        // The GB 11643 standard's own example.
        assert!(validate_id_number("11010519491231002X", date("1949-12-31")).is_ok());
        let err = validate_id_number("110105194912310021", date("1949-12-31")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid id_number: check character is 1, expected X"
        );
        let err = validate_id_number("11010519491231002X", date("1950-01-01")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid id_number: holds birth date 19491231, but birth_date is 19500101"
        );
        assert!(validate_id_number("1101051949", date("1949-12-31")).is_err());
    }

    #[test]
    fn lists_show_only_region_and_last_four() {
        assert_eq!(mask_id_number("11010519491231002X"), "110105********002X");
    }

    #[test]
    fn age_counts_whole_years() {
        assert_eq!(age_on(date("1960-06-15"), date("2025-06-14")), 64);
        assert_eq!(age_on(date("1960-06-15"), date("2025-06-15")), 65);
    }
}

/// A patient as lists show it: the ID number masked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PatientSummary {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Gender.
    pub gender: String,
    /// Birth date.
    pub birth_date: String,
    /// Masked ID number.
    pub id_number: String,
    /// Masked phone number: first three and last four digits.
    pub phone: String,
    /// Insurance category.
    pub insurance_category: String,
}

impl Hospital {
    /// A page of patients, newest first, and how many there are in all.
    pub async fn list_patients(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<PatientSummary>, i64), HospitalError> {
        self.search_patients(&PatientSearch::All, limit, offset)
            .await
    }

    /// A page of the patients a search finds, and how many it finds in all.
    pub async fn search_patients(
        &self,
        by: &PatientSearch,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<PatientSummary>, i64), HospitalError> {
        let postgres = self.backend == crate::Backend::Postgres;
        // A name prefix is a range of names in byte order, which the name index serves: on
        // PostgreSQL in the "C" collation its index is built with.
        let name = if postgres {
            "name COLLATE \"C\""
        } else {
            "name"
        };
        let (filter, order, a, b) = match by {
            PatientSearch::All => (
                "1 = 1 AND $1 = $2".to_owned(),
                "id DESC",
                String::new(),
                String::new(),
            ),
            PatientSearch::NamePrefix(prefix) => (
                format!("{name} >= $1 AND {name} < $2"),
                "name, id",
                prefix.clone(),
                format!("{prefix}\u{10FFFF}"),
            ),
            PatientSearch::Phone(phone) => (
                "phone = $1 AND $2 = ''".to_owned(),
                "id DESC",
                phone.clone(),
                String::new(),
            ),
            PatientSearch::IdNumber(id) => (
                "id_number = $1 AND $2 = ''".to_owned(),
                "id DESC",
                id.to_ascii_uppercase(),
                String::new(),
            ),
        };
        let rows: Vec<(i64, String, String, String, String, String, String)> =
            sqlx::query_as(&format!(
            "SELECT id, name, gender, birth_date, id_number, phone, insurance_category FROM patient
             WHERE {filter} ORDER BY {order} LIMIT $3 OFFSET $4"
        ))
            .bind(&a)
            .bind(&b)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let total: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM patient WHERE {filter}"))
                .bind(&a)
                .bind(&b)
                .fetch_one(&self.pool)
                .await?;
        let items = rows
            .into_iter()
            .map(|r| PatientSummary {
                id: r.0,
                name: r.1,
                gender: r.2,
                birth_date: r.3,
                id_number: mask_id_number(&r.4),
                phone: mask_phone(&r.5),
                insurance_category: r.6,
            })
            .collect();
        Ok((items, total))
    }

    /// One patient's details.
    pub async fn patient(&self, id: i64) -> Result<PatientDetail, HospitalError> {
        type Row = (
            i64,
            String,
            String,
            String,
            String,
            String,
            String,
            Option<String>,
            i64,
        );
        let r: Row = sqlx::query_as(
            "SELECT id, name, gender, birth_date, id_number, phone, insurance_category, insurance_number, created_at
             FROM patient WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(HospitalError::NotFound { what: "patient", id })?;
        Ok(PatientDetail {
            id: r.0,
            name: r.1,
            gender: r.2,
            birth_date: r.3,
            id_number: mask_id_number(&r.4),
            phone: r.5,
            insurance_category: r.6,
            insurance_number: r.7,
            created_at: r.8,
        })
    }

    /// A patient's registrations (visits), newest first, with their invoices.
    pub async fn visits(&self, patient_id: i64) -> Result<Vec<Visit>, HospitalError> {
        self.patient(patient_id).await?;
        type Row = (
            i64,
            i64,
            String,
            String,
            String,
            String,
            String,
            i64,
            i64,
            String,
            i64,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT a.id, a.schedule_id, a.visit_date, s.period, d.name, p.name, a.status, a.fee_fen, i.id, i.status, a.created_at
             FROM appointment a JOIN schedule s ON s.id = a.schedule_id JOIN practitioner p ON p.id = s.practitioner_id
             JOIN department d ON d.id = a.department_id JOIN invoice i ON i.appointment_id = a.id
             WHERE a.patient_id = $1 ORDER BY a.visit_date DESC, a.id DESC LIMIT 500",
        )
        .bind(patient_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| Visit {
                appointment_id: r.0,
                schedule_id: r.1,
                date: r.2,
                period: r.3,
                department: r.4,
                practitioner: r.5,
                status: r.6,
                fee_fen: r.7,
                invoice_id: r.8,
                invoice_status: r.9,
                created_at: r.10,
            })
            .collect())
    }

    /// A patient's invoices, newest first; only those of one status (`issued` for unpaid) if
    /// given.
    pub async fn patient_invoices(
        &self,
        patient_id: i64,
        status: Option<&str>,
    ) -> Result<Vec<InvoiceSummary>, HospitalError> {
        if let Some(status) = status
            && !matches!(status, "issued" | "balanced" | "cancelled")
        {
            return Err(HospitalError::Invalid {
                field: "status",
                reason: format!("{status:?} is not issued, balanced or cancelled"),
            });
        }
        self.patient(patient_id).await?;
        type Row = (i64, i64, String, i64, i64, i64, Option<String>, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, appointment_id, status, total_fen, fund_fen, self_pay_fen, cancelled_reason, created_at
             FROM invoice WHERE patient_id = $1 AND ($2 = '' OR status = $2) ORDER BY id DESC LIMIT 500",
        )
        .bind(patient_id)
        .bind(status.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| InvoiceSummary {
                id: r.0,
                appointment_id: r.1,
                status: r.2,
                total_fen: r.3,
                fund_fen: r.4,
                self_pay_fen: r.5,
                cancelled_reason: r.6,
                created_at: r.7,
            })
            .collect())
    }

    /// Corrects a patient's details: the corrected record is checked whole (an ID number must
    /// still match the birth date, and belong to no other patient), the previous values are kept
    /// as a revision, and the audit names the fields changed and why (not their values). Read,
    /// checked and written after locking the patient, so two corrections at once apply one
    /// after the other, each over the other's result.
    pub async fn correct_patient(
        &self,
        actor: &str,
        id: i64,
        c: &PatientCorrection,
    ) -> Result<PatientDetail, HospitalError> {
        if c.reason.trim().is_empty() || c.reason.chars().count() > 200 {
            return Err(HospitalError::Invalid {
                field: "reason",
                reason: "must be 1 to 200 characters".into(),
            });
        }
        let (actor, c, today) = (actor.to_owned(), c.clone(), self.business_date());
        self.write(move |tx| {
            if tx.execute("UPDATE patient SET id = id WHERE id = $1", args![id])? == 0 {
                return Err(HospitalError::NotFound { what: "patient", id });
            }
            type Row = (String, String, String, String, String, String, Option<String>);
            let r: Row = tx.one(
                "SELECT name, gender, birth_date, id_number, phone, insurance_category, insurance_number FROM patient WHERE id = $1",
                args![id],
            )?;
            let category = |text: &str| match text {
                "employee" => InsuranceCategory::Employee,
                "resident" => InsuranceCategory::Resident,
                _ => InsuranceCategory::None,
            };
            let before = NewPatient {
                name: r.0,
                gender: r.1,
                birth_date: r.2,
                id_number: r.3,
                phone: r.4,
                insurance_category: category(&r.5),
                insurance_number: r.6,
            };
            let after = NewPatient {
                name: c.name.clone().unwrap_or_else(|| before.name.clone()),
                gender: c.gender.clone().unwrap_or_else(|| before.gender.clone()),
                birth_date: c.birth_date.clone().unwrap_or_else(|| before.birth_date.clone()),
                id_number: c
                    .id_number
                    .clone()
                    .map_or_else(|| before.id_number.clone(), |n| n.to_ascii_uppercase()),
                phone: c.phone.clone().unwrap_or_else(|| before.phone.clone()),
                insurance_category: c.insurance_category.unwrap_or(before.insurance_category),
                insurance_number: c
                    .insurance_number
                    .clone()
                    .unwrap_or_else(|| before.insurance_number.clone()),
            };
            check_patient(&after, today)?;
            let changed: Vec<&str> = [
                ("name", before.name != after.name),
                ("gender", before.gender != after.gender),
                ("birth_date", before.birth_date != after.birth_date),
                ("id_number", before.id_number != after.id_number),
                ("phone", before.phone != after.phone),
                ("insurance_category", before.insurance_category != after.insurance_category),
                ("insurance_number", before.insurance_number != after.insurance_number),
            ]
            .into_iter()
            .filter_map(|(field, changed)| changed.then_some(field))
            .collect();
            if changed.is_empty() {
                return Err(HospitalError::Invalid {
                    field: "patient",
                    reason: "the correction changes nothing".into(),
                });
            }
            refuse_duplicate(tx, &after.id_number, Some(id))?;
            tx.execute(
                "UPDATE patient SET name = $1, gender = $2, birth_date = $3, id_number = $4, phone = $5,
                     insurance_category = $6, insurance_number = $7 WHERE id = $8",
                args![
                    &after.name,
                    &after.gender,
                    &after.birth_date,
                    &after.id_number,
                    &after.phone,
                    after.insurance_category.as_str(),
                    after.insurance_number.clone(),
                    id,
                ],
            )?;
            let previous = serde_json::to_string(&before).unwrap_or_default();
            let revision: i64 = tx.one(
                "INSERT INTO patient_revision (patient_id, at, actor, previous, reason) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                args![id, now_ms(), &actor, &previous, c.reason.trim()],
            )?;
            let detail = format!(
                "corrected {} (revision {revision}): {}",
                changed.join(", "),
                c.reason.trim()
            );
            crate::audit(tx, &actor, "patient", id, "correct", &detail)
        })
        .await?;
        self.patient(id).await
    }

    /// A patient's earlier details, newest first: each correction's previous values, who made
    /// it, when and why. The ID number is masked.
    pub async fn patient_revisions(&self, id: i64) -> Result<Vec<Revision>, HospitalError> {
        self.patient(id).await?;
        let rows: Vec<(i64, i64, String, String, String)> = sqlx::query_as(
            "SELECT id, at, actor, previous, reason FROM patient_revision WHERE patient_id = $1 ORDER BY id DESC",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut previous: serde_json::Value =
                    serde_json::from_str(&r.3).unwrap_or_default();
                if let Some(n) = previous
                    .get("id_number")
                    .and_then(|n| n.as_str())
                    .map(mask_id_number)
                {
                    previous["id_number"] = n.into();
                }
                Revision {
                    id: r.0,
                    at: r.1,
                    actor: r.2,
                    previous,
                    reason: r.4,
                }
            })
            .collect())
    }
}

/// How patients are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientSearch {
    /// Every patient, newest first.
    All,
    /// Names that begin with this (Chinese characters, or letters).
    NamePrefix(String),
    /// This phone number exactly.
    Phone(String),
    /// This full ID number.
    IdNumber(String),
}

impl PatientSearch {
    /// What a desk's one search box means: a full ID number, a phone number (digits), or the
    /// beginning of a name.
    pub fn guess(text: &str) -> Result<PatientSearch, HospitalError> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > 64 {
            return Err(HospitalError::Invalid {
                field: "q",
                reason: "must be 1 to 64 characters".into(),
            });
        }
        let chars: Vec<char> = text.chars().collect();
        Ok(
            if chars.len() == 18 && chars[..17].iter().all(char::is_ascii_digit) {
                PatientSearch::IdNumber(text.to_ascii_uppercase())
            } else if chars
                .iter()
                .all(|c| c.is_ascii_digit() || *c == '+' || *c == '-')
            {
                PatientSearch::Phone(text.to_owned())
            } else {
                PatientSearch::NamePrefix(text.to_owned())
            },
        )
    }
}

/// A phone number as lists show it: first three and last four digits.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() < 8 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 7))
}

/// A patient's details, as the desks see them: the ID number masked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PatientDetail {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Gender.
    pub gender: String,
    /// Birth date.
    pub birth_date: String,
    /// Masked ID number.
    pub id_number: String,
    /// Phone.
    pub phone: String,
    /// Insurance category.
    pub insurance_category: String,
    /// Insurance card number.
    pub insurance_number: Option<String>,
    /// When registered (Unix ms).
    pub created_at: i64,
}

/// A correction of a patient's details: the fields given change, and why.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientCorrection {
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Gender.
    #[serde(default)]
    pub gender: Option<String>,
    /// Birth date (must match the ID number).
    #[serde(default)]
    pub birth_date: Option<String>,
    /// Full ID number.
    #[serde(default)]
    pub id_number: Option<String>,
    /// Phone.
    #[serde(default)]
    pub phone: Option<String>,
    /// Insurance category.
    #[serde(default)]
    pub insurance_category: Option<InsuranceCategory>,
    /// Insurance card number; `null` removes it.
    #[serde(default, deserialize_with = "crate::present")]
    pub insurance_number: Option<Option<String>>,
    /// Why (kept with the revision and the audit).
    pub reason: String,
}

/// A patient's details before a correction.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Revision {
    /// Id.
    pub id: i64,
    /// When corrected (Unix ms).
    pub at: i64,
    /// Who corrected.
    pub actor: String,
    /// The details before, ID number masked.
    pub previous: serde_json::Value,
    /// Why.
    pub reason: String,
}

/// One registration of a patient, as their history shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Visit {
    /// The registration.
    pub appointment_id: i64,
    /// The clinic session.
    pub schedule_id: i64,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Period.
    pub period: String,
    /// Department name.
    pub department: String,
    /// Doctor's name.
    pub practitioner: String,
    /// FHIR Appointment status.
    pub status: String,
    /// Fee, fen.
    pub fee_fen: i64,
    /// Its invoice.
    pub invoice_id: i64,
    /// The invoice's status.
    pub invoice_status: String,
    /// When registered (Unix ms).
    pub created_at: i64,
}

/// An invoice in a patient's list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InvoiceSummary {
    /// Id.
    pub id: i64,
    /// The registration it charges.
    pub appointment_id: i64,
    /// `issued` (unpaid), `balanced` (paid) or `cancelled`.
    pub status: String,
    /// Total, fen.
    pub total_fen: i64,
    /// The fund's part, once paid.
    pub fund_fen: i64,
    /// The patient's part, once paid.
    pub self_pay_fen: i64,
    /// Why cancelled.
    pub cancelled_reason: Option<String>,
    /// When issued (Unix ms).
    pub created_at: i64,
}
