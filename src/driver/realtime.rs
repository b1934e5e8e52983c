//! The real-time driver: worker threads that each own a share of the
//! vnets, poll them at their deadlines against the wall clock, and wake each
//! other when one sends frames to a vnet another owns.
//!
//! A vnet is polled only by the worker it is assigned to, so its state lock
//! is uncontended on the packet path. A worker with nothing due sleeps in
//! `epoll_wait` until its earliest deadline, a wake-up (an eventfd), or
//! readiness of a descriptor watched for one of its vnets (the socket
//! server's ends of its clients' sockets): an idle driver uses no CPU.
//!
//! This is the one place the driver touches descriptors on behalf of the
//! stacks; the stacks themselves stay sans-IO.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
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

/// Code that runs inside every vnet's scope after each poll of it, on its
/// worker (the socket server's data pump), given the tokens of the vnet's
/// watched descriptors that became ready; returns when it wants to run again
/// without a wake-up.
pub type IoHook = Arc<dyn Fn(Instant, &[u32]) -> Option<Instant> + Send + Sync>;

/// How long a worker that just did work keeps looking for more before it
/// sleeps (see `run`).
const SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// The epoll token of a worker's eventfd (vnet ids are 32-bit).
const WAKE_TOKEN: u64 = u64::MAX;

#[derive(Default)]
struct WState {
    due: BTreeMap<VnetId, Instant>,
    vnets: HashMap<VnetId, Arc<Vnet>>,
    apps: Vec<(VnetId, App)>,
    /// Tokens of watched descriptors found ready, per vnet.
    ready: HashMap<VnetId, Vec<u32>>,
    stop: bool,
    /// The worker is in (or about to enter) `epoll_wait` (set and cleared
    /// under the mutex, so a wake-up is never lost).
    sleeping: bool,
}

struct Worker {
    state: Mutex<WState>,
    /// What the worker sleeps on: its eventfd and watched descriptors.
    ep: OwnedFd,
    /// Written to wake the worker.
    ev: OwnedFd,
    /// Descriptors ever watched for this worker's vnets (closed ones leave
    /// the epoll set by themselves and are not subtracted): while it is
    /// zero, a busy worker need not ask epoll for readiness between polls.
    watched: AtomicUsize,
}

impl Worker {
    fn new() -> Worker {
        // SAFETY: plain system calls; each result is checked before it is
        // owned.
        let (ep, ev) = unsafe {
            let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            let ev = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
            assert!(
                ep >= 0 && ev >= 0,
                "epoll/eventfd: {}",
                std::io::Error::last_os_error()
            );
            (OwnedFd::from_raw_fd(ep), OwnedFd::from_raw_fd(ev))
        };
        let w = Worker {
            state: Mutex::new(WState::default()),
            ep,
            ev,
            watched: AtomicUsize::new(0),
        };
        w.ctl(w.ev.as_raw_fd(), WAKE_TOKEN, libc::EPOLLIN as u32)
            .expect("watching the eventfd");
        w
    }
    fn ctl(&self, fd: RawFd, token: u64, events: u32) -> std::io::Result<()> {
        let mut e = libc::epoll_event { events, u64: token };
        // SAFETY: `e` is valid for the call; the kernel checks `fd`.
        let rc = unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut e) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    fn lock(&self) -> MutexGuard<'_, WState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from `one` to the eventfd this worker owns.
        unsafe { libc::write(self.ev.as_raw_fd(), (&one as *const u64).cast(), 8) };
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
            self.notify();
        }
    }
    /// Waits up to `timeout` (forever when `None`) for a wake-up or a
    /// watched descriptor, and marks the vnets whose descriptors are ready
    /// as due now. A zero timeout only collects what is ready.
    fn wait(&self, timeout: Option<std::time::Duration>) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs() as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `events` has room for the count passed; `tsp` is null or
        // points to `ts`, alive for the call.
        let n = unsafe {
            libc::epoll_pwait2(
                self.ep.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                tsp,
                std::ptr::null(),
            )
        };
        if n <= 0 {
            return;
        }
        let mut g = self.lock();
        for e in &events[..n as usize] {
            let token = e.u64;
            if token == WAKE_TOKEN {
                let mut buf = 0u64;
                // SAFETY: reads 8 bytes into `buf` from the eventfd this
                // worker owns (resetting it).
                unsafe { libc::read(self.ev.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) };
            } else {
                let v = VnetId((token >> 32) as u32);
                g.due.insert(v, Instant::ZERO);
                g.ready.entry(v).or_default().push(token as u32);
            }
        }
    }
}

struct Shared {
    workers: Vec<Arc<Worker>>,
    /// Application hooks not yet done.
    apps: AtomicUsize,
    owner: Mutex<HashMap<VnetId, usize>>,
    epoch: std::time::Instant,
    hook: OnceLock<IoHook>,
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
            workers: (0..n).map(|_| Arc::new(Worker::new())).collect(),
            owner: Mutex::new(HashMap::new()),
            apps: AtomicUsize::new(0),
            epoch: std::time::Instant::now(),
            hook: OnceLock::new(),
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

    /// A handle for code outside the driver that watches descriptors for
    /// vnets and wakes them (the socket server).
    pub fn handle(&self) -> RtHandle {
        RtHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Installs the hook run in each vnet after each poll (once; later
    /// calls are ignored).
    pub fn set_io_hook(&self, hook: IoHook) {
        let _ = self.shared.hook.set(hook);
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
            w.notify();
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

/// What the socket server needs of the driver, shareable across threads.
#[derive(Clone)]
pub struct RtHandle {
    shared: Arc<Shared>,
}

impl RtHandle {
    /// The driver's clock now.
    pub fn now(&self) -> Instant {
        self.shared.now()
    }

    /// Polls `v` as soon as `fd` becomes readable, writable or hung up
    /// (edge-triggered), handing `token` to the I/O hook. The watch ends
    /// when the descriptor is closed.
    ///
    /// # Errors
    /// `v` is not run by this driver, or `epoll_ctl` failed.
    pub fn watch(&self, v: VnetId, fd: RawFd, token: u32) -> std::io::Result<()> {
        let w = self
            .shared
            .worker_of(v)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENXIO))?;
        let worker = &self.shared.workers[w];
        let ev = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET;
        worker.ctl(fd, (u64::from(v.0) << 32) | u64::from(token), ev as u32)?;
        worker.watched.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Asks for `v` to be polled now.
    pub fn kick(&self, v: VnetId) {
        if let Some(w) = self.shared.worker_of(v) {
            self.shared.workers[w].wake(v, Instant::ZERO);
        }
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
    let hook = || s.hook.get().cloned();
    // Until when to keep looking for work before sleeping.
    let mut spin_until: Option<std::time::Instant> = None;
    loop {
        if worker.watched.load(Ordering::Relaxed) > 0 {
            // Busy workers never sleep: collect descriptor readiness anyway.
            worker.wait(Some(std::time::Duration::ZERO));
        }
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
                // Just busy: look for more work a little before sleeping,
                // since the answer to what was just sent often comes within
                // microseconds, and a sleeping worker takes far longer to
                // wake than that.
                if spin_until.is_some_and(|t| std::time::Instant::now() < t) {
                    drop(g);
                    if worker.watched.load(Ordering::Relaxed) == 0 {
                        std::hint::spin_loop();
                    }
                    continue;
                }
                // Sleep until the earliest deadline, a wake-up, or a watched
                // descriptor: an idle worker uses no CPU.
                let wait =
                    g.due.values().min().map(|t| {
                        std::time::Duration::from_micros((*t - now).total_micros().max(1))
                    });
                g.sleeping = true;
                drop(g);
                worker.wait(wait);
                let mut g2 = worker.lock();
                g2.sleeping = false;
                apps.append(&mut g2.apps);
                continue;
            }
            for v in &ready {
                g.due.remove(v);
            }
            // Only work that came from a local program (a watched
            // descriptor) earns the spin: its answer comes back the same
            // way within microseconds. Frames from a TAP do not, and there
            // the spin only takes the CPU from the TAP's pump and the
            // programs behind it.
            let local = ready
                .iter()
                .any(|v| g.ready.get(v).is_some_and(|t| !t.is_empty()));
            if local && SPIN > std::time::Duration::ZERO {
                spin_until = Some(std::time::Instant::now() + SPIN);
            }
            let g = &mut *g;
            ready
                .iter()
                .filter_map(|v| g.vnets.get(v).cloned())
                .map(|v| {
                    let tokens = g.ready.remove(&v.id()).unwrap_or_default();
                    (v, tokens)
                })
                .collect::<Vec<(Arc<Vnet>, Vec<u32>)>>()
        };
        for (v, tokens) in vnets {
            let id = v.id();
            let io = hook();
            let out = v.enter(|| {
                let out = stack::poll(now);
                let io_again = io.as_ref().and_then(|h| h(now, &tokens));
                apps.retain_mut(|(owner, app)| {
                    let keep = *owner != id || app(now) == AppCtl::Continue;
                    if !keep {
                        s.apps.fetch_sub(1, Ordering::AcqRel);
                    }
                    keep
                });
                // The apps may have queued data: let it out in this turn.
                let again = stack::poll(now);
                (out, again, io_again)
            });
            let (Ok(a), Ok(b), io_again) = out else {
                // Destroyed: forget it and retire its hooks.
                let mut g = worker.lock();
                g.vnets.remove(&id);
                g.due.remove(&id);
                g.ready.remove(&id);
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
            let delivered_late = b.delivered;
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
            if let Some(at) = io_again {
                worker.wake(id, at);
            }
            if delivered_late && io.is_some() {
                // The second poll delivered packets (sent by the hook to
                // this same vnet): the hook must see them.
                worker.wake(id, now);
            }
            if has_app {
                // Apps are polled at least every millisecond.
                worker.wake(id, now + Duration::from_millis(1));
            }
        }
    }
}
