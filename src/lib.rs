//! vnet: many isolated TCP/IP stacks in one process.
//!
//! The crate follows FreeBSD's VIMAGE: every piece of network state lives in
//! a *vnet*, and code reaches it through the current vnet. The layers, from
//! the bottom:
//!
//! - [`vnet`]: vnets, the registry, the current-vnet scope, and how each
//!   subsystem declares its per-vnet state and is built and torn down.
//! - [`ifnet`]: interfaces (loopback, epair ends), the wires between them,
//!   and stages on wires (impairment; later filters and capture).
//! - [`stack`]: one TCP/IP stack per vnet on smoltcp, with our own routing,
//!   neighbor caches, forwarding, port tables, tunables and counters.
//! - [`driver`]: what runs the stacks: a deterministic simulation on a
//!   virtual clock for tests, and a real-time driver on worker threads.
//!
//! Nothing under `vnet`, `stack` or `ifnet` reads a clock or touches a file
//! descriptor; time is an argument, so the same code runs under both drivers.

#![warn(missing_docs)]

pub mod ctl;
pub mod driver;
pub mod ifnet;
pub mod sockets;
pub mod stack;
pub mod vnet;

pub use smoltcp::time::{Duration, Instant};
