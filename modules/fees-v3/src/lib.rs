//! Registration fees, version 3: version 2's rules, with the registration level's percentage read
//! from a table, and the emergency surcharge raised from 5 to 10 yuan.
//!
//! It carries a real bug, kept on purpose for `nonstop demo`: the table has a row for levels 1
//! to 3 only, so a level-4 session (a community clinic) indexes past its end and the module
//! traps. Its test vectors cover levels 1 to 3, and a hospital whose traffic is level 3 shows
//! nothing in shadow traffic either: only production traffic at level 4, after it went live,
//! reveals it, and the watch window rolls it back.

wit_bindgen::generate!({ path: "../../wit", world: "fees-rules" });

use exports::nonstop::his_rules::fees::{ClinicType, DoctorTitle, FeeLine, FeeQuote, FeeRequest, Guest};

struct Fees;

fn line(code: &str, description: &str, amount_fen: i64) -> FeeLine {
    FeeLine { code: code.into(), description: description.into(), amount_fen }
}

impl Guest for Fees {
    fn quote(r: FeeRequest) -> Result<FeeQuote, String> {
        let title_fee: i64 = match r.doctor_title {
            DoctorTitle::Chief => 5000,
            DoctorTitle::AssociateChief => 3000,
            DoctorTitle::Attending => 2000,
            DoctorTitle::Resident => 1000,
        };
        if !(1..=4).contains(&r.registration_level) {
            return Err(format!("registration level {} is not 1 to 4", r.registration_level));
        }
        // Levels 1, 2, 3 (level 4's row is missing: the bug this module exists to show).
        const LEVEL_PERCENT: [i64; 3] = [120, 110, 100];
        let level_percent = LEVEL_PERCENT[usize::from(r.registration_level) - 1];
        let mut base = title_fee * level_percent / 100;
        let mut base_text = "registration (医事服务费)";
        if r.patient_age_years >= 60 {
            base /= 2;
            base_text = "registration, 60 and over at half price";
        }
        let mut lines = vec![line("REG-BASE", base_text, base)];
        match r.clinic_type {
            ClinicType::General => {}
            ClinicType::Specialist => lines.push(line("REG-SPEC", "specialist clinic", 1000)),
            ClinicType::Emergency => lines.push(line("REG-EMER", "emergency", 1000)),
            ClinicType::Night => lines.push(line("REG-NIGHT", "night clinic", 800)),
            ClinicType::Holiday => lines.push(line("REG-HOLI", "holiday clinic", 500)),
        }
        if r.first_visit {
            lines.push(line("REG-BOOK", "medical record booklet", 100));
        }
        let total_fen = lines.iter().map(|l| l.amount_fen).sum();
        Ok(FeeQuote { total_fen, lines })
    }
}

export!(Fees);
