//! Vnets: many network stacks in one process, after FreeBSD's VIMAGE.
//!
//! A *vnet* is one complete, isolated instance of everything a host's network
//! stack keeps: interfaces, addresses, routes, neighbor caches, sockets and
//! port tables, tunables and counters. Nothing network-related is global; a
//! process hosts as many vnets as memory allows, and `vnet0` (the base vnet,
//! like FreeBSD's `vnet0`) always exists. Every other vnet has a parent.
//!
//! **Per-vnet state** is declared once per subsystem by implementing
//! [`PerVnet`] (the `VNET_DEFINE` of FreeBSD). A subsystem names its
//! [`SysInitOrder`]: when a vnet is created, the subsystems are constructed in
//! that order (`VNET_SYSINIT`), and when it is destroyed they are torn down in
//! the reverse order (`VNET_SYSUNINIT`). A subsystem registered after vnets
//! exist is constructed on each of them at once.
//!
//! **The current vnet** is a thread-local stack of vnets. Code that handles a
//! frame, a timer or a socket call for a vnet runs inside that vnet's scope,
//! opened by [`CurVnet::set`] (or [`Vnet::enter`]) and closed when the guard
//! drops, which restores the vnet that was current before: the
//! `CURVNET_SET`/`CURVNET_RESTORE` pair. Guards are `!Send`, must be dropped in
//! the reverse order of creation (an out-of-order restore panics), and code
//! outside any scope that asks for the current vnet gets
//! [`CurVnetError::NoVnet`], never a default.
//!
//! **Reaching per-vnet state** has exactly one convention, the `V_x` of
//! FreeBSD: [`with`] (one subsystem) or [`with_vars`] (several) resolve
//! through the current vnet and lock its state for the duration of a closure.
//!
//! **Threads.** Each vnet's state sits behind its own mutex, taken by
//! [`with`]/[`with_vars`] for the length of one closure. Different vnets are
//! worked on by different threads at the same time; one vnet's state is never
//! touched by two threads at once. The drivers give each vnet to one worker
//! thread, so the lock is uncontended on the packet path; the control plane
//! may take it from any thread. A thread that re-enters the state of a vnet it
//! already holds gets [`CurVnetError::Reentrant`] instead of a deadlock.
//!
//! **Teardown** ([`Registry::destroy`]) is synchronous: it waits for the
//! vnet's lock, runs every subsystem's `uninit` in reverse order inside the
//! vnet's scope, then runs the deferred work the subsystems queued (such as
//! giving borrowed interfaces back to their home vnet) outside it, and
//! returns a [`TeardownReport`] of what was released.

mod curvnet;
pub mod limits;
mod registry;
mod sysinit;

pub use curvnet::{CurVnet, CurVnetError, curvnet, with, with_vars};
pub use registry::{Registry, RegistryError, Vnet, VnetId, VnetInfo, VnetState};
pub use sysinit::{InitCx, PerVnet, SysInitOrder, TeardownCx, TeardownReport, VnetVars};
