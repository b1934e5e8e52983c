//! Wires: the one-way frame queues that join two interfaces, and the stages
//! (impairment now; filters and capture later) that any wire can carry.
//!
//! A wire is the only structure two vnets share. The sending vnet pushes a
//! frame stamped with the time it may be delivered; the receiving vnet takes
//! the frames whose time has come when it is polled. Both sides pass the time
//! in, so a wire never reads a clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use smoltcp::time::{Duration, Instant};

use crate::vnet::VnetId;

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
}

struct Inner {
    queue: VecDeque<(Instant, Vec<u8>)>,
    /// Who takes frames off this wire.
    rx: Receiver,
    /// False once either end is destroyed.
    alive: bool,
    limit: usize,
    stages: Vec<Box<dyn LinkStage>>,
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
                stages: Vec::new(),
                stats: WireStats::default(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame sent at `now`. On success returns the vnet to wake
    /// (if a vnet reads this wire) and when the frame becomes deliverable;
    /// a host-side reader is told directly.
    ///
    /// # Errors
    /// Why the frame was dropped (it is counted on the wire).
    pub fn send(&self, now: Instant, frame: Vec<u8>) -> Result<Option<(VnetId, Instant)>, TxDrop> {
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
        if g.queue.len() >= g.limit {
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
        // Frames never overtake each other on a wire.
        let was_empty = inner.queue.is_empty();
        if let Some((last, _)) = inner.queue.back() {
            at = at.max(*last);
        }
        inner.queue.push_back((at, frame));
        inner.stats.queued += 1;
        drop(g);
        match rx {
            Receiver::Vnet(v) => Ok(Some((v, at))),
            Receiver::Host(notify) => {
                // The pump empties the queue each time it is told: once per
                // batch is enough.
                if was_empty {
                    notify();
                }
                Ok(None)
            }
            Receiver::None => unreachable!("checked above"),
        }
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

    /// Adds a stage; frames pass stages in the order they were added.
    pub fn push_stage(&self, stage: Box<dyn LinkStage>) {
        self.lock().stages.push(stage);
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
