//! Integration tests of bundle creation and verification: one test binary for the crate.

mod fuzz;
mod open;
