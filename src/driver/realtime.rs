//! The real-time driver: worker threads that each own a share of the
//! vnets, poll them at their deadlines against the wall clock, and wake each
//! other when one sends frames to a vnet another owns.
//!
//! A vnet is polled only by the worker it is assigned to, so its state lock
//! is uncontended on the packet path. A worker with nothing due sleeps on a
//! condition variable until its earliest deadline or a wake-up: an idle
//! driver uses no CPU.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use smoltcp::time::{Duration, Instant};

use crate::stack;
use crate::vnet::{Registry, Vnet, VnetId};

/// What an application hook tells the driver after running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppCtl {
    /// Call again at the next poll of the vnet.
    Continue,
    /// Remove this hook.
    Done,
}

/// Code that runs inside a vnet's scope after each poll of it (a traffic
/// source or sink, a test server).
pub type App = Box<dyn FnMut(Instant) -> AppCtl + Send>;

#[derive(Default)]
struct WState {
    due: BTreeMap<VnetId, Instant>,
    vnets: HashMap<VnetId, Arc<Vnet>>,
    apps: Vec<(VnetId, App)>,
    stop: bool,
    /// The worker is waiting on the condition variable (set and cleared
    /// under the mutex, so a wake-up is never lost).
    sleeping: bool,
}

struct Worker {
    state: Mutex<WState>,
    cv: Condvar,
}

impl Worker {
    fn lock(&self) -> MutexGuard<'_, WState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn wake(&self, v: VnetId, at: Instant) {
        let mut g = self.lock();
        let e = g.due.entry(v).or_insert(at);
        *e = (*e).min(at);
        let sleeping = g.sleeping;
        drop(g);
        // A worker that is awake will see the entry before it sleeps: spare
        // the system call.
        if sleeping {
            self.cv.notify_one();
        }
    }
}

struct Shared {
    workers: Vec<Arc<Worker>>,
    /// Application hooks not yet done.
    apps: AtomicUsize,
    owner: Mutex<HashMap<VnetId, usize>>,
    epoch: std::time::Instant,
}

impl Shared {
    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }
    fn worker_of(&self, v: VnetId) -> Option<usize> {
        self.owner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&v)
            .copied()
    }
}

/// The real-time driver.
pub struct Realtime {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    next: usize,
}

impl Realtime {
    /// Starts `workers` threads (at least one).
    pub fn start(workers: usize) -> Realtime {
        let n = workers.max(1);
        let shared = Arc::new(Shared {
            workers: (0..n)
                .map(|_| {
                    Arc::new(Worker {
                        state: Mutex::new(WState::default()),
                        cv: Condvar::new(),
                    })
                })
                .collect(),
            owner: Mutex::new(HashMap::new()),
            apps: AtomicUsize::new(0),
            epoch: std::time::Instant::now(),
        });
        let threads = (0..n)
            .map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("vnet-worker-{i}"))
                    .spawn(move || run(&s, i))
                    .expect("spawn worker")
            })
            .collect();
        Realtime {
            shared,
            threads,
            next: 0,
        }
    }

    /// The driver's clock now.
    pub fn now(&self) -> Instant {
        self.shared.now()
    }

    /// Gives a vnet to a worker (round robin) and polls it now.
    pub fn adopt(&mut self, v: &Arc<Vnet>) {
        let w = self.next % self.shared.workers.len();
        self.next += 1;
        self.shared
            .owner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(v.id(), w);
        let worker = &self.shared.workers[w];
        worker.lock().vnets.insert(v.id(), Arc::clone(v));
        worker.wake(v.id(), Instant::ZERO);
    }

    /// Runs `app` in `v`'s scope after each poll of `v`, on its worker.
    ///
    /// # Panics
    /// If `v` was not adopted.
    pub fn add_app(&self, v: &Arc<Vnet>, app: App) {
        let w = self.shared.worker_of(v.id()).expect("vnet adopted");
        let worker = &self.shared.workers[w];
        self.shared.apps.fetch_add(1, Ordering::AcqRel);
        worker.lock().apps.push((v.id(), app));
        worker.wake(v.id(), Instant::ZERO);
    }

    /// The clock and waker a host-side pump (a TAP) needs.
    pub fn host_io(&self) -> crate::ifnet::HostIo {
        let (a, b) = (Arc::clone(&self.shared), Arc::clone(&self.shared));
        crate::ifnet::HostIo {
            now: Arc::new(move || a.now()),
            wake: Arc::new(move |v, at| {
                if let Some(w) = b.worker_of(v) {
                    b.workers[w].wake(v, at);
                }
            }),
        }
    }

    /// Asks for `v` to be polled now (after calls into it from outside the
    /// driver, such as a control request).
    pub fn kick(&self, v: &Arc<Vnet>) {
        if let Some(w) = self.shared.worker_of(v.id()) {
            self.shared.workers[w].wake(v.id(), Instant::ZERO);
        }
    }

    /// Whether any application hook is still running.
    pub fn apps_running(&self) -> bool {
        self.shared.apps.load(Ordering::Acquire) > 0
    }

    /// Stops the workers and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Stops the workers and waits for them (what [`Realtime::stop`] and
    /// dropping do).
    pub fn shutdown(&mut self) {
        for w in &self.shared.workers {
            w.lock().stop = true;
            w.cv.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Keeps the registry alive for as long as the driver runs (a
    /// convenience for callers that hand it over).
    pub fn registry_guard(reg: Arc<Registry>) -> Arc<Registry> {
        reg
    }
}

impl Drop for Realtime {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(s: &Shared, me: usize) {
    let worker = &s.workers[me];
    let mut apps: Vec<(VnetId, App)> = Vec::new();
    loop {
        let now = s.now();
        let vnets = {
            let mut g = worker.lock();
            if g.stop {
                return;
            }
            apps.append(&mut g.apps);
            let ready: Vec<VnetId> = g
                .due
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(v, _)| *v)
                .collect();
            if ready.is_empty() {
                // Sleep until the earliest deadline, or until woken when
                // nothing is due at all: an idle worker uses no CPU.
                let wait =
                    g.due.values().min().map(|t| {
                        std::time::Duration::from_micros((*t - now).total_micros().max(1))
                    });
                g.sleeping = true;
                let mut g2 = match wait {
                    Some(timeout) => {
                        worker
                            .cv
                            .wait_timeout(g, timeout)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                    None => worker.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                };
                g2.sleeping = false;
                apps.append(&mut g2.apps);
                continue;
            }
            for v in &ready {
                g.due.remove(v);
            }
            ready
                .iter()
                .filter_map(|v| g.vnets.get(v).cloned())
                .collect::<Vec<Arc<Vnet>>>()
        };
        for v in vnets {
            let id = v.id();
            let out = v.enter(|| {
                let out = stack::poll(now);
                apps.retain_mut(|(owner, app)| {
                    let keep = *owner != id || app(now) == AppCtl::Continue;
                    if !keep {
                        s.apps.fetch_sub(1, Ordering::AcqRel);
                    }
                    keep
                });
                // The apps may have queued data: let it out in this turn.
                let again = stack::poll(now);
                (out, again)
            });
            let (Ok(a), Ok(b)) = out else {
                // Destroyed: forget it and retire its hooks.
                let mut g = worker.lock();
                g.vnets.remove(&id);
                g.due.remove(&id);
                drop(g);
                s.owner
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                apps.retain(|(owner, _)| {
                    let keep = *owner != id;
                    if !keep {
                        s.apps.fetch_sub(1, Ordering::AcqRel);
                    }
                    keep
                });
                continue;
            };
            let has_app = apps.iter().any(|(o, _)| *o == id);
            for o in [a, b] {
                for (peer, at) in o.wake {
                    if let Some(w) = s.worker_of(peer) {
                        s.workers[w].wake(peer, at);
                    }
                }
                if let Some(d) = o.deadline {
                    worker.wake(id, d);
                }
            }
            if has_app {
                // Apps are polled at least every millisecond.
                worker.wake(id, now + Duration::from_millis(1));
            }
        }
    }
}
