//! The Veil node agent.

pub mod capabilities;
pub mod client;
pub mod data_dir;
pub mod desync_command;
pub mod drivers;
pub mod join;
pub mod journal;
pub mod runtime;
pub mod strategy;
pub mod supervisor;
pub mod task_user;
pub mod throttle;
pub mod token_file;
pub mod trust;
