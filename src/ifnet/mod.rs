//! Interfaces and links.
//!
//! An [`Ifnet`] is a layer-2 interface of one vnet: a name and an index
//! unique in that vnet, a MAC address, an MTU, an up/down flag, counters,
//! and the link it sends on. Every vnet has a loopback `lo0` (index 1);
//! other interfaces are ends of links, such as an [`epair`] (two Ethernet
//! ends back to back, each attachable to any vnet). Layer-3 state (addresses,
//! neighbor caches, routes) belongs to the IP stack, keyed by the interface
//! index; this module knows nothing of IP.
//!
//! An interface has a *home* vnet, the one that created it. [`vmove`] moves
//! it to another vnet (FreeBSD's `if_vmove`): the stack of the old vnet
//! forgets its addresses and routes, and the interface gets a fresh index in
//! the new one. When a vnet is destroyed, interfaces it borrowed go back
//! home, and interfaces born in it are destroyed (the far end of an epair
//! then sees its link down).
//!
//! The per-vnet table of interfaces is the [`IfnetTable`] subsystem.

pub mod bpf;
pub mod capture;
pub mod packet;
pub mod rate;
pub mod switch;
pub mod tap;
mod uplink;
mod wire;

use std::sync::Arc;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use smoltcp::wire::EthernetAddress;

pub use switch::{PortKind, Switch, SwitchMode};
pub use tap::HostIo;
pub use wire::{
    DEFAULT_QUEUE_LIMIT, Impairment, LinkStage, Receiver, StageId, StageReport, TxDrop, Verdict,
    Wake, Wire, WireStats,
};

use crate::vnet::limits::{Account, Charge, QuotaError, Resource};
use crate::vnet::{
    self, CurVnetError, InitCx, PerVnet, SysInitOrder, TeardownCx, Vnet, VnetId, VnetVars,
};

/// Index of an interface within its vnet (1 is `lo0`).
pub type IfIndex = u32;

/// Largest MTU an interface may have (an IPv4 datagram's limit).
pub const MAX_MTU: usize = 65535;
/// Smallest MTU (IPv6's minimum link MTU).
pub const MIN_MTU: usize = 1280;

/// What an interface sends on.
#[derive(Debug, Clone)]
pub enum Link {
    /// The vnet's own loopback: never sends frames.
    Loopback,
    /// One end of an epair: frames go out on `tx`, come in on `rx`.
    Epair {
        /// Towards the other end.
        tx: Arc<Wire>,
        /// From the other end.
        rx: Arc<Wire>,
    },
    /// Joined to a Linux TAP device.
    Tap {
        /// Towards the host.
        tx: Arc<Wire>,
        /// From the host.
        rx: Arc<Wire>,
        /// The device and its pump.
        dev: Arc<tap::TapHandle>,
    },
    /// Attached to an existing host interface through `AF_PACKET`.
    Packet {
        /// Towards the host interface.
        tx: Arc<Wire>,
        /// From the host interface.
        rx: Arc<Wire>,
        /// The socket and its pump.
        dev: Arc<tap::TapHandle>,
    },
    /// An uplink to a switch of another vnetd, through a delegated port
    /// (a `SOCK_SEQPACKET` socket, one frame per message; see
    /// [`uplink`]).
    Uplink {
        /// Towards the other vnetd.
        tx: Arc<Wire>,
        /// From the other vnetd.
        rx: Arc<Wire>,
        /// The socket and its pump.
        dev: Arc<tap::TapHandle>,
        /// The other vnetd's switch.
        switch: String,
        /// The other vnetd's control socket.
        server: String,
        /// What keeps the port open on the other side (its control
        /// connection), closed with the interface.
        keep: Keep,
    },
    /// A port of a switch.
    Port {
        /// Towards the switch.
        tx: Arc<Wire>,
        /// From the switch.
        rx: Arc<Wire>,
        /// The switch.
        sw: Arc<Switch>,
        /// The port's number on it.
        port: u32,
    },
}

/// Something an interface holds open for its life (an uplink's control
/// connection).
#[derive(Clone)]
pub struct Keep(pub Arc<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keep")
    }
}

/// Interface counters (`netstat -i`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IfStats {
    /// Frames received.
    pub ipackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Frames sent.
    pub opackets: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Frames dropped on input (malformed, not for us, unknown protocol).
    pub idrops: u64,
    /// Frames that could not be sent (link down, queue full).
    pub oerrors: u64,
}

/// A layer-2 interface of one vnet.
#[derive(Debug)]
pub struct Ifnet {
    name: String,
    index: IfIndex,
    mac: EthernetAddress,
    mtu: usize,
    up: bool,
    link: Link,
    home: VnetId,
    /// Counters.
    pub stats: IfStats,
    /// Its place in its vnet's interface quota.
    charge: Charge,
}

impl Ifnet {
    /// Its name in its vnet.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its index in its vnet.
    pub fn index(&self) -> IfIndex {
        self.index
    }
    /// Its MAC address.
    pub fn mac(&self) -> EthernetAddress {
        self.mac
    }
    /// Its MTU (IP bytes per frame).
    pub fn mtu(&self) -> usize {
        self.mtu
    }
    /// Whether it is administratively up.
    pub fn is_up(&self) -> bool {
        self.up
    }
    /// The vnet that created it.
    pub fn home(&self) -> VnetId {
        self.home
    }
    /// Its link.
    pub fn link(&self) -> &Link {
        &self.link
    }
    /// Whether its link segments large TCP segments itself (TSO): a TAP.
    pub fn tso(&self) -> bool {
        matches!(self.link, Link::Tap { .. })
    }
    /// Whether it is the loopback.
    pub fn is_loopback(&self) -> bool {
        matches!(self.link, Link::Loopback)
    }
    /// Whether it can carry frames now: up, and its link alive.
    pub fn is_running(&self) -> bool {
        self.up
            && match &self.link {
                Link::Loopback => true,
                Link::Epair { tx, .. }
                | Link::Tap { tx, .. }
                | Link::Packet { tx, .. }
                | Link::Uplink { tx, .. }
                | Link::Port { tx, .. } => tx.is_alive(),
            }
    }
    /// The wire frames arrive on, if any.
    pub fn rx_wire(&self) -> Option<&Arc<Wire>> {
        match &self.link {
            Link::Epair { rx, .. }
            | Link::Tap { rx, .. }
            | Link::Packet { rx, .. }
            | Link::Uplink { rx, .. }
            | Link::Port { rx, .. } => Some(rx),
            Link::Loopback => None,
        }
    }
    /// The wire frames leave on, if any.
    pub fn tx_wire(&self) -> Option<&Arc<Wire>> {
        match &self.link {
            Link::Epair { tx, .. }
            | Link::Tap { tx, .. }
            | Link::Packet { tx, .. }
            | Link::Uplink { tx, .. }
            | Link::Port { tx, .. } => Some(tx),
            Link::Loopback => None,
        }
    }
}

impl Drop for Ifnet {
    /// An interface that ceases to exist takes its link down with it.
    fn drop(&mut self) {
        match &self.link {
            Link::Epair { tx, rx } => {
                tx.close_sender();
                rx.kill();
            }
            // Dropping the handle (the last reference) stops the pump and
            // closes the device.
            Link::Tap { tx, rx, .. }
            | Link::Packet { tx, rx, .. }
            | Link::Uplink { tx, rx, .. } => {
                tx.kill();
                rx.kill();
            }
            // The switch forgets the port and kills its wires.
            Link::Port { sw, port, .. } => {
                sw.remove_port(*port);
            }
            Link::Loopback => {}
        }
    }
}

/// A snapshot of an interface, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfInfo {
    /// Name.
    pub name: String,
    /// Index.
    pub index: IfIndex,
    /// MAC address.
    pub mac: EthernetAddress,
    /// MTU.
    pub mtu: usize,
    /// Administratively up.
    pub up: bool,
    /// Up and link alive.
    pub running: bool,
    /// `"loopback"`, `"epair"`, `"tap"`, `"af_packet"` or `"port"`.
    pub kind: &'static str,
    /// The host interface of a TAP link, or the switch of a port or of an
    /// uplink.
    pub host: Option<String>,
    /// The other vnetd's control socket, for an uplink.
    pub server: Option<String>,
    /// The same for both ends of one epair (and for no other interface):
    /// how a listing pairs them up.
    pub link_id: usize,
    /// Home vnet.
    pub home: VnetId,
    /// Counters.
    pub stats: IfStats,
}

/// Why an interface operation was refused. Nothing changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfError {
    /// No such interface in the vnet.
    #[error("interface {0:?}: no such interface")]
    NoSuchInterface(String),
    /// The name is taken in the vnet.
    #[error("interface {0:?} already exists")]
    Exists(String),
    /// Names are 1 to 15 characters (as Linux's IFNAMSIZ).
    #[error("interface name {0:?} is invalid: use 1 to 15 letters, digits, '-', '_' or '.'")]
    BadName(String),
    /// MTU out of range.
    #[error("MTU {0} is out of range ({MIN_MTU} to {MAX_MTU})")]
    BadMtu(usize),
    /// The loopback cannot be moved or deleted.
    #[error("lo0 belongs to its vnet and cannot be moved or deleted")]
    Loopback,
    /// Moving an interface to the vnet it is in.
    #[error("interface {0:?} is already in that vnet")]
    SameVnet(String),
    /// No such switch, or it was destroyed.
    #[error("switch {0:?}: no such switch")]
    NoSuchSwitch(String),
    /// The host refused (opening a TAP device, for instance).
    #[error("host interface {0:?}: {1}")]
    Host(String, String),
    /// A quota refused it.
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// The vnet could not be entered.
    #[error(transparent)]
    Vnet(#[from] CurVnetError),
}

fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The interfaces of one vnet (a per-vnet subsystem).
#[derive(Debug)]
pub struct IfnetTable {
    vnet: VnetId,
    account: Arc<Account>,
    ifs: Vec<Ifnet>,
    next_index: IfIndex,
    rng: ChaCha8Rng,
}

impl PerVnet for IfnetTable {
    const NAME: &'static str = "ifnet";
    const ORDER: SysInitOrder = SysInitOrder::IFNET;

    fn init(cx: &mut InitCx<'_>) -> Self {
        let mut t = IfnetTable {
            vnet: cx.id,
            account: Arc::clone(cx.account),
            ifs: Vec::new(),
            next_index: 1,
            rng: ChaCha8Rng::seed_from_u64(cx.seed),
        };
        let lo = Ifnet {
            name: "lo0".into(),
            index: 0,
            mac: EthernetAddress([0; 6]),
            mtu: MAX_MTU,
            up: true,
            link: Link::Loopback,
            home: cx.id,
            stats: IfStats::default(),
            charge: Charge::none(Resource::Ifaces),
        };
        t.attach(lo);
        t
    }

    fn uninit(&mut self, _rest: &mut VnetVars, cx: &mut TeardownCx) {
        for mut ifp in self.ifs.drain(..) {
            if ifp.home == self.vnet || ifp.is_loopback() {
                drop(ifp);
                cx.report.interfaces_destroyed += 1;
                continue;
            }
            // Borrowed: give it back to its home vnet, once our lock is gone.
            if let Some(rx) = ifp.rx_wire() {
                rx.set_rx_owner(None);
            }
            ifp.up = false;
            let home = ifp.home;
            cx.defer(move |reg, report| {
                let back = match reg.get(home) {
                    Some(h) => adopt_into(&h, ifp),
                    None => Err(ifp),
                };
                match back {
                    Ok(_) => report.interfaces_returned += 1,
                    // Home is gone or has taken the name: the interface
                    // dies (dropping it kills its link).
                    Err(ifp) => {
                        drop(ifp);
                        report.interfaces_destroyed += 1;
                    }
                }
            });
        }
        self.ifs.shrink_to_fit();
    }
}

impl IfnetTable {
    /// The vnet this table belongs to.
    pub fn vnet(&self) -> VnetId {
        self.vnet
    }

    /// All interfaces, in index order.
    pub fn iter(&self) -> impl Iterator<Item = &Ifnet> {
        self.ifs.iter()
    }

    /// Mutable access to all interfaces.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Ifnet> {
        self.ifs.iter_mut()
    }

    /// The interface with this index.
    pub fn get(&self, index: IfIndex) -> Option<&Ifnet> {
        self.ifs.iter().find(|i| i.index == index)
    }

    /// The interface with this index, mutably.
    pub fn get_mut(&mut self, index: IfIndex) -> Option<&mut Ifnet> {
        self.ifs.iter_mut().find(|i| i.index == index)
    }

    /// The interface with this name.
    pub fn by_name(&self, name: &str) -> Option<&Ifnet> {
        self.ifs.iter().find(|i| i.name == name)
    }

    /// The index of the interface with this name.
    ///
    /// # Errors
    /// [`IfError::NoSuchInterface`].
    pub fn index_of(&self, name: &str) -> Result<IfIndex, IfError> {
        self.by_name(name)
            .map(|i| i.index)
            .ok_or_else(|| IfError::NoSuchInterface(name.to_string()))
    }

    fn attach(&mut self, mut ifp: Ifnet) -> IfIndex {
        ifp.index = self.next_index;
        self.next_index += 1;
        if let Some(rx) = ifp.rx_wire() {
            rx.set_rx_owner(Some(self.vnet));
        }
        let idx = ifp.index;
        self.ifs.push(ifp);
        idx
    }

    /// Takes in an interface coming home or moved here; refuses (handing it
    /// back) if its name is taken.
    // The refusal hands the interface itself back, so nothing is lost.
    #[allow(clippy::result_large_err)]
    fn adopt(&mut self, mut ifp: Ifnet) -> Result<IfIndex, Ifnet> {
        if self.by_name(&ifp.name).is_some() {
            return Err(ifp);
        }
        // Counted here now (a move checked the quota before; an interface
        // coming home is taken back whatever the quota says).
        ifp.charge = self.account.force(Resource::Ifaces, 1);
        Ok(self.attach(ifp))
    }

    fn detach(&mut self, index: IfIndex) -> Option<Ifnet> {
        let pos = self.ifs.iter().position(|i| i.index == index)?;
        let ifp = self.ifs.remove(pos);
        if let Some(rx) = ifp.rx_wire() {
            rx.set_rx_owner(None);
        }
        Some(ifp)
    }

    /// Makes a new interface of this vnet on `link`: down, MTU 1500, a
    /// random locally administered MAC address.
    fn create(&mut self, name: &str, link: Link) -> Result<IfIndex, IfError> {
        self.check_new_name(name)?;
        let charge = self.account.charge(Resource::Ifaces, 1)?;
        let ifp = Ifnet {
            charge,
            name: name.to_string(),
            index: 0,
            mac: self.new_mac(),
            mtu: 1500,
            up: false,
            link,
            home: self.vnet,
            stats: IfStats::default(),
        };
        Ok(self.attach(ifp))
    }

    fn new_mac(&mut self) -> EthernetAddress {
        let mut b = [0u8; 6];
        self.rng.fill_bytes(&mut b);
        b[0] = (b[0] & 0xfe) | 0x02; // unicast, locally administered
        EthernetAddress(b)
    }

    fn check_new_name(&self, name: &str) -> Result<(), IfError> {
        if !valid_ifname(name) {
            return Err(IfError::BadName(name.to_string()));
        }
        if self.by_name(name).is_some() {
            return Err(IfError::Exists(name.to_string()));
        }
        Ok(())
    }

    /// A snapshot of every interface.
    pub fn infos(&self) -> Vec<IfInfo> {
        self.ifs.iter().map(info).collect()
    }
}

fn info(i: &Ifnet) -> IfInfo {
    IfInfo {
        name: i.name.clone(),
        index: i.index,
        mac: i.mac,
        mtu: i.mtu,
        up: i.up,
        running: i.is_running(),
        kind: match i.link {
            Link::Loopback => "loopback",
            Link::Epair { .. } => "epair",
            Link::Tap { .. } => "tap",
            Link::Packet { .. } => "af_packet",
            Link::Uplink { .. } => "uplink",
            Link::Port { .. } => "port",
        },
        host: match &i.link {
            Link::Tap { dev, .. } | Link::Packet { dev, .. } => Some(dev.host().to_string()),
            Link::Port { sw, .. } => Some(sw.name().to_string()),
            Link::Uplink { switch, .. } => Some(switch.clone()),
            _ => None,
        },
        server: match &i.link {
            Link::Uplink { server, .. } => Some(server.clone()),
            _ => None,
        },
        link_id: match &i.link {
            Link::Epair { tx, rx } => (Arc::as_ptr(tx) as usize).min(Arc::as_ptr(rx) as usize),
            Link::Tap { tx, .. }
            | Link::Packet { tx, .. }
            | Link::Uplink { tx, .. }
            | Link::Port { tx, .. } => Arc::as_ptr(tx) as usize,
            Link::Loopback => 0,
        },
        home: i.home,
        stats: i.stats.clone(),
    }
}

/// Creates an epair: interface `a_name` in vnet `a` and `b_name` in vnet `b`
/// (which may be the same vnet), joined back to back, both down, MTU 1500.
///
/// # Errors
/// A bad or taken name in either vnet; nothing is created then.
pub fn epair(a: &Arc<Vnet>, a_name: &str, b: &Arc<Vnet>, b_name: &str) -> Result<(), IfError> {
    if Arc::ptr_eq(a, b) && a_name == b_name {
        return Err(IfError::Exists(b_name.to_string()));
    }
    let ab = Arc::new(Wire::new());
    let ba = Arc::new(Wire::new());
    let mk = |t: &mut IfnetTable, name: &str, tx: &Arc<Wire>, rx: &Arc<Wire>| {
        let link = Link::Epair {
            tx: Arc::clone(tx),
            rx: Arc::clone(rx),
        };
        t.create(name, link)
    };
    let a_idx = a.enter(|| vnet::with::<IfnetTable, _>(|t| mk(t, a_name, &ab, &ba)))??;
    let b_end = b
        .enter(|| vnet::with::<IfnetTable, _>(|t| mk(t, b_name, &ba, &ab)))
        .map_err(IfError::from)
        .and_then(|r| r);
    if let Err(e) = b_end {
        // Undo the first end so that nothing is half made.
        let _ = a.enter(|| vnet::with::<IfnetTable, _>(|t| t.detach(a_idx)));
        return Err(e);
    }
    Ok(())
}

/// Creates interface `name` in vnet `v`, joined to the Linux TAP device
/// `host` (created if absent, removed with the interface if we created it);
/// `io` is the driver's clock and waker. Returns the host-side name.
///
/// # Errors
/// A bad or taken name, or the host refusing the TAP (no privilege, a
/// non-TAP interface of that name).
pub fn tap(v: &Arc<Vnet>, name: &str, host: &str, io: HostIo) -> Result<String, IfError> {
    host_link(v, name, host, io, tap::start, |tx, rx, dev| Link::Tap {
        tx,
        rx,
        dev,
    })
}

/// Creates interface `name` in vnet `v`, attached through `AF_PACKET` (in
/// promiscuous mode) to the existing host interface `host`.
///
/// # Errors
/// A bad or taken name, or the host refusing (no such interface, no
/// privilege).
pub fn af_packet(v: &Arc<Vnet>, name: &str, host: &str, io: HostIo) -> Result<(), IfError> {
    host_link(v, name, host, io, packet::start, |tx, rx, dev| {
        Link::Packet { tx, rx, dev }
    })
    .map(|_| ())
}

/// Creates interface `name` in vnet `v` on a new port of switch `sw`
/// (`link add NAME type port switch SW`).
///
/// # Errors
/// A bad or taken name, or a destroyed switch; nothing is created then.
pub fn port(v: &Arc<Vnet>, name: &str, sw: &Arc<Switch>) -> Result<(), IfError> {
    v.enter(|| vnet::with::<IfnetTable, _>(|t| t.check_new_name(name)))??;
    let p = sw
        .add_port(PortKind::Vnet {
            ifname: name.to_string(),
        })
        .ok_or_else(|| IfError::NoSuchSwitch(sw.name().to_string()))?;
    let link = Link::Port {
        tx: Arc::clone(p.from_client()),
        rx: Arc::clone(p.to_client()),
        sw: Arc::clone(sw),
        port: p.id(),
    };
    let made: Result<IfIndex, IfError> =
        match v.enter(|| vnet::with::<IfnetTable, _>(|t| t.create(name, link))) {
            Ok(r) => r,
            Err(e) => Err(e.into()),
        };
    if let Err(e) = made {
        sw.remove_port(p.id());
        return Err(e);
    }
    Ok(())
}

/// Plugs a host device into switch `sw`: the TAP device `host` (created if
/// absent) or, with `packet`, the existing interface `host` through
/// `AF_PACKET`. Returns the port's number and the host-side name.
///
/// # Errors
/// The host refusing the device, or a destroyed switch.
pub fn host_port(
    sw: &Arc<Switch>,
    host: &str,
    packet: bool,
    io: HostIo,
) -> Result<(u32, String), IfError> {
    let kind = if packet {
        PortKind::Packet {
            host: host.to_string(),
        }
    } else {
        PortKind::Tap {
            host: host.to_string(),
        }
    };
    let p = sw
        .add_port(kind)
        .ok_or_else(|| IfError::NoSuchSwitch(sw.name().to_string()))?;
    let start: PumpStart = if packet { packet::start } else { tap::start };
    match start(
        host,
        Arc::clone(p.to_client()),
        Arc::clone(p.from_client()),
        io,
    ) {
        Ok(dev) => {
            let name = dev.host().to_string();
            p.set_dev(Arc::new(dev));
            Ok((p.id(), name))
        }
        Err(e) => {
            sw.remove_port(p.id());
            Err(IfError::Host(host.to_string(), e.to_string()))
        }
    }
}

/// Creates interface `name` in vnet `v` as an uplink: `sock` is this end
/// of a `SOCK_SEQPACKET` pair that another vnetd made a port of its switch
/// `switch` (its control socket is `server`), and `mac` the address it
/// assigned the port (its policy filter lets only that one out). `keep`
/// (the connection that asked for
/// the port) is held for the interface's life: the other side unplugs
/// the port when it closes.
///
/// # Errors
/// A bad or taken name, a quota, or the pump not starting.
pub fn uplink(
    v: &Arc<Vnet>,
    name: &str,
    sock: std::os::fd::OwnedFd,
    mac: [u8; 6],
    (switch, server, keep): (&str, &str, Keep),
    io: HostIo,
) -> Result<(), IfError> {
    v.enter(|| vnet::with::<IfnetTable, _>(|t| t.check_new_name(name)))??;
    let tx = Arc::new(Wire::new());
    let rx = Arc::new(Wire::new());
    let dev = uplink::start(
        sock,
        format!("uplink-{name}"),
        Arc::clone(&tx),
        Arc::clone(&rx),
        io,
    )
    .map_err(|e| IfError::Host(switch.to_string(), e.to_string()))?;
    let link = Link::Uplink {
        tx,
        rx,
        dev: Arc::new(dev),
        switch: switch.to_string(),
        server: server.to_string(),
        keep,
    };
    v.enter(|| {
        vnet::with::<IfnetTable, _>(|t| {
            let idx = t.create(name, link)?;
            if let Some(i) = t.get_mut(idx) {
                i.mac = EthernetAddress(mac);
            }
            Ok::<_, IfError>(())
        })
    })??;
    Ok(())
}

/// Plugs `sock` (one end of a `SOCK_SEQPACKET` pair, one frame per
/// message) into switch `sw` as a port of kind `kind` ([`PortKind::Remote`]
/// for another vnetd's uplink). Returns the port.
///
/// # Errors
/// A destroyed switch, or the pump not starting.
pub fn socket_port(
    sw: &Arc<Switch>,
    sock: std::os::fd::OwnedFd,
    kind: PortKind,
    io: HostIo,
) -> Result<Arc<switch::Port>, IfError> {
    let p = sw
        .add_port(kind)
        .ok_or_else(|| IfError::NoSuchSwitch(sw.name().to_string()))?;
    match uplink::start(
        sock,
        format!("{}-{}", sw.name(), p.id()),
        Arc::clone(p.to_client()),
        Arc::clone(p.from_client()),
        io,
    ) {
        Ok(dev) => {
            p.set_dev(Arc::new(dev));
            Ok(p)
        }
        Err(e) => {
            sw.remove_port(p.id());
            Err(IfError::Host(sw.name().to_string(), e.to_string()))
        }
    }
}

type PumpStart = fn(&str, Arc<Wire>, Arc<Wire>, HostIo) -> std::io::Result<tap::TapHandle>;

/// Opens a host device with `start` and attaches it as interface `name` of
/// `v`; returns the host-side name.
fn host_link(
    v: &Arc<Vnet>,
    name: &str,
    host: &str,
    io: HostIo,
    start: PumpStart,
    link: fn(Arc<Wire>, Arc<Wire>, Arc<tap::TapHandle>) -> Link,
) -> Result<String, IfError> {
    v.enter(|| vnet::with::<IfnetTable, _>(|t| t.check_new_name(name)))??;
    let tx = Arc::new(Wire::new());
    let rx = Arc::new(Wire::new());
    let dev = start(host, Arc::clone(&tx), Arc::clone(&rx), io)
        .map_err(|e| IfError::Host(host.to_string(), e.to_string()))?;
    let host_name = dev.host().to_string();
    let link = link(tx, rx, Arc::new(dev));
    v.enter(|| vnet::with::<IfnetTable, _>(|t| t.create(name, link).map(|_| ())))??;
    Ok(host_name)
}

/// Runs `f` on the named interface of the current vnet.
///
/// # Errors
/// No current vnet, or no such interface.
pub fn with_ifnet<R>(name: &str, f: impl FnOnce(&mut Ifnet) -> R) -> Result<R, IfError> {
    vnet::with::<IfnetTable, _>(|t| {
        t.ifs
            .iter_mut()
            .find(|i| i.name == name)
            .map(f)
            .ok_or_else(|| IfError::NoSuchInterface(name.to_string()))
    })?
}

/// Sets an interface of the current vnet up or down.
///
/// # Errors
/// No current vnet, or no such interface.
pub fn set_up(name: &str, up: bool) -> Result<(), IfError> {
    with_ifnet(name, |i| i.up = up)
}

/// Sets an interface's MTU.
///
/// # Errors
/// No such interface, or an MTU out of range (nothing changes).
pub fn set_mtu(name: &str, mtu: usize) -> Result<(), IfError> {
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(IfError::BadMtu(mtu));
    }
    with_ifnet(name, |i| {
        i.mtu = mtu;
        if let Link::Tap { dev, .. } = &i.link {
            dev.set_mtu(mtu);
        }
    })
}

/// A snapshot of the current vnet's interfaces.
///
/// # Errors
/// No current vnet.
pub fn list() -> Result<Vec<IfInfo>, IfError> {
    Ok(vnet::with::<IfnetTable, _>(|t| t.infos())?)
}

/// Adds a stage (impairment, filter, capture) to the wire an interface of
/// the current vnet sends on.
///
/// # Errors
/// No such interface or it has no wire (the loopback).
pub fn push_tx_stage(name: &str, stage: Box<dyn LinkStage>) -> Result<(), IfError> {
    with_ifnet(name, |i| i.tx_wire().cloned())?
        .ok_or_else(|| IfError::NoSuchInterface(name.to_string()))?
        .push_stage(stage);
    Ok(())
}

/// Moves interface `name` from vnet `from` to vnet `to` (`if_vmove`); it
/// arrives down, with no addresses, under the same name.
///
/// # Errors
/// No such interface, the loopback, the name taken in `to`, or the same vnet.
/// On error the interface stays where it was.
#[allow(clippy::result_large_err)]
pub fn vmove(from: &Arc<Vnet>, name: &str, to: &Arc<Vnet>) -> Result<(), IfError> {
    if Arc::ptr_eq(from, to) {
        return Err(IfError::SameVnet(name.to_string()));
    }
    from.enter(|| {
        vnet::with::<IfnetTable, _>(|t| match t.by_name(name) {
            None => Err(IfError::NoSuchInterface(name.to_string())),
            Some(i) if i.is_loopback() => Err(IfError::Loopback),
            Some(_) => Ok(()),
        })
    })??;
    to.enter(|| {
        vnet::with::<IfnetTable, _>(|t| {
            if t.by_name(name).is_some() {
                Err(IfError::Exists(name.to_string()))
            } else {
                Ok(())
            }
        })
    })??;
    // Room in the target's quota, held until the interface is counted there.
    let _room = to.account().charge(Resource::Ifaces, 1)?;
    let mut ifp = from.enter(|| take_out(name))?;
    ifp.up = false;
    if let Err(ifp) = adopt_into(to, ifp) {
        // The target went away or took the name meanwhile: put it back.
        let _ = adopt_into(from, ifp);
        return Err(if to.state() == crate::vnet::VnetState::Active {
            IfError::Exists(name.to_string())
        } else {
            IfError::Vnet(CurVnetError::Destroyed(to.id()))
        });
    }
    log::debug!(
        "interface {name} moved from vnet {} to {}",
        from.id(),
        to.id()
    );
    Ok(())
}

/// Destroys an interface of the current vnet (its link goes down for the far
/// end); the stack forgets its addresses, routes and neighbors.
///
/// # Errors
/// No such interface, or the loopback.
pub fn destroy(name: &str) -> Result<(), IfError> {
    // Dropping the interface takes its link down.
    take_out(name).map(drop)
}

/// Takes interface `name` out of the current vnet; its stack forgets the
/// interface's addresses, routes and neighbors.
///
/// # Errors
/// No such interface, or the loopback.
fn take_out(name: &str) -> Result<Ifnet, IfError> {
    vnet::with_vars(|vars| -> Result<Ifnet, IfError> {
        let (t, inet) = vars
            .get2_mut::<IfnetTable, crate::stack::Inet>()
            .ok_or(CurVnetError::NoSubsystem("inet"))?;
        let idx = t.index_of(name)?;
        if t.get(idx).is_some_and(Ifnet::is_loopback) {
            return Err(IfError::Loopback);
        }
        inet.forget_interface(idx);
        Ok(t.detach(idx).expect("index just found"))
    })?
}

/// Attaches an interface to vnet `v`; hands it back if it could not be
/// placed (the vnet is gone, or the name is taken there).
#[allow(clippy::result_large_err)]
fn adopt_into(v: &Arc<Vnet>, ifp: Ifnet) -> Result<IfIndex, Ifnet> {
    let mut slot = Some(ifp);
    let placed = v.enter(|| {
        vnet::with::<IfnetTable, _>(|t| match slot.take() {
            Some(ifp) => t.adopt(ifp).map_err(|ifp| slot = Some(ifp)).ok(),
            None => None,
        })
    });
    match (placed, slot) {
        (Ok(Some(idx)), _) => Ok(idx),
        (_, Some(ifp)) => Err(ifp),
        (_, None) => unreachable!("an interface not placed is handed back"),
    }
}
