//! A deterministic simulation: every vnet of a registry stepped on one
//! virtual clock.
//!
//! The clock moves only when nothing is left to do at the current time: it
//! then jumps to the earliest deadline (a timer, or a delayed frame on a
//! wire). Vnets due at the same instant run in id order, and all randomness
//! (loss on links, ISNs, ports) comes from the registry's seed, so a run
//! replays exactly. A step cap turns a livelock into an error.

use std::collections::BTreeMap;
use std::sync::Arc;

use smoltcp::time::{Duration, Instant};

use crate::stack::{self, PollOutcome};
use crate::vnet::{Registry, RegistryError, TeardownReport, Vnet, VnetId};

/// Why a simulation run stopped early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// More polls at one instant than the cap allows: something livelocks.
    #[error("step cap of {0} polls reached without going idle")]
    StepCap(u64),
    /// The condition did not come true within the time allowed.
    #[error("condition still false after {0} of simulated time")]
    Timeout(Duration),
}

/// The simulation driver.
pub struct Sim {
    reg: Arc<Registry>,
    now: Instant,
    due: BTreeMap<VnetId, Instant>,
    step_cap: u64,
    polls: u64,
    /// Whether any poll since this was last cleared put frames on a wire.
    moved: bool,
}

impl Sim {
    /// A world of its own with this seed, starting at time zero.
    pub fn new(seed: u64) -> Sim {
        Sim::with_registry(Registry::new(seed))
    }

    /// Drives an existing registry.
    pub fn with_registry(reg: Arc<Registry>) -> Sim {
        Sim {
            reg,
            now: Instant::ZERO,
            due: BTreeMap::new(),
            step_cap: 1_000_000,
            polls: 0,
            moved: false,
        }
    }

    /// Sets the most polls allowed without the clock moving.
    pub fn set_step_cap(&mut self, cap: u64) {
        self.step_cap = cap;
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.reg
    }

    /// Virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Total polls so far.
    pub fn polls(&self) -> u64 {
        self.polls
    }

    /// Creates a vnet under `vnet0`.
    ///
    /// # Errors
    /// As [`Registry::create`].
    pub fn create(&mut self, name: &str) -> Result<Arc<Vnet>, RegistryError> {
        self.reg.create(name, None, 0)
    }

    /// Destroys a vnet and schedules the vnets its teardown sent frames to.
    ///
    /// # Errors
    /// As [`Registry::destroy`].
    pub fn destroy(
        &mut self,
        id: VnetId,
        recursive: bool,
    ) -> Result<TeardownReport, RegistryError> {
        let r = self.reg.destroy(id, recursive)?;
        for v in &r.vnets {
            self.due.remove(v);
        }
        for w in &r.wake {
            self.schedule(*w, self.now);
        }
        Ok(r)
    }

    /// Runs `f` inside vnet `v`'s scope and schedules `v` to be polled now
    /// (a call may have queued work).
    pub fn with<R>(&mut self, v: &Arc<Vnet>, f: impl FnOnce() -> R) -> R {
        let r = v.enter(f);
        self.schedule(v.id(), self.now);
        r
    }

    fn schedule(&mut self, v: VnetId, at: Instant) {
        let e = self.due.entry(v).or_insert(at);
        *e = (*e).min(at);
    }

    fn apply(&mut self, id: VnetId, out: PollOutcome) {
        if !out.wake.is_empty() {
            self.moved = true;
        }
        if let Some(d) = out.deadline {
            self.schedule(id, d);
        }
        for (v, at) in out.wake {
            self.schedule(v, at);
        }
    }

    /// Polls every vnet due at the current time, again and again, until
    /// none is. Returns the number of polls.
    ///
    /// # Errors
    /// [`SimError::StepCap`].
    pub fn run_until_idle(&mut self) -> Result<u64, SimError> {
        let mut n = 0;
        loop {
            let ready: Vec<VnetId> = self
                .due
                .iter()
                .filter(|(_, t)| **t <= self.now)
                .map(|(v, _)| *v)
                .collect();
            if ready.is_empty() {
                return Ok(n);
            }
            for id in ready {
                self.due.remove(&id);
                let Some(v) = self.reg.get(id) else { continue };
                let now = self.now;
                let Ok(out) = v.enter(|| stack::poll(now)) else {
                    continue;
                };
                self.apply(id, out);
                n += 1;
                self.polls += 1;
                if n > self.step_cap {
                    return Err(SimError::StepCap(self.step_cap));
                }
            }
        }
    }

    /// The earliest time any vnet is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }

    /// Runs until `cond` holds, checking it each time the world is idle (it
    /// may call [`Sim::with`] to act, as an application would), for at most
    /// `timeout` of simulated time.
    ///
    /// # Errors
    /// [`SimError::Timeout`] or [`SimError::StepCap`].
    pub fn run_until(
        &mut self,
        timeout: Duration,
        mut cond: impl FnMut(&mut Sim) -> bool,
    ) -> Result<(), SimError> {
        let end = self.now + timeout;
        loop {
            self.run_until_idle()?;
            if cond(self) {
                return Ok(());
            }
            // What the condition did (an application sending or reading)
            // runs at this instant; if it moved frames, look again before
            // letting time pass.
            self.moved = false;
            self.run_until_idle()?;
            if !self.moved {
                match self.next_due().filter(|t| *t > self.now) {
                    Some(t) if t <= end => self.now = self.now.max(t),
                    _ => {
                        self.now = end;
                        self.run_until_idle()?;
                        return if cond(self) {
                            Ok(())
                        } else {
                            Err(SimError::Timeout(timeout))
                        };
                    }
                }
            }
        }
    }

    /// Lets `d` of simulated time pass, running everything due meanwhile.
    ///
    /// # Errors
    /// [`SimError::StepCap`].
    pub fn run_for(&mut self, d: Duration) -> Result<(), SimError> {
        let end = self.now + d;
        loop {
            self.run_until_idle()?;
            match self.next_due() {
                Some(t) if t <= end => self.now = self.now.max(t),
                _ => {
                    self.now = end;
                    self.run_until_idle()?;
                    return Ok(());
                }
            }
        }
    }
}
