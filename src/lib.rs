//! The library behind `archestra-connect`: each module owns one concern, so that each can be
//! tested (and fuzzed) alone. `main.rs` only parses flags, runs a command and picks the exit
//! code.

pub mod approval;
pub mod claude;
pub mod claude_config;
pub mod cli;
pub mod commands;
pub mod env_block;
pub mod exit;
pub mod interrupt;
pub mod lock;
pub mod paths;
pub mod printer;
pub mod redeem;
pub mod script;
pub mod secret_store;
pub mod settings;
pub mod state;
