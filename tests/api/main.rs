//! Integration tests: the real server on 127.0.0.1:0, Mavera and Customer.io as wiremock servers.

mod access;
mod alerts;
mod bad_input;
mod cli;
mod console;
mod customerio;
mod digests;
mod durability;
mod fidelity;
mod guards;
mod helpers;
mod operations;
mod segment;
mod sinks;
mod trace;
mod upkeep;
mod write_back;
