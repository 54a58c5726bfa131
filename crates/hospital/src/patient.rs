//! Patients (FHIR Patient): registration of a patient with a validated resident ID number.

use serde::{Deserialize, Serialize};
use time::Date;

use crate::write::is_unique_violation;
use crate::{Hospital, HospitalError, args, now_ms};

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
    /// Registers a patient after validating every field; returns the new patient's id.
    pub async fn add_patient(&self, actor: &str, p: &NewPatient) -> Result<i64, HospitalError> {
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
        if birth > self.business_date() {
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
        let (p, actor) = (p.clone(), actor.to_owned());
        self.write(move |tx| {
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
        let rows = sqlx::query(
            "SELECT id, name, gender, birth_date, id_number, insurance_category FROM patient ORDER BY id DESC LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM patient")
            .fetch_one(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            use sqlx::Row;
            out.push(PatientSummary {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                gender: r.try_get(2)?,
                birth_date: r.try_get(3)?,
                id_number: mask_id_number(&r.try_get::<String, _>(4)?),
                insurance_category: r.try_get(5)?,
            });
        }
        Ok((out, total))
    }
}
