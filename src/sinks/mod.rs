//! Where outcomes go. The log sink prints every persona and every brief in full.

pub mod log;
