//! Tests of the program crate.
