//! Wires: the one-way frame queues that join two interfaces (or an
//! interface and a switch), and the stages (impairment, filters, capture)
//! that any wire can carry.
//!
//! A wire is the only structure two vnets share. The sending vnet pushes a
//! frame stamped with the time it may be delivered; the receiving vnet takes
//! the frames whose time has come when it is polled. Both sides pass the time
//! in, so a wire never reads a clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use smoltcp::time::{Duration, Instant};

use super::switch::Switch;
use crate::vnet::VnetId;

/// Told of each vnet a frame was queued for, and when it may be read:
/// whoever sent the frame wakes that vnet (one frame entering a switch may
/// be queued for several).
pub type Wake<'a> = dyn FnMut(VnetId, Instant) + 'a;

/// A report a stage gives of itself for listings (filters do; impairment
/// does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageReport {
    /// The kind of stage (`"filter"`).
    pub kind: &'static str,
    /// Its name, unique among the stages of its wire.
    pub name: String,
    /// What it does, in the words it was made from.
    pub description: String,
    /// Frames it passed.
    pub passed: u64,
    /// Frames it dropped, per reason.
    pub drops: Vec<(&'static str, u64)>,
    /// What it checks, in order: each check's drop reason and text (a
    /// filter's options, expression or program, as it was made from them).
    pub checks: Vec<(&'static str, String)>,
}

/// Identifies a stage on its wire, for removal.
pub type StageId = u64;

/// An ordered list of stages, each with an id (a wire's, or a switch's).
#[derive(Default)]
pub(super) struct Stages {
    list: Vec<(StageId, Box<dyn LinkStage>)>,
    next: StageId,
}

impl Stages {
    /// Adds a stage at the end; returns its id.
    pub(super) fn push(&mut self, stage: Box<dyn LinkStage>) -> StageId {
        self.next += 1;
        self.list.push((self.next, stage));
        self.next
    }

    /// Removes the stage with this id; false if there is none.
    pub(super) fn remove(&mut self, id: StageId) -> bool {
        let before = self.list.len();
        self.list.retain(|(i, _)| *i != id);
        self.list.len() != before
    }

    /// Removes every stage.
    pub(super) fn clear(&mut self) {
        self.list.clear();
    }

    /// The stages in order, to run them.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Box<dyn LinkStage>> {
        self.list.iter_mut().map(|(_, s)| s)
    }

    /// The ids and reports of the stages that give one.
    fn reports(&self) -> Vec<(StageId, StageReport)> {
        self.list
            .iter()
            .filter_map(|(id, s)| s.report().map(|r| (*id, r)))
            .collect()
    }
}

/// What a stage decides for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it (after any delay added by earlier stages).
    Pass,
    /// Deliver it this much later.
    Delay(Duration),
    /// Drop it, for this reason (counted per reason).
    Drop(&'static str),
}

/// A wrapper on a wire that sees every frame (smoltcp's middleware devices,
/// done per link): impairment, filters, capture.
pub trait LinkStage: Send {
    /// A short name for listings.
    fn name(&self) -> &'static str;
    /// Decides the fate of one frame sent at `now`.
    fn process(&mut self, now: Instant, frame: &[u8]) -> Verdict;
    /// What the stage reports of itself in listings, if anything.
    fn report(&self) -> Option<StageReport> {
        None
    }
}

/// Delay and random loss, from a seeded generator so a run replays exactly.
#[derive(Debug, Clone)]
pub struct Impairment {
    delay: Duration,
    loss_per_million: u32,
    rng: ChaCha8Rng,
}

impl Impairment {
    /// A stage that delays every frame by `delay` and drops each with
    /// probability `loss` (0.0 to 1.0), using `seed` for its choices.
    pub fn new(delay: Duration, loss: f64, seed: u64) -> Impairment {
        Impairment {
            delay,
            loss_per_million: (loss.clamp(0.0, 1.0) * 1_000_000.0) as u32,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl LinkStage for Impairment {
    fn name(&self) -> &'static str {
        "impairment"
    }
    fn process(&mut self, _now: Instant, _frame: &[u8]) -> Verdict {
        if self.loss_per_million > 0 && self.rng.next_u32() % 1_000_000 < self.loss_per_million {
            return Verdict::Drop("impairment loss");
        }
        if self.delay > Duration::ZERO {
            Verdict::Delay(self.delay)
        } else {
            Verdict::Pass
        }
    }
}

/// Counters of one wire.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WireStats {
    /// Frames queued for delivery.
    pub queued: u64,
    /// Frames handed to the receiver.
    pub delivered: u64,
    /// Dropped because the queue was full.
    pub drop_full: u64,
    /// Dropped because the far end is gone or down.
    pub drop_down: u64,
    /// Dropped by a stage, per reason.
    pub drop_stage: Vec<(&'static str, u64)>,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxDrop {
    /// The queue is full.
    Full,
    /// The far end is gone or not attached.
    Down,
    /// A stage dropped it.
    Stage(&'static str),
}

/// Who reads a wire.
#[derive(Clone)]
pub enum Receiver {
    /// Nobody (an end being moved): frames are dropped.
    None,
    /// An interface of this vnet, which the sender's poll says to wake.
    Vnet(VnetId),
    /// A host-side pump (a TAP device), told by calling this.
    Host(Arc<dyn Fn() + Send + Sync>),
    /// A switch, which takes each frame as it is sent (from this port)
    /// and queues it on the wires of the ports it goes to.
    Switch(Weak<Switch>, u32),
}

struct Inner {
    queue: VecDeque<(Instant, Vec<u8>)>,
    /// Who takes frames off this wire.
    rx: Receiver,
    /// False once either end is destroyed.
    alive: bool,
    limit: usize,
    stages: Stages,
    stats: WireStats,
}

/// A one-way frame queue between two interfaces.
pub struct Wire {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.lock();
        f.debug_struct("Wire")
            .field("queued", &g.queue.len())
            .field(
                "rx",
                &match &g.rx {
                    Receiver::None => "none".to_string(),
                    Receiver::Vnet(v) => format!("vnet {v}"),
                    Receiver::Host(_) => "host".to_string(),
                    Receiver::Switch(_, port) => format!("switch port {port}"),
                },
            )
            .field("alive", &g.alive)
            .finish()
    }
}

/// Default queue limit in frames (Linux's `txqueuelen`).
pub const DEFAULT_QUEUE_LIMIT: usize = 1000;

impl Wire {
    /// An empty wire delivering to nobody yet.
    pub fn new() -> Wire {
        Wire {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                rx: Receiver::None,
                alive: true,
                limit: DEFAULT_QUEUE_LIMIT,
                stages: Stages::default(),
                stats: WireStats::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame sent at `now`, after its stages. `wake` is told of
    /// the vnet that reads this wire (or, for a wire into a switch, of each
    /// vnet the switch queued the frame for) and when the frame may be
    /// read; a host-side reader is told directly.
    ///
    /// # Errors
    /// Why the frame was dropped (it is counted on the wire).
    pub fn send(&self, now: Instant, frame: Vec<u8>, wake: &mut Wake<'_>) -> Result<(), TxDrop> {
        let mut g = self.lock();
        let rx = if g.alive {
            g.rx.clone()
        } else {
            Receiver::None
        };
        if matches!(rx, Receiver::None) {
            g.stats.drop_down += 1;
            return Err(TxDrop::Down);
        }
        let into_switch = matches!(rx, Receiver::Switch(..));
        if !into_switch && g.queue.len() >= g.limit {
            g.stats.drop_full += 1;
            return Err(TxDrop::Full);
        }
        let mut at = now;
        let inner = &mut *g;
        for stage in inner.stages.iter_mut() {
            match stage.process(now, &frame) {
                Verdict::Pass => {}
                Verdict::Delay(d) => at += d,
                Verdict::Drop(why) => {
                    match inner.stats.drop_stage.iter_mut().find(|(r, _)| *r == why) {
                        Some((_, n)) => *n += 1,
                        None => inner.stats.drop_stage.push((why, 1)),
                    }
                    return Err(TxDrop::Stage(why));
                }
            }
        }
        if let Receiver::Switch(sw, port) = rx {
            // A switch forwards at once (a delay stage on a wire into a
            // switch has nothing to delay). The wire's lock is let go
            // first: the switch takes its own and those of its ports.
            inner.stats.queued += 1;
            inner.stats.delivered += 1;
            drop(g);
            return match sw.upgrade() {
                Some(sw) => {
                    sw.input(port, now, frame, wake);
                    Ok(())
                }
                None => Err(TxDrop::Down),
            };
        }
        // Frames never overtake each other on a wire.
        let was_empty = inner.queue.is_empty();
        if let Some((last, _)) = inner.queue.back() {
            at = at.max(*last);
        }
        inner.queue.push_back((at, frame));
        inner.stats.queued += 1;
        drop(g);
        match rx {
            Receiver::Vnet(v) => wake(v, at),
            Receiver::Host(notify) => {
                // The pump empties the queue each time it is told: once per
                // batch is enough.
                if was_empty {
                    notify();
                }
            }
            Receiver::None | Receiver::Switch(..) => unreachable!("handled above"),
        }
        Ok(())
    }

    /// Moves every frame deliverable at `now` into `out`, and returns when
    /// the next one (if any) becomes deliverable.
    pub fn recv_due(&self, now: Instant, out: &mut Vec<Vec<u8>>) -> Option<Instant> {
        let mut g = self.lock();
        while let Some((at, _)) = g.queue.front() {
            if *at > now {
                return Some(*at);
            }
            let (_, f) = g.queue.pop_front().expect("front exists");
            g.stats.delivered += 1;
            out.push(f);
        }
        None
    }

    /// When the next queued frame becomes deliverable.
    pub fn next_due(&self) -> Option<Instant> {
        self.lock().queue.front().map(|(at, _)| *at)
    }

    /// Sets (or clears) the vnet that receives from this wire.
    pub fn set_rx_owner(&self, owner: Option<VnetId>) {
        self.lock().rx = owner.map_or(Receiver::None, Receiver::Vnet);
    }

    /// Makes a host-side pump the reader of this wire; `notify` is called
    /// after each frame is queued.
    pub fn set_host_rx(&self, notify: Arc<dyn Fn() + Send + Sync>) {
        self.lock().rx = Receiver::Host(notify);
    }

    /// Marks the wire dead because its sending end is gone: nothing more is
    /// accepted, but frames already on their way (a last reset) still
    /// arrive.
    pub fn close_sender(&self) {
        self.lock().alive = false;
    }

    /// Marks the wire dead because its receiving end is gone, and frees the
    /// frames nobody will read.
    pub fn kill(&self) {
        let mut g = self.lock();
        g.alive = false;
        g.queue.clear();
        g.queue.shrink_to_fit();
    }

    /// Whether both ends still exist.
    pub fn is_alive(&self) -> bool {
        self.lock().alive
    }

    /// The vnet that reads this wire, if a vnet does.
    pub fn rx_owner(&self) -> Option<VnetId> {
        match self.lock().rx {
            Receiver::Vnet(v) => Some(v),
            _ => None,
        }
    }

    /// Makes a switch port the reader of this wire: each frame sent on it
    /// enters the switch.
    pub fn set_switch_rx(&self, sw: Weak<Switch>, port: u32) {
        self.lock().rx = Receiver::Switch(sw, port);
    }

    /// Adds a stage; frames pass stages in the order they were added.
    /// Returns its id on this wire.
    pub fn push_stage(&self, stage: Box<dyn LinkStage>) -> StageId {
        self.lock().stages.push(stage)
    }

    /// Removes the stage with this id; false if there is none.
    pub fn remove_stage(&self, id: StageId) -> bool {
        self.lock().stages.remove(id)
    }

    /// The ids and reports of the stages that give one, in order.
    pub fn reports(&self) -> Vec<(StageId, StageReport)> {
        self.lock().stages.reports()
    }

    /// Removes every stage.
    pub fn clear_stages(&self) {
        self.lock().stages.clear();
    }

    /// Sets the queue limit in frames (at least 1).
    pub fn set_limit(&self, limit: usize) {
        self.lock().limit = limit.max(1);
    }

    /// A copy of the counters.
    pub fn stats(&self) -> WireStats {
        self.lock().stats.clone()
    }
}

impl Default for Wire {
    fn default() -> Self {
        Wire::new()
    }
}
