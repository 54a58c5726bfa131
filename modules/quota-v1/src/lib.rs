//! Registration quota, version 1. Each channel draws on its own pool; patients 65 and over
//! registering on site may use the slots reserved for the elderly once the on-site pool is empty.
//! One registration per patient per department per day. Unpaid holds last 15 minutes online and
//! 5 minutes on site.

wit_bindgen::generate!({ path: "../../wit", world: "quota-rules" });

use exports::nonstop::his_rules::quota::{Channel, Decision, Guest, QuotaRequest};

struct Quota;

fn refuse(reason: &str) -> Decision {
    Decision { accept: false, take_from: None, hold_seconds: 0, reason: reason.into() }
}

fn accept(pool: Channel, hold_seconds: u32) -> Decision {
    Decision { accept: true, take_from: Some(pool), hold_seconds, reason: String::new() }
}

impl Guest for Quota {
    fn decide(r: QuotaRequest) -> Decision {
        if r.registrations_today_in_department >= 1 {
            return refuse("one registration per department per day");
        }
        let elderly = r.patient_age_years >= 65;
        match r.channel {
            Channel::Online if r.remaining_online > 0 => accept(Channel::Online, 900),
            Channel::Online => refuse("online quota exhausted"),
            Channel::OnSite if r.remaining_on_site > 0 => accept(Channel::OnSite, 300),
            Channel::OnSite if elderly && r.remaining_elderly > 0 => accept(Channel::ElderlyReserved, 300),
            Channel::OnSite => refuse("on-site quota exhausted"),
            Channel::ElderlyReserved if !elderly => refuse("reserved for patients 65 and over"),
            Channel::ElderlyReserved if r.remaining_elderly > 0 => accept(Channel::ElderlyReserved, 300),
            Channel::ElderlyReserved => refuse("elderly quota exhausted"),
        }
    }
}

export!(Quota);
