//! The root of trust's rules, from a holder's side.

mod fuzz;
mod roots;
