//! What faces people and Lambda: the handler for every trigger and the tables people read.
//! Thin: they parse, build the ports once, call the application and render the result.

pub mod cli;
pub mod config;
pub mod lambda;
pub mod render;
