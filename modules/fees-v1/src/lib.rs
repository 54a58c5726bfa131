//! Registration fees, version 1: a base fee by doctor title adjusted by registration level, a
//! clinic-type surcharge, half price for patients 65 and over, and a medical record booklet on a
//! first visit.

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
        let level_percent: i64 = match r.registration_level {
            1 => 120,
            2 => 110,
            3 => 100,
            4 => 90,
            other => return Err(format!("registration level {other} is not 1 to 4")),
        };
        let mut base = title_fee * level_percent / 100;
        let mut base_text = "registration (医事服务费)";
        if r.patient_age_years >= 65 {
            base /= 2;
            base_text = "registration, 65 and over at half price";
        }
        let mut lines = vec![line("REG-BASE", base_text, base)];
        match r.clinic_type {
            ClinicType::General => {}
            ClinicType::Specialist => lines.push(line("REG-SPEC", "specialist clinic", 1000)),
            ClinicType::Emergency => lines.push(line("REG-EMER", "emergency", 500)),
            ClinicType::Night => lines.push(line("REG-NIGHT", "night clinic", 500)),
            ClinicType::Holiday => lines.push(line("REG-HOLI", "holiday clinic", 300)),
        }
        if r.first_visit {
            lines.push(line("REG-BOOK", "medical record booklet", 100));
        }
        let total_fen = lines.iter().map(|l| l.amount_fen).sum();
        Ok(FeeQuote { total_fen, lines })
    }
}

export!(Fees);
