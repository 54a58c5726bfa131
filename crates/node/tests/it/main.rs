//! The node end to end: its API over HTTP (`api`), and its link to an update server (`link`).

mod api;
mod browser;
mod read_audit;
mod screens;
mod security;
mod setup;

/// A valid 18-character ID number for someone born on `birth` (`YYYYMMDD`), number `seq`.
pub fn id_number(birth: &str, seq: u32) -> String {
    let body = format!("110105{birth}{:03}", seq % 1000);
    let check = nonstop_hospital::patient::id_check_character(&body);
    format!("{body}{check}")
}
