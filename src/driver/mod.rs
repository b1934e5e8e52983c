//! Drivers: what runs the vnets' stacks.
//!
//! The stacks are sans-IO; a driver owns time. [`sim::Sim`] steps any number
//! of vnets on one virtual clock, deterministically (tests). [`realtime`]
//! runs them on worker threads against the wall clock (benchmarks, and the
//! server).

pub mod realtime;
pub mod sim;
