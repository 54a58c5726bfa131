//! The hospital's own organisation, kept by its administrator: departments (FHIR Organization),
//! doctors (FHIR Practitioner, with the title the fees rule prices) and their clinic sessions
//! (排班, FHIR Schedule with its slots counted per pool). A session is created for a date and
//! period, singly or a week at a time from a template; its quota can be changed but never below
//! what is taken; it can be cancelled, or stopped mid-session (停诊), which releases and refunds
//! the registrations not yet seen and returns whom to tell.
//!
//! Every change is one write transaction with its audit event.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use time::Date;

use crate::billing::{Refunded, refund_paid, void_unpaid};
use crate::patient::parse_date;
use crate::write::{Tx, is_unique_violation};
use crate::{Hospital, HospitalError, args};

/// The titles the fees rule prices.
const TITLES: [&str; 4] = ["chief", "associate-chief", "attending", "resident"];
const PERIODS: [&str; 3] = ["morning", "afternoon", "night"];
const CLINIC_TYPES: [&str; 5] = ["general", "specialist", "emergency", "night", "holiday"];
/// The most slots one pool of one session may have.
const MAX_QUOTA: i64 = 1_000_000;

/// A department (科室, FHIR Organization).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Department {
    /// Id.
    pub id: i64,
    /// The hospital's short code, unique (`IM`).
    pub code: String,
    /// Its name (`内科`).
    pub name: String,
    /// A deactivated department takes no new doctors or sessions; its history stays.
    pub active: bool,
}

/// A department to create.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDepartment {
    /// Short code, 1 to 16 of A-Z, 0-9, `-`.
    pub code: String,
    /// Name.
    pub name: String,
}

/// A change to a department: rename, deactivate or reactivate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentChange {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// Active or not.
    #[serde(default)]
    pub active: Option<bool>,
}

/// A doctor (FHIR Practitioner with its PractitionerRole in a department).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Practitioner {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// `chief`, `associate-chief`, `attending` or `resident`: the fees rule prices it.
    pub title: String,
    /// Department.
    pub department_id: i64,
    /// Department name.
    pub department: String,
    /// A deactivated doctor takes no new sessions; their history stays.
    pub active: bool,
}

/// A doctor to create.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPractitioner {
    /// Name.
    pub name: String,
    /// `chief`, `associate-chief`, `attending` or `resident`.
    pub title: String,
    /// Department.
    pub department_id: i64,
}

/// A change to a doctor.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PractitionerChange {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New title (sessions registered from then on are priced with it).
    #[serde(default)]
    pub title: Option<String>,
    /// Active or not.
    #[serde(default)]
    pub active: Option<bool>,
}

/// Slots per pool: on site, online, and reserved for the elderly.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Quotas {
    /// On-site registration (现场).
    pub on_site: i64,
    /// Online registration (网上预约).
    pub online: i64,
    /// Reserved for patients of 60 and over.
    pub elderly: i64,
}

impl From<(i64, i64, i64)> for Quotas {
    fn from((on_site, online, elderly): (i64, i64, i64)) -> Quotas {
        Quotas {
            on_site,
            online,
            elderly,
        }
    }
}

/// Quotas as a request gives them: `{"on_site", "online", "elderly"}`, or `[on_site, online,
/// elderly]` as the first version of the API took them. By hand rather than an untagged enum,
/// whose error ("did not match any variant") would not name the field at fault.
impl<'de> Deserialize<'de> for Quotas {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Quotas, D::Error> {
        use serde::de::{self, MapAccess, SeqAccess, Visitor};
        const FIELDS: &[&str] = &["on_site", "online", "elderly"];
        struct Form;
        impl<'de> Visitor<'de> for Form {
            type Value = Quotas;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("{\"on_site\", \"online\", \"elderly\"} or [on_site, online, elderly]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Quotas, A::Error> {
                let mut next = |i| {
                    seq.next_element::<i64>()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))
                };
                let q = (next(0)?, next(1)?, next(2)?).into();
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(4, &self));
                }
                Ok(q)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Quotas, A::Error> {
                let mut q: [Option<i64>; 3] = [None; 3];
                while let Some(key) = map.next_key::<String>()? {
                    let i = FIELDS
                        .iter()
                        .position(|f| *f == key)
                        .ok_or_else(|| de::Error::unknown_field(&key, FIELDS))?;
                    q[i] = Some(map.next_value()?);
                }
                let get = |i: usize| q[i].ok_or_else(|| de::Error::missing_field(FIELDS[i]));
                Ok((get(0)?, get(1)?, get(2)?).into())
            }
        }
        d.deserialize_any(Form)
    }
}

impl Quotas {
    fn check(&self) -> Result<(), HospitalError> {
        for (field, n) in [
            ("quotas.on_site", self.on_site),
            ("quotas.online", self.online),
            ("quotas.elderly", self.elderly),
        ] {
            if !(0..=MAX_QUOTA).contains(&n) {
                return Err(HospitalError::Invalid {
                    field,
                    reason: format!("{n} is not 0 to {MAX_QUOTA}"),
                });
            }
        }
        if self.on_site + self.online + self.elderly == 0 {
            return Err(HospitalError::Invalid {
                field: "quotas",
                reason: "a session needs at least one slot".into(),
            });
        }
        Ok(())
    }
}

/// A clinic session to add.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    /// The doctor.
    pub practitioner_id: i64,
    /// `YYYY-MM-DD`, today or later.
    pub date: String,
    /// `morning`, `afternoon` or `night`.
    pub period: String,
    /// `general`, `specialist`, `emergency`, `night` or `holiday`.
    pub clinic_type: String,
    /// Registration level, 1 (highest) to 4.
    pub registration_level: i64,
    /// The consulting room, if known.
    #[serde(default)]
    pub room: Option<String>,
    /// Slots per pool.
    pub quotas: Quotas,
}

/// One line of a week's template: a doctor's session on the given weekdays.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionTemplate {
    /// The doctor.
    pub practitioner_id: i64,
    /// `mon` ... `sun`.
    pub weekdays: Vec<String>,
    /// `morning`, `afternoon` or `night`.
    pub period: String,
    /// Clinic type.
    pub clinic_type: String,
    /// Registration level, 1 to 4.
    pub registration_level: i64,
    /// The consulting room.
    #[serde(default)]
    pub room: Option<String>,
    /// Slots per pool.
    pub quotas: Quotas,
}

/// A week (or up to two) of sessions made from a template, in one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeekPlan {
    /// The first day, `YYYY-MM-DD`, today or later.
    pub from: String,
    /// How many days from `from`: 1 to 14, 7 by default.
    #[serde(default = "seven")]
    pub days: i64,
    /// The template.
    pub sessions: Vec<SessionTemplate>,
}

fn seven() -> i64 {
    7
}

/// A clinic session as the administrator and the desks see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    /// Id.
    pub id: i64,
    /// The doctor.
    pub practitioner_id: i64,
    /// Their name.
    pub practitioner: String,
    /// Their title.
    pub title: String,
    /// Department.
    pub department_id: i64,
    /// Department name.
    pub department: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// `morning`, `afternoon` or `night`.
    pub period: String,
    /// Clinic type.
    pub clinic_type: String,
    /// Registration level.
    pub registration_level: i64,
    /// Consulting room.
    pub room: Option<String>,
    /// `active`, `cancelled` or `stopped` (停诊).
    pub status: String,
    /// Why it was cancelled or stopped.
    pub status_reason: Option<String>,
    /// Slots per pool.
    pub quota: Quotas,
    /// Slots taken per pool.
    pub taken: Quotas,
    /// Slots left: on site, online, reserved for the elderly.
    pub remaining: (i64, i64, i64),
}

/// A patient to tell that their registration was released or refunded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Notice {
    /// The registration.
    pub appointment_id: i64,
    /// Its invoice.
    pub invoice_id: i64,
    /// The patient.
    pub patient_id: i64,
    /// Their name.
    pub patient_name: String,
    /// Their phone, to call or message.
    pub phone: String,
    /// `held` (unpaid, released) or `paid` (refunded).
    pub was: String,
    /// Self-pay money given back, in fen.
    pub refunded_self_pay_fen: i64,
    /// Insurance fund money given back, in fen.
    pub refunded_fund_fen: i64,
}

/// What cancelling or stopping a session did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cancellation {
    /// The session, as it is now.
    pub session: Session,
    /// Whom to tell, one per released or refunded registration.
    pub notices: Vec<Notice>,
}

fn one_of(field: &'static str, value: &str, allowed: &[&str]) -> Result<(), HospitalError> {
    if allowed.contains(&value) {
        return Ok(());
    }
    Err(HospitalError::Invalid {
        field,
        reason: format!("{value:?} is not one of {}", allowed.join(", ")),
    })
}

fn check_name(field: &'static str, name: &str) -> Result<(), HospitalError> {
    if name.trim().is_empty() || name.chars().count() > 64 {
        return Err(HospitalError::Invalid {
            field,
            reason: "must be 1 to 64 characters".into(),
        });
    }
    Ok(())
}

fn check_room(room: &Option<String>) -> Result<(), HospitalError> {
    if let Some(room) = room
        && (room.trim().is_empty() || room.chars().count() > 32)
    {
        return Err(HospitalError::Invalid {
            field: "room",
            reason: "must be 1 to 32 characters".into(),
        });
    }
    Ok(())
}

/// Checks a session's fields, and that its date has not passed.
fn check_session(s: &NewSchedule, today: Date) -> Result<Date, HospitalError> {
    let date = parse_date("date", &s.date)?;
    if date < today {
        return Err(HospitalError::Invalid {
            field: "date",
            reason: format!("{} has passed (today is {today})", s.date),
        });
    }
    one_of("period", &s.period, &PERIODS)?;
    one_of("clinic_type", &s.clinic_type, &CLINIC_TYPES)?;
    if !(1..=4).contains(&s.registration_level) {
        return Err(HospitalError::Invalid {
            field: "registration_level",
            reason: format!("{} is not 1 to 4", s.registration_level),
        });
    }
    check_room(&s.room)?;
    s.quotas.check()?;
    Ok(date)
}

/// Inserts a checked session in `tx`, refusing an inactive doctor or department and a second
/// session of one doctor in one period.
fn insert_session(tx: &mut Tx<'_>, s: &NewSchedule) -> Result<i64, HospitalError> {
    let (department, doctor_active, department_active, name): (i64, i64, i64, String) = tx
        .row(
            "SELECT p.department_id, p.active, d.active, p.name FROM practitioner p
             JOIN department d ON d.id = p.department_id WHERE p.id = $1",
            args![s.practitioner_id],
        )?
        .ok_or(HospitalError::NotFound {
            what: "practitioner",
            id: s.practitioner_id,
        })?;
    if doctor_active == 0 || department_active == 0 {
        let what = if doctor_active == 0 {
            format!("{name} (practitioner {}) is deactivated", s.practitioner_id)
        } else {
            format!("the department of {name} is deactivated")
        };
        return Err(HospitalError::Refused {
            rule: "schedule",
            reason: format!("{what}: no new sessions"),
        });
    }
    tx.one(
        "INSERT INTO schedule (practitioner_id, department_id, session_date, period, clinic_type,
             registration_level, room, quota_on_site, quota_online, quota_elderly)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        args![
            s.practitioner_id,
            department,
            &s.date,
            &s.period,
            &s.clinic_type,
            s.registration_level,
            s.room.clone(),
            s.quotas.on_site,
            s.quotas.online,
            s.quotas.elderly,
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            HospitalError::Invalid {
                field: "period",
                reason: format!(
                    "practitioner {} already has a {} session on {}",
                    s.practitioner_id, s.period, s.date
                ),
            }
        } else {
            e
        }
    })
}

fn weekday(field: &'static str, text: &str) -> Result<time::Weekday, HospitalError> {
    use time::Weekday::*;
    Ok(match text {
        "mon" => Monday,
        "tue" => Tuesday,
        "wed" => Wednesday,
        "thu" => Thursday,
        "fri" => Friday,
        "sat" => Saturday,
        "sun" => Sunday,
        other => {
            return Err(HospitalError::Invalid {
                field,
                reason: format!("{other:?} is not mon, tue, wed, thu, fri, sat or sun"),
            });
        }
    })
}

const SESSION_SELECT: &str = "SELECT s.id, s.practitioner_id, p.name, p.title, s.department_id, d.name, s.session_date,
        s.period, s.clinic_type, s.registration_level, s.room, s.status, s.status_reason,
        s.quota_on_site, s.quota_online, s.quota_elderly, s.taken_on_site, s.taken_online, s.taken_elderly
     FROM schedule s JOIN practitioner p ON p.id = s.practitioner_id JOIN department d ON d.id = s.department_id";

fn session_of(r: &sqlx::any::AnyRow) -> Result<Session, HospitalError> {
    let quota: Quotas = (r.try_get(13)?, r.try_get(14)?, r.try_get(15)?).into();
    let taken: Quotas = (r.try_get(16)?, r.try_get(17)?, r.try_get(18)?).into();
    Ok(Session {
        id: r.try_get(0)?,
        practitioner_id: r.try_get(1)?,
        practitioner: r.try_get(2)?,
        title: r.try_get(3)?,
        department_id: r.try_get(4)?,
        department: r.try_get(5)?,
        date: r.try_get(6)?,
        period: r.try_get(7)?,
        clinic_type: r.try_get(8)?,
        registration_level: r.try_get(9)?,
        room: r.try_get(10)?,
        status: r.try_get(11)?,
        status_reason: r.try_get(12)?,
        remaining: (
            quota.on_site - taken.on_site,
            quota.online - taken.online,
            quota.elderly - taken.elderly,
        ),
        quota,
        taken,
    })
}

impl Hospital {
    /// Creates a department; returns it.
    pub async fn add_department(
        &self,
        actor: &str,
        d: &NewDepartment,
    ) -> Result<Department, HospitalError> {
        if d.code.is_empty()
            || d.code.len() > 16
            || !d
                .code
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(HospitalError::Invalid {
                field: "code",
                reason: "must be 1 to 16 of A-Z, 0-9 and '-'".into(),
            });
        }
        check_name("name", &d.name)?;
        let (d, actor) = (d.clone(), actor.to_owned());
        self.write(move |tx| {
            let id: i64 = tx
                .one(
                    "INSERT INTO department (code, name) VALUES ($1, $2) RETURNING id",
                    args![&d.code, d.name.trim()],
                )
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        HospitalError::Invalid {
                            field: "code",
                            reason: format!("department {} exists already", d.code),
                        }
                    } else {
                        e
                    }
                })?;
            crate::audit(
                tx,
                &actor,
                "department",
                id,
                "create",
                &format!("{} {}", d.code, d.name.trim()),
            )?;
            Ok(Department {
                id,
                code: d.code,
                name: d.name.trim().to_owned(),
                active: true,
            })
        })
        .await
    }

    /// Renames, deactivates or reactivates a department; returns it as it is now.
    pub async fn change_department(
        &self,
        actor: &str,
        id: i64,
        c: &DepartmentChange,
    ) -> Result<Department, HospitalError> {
        if let Some(name) = &c.name {
            check_name("name", name)?;
        }
        let (c, actor) = (c.clone(), actor.to_owned());
        self.write(move |tx| {
            let (code, name, active): (String, String, i64) = tx
                .row(
                    "SELECT code, name, active FROM department WHERE id = $1",
                    args![id],
                )?
                .ok_or(HospitalError::NotFound {
                    what: "department",
                    id,
                })?;
            let new_name = c.name.as_deref().map(str::trim).unwrap_or(&name).to_owned();
            let new_active = c.active.map_or(active, i64::from);
            tx.execute(
                "UPDATE department SET name = $1, active = $2 WHERE id = $3",
                args![&new_name, new_active, id],
            )?;
            let detail = format!(
                "name {name:?} -> {new_name:?}, active {} -> {}",
                active != 0,
                new_active != 0
            );
            crate::audit(tx, &actor, "department", id, "change", &detail)?;
            Ok(Department {
                id,
                code,
                name: new_name,
                active: new_active != 0,
            })
        })
        .await
    }

    /// Every department, in code order.
    pub async fn departments(&self) -> Result<Vec<Department>, HospitalError> {
        let rows = sqlx::query("SELECT id, code, name, active FROM department ORDER BY code")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Department {
                    id: r.try_get(0)?,
                    code: r.try_get(1)?,
                    name: r.try_get(2)?,
                    active: r.try_get::<i64, _>(3)? != 0,
                })
            })
            .collect()
    }

    /// Creates a doctor in an active department; returns them.
    pub async fn add_practitioner(
        &self,
        actor: &str,
        p: &NewPractitioner,
    ) -> Result<Practitioner, HospitalError> {
        check_name("name", &p.name)?;
        one_of("title", &p.title, &TITLES)?;
        let (p, actor) = (p.clone(), actor.to_owned());
        self.write(move |tx| {
            let (department, active): (String, i64) = tx
                .row(
                    "SELECT name, active FROM department WHERE id = $1",
                    args![p.department_id],
                )?
                .ok_or(HospitalError::NotFound {
                    what: "department",
                    id: p.department_id,
                })?;
            if active == 0 {
                return Err(HospitalError::Refused {
                    rule: "schedule",
                    reason: format!("department {department} is deactivated: no new doctors"),
                });
            }
            let id: i64 = tx.one(
                "INSERT INTO practitioner (name, title, department_id) VALUES ($1, $2, $3) RETURNING id",
                args![p.name.trim(), &p.title, p.department_id],
            )?;
            let detail = format!("{} ({}) in {department}", p.name.trim(), p.title);
            crate::audit(tx, &actor, "practitioner", id, "create", &detail)?;
            Ok(Practitioner {
                id,
                name: p.name.trim().to_owned(),
                title: p.title,
                department_id: p.department_id,
                department,
                active: true,
            })
        })
        .await
    }

    /// Renames a doctor, changes their title, deactivates or reactivates them.
    pub async fn change_practitioner(
        &self,
        actor: &str,
        id: i64,
        c: &PractitionerChange,
    ) -> Result<Practitioner, HospitalError> {
        if let Some(name) = &c.name {
            check_name("name", name)?;
        }
        if let Some(title) = &c.title {
            one_of("title", title, &TITLES)?;
        }
        let (c, actor) = (c.clone(), actor.to_owned());
        self.write(move |tx| {
            let (name, title, active, department_id, department): (
                String,
                String,
                i64,
                i64,
                String,
            ) = tx
                .row(
                    "SELECT p.name, p.title, p.active, p.department_id, d.name FROM practitioner p
                     JOIN department d ON d.id = p.department_id WHERE p.id = $1",
                    args![id],
                )?
                .ok_or(HospitalError::NotFound {
                    what: "practitioner",
                    id,
                })?;
            let new_name = c.name.as_deref().map(str::trim).unwrap_or(&name).to_owned();
            let new_title = c.title.clone().unwrap_or_else(|| title.clone());
            let new_active = c.active.map_or(active, i64::from);
            tx.execute(
                "UPDATE practitioner SET name = $1, title = $2, active = $3 WHERE id = $4",
                args![&new_name, &new_title, new_active, id],
            )?;
            let detail = format!(
                "name {name:?} -> {new_name:?}, title {title} -> {new_title}, active {} -> {}",
                active != 0,
                new_active != 0
            );
            crate::audit(tx, &actor, "practitioner", id, "change", &detail)?;
            Ok(Practitioner {
                id,
                name: new_name,
                title: new_title,
                department_id,
                department,
                active: new_active != 0,
            })
        })
        .await
    }

    /// The doctors, by department then name; of one department if given.
    pub async fn practitioner_list(
        &self,
        department_id: Option<i64>,
    ) -> Result<Vec<Practitioner>, HospitalError> {
        let rows = sqlx::query(
            "SELECT p.id, p.name, p.title, p.department_id, d.name, p.active FROM practitioner p
             JOIN department d ON d.id = p.department_id
             WHERE $1 = 0 OR p.department_id = $1 ORDER BY d.code, p.id",
        )
        .bind(department_id.unwrap_or(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Practitioner {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    title: r.try_get(2)?,
                    department_id: r.try_get(3)?,
                    department: r.try_get(4)?,
                    active: r.try_get::<i64, _>(5)? != 0,
                })
            })
            .collect()
    }

    /// Ids of the doctors, in id order.
    pub async fn practitioners(&self) -> Result<Vec<i64>, HospitalError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM practitioner ORDER BY id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Adds a clinic session for a doctor; returns its id. Refused for a date that has passed,
    /// an inactive doctor, and a second session of one doctor in one period.
    pub async fn add_schedule(&self, s: &NewSchedule) -> Result<i64, HospitalError> {
        self.add_session("system", s).await
    }

    /// [`Hospital::add_schedule`], recorded as done by `actor`.
    pub async fn add_session(&self, actor: &str, s: &NewSchedule) -> Result<i64, HospitalError> {
        check_session(s, self.business_date())?;
        let (s, actor) = (s.clone(), actor.to_owned());
        self.write(move |tx| {
            let id = insert_session(tx, &s)?;
            let detail = format!(
                "{} {} {}, quotas {:?}",
                s.date, s.period, s.clinic_type, s.quotas
            );
            crate::audit(tx, &actor, "schedule", id, "create", &detail)?;
            Ok(id)
        })
        .await
    }

    /// Creates the sessions a template gives for each of its days, all or none: one that cannot
    /// be created refuses the whole plan, naming it. Returns the new sessions' ids.
    pub async fn plan_week(&self, actor: &str, plan: &WeekPlan) -> Result<Vec<i64>, HospitalError> {
        let from = parse_date("from", &plan.from)?;
        if !(1..=14).contains(&plan.days) {
            return Err(HospitalError::Invalid {
                field: "days",
                reason: format!("{} is not 1 to 14", plan.days),
            });
        }
        if plan.sessions.is_empty() {
            return Err(HospitalError::Invalid {
                field: "sessions",
                reason: "the template has no session".into(),
            });
        }
        let today = self.business_date();
        let mut sessions = Vec::new();
        for t in &plan.sessions {
            let days = t
                .weekdays
                .iter()
                .map(|d| weekday("weekdays", d))
                .collect::<Result<Vec<_>, _>>()?;
            for offset in 0..plan.days {
                let Some(date) = from.checked_add(time::Duration::days(offset)) else {
                    return Err(HospitalError::Invalid {
                        field: "from",
                        reason: format!(
                            "{} days from {} run past the last date there is",
                            plan.days, plan.from
                        ),
                    });
                };
                if !days.contains(&date.weekday()) {
                    continue;
                }
                let s = NewSchedule {
                    practitioner_id: t.practitioner_id,
                    date: date.to_string(),
                    period: t.period.clone(),
                    clinic_type: t.clinic_type.clone(),
                    registration_level: t.registration_level,
                    room: t.room.clone(),
                    quotas: t.quotas,
                };
                check_session(&s, today)?;
                sessions.push(s);
            }
        }
        let actor = actor.to_owned();
        self.write(move |tx| {
            let mut ids = Vec::with_capacity(sessions.len());
            for s in &sessions {
                let id = insert_session(tx, s)?;
                let detail = format!(
                    "{} {} {} from a template, quotas {:?}",
                    s.date, s.period, s.clinic_type, s.quotas
                );
                crate::audit(tx, &actor, "schedule", id, "create", &detail)?;
                ids.push(id);
            }
            Ok(ids)
        })
        .await
    }

    /// One clinic session.
    pub async fn session(&self, id: i64) -> Result<Session, HospitalError> {
        let row = sqlx::query(&format!("{SESSION_SELECT} WHERE s.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(HospitalError::NotFound {
                what: "schedule",
                id,
            })?;
        session_of(&row)
    }

    /// The clinic sessions of a day, by department, doctor and period; of one department if
    /// given.
    pub async fn sessions_on(
        &self,
        date: &str,
        department_id: Option<i64>,
    ) -> Result<Vec<Session>, HospitalError> {
        parse_date("date", date)?;
        let rows = sqlx::query(&format!(
            "{SESSION_SELECT} WHERE s.session_date = $1 AND ($2 = 0 OR s.department_id = $2)
             ORDER BY d.code, s.practitioner_id,
                 CASE s.period WHEN 'morning' THEN 0 WHEN 'afternoon' THEN 1 ELSE 2 END"
        ))
        .bind(date)
        .bind(department_id.unwrap_or(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_of).collect()
    }

    /// Changes the quotas of a session that has not passed; never below what each pool has
    /// taken. Decided after locking the session, so registrations racing it either took their
    /// slot before (and count) or find the new quota.
    pub async fn set_quotas(
        &self,
        actor: &str,
        id: i64,
        q: Quotas,
    ) -> Result<Session, HospitalError> {
        q.check()?;
        let (actor, today) = (actor.to_owned(), self.business_date());
        self.write(move |tx| {
            if tx.execute("UPDATE schedule SET id = id WHERE id = $1", args![id])? == 0 {
                return Err(HospitalError::NotFound { what: "schedule", id });
            }
            type Row = (String, String, i64, i64, i64, i64, i64, i64);
            let (date, status, q1, q2, q3, t1, t2, t3): Row = tx.one(
                "SELECT session_date, status, quota_on_site, quota_online, quota_elderly,
                        taken_on_site, taken_online, taken_elderly FROM schedule WHERE id = $1",
                args![id],
            )?;
            let (quota, taken) = ((q1, q2, q3), (t1, t2, t3));
            if parse_date("date", &date)? < today {
                return Err(HospitalError::Refused {
                    rule: "schedule",
                    reason: format!("schedule {id} was on {date}, which has passed"),
                });
            }
            if status != "active" {
                return Err(HospitalError::Refused {
                    rule: "schedule",
                    reason: format!("schedule {id} is {status}"),
                });
            }
            for (field, new, taken) in [
                ("quotas.on_site", q.on_site, taken.0),
                ("quotas.online", q.online, taken.1),
                ("quotas.elderly", q.elderly, taken.2),
            ] {
                if new < taken {
                    return Err(HospitalError::Invalid {
                        field,
                        reason: format!("{taken} slots are taken already: the quota cannot go below that, not to {new}"),
                    });
                }
            }
            tx.execute(
                "UPDATE schedule SET quota_on_site = $1, quota_online = $2, quota_elderly = $3 WHERE id = $4",
                args![q.on_site, q.online, q.elderly, id],
            )?;
            let detail = format!("quotas {quota:?} -> ({}, {}, {})", q.on_site, q.online, q.elderly);
            crate::audit(tx, &actor, "schedule", id, "quota", &detail)?;
            Ok(())
        })
        .await?;
        self.session(id).await
    }

    /// Cancels a session (`stop` false) before any patient of it is seen, or stops it mid-session
    /// (停诊, `stop` true): its held registrations are released and its paid ones refunded,
    /// each with the reason, except (when stopping) those whose consultation has begun: in
    /// service, done, out for tests or back from them. Returns the session and whom to tell.
    ///
    /// One transaction, which locks the patients first (in id order, as every registration and
    /// payment does), then the session, whose new status turns registrations away: a payment
    /// racing it either completed first (and is refunded here) or finds its registration
    /// cancelled. A patient who registered between the first read and the session's lock is
    /// not locked yet; taking their lock then would reverse the order, so the attempt is undone
    /// and made again.
    pub async fn cancel_session(
        &self,
        actor: &str,
        id: i64,
        reason: &str,
        stop: bool,
    ) -> Result<Cancellation, HospitalError> {
        if reason.trim().is_empty() || reason.chars().count() > 200 {
            return Err(HospitalError::Invalid {
                field: "reason",
                reason: "must be 1 to 200 characters".into(),
            });
        }
        for _ in 0..5 {
            let (actor, reason, today) = (
                actor.to_owned(),
                reason.trim().to_owned(),
                self.business_date(),
            );
            let attempt = self
                .write(move |tx| cancel_in(tx, &actor, id, &reason, stop, today))
                .await?;
            if let Some(notices) = attempt {
                return Ok(Cancellation {
                    session: self.session(id).await?,
                    notices,
                });
            }
        }
        Err(HospitalError::Refused {
            rule: "schedule",
            reason: format!(
                "schedule {id} kept taking registrations while it was being cancelled: try again"
            ),
        })
    }
}

/// A ticket whose consultation has begun: its registration is consumed, never refunded by a
/// session's cancellation.
const BEGUN: &str =
    "(t.status IN ('in-service', 'done', 'suspended') OR t.returned_from_tests = 1)";

/// One attempt of [`Hospital::cancel_session`]: the notices, or `None` (and nothing changed) if
/// a patient registered meanwhile and it must be made again.
fn cancel_in(
    tx: &mut Tx<'_>,
    actor: &str,
    id: i64,
    reason: &str,
    stop: bool,
    today: Date,
) -> Result<Option<Vec<Notice>>, HospitalError> {
    let (date, status): (String, String) = tx
        .row(
            "SELECT session_date, status FROM schedule WHERE id = $1",
            args![id],
        )?
        .ok_or(HospitalError::NotFound {
            what: "schedule",
            id,
        })?;
    let verb = if stop { "stopped" } else { "cancelled" };
    if parse_date("date", &date)? < today {
        return Err(HospitalError::Refused {
            rule: "schedule",
            reason: format!("schedule {id} was on {date}, which has passed"),
        });
    }
    if status != "active" {
        return Err(HospitalError::Refused {
            rule: "schedule",
            reason: format!("schedule {id} is {status} already"),
        });
    }
    let holders = "SELECT DISTINCT patient_id FROM appointment WHERE schedule_id = $1
                       AND status IN ('pending', 'booked', 'checked-in') ORDER BY patient_id";
    let patients: Vec<i64> = tx.rows(holders, args![id])?;
    for p in &patients {
        tx.execute("UPDATE patient SET id = id WHERE id = $1", args![*p])?;
    }
    let status = if stop { "stopped" } else { "cancelled" };
    if tx.execute(
        "UPDATE schedule SET status = $1, status_reason = $2 WHERE id = $3 AND status = 'active'",
        args![status, reason, id],
    )? == 0
    {
        return Err(HospitalError::Refused {
            rule: "schedule",
            reason: format!("schedule {id} is no longer active"),
        });
    }
    // From here no registration enters the session; one may have entered before the lock.
    let now_holding: Vec<i64> = tx.rows(holders, args![id])?;
    if now_holding.iter().any(|p| !patients.contains(p)) {
        tx.discard();
        return Ok(None);
    }
    let seen: i64 = tx.one(
        &format!("SELECT COUNT(*) FROM queue_ticket t WHERE t.schedule_id = $1 AND {BEGUN}"),
        args![id],
    )?;
    if seen > 0 && !stop {
        return Err(HospitalError::Refused {
            rule: "schedule",
            reason: format!(
                "{seen} patients of schedule {id} are in or past their consultation: stop the session (停诊) instead"
            ),
        });
    }
    type Affected = (i64, i64, String, i64, String, String);
    let affected: Vec<Affected> = tx.rows(
        &format!(
            "SELECT a.id, a.patient_id, a.status, i.id, pt.name, pt.phone FROM appointment a
             JOIN invoice i ON i.appointment_id = a.id JOIN patient pt ON pt.id = a.patient_id
             WHERE a.schedule_id = $1 AND a.status IN ('pending', 'booked', 'checked-in')
               AND NOT EXISTS (SELECT 1 FROM queue_ticket t WHERE t.appointment_id = a.id AND {BEGUN})
             ORDER BY a.id"
        ),
        args![id],
    )?;
    let why = format!("session {verb}: {reason}");
    let mut notices = Vec::with_capacity(affected.len());
    for (appointment_id, patient_id, status, invoice_id, name, phone) in affected {
        let (was, refunded) = if status == "pending" {
            if !void_unpaid(tx, actor, appointment_id, &why)? {
                continue;
            }
            ("held", Refunded::default())
        } else {
            let key = format!("schedule-{id}-{status}-{appointment_id}");
            match refund_paid(tx, actor, invoice_id, &key, &why, today) {
                Ok(refunded) => ("paid", refunded),
                // Its consultation began meanwhile (a stop goes on; a cancellation is refused).
                Err(HospitalError::Refused { .. }) if stop => continue,
                Err(e) => return Err(e),
            }
        };
        notices.push(Notice {
            appointment_id,
            invoice_id,
            patient_id,
            patient_name: name,
            phone,
            was: was.into(),
            refunded_self_pay_fen: refunded.self_pay_fen,
            refunded_fund_fen: refunded.fund_fen,
        });
    }
    let detail = format!(
        "{verb}: {reason}; {} registrations released or refunded",
        notices.len()
    );
    let action = if stop { "stop" } else { "cancel" };
    crate::audit(tx, actor, "schedule", id, action, &detail)?;
    Ok(Some(notices))
}

#[cfg(test)]
mod tests {
    use super::Quotas;

    #[test]
    fn quotas_are_read_named_or_listed_and_a_wrong_one_is_named() {
        let named: Quotas =
            serde_json::from_str(r#"{"on_site": 3, "online": 2, "elderly": 1}"#).unwrap();
        let listed: Quotas = serde_json::from_str("[3, 2, 1]").unwrap();
        assert_eq!(named, listed);
        assert_eq!(named, (3, 2, 1).into());
        let unknown = serde_json::from_str::<Quotas>(r#"{"on_site": 3, "onsite": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("unknown field `onsite`"), "{unknown}");
        let missing = serde_json::from_str::<Quotas>(r#"{"on_site": 3, "online": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing field `elderly`"), "{missing}");
        assert!(serde_json::from_str::<Quotas>("[3, 2]").is_err());
        assert!(serde_json::from_str::<Quotas>("[3, 2, 1, 0]").is_err());
    }
}
