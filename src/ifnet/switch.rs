//! Switches: the Hurd's eth-multiplexer, as an object any number of vnets
//! and host devices plug into.
//!
//! A [`Switch`] has ports. Each port is a pair of wires: the one its client
//! sends on (read by the switch, which takes each frame as it is sent) and
//! the one the switch queues frames on for the client. A client is an
//! interface of some vnet (`link add eth0 type port switch br0`) or a host
//! device (a TAP, or an existing interface through `AF_PACKET`) whose pump
//! moves frames between the device and the port's wires. Ports come and go
//! while traffic flows.
//!
//! In **hub** mode every frame goes to every other port. In **learning**
//! mode the switch learns which port each source MAC address is behind
//! (entries age out) and sends a unicast frame only there; broadcast,
//! multicast and unknown destinations are flooded. The table is bounded: a
//! full table learns nothing new (the frames are flooded, as a hub would),
//! so a client sending from random MAC addresses cannot grow it.
//!
//! What a port delivers passes the stages of its wire to the client first:
//! the client's receive filter and any policy filter (see `bpf`), and
//! capture. Like wires, a switch never reads a clock: time is passed in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::EthernetAddress;

use super::tap::TapHandle;
use super::wire::{LinkStage, StageId, Stages, Verdict, Wake, Wire};

/// How a switch forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchMode {
    /// Every frame to every other port.
    Hub,
    /// A MAC table with aging; unknown and group destinations flooded.
    Learning,
}

impl std::fmt::Display for SwitchMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SwitchMode::Hub => "hub",
            SwitchMode::Learning => "learning",
        })
    }
}

impl std::str::FromStr for SwitchMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hub" => Ok(SwitchMode::Hub),
            "learning" => Ok(SwitchMode::Learning),
            _ => Err(format!("switch mode {s:?}: use hub or learning")),
        }
    }
}

/// Default MAC address aging time (as Linux's bridge: 300 s).
pub const DEFAULT_AGING: Duration = Duration::from_secs(300);
/// Default bound on the MAC table.
pub const DEFAULT_MAX_MACS: usize = 4096;

/// What is plugged into a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortKind {
    /// An interface of a vnet, by its name there.
    Vnet {
        /// The interface's name.
        ifname: String,
    },
    /// A Linux TAP device.
    Tap {
        /// Its name on the host.
        host: String,
    },
    /// Another vnetd's uplink (a delegated port), through a socket.
    Remote {
        /// The user that vnetd runs as.
        uid: u32,
        /// Its process.
        pid: u32,
    },
    /// A host interface through `AF_PACKET`.
    Packet {
        /// Its name on the host.
        host: String,
    },
}

#[derive(Debug, Default)]
struct PortCounters {
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    tx_drops: AtomicU64,
}

/// Counters of one port, as seen from the switch.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PortStats {
    /// Frames the client sent into the switch.
    pub rx_frames: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames the switch queued for the client.
    pub tx_frames: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Frames for the client that its wire refused (a filter, a full
    /// queue, the client gone).
    pub tx_drops: u64,
}

/// One port.
pub struct Port {
    id: u32,
    kind: PortKind,
    /// The switch's frames for the client.
    to_client: Arc<Wire>,
    /// The client's frames for the switch.
    from_client: Arc<Wire>,
    counters: PortCounters,
    /// The pump of a host port; dropping it stops the pump.
    dev: Mutex<Option<Arc<TapHandle>>>,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Port {
    /// Its number on the switch.
    pub fn id(&self) -> u32 {
        self.id
    }
    /// What is plugged in.
    pub fn kind(&self) -> &PortKind {
        &self.kind
    }
    /// The wire the switch queues the client's frames on.
    pub fn to_client(&self) -> &Arc<Wire> {
        &self.to_client
    }
    /// The wire the client sends on.
    pub fn from_client(&self) -> &Arc<Wire> {
        &self.from_client
    }
    /// A copy of its counters.
    pub fn stats(&self) -> PortStats {
        let c = &self.counters;
        PortStats {
            rx_frames: c.rx_frames.load(Ordering::Relaxed),
            rx_bytes: c.rx_bytes.load(Ordering::Relaxed),
            tx_frames: c.tx_frames.load(Ordering::Relaxed),
            tx_bytes: c.tx_bytes.load(Ordering::Relaxed),
            tx_drops: c.tx_drops.load(Ordering::Relaxed),
        }
    }
    /// Gives a host port its pump.
    pub(super) fn set_dev(&self, dev: Arc<TapHandle>) {
        *self.dev.lock().unwrap_or_else(|p| p.into_inner()) = Some(dev);
    }

    fn deliver(&self, now: Instant, frame: Vec<u8>, wake: &mut Wake<'_>) {
        let len = frame.len() as u64;
        match self.to_client.send(now, frame, wake) {
            Ok(()) => {
                self.counters.tx_frames.fetch_add(1, Ordering::Relaxed);
                self.counters.tx_bytes.fetch_add(len, Ordering::Relaxed);
            }
            Err(_) => {
                self.counters.tx_drops.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Counters of a switch.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SwitchStats {
    /// Frames that entered.
    pub frames: u64,
    /// Frames sent to one learned port.
    pub unicast: u64,
    /// Frames sent to every other port (group or unknown destination, or
    /// hub mode).
    pub flooded: u64,
    /// Frames dropped because their destination is behind the port they
    /// came from.
    pub same_port: u64,
    /// Frames too short to have an Ethernet header.
    pub runts: u64,
    /// Source addresses not learned because the table was full.
    pub table_full: u64,
}

/// One entry of the MAC table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacEntry {
    /// The address.
    pub mac: EthernetAddress,
    /// The port it was last seen on.
    pub port: u32,
    /// How long ago.
    pub age: Duration,
}

struct Inner {
    mode: SwitchMode,
    aging: Duration,
    max_macs: usize,
    ports: Vec<Arc<Port>>,
    next_port: u32,
    macs: HashMap<EthernetAddress, (u32, Instant)>,
    /// Stages that see every frame entering the switch (capture).
    stages: Stages,
    stats: SwitchStats,
    alive: bool,
}

impl Inner {
    /// The port with this number: ports are kept in the order they were
    /// made, so by number, and found by binary search on every frame.
    fn port(&self, id: u32) -> Option<&Arc<Port>> {
        self.ports
            .binary_search_by_key(&id, |p| p.id)
            .ok()
            .map(|i| &self.ports[i])
    }
}

/// A switch (see the module documentation).
pub struct Switch {
    name: String,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.lock();
        f.debug_struct("Switch")
            .field("name", &self.name)
            .field("mode", &g.mode)
            .field("ports", &g.ports.len())
            .finish()
    }
}

impl Switch {
    /// A switch with no ports.
    pub fn new(name: &str, mode: SwitchMode) -> Arc<Switch> {
        Arc::new(Switch {
            name: name.to_string(),
            inner: Mutex::new(Inner {
                mode,
                aging: DEFAULT_AGING,
                max_macs: DEFAULT_MAX_MACS,
                ports: Vec::new(),
                next_port: 1,
                macs: HashMap::new(),
                stages: Stages::default(),
                stats: SwitchStats::default(),
                alive: true,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its mode.
    pub fn mode(&self) -> SwitchMode {
        self.lock().mode
    }

    /// Changes the mode (the MAC table is forgotten).
    pub fn set_mode(&self, mode: SwitchMode) {
        let mut g = self.lock();
        g.mode = mode;
        g.macs.clear();
    }

    /// How long a learned address is kept without being seen.
    pub fn aging(&self) -> Duration {
        self.lock().aging
    }

    /// Sets the aging time.
    pub fn set_aging(&self, aging: Duration) {
        self.lock().aging = aging;
    }

    /// The bound on the MAC table.
    pub fn max_macs(&self) -> usize {
        self.lock().max_macs
    }

    /// Sets the bound on the MAC table (at least 1).
    pub fn set_max_macs(&self, n: usize) {
        self.lock().max_macs = n.max(1);
    }

    /// Adds a port; `None` once the switch has been destroyed. The port's
    /// `from_client` wire delivers into the switch; whoever plugs in reads
    /// `to_client`.
    pub fn add_port(self: &Arc<Self>, kind: PortKind) -> Option<Arc<Port>> {
        let mut g = self.lock();
        if !g.alive {
            return None;
        }
        let id = g.next_port;
        g.next_port += 1;
        let from_client = Arc::new(Wire::new());
        from_client.set_switch_rx(Arc::downgrade(self), id);
        let port = Arc::new(Port {
            id,
            kind,
            to_client: Arc::new(Wire::new()),
            from_client,
            counters: PortCounters::default(),
            dev: Mutex::new(None),
        });
        g.ports.push(Arc::clone(&port));
        log::debug!("switch {}: port {id} added ({:?})", self.name, port.kind);
        Some(port)
    }

    /// Removes a port: its wires die (its client sees the link down), its
    /// learned addresses are forgotten, a host port's device is closed.
    /// Returns whether it existed.
    pub fn remove_port(&self, id: u32) -> bool {
        let port = {
            let mut g = self.lock();
            let Ok(pos) = g.ports.binary_search_by_key(&id, |p| p.id) else {
                return false;
            };
            g.macs.retain(|_, (p, _)| *p != id);
            g.ports.remove(pos)
        };
        Self::unplug(&port);
        log::debug!("switch {}: port {id} removed", self.name);
        true
    }

    fn unplug(port: &Port) {
        port.from_client.kill();
        port.to_client.kill();
        // Stops the pump of a host port; done without the switch's lock,
        // since the pump may be waiting for it.
        let dev = port.dev.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(dev);
    }

    /// Destroys the switch: every port is removed (vnet interfaces on it
    /// stay, with their link down). Further ports are refused.
    pub fn destroy(&self) {
        let ports = {
            let mut g = self.lock();
            g.alive = false;
            g.macs.clear();
            g.stages.clear();
            std::mem::take(&mut g.ports)
        };
        for p in &ports {
            Self::unplug(p);
        }
    }

    /// The ports, in the order they were added.
    pub fn ports(&self) -> Vec<Arc<Port>> {
        self.lock().ports.clone()
    }

    /// The port with this number.
    pub fn port(&self, id: u32) -> Option<Arc<Port>> {
        self.lock().port(id).cloned()
    }

    /// A copy of the counters.
    pub fn stats(&self) -> SwitchStats {
        self.lock().stats.clone()
    }

    /// The MAC table as of `now` (entries past their age left out), by
    /// port and address.
    pub fn macs(&self, now: Instant) -> Vec<MacEntry> {
        let g = self.lock();
        let mut v: Vec<MacEntry> = g
            .macs
            .iter()
            .filter(|(_, (_, seen))| now - *seen <= g.aging || *seen > now)
            .map(|(mac, (port, seen))| MacEntry {
                mac: *mac,
                port: *port,
                age: if *seen > now {
                    Duration::ZERO
                } else {
                    now - *seen
                },
            })
            .collect();
        v.sort_by_key(|e| (e.port, e.mac.0));
        v
    }

    /// Adds a stage that sees every frame entering the switch (capture);
    /// its verdict is ignored. Returns its id.
    pub fn push_stage(&self, stage: Box<dyn LinkStage>) -> StageId {
        self.lock().stages.push(stage)
    }

    /// Removes a stage added by [`Switch::push_stage`].
    pub fn remove_stage(&self, id: StageId) -> bool {
        self.lock().stages.remove(id)
    }

    /// Takes a frame that port `from` sent at `now` and queues it for the
    /// ports it goes to; `wake` hears of each vnet that has a frame to read.
    pub(super) fn input(&self, from: u32, now: Instant, frame: Vec<u8>, wake: &mut Wake<'_>) {
        let mut g = self.lock();
        let g = &mut *g;
        let Some(src_port) = g.port(from) else {
            return;
        };
        src_port.counters.rx_frames.fetch_add(1, Ordering::Relaxed);
        src_port
            .counters
            .rx_bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        g.stats.frames += 1;
        for s in g.stages.iter_mut() {
            let _: Verdict = s.process(now, &frame);
        }
        if frame.len() < 14 {
            g.stats.runts += 1;
            return;
        }
        let mut dst = [0u8; 6];
        dst.copy_from_slice(&frame[..6]);
        let dst = EthernetAddress(dst);
        let mut src = [0u8; 6];
        src.copy_from_slice(&frame[6..12]);
        let src = EthernetAddress(src);
        let mut target = None;
        if g.mode == SwitchMode::Learning {
            if src.is_unicast() {
                Self::learn(g, src, from, now);
            }
            if dst.is_unicast()
                && let Some(&(port, seen)) = g.macs.get(&dst)
            {
                if now - seen <= g.aging || seen > now {
                    target = Some(port);
                } else {
                    g.macs.remove(&dst);
                }
            }
        }
        match target {
            Some(port) if port == from => g.stats.same_port += 1,
            Some(port) => {
                g.stats.unicast += 1;
                if let Some(p) = g.port(port) {
                    p.deliver(now, frame, wake);
                }
            }
            None => {
                g.stats.flooded += 1;
                let mut others = g.ports.iter().filter(|p| p.id != from).peekable();
                while let Some(p) = others.next() {
                    if others.peek().is_some() {
                        p.deliver(now, frame.clone(), wake);
                    } else {
                        p.deliver(now, frame, wake);
                        break;
                    }
                }
            }
        }
    }

    fn learn(g: &mut Inner, src: EthernetAddress, port: u32, now: Instant) {
        if let Some(e) = g.macs.get_mut(&src) {
            // A station that moved is found on its new port at once.
            *e = (port, now);
            return;
        }
        if g.macs.len() >= g.max_macs {
            let aging = g.aging;
            g.macs
                .retain(|_, (_, seen)| now - *seen <= aging || *seen > now);
            if g.macs.len() >= g.max_macs {
                g.stats.table_full += 1;
                return;
            }
        }
        g.macs.insert(src, (port, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12] = 0x08;
        f
    }

    fn drain(w: &Wire) -> usize {
        let mut out = Vec::new();
        w.recv_due(Instant::from_secs(1_000_000), &mut out);
        out.len()
    }

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
    const BCAST: [u8; 6] = [0xff; 6];

    fn three(mode: SwitchMode) -> (Arc<Switch>, Vec<Arc<Port>>) {
        let sw = Switch::new("br0", mode);
        let ports: Vec<_> = (0..3)
            .map(|i| {
                let p = sw
                    .add_port(PortKind::Vnet {
                        ifname: format!("eth{i}"),
                    })
                    .unwrap();
                p.to_client().set_rx_owner(Some(crate::vnet::VnetId(i + 1)));
                p
            })
            .collect();
        (sw, ports)
    }

    fn send(p: &Port, now: Instant, f: Vec<u8>) -> Vec<crate::vnet::VnetId> {
        let mut woke = Vec::new();
        p.from_client()
            .send(now, f, &mut |v, _| woke.push(v))
            .unwrap();
        woke
    }

    #[test]
    fn a_learning_switch_floods_unknown_then_sends_only_to_the_learned_port() {
        let (sw, p) = three(SwitchMode::Learning);
        let t = Instant::from_secs(1);
        // B unknown: flooded to ports 2 and 3.
        assert_eq!(send(&p[0], t, frame(B, A)).len(), 2);
        assert_eq!((drain(p[1].to_client()), drain(p[2].to_client())), (1, 1));
        // B answers from port 2; A was learned on port 1.
        let woke = send(&p[1], t, frame(A, B));
        assert_eq!(woke, vec![crate::vnet::VnetId(1)]);
        assert_eq!(drain(p[0].to_client()), 1);
        assert_eq!(drain(p[2].to_client()), 0);
        // Now A to B goes to port 2 only.
        send(&p[0], t, frame(B, A));
        assert_eq!((drain(p[1].to_client()), drain(p[2].to_client())), (1, 0));
        let s = sw.stats();
        assert_eq!((s.frames, s.flooded, s.unicast), (3, 1, 2));
        assert_eq!(sw.macs(t).len(), 2);
        // Broadcast is flooded.
        send(&p[0], t, frame(BCAST, A));
        assert_eq!((drain(p[1].to_client()), drain(p[2].to_client())), (1, 1));
    }

    #[test]
    fn entries_age_out_and_a_removed_port_is_forgotten() {
        let (sw, p) = three(SwitchMode::Learning);
        sw.set_aging(Duration::from_secs(10));
        let t = Instant::from_secs(1);
        send(&p[1], t, frame(A, B));
        drain(p[0].to_client());
        drain(p[2].to_client());
        send(&p[0], t + Duration::from_secs(5), frame(B, A));
        assert_eq!(drain(p[2].to_client()), 0, "B learned: not flooded");
        send(&p[0], t + Duration::from_secs(20), frame(B, A));
        assert_eq!(drain(p[2].to_client()), 1, "B aged out: flooded");
        assert!(sw.remove_port(p[0].id()));
        assert!(
            sw.macs(t + Duration::from_secs(20))
                .iter()
                .all(|e| e.port != p[0].id())
        );
        assert!(!p[0].from_client().is_alive());
        assert!(!sw.remove_port(p[0].id()));
    }

    #[test]
    fn a_hub_sends_everything_everywhere_and_the_table_is_bounded() {
        let (sw, p) = three(SwitchMode::Hub);
        let t = Instant::from_secs(1);
        send(&p[1], t, frame(A, B));
        send(&p[0], t, frame(B, A));
        assert_eq!(drain(p[2].to_client()), 2);
        assert!(sw.macs(t).is_empty());
        sw.set_mode(SwitchMode::Learning);
        sw.set_max_macs(2);
        for i in 0..10u8 {
            send(&p[0], t, frame(B, [2, 0, 0, 0, 1, i]));
        }
        assert_eq!(sw.macs(t).len(), 2);
        assert_eq!(sw.stats().table_full, 8);
    }

    #[test]
    fn a_runt_is_counted_and_goes_nowhere() {
        let (sw, p) = three(SwitchMode::Learning);
        send(&p[0], Instant::from_secs(1), vec![1, 2, 3]);
        assert_eq!(sw.stats().runts, 1);
        assert_eq!(drain(p[1].to_client()), 0);
    }
}
