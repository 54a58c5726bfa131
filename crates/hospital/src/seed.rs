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
