//! A demo hospital, so a new node shows something real at once: three departments, their doctors,
//! and a week of clinic sessions from a given day.

use time::Date;

use crate::{Hospital, HospitalError, args};

/// A doctor of the demo hospital: name and title.
type DemoDoctor = (&'static str, &'static str);

/// (department code, name, doctors).
const DEPARTMENTS: &[(&str, &str, &[DemoDoctor])] = &[
    (
        "IM",
        "内科 Internal Medicine",
        &[
            ("王建国", "chief"),
            ("李秀英", "associate-chief"),
            ("张伟", "attending"),
            ("刘洋", "resident"),
        ],
    ),
    (
        "PED",
        "儿科 Pediatrics",
        &[("陈静", "associate-chief"), ("杨帆", "attending")],
    ),
    (
        "SUR",
        "外科 Surgery",
        &[("赵强", "chief"), ("黄磊", "attending")],
    ),
];

impl Hospital {
    /// Seeds the demo hospital with sessions for 7 days from `first_day`, unless a department
    /// exists already. Returns whether it seeded.
    pub async fn seed_demo(&self, first_day: Date) -> Result<bool, HospitalError> {
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM department")
            .fetch_one(&self.pool)
            .await?;
        if existing > 0 {
            return Ok(false);
        }
        self.write(move |tx| {
            for (code, name, doctors) in DEPARTMENTS {
                let department: i64 = tx.one(
                    "INSERT INTO department (code, name) VALUES ($1, $2) RETURNING id",
                    args![*code, *name],
                )?;
                for (i, (doctor, title)) in doctors.iter().enumerate() {
                    let practitioner: i64 = tx.one(
                        "INSERT INTO practitioner (name, title, department_id) VALUES ($1, $2, $3) RETURNING id",
                        args![*doctor, *title, department],
                    )?;
                    let level: i64 = match *title {
                        "chief" => 1,
                        "associate-chief" => 2,
                        "attending" => 3,
                        _ => 4,
                    };
                    for day in 0..7 {
                        let date = first_day + time::Duration::days(day);
                        let weekend = matches!(
                            date.weekday(),
                            time::Weekday::Saturday | time::Weekday::Sunday
                        );
                        let mut sessions = vec![(
                            "morning",
                            if weekend {
                                "holiday"
                            } else if level <= 2 {
                                "specialist"
                            } else {
                                "general"
                            },
                        )];
                        if !weekend {
                            sessions.push(("afternoon", "general"));
                        }
                        // The most junior doctor of internal medicine runs the night clinic.
                        if *code == "IM" && i == doctors.len() - 1 {
                            sessions.push(("night", "night"));
                        }
                        for (period, clinic_type) in sessions {
                            tx.execute(
                                "INSERT INTO schedule (practitioner_id, department_id, session_date, period, clinic_type,
                                     registration_level, quota_on_site, quota_online, quota_elderly)
                                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                                args![
                                    practitioner,
                                    department,
                                    date.to_string(),
                                    period,
                                    clinic_type,
                                    level,
                                    20i64,
                                    15i64,
                                    5i64,
                                ],
                            )?;
                        }
                    }
                }
            }
            Ok(true)
        })
        .await
    }
}

/// A clinic session to add.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    /// The doctor.
    pub practitioner_id: i64,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// `morning`, `afternoon` or `night`.
    pub period: String,
    /// `general`, `specialist`, `emergency`, `night` or `holiday`.
    pub clinic_type: String,
    /// Registration level, 1 (highest) to 4.
    pub registration_level: i64,
    /// Slots for on-site, online, and elderly-reserved registration.
    pub quotas: (i64, i64, i64),
}

impl Hospital {
    /// Adds a clinic session for a doctor; returns its id.
    pub async fn add_schedule(&self, s: &NewSchedule) -> Result<i64, HospitalError> {
        crate::patient::parse_date("date", &s.date)?;
        let department: i64 =
            sqlx::query_scalar("SELECT department_id FROM practitioner WHERE id = $1")
                .bind(s.practitioner_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or(HospitalError::NotFound {
                    what: "practitioner",
                    id: s.practitioner_id,
                })?;
        let s = s.clone();
        let (practitioner, date, period) = (s.practitioner_id, s.date.clone(), s.period.clone());
        self.write(move |tx| {
            tx.one(
                "INSERT INTO schedule (practitioner_id, department_id, session_date, period, clinic_type,
                     registration_level, quota_on_site, quota_online, quota_elderly)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                args![
                    s.practitioner_id,
                    department,
                    &s.date,
                    &s.period,
                    &s.clinic_type,
                    s.registration_level,
                    s.quotas.0,
                    s.quotas.1,
                    s.quotas.2,
                ],
            )
        })
        .await
        .map_err(|e| {
            if crate::write::is_unique_violation(&e) {
                HospitalError::Invalid {
                    field: "period",
                    reason: format!(
                        "practitioner {practitioner} already has a {period} session on {date}"
                    ),
                }
            } else {
                e
            }
        })
    }

    /// Ids of the doctors, in id order.
    pub async fn practitioners(&self) -> Result<Vec<i64>, HospitalError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM practitioner ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}

/// A clinic session as the registration desk sees it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ScheduleSummary {
    /// Id.
    pub id: i64,
    /// Department name.
    pub department: String,
    /// The doctor (FHIR Practitioner).
    pub practitioner_id: i64,
    /// Doctor's name.
    pub practitioner: String,
    /// Doctor's title.
    pub title: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// `morning`, `afternoon` or `night`.
    pub period: String,
    /// Clinic type.
    pub clinic_type: String,
    /// Slots left: on site, online, reserved for the elderly.
    pub remaining: (i64, i64, i64),
}

impl Hospital {
    /// The clinic sessions of a day.
    pub async fn schedule_list(&self, date: &str) -> Result<Vec<ScheduleSummary>, HospitalError> {
        use sqlx::Row;
        crate::patient::parse_date("date", date)?;
        let rows = sqlx::query(
            "SELECT s.id, d.name, p.name, p.title, s.session_date, s.period, s.clinic_type,
                    s.quota_on_site - s.taken_on_site, s.quota_online - s.taken_online, s.quota_elderly - s.taken_elderly,
                    s.practitioner_id
             FROM schedule s JOIN practitioner p ON p.id = s.practitioner_id JOIN department d ON d.id = s.department_id
             WHERE s.session_date = $1 ORDER BY s.id",
        )
        .bind(date)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            out.push(ScheduleSummary {
                id: r.try_get(0)?,
                department: r.try_get(1)?,
                practitioner_id: r.try_get(10)?,
                practitioner: r.try_get(2)?,
                title: r.try_get(3)?,
                date: r.try_get(4)?,
                period: r.try_get(5)?,
                clinic_type: r.try_get(6)?,
                remaining: (r.try_get(7)?, r.try_get(8)?, r.try_get(9)?),
            });
        }
        Ok(out)
    }
}
