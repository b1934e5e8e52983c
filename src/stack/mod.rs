//! One TCP/IP stack per vnet, sans-IO.
//!
//! The stack of a vnet is the [`Inet`] subsystem. It is built from smoltcp
//! for the transport layer and our own code for everything a host with
//! several interfaces needs and smoltcp lacks:
//!
//! - **One smoltcp `Interface` per vnet, on a routing device.** smoltcp sees
//!   one IP-medium device ([`device::RoutingDevice`]). What its sockets send
//!   is routed by *our* table ([`route`]): longest-prefix match to an
//!   interface and next hop, then neighbor resolution ([`neighbor`]: ARP and
//!   IPv6 ND) and Ethernet framing onto the interface's wire. What arrives
//!   on any interface is checked, answered (ARP, ND), forwarded, or queued
//!   for smoltcp. The alternative, one smoltcp `Interface` per interface,
//!   was rejected: smoltcp egresses every socket through whichever interface
//!   is polled, with no route choice between them.
//! - **Forwarding** ([`forward`]) between a vnet's interfaces when
//!   `net.inet.ip.forwarding` (or the IPv6 twin) is on: TTL/hop-limit
//!   decrement, ICMP time-exceeded, unreachable and too-big errors.
//! - **Port tables** ([`ports`]) with `EADDRINUSE`, `SO_REUSEADDR` and
//!   ephemeral ports, a **listen backlog** of N pending connections, and a
//!   socket API ([`socket`]) that reports errors as a host would.
//! - **A firewall** ([`firewall`]) per vnet: ordered rules on the input,
//!   output and forwarding paths, with connection tracking.
//! - **Tunables** ([`sysctl`]) and **counters** ([`stats`]) per vnet.
//! - **MSS clamping**: smoltcp's device MTU is 65535 so that loopback and
//!   jumbo links run at full size; a TCP SYN leaving or entering through an
//!   interface has its MSS option lowered to fit that interface's MTU.
//!
//! Nothing here reads a clock or touches a descriptor: [`poll`] is given the
//! time, takes frames from the interfaces' wires, runs smoltcp, puts frames
//! on wires, and says when it next needs to run and which vnets it sent to.

pub mod device;
pub mod firewall;
mod forward;
mod input;
pub mod neighbor;
mod output;
pub mod ports;
pub mod reassembly;
pub mod route;
pub mod socket;
pub mod stats;
pub mod sysctl;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr, Ipv6Address,
    Ipv6Cidr,
};

use crate::ifnet::{IfError, IfIndex, IfnetTable};
use crate::vnet::{
    self, CurVnetError, InitCx, PerVnet, SysInitOrder, TeardownCx, VnetId, VnetVars,
};

use device::{Pkt, RoutingDevice};
use neighbor::NeighborCache;
use ports::PortTable;
use route::{Route, RouteKind, RouteTable};
use socket::SockTable;
use stats::InetStats;
use sysctl::Tunables;

/// An address configured on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    /// The interface.
    pub ifindex: IfIndex,
    /// Address and prefix length.
    pub cidr: IpCidr,
}

/// The IP stack of one vnet (a per-vnet subsystem).
pub struct Inet {
    vnet: VnetId,
    iface: Interface,
    dev: RoutingDevice,
    sockets: SocketSet<'static>,
    routes: RouteTable,
    addrs: Vec<IfAddr>,
    nbr: NeighborCache,
    ports: PortTable,
    socks: SockTable,
    /// Tunables of this vnet.
    pub tunables: Tunables,
    /// Counters of this vnet.
    pub stats: InetStats,
    now: Instant,
    rng: ChaCha8Rng,
    wake: Vec<(VnetId, Instant)>,
    next_arrival: Option<Instant>,
    frag_ident: u16,
    reasm: reassembly::Reassembly,
    fw: firewall::Firewall,
}

impl std::fmt::Debug for Inet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inet")
            .field("vnet", &self.vnet)
            .field("addrs", &self.addrs)
            .field("routes", &self.routes.len())
            .finish()
    }
}

/// Rounds of (smoltcp, routing) per poll before yielding with "poll again now".
const MAX_ROUNDS: usize = 64;

impl PerVnet for Inet {
    const NAME: &'static str = "inet";
    const ORDER: SysInitOrder = SysInitOrder::INET;

    fn init(cx: &mut InitCx<'_>) -> Self {
        let mut dev = RoutingDevice::default();
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = cx.seed;
        let now = Instant::ZERO;
        let mut iface = Interface::new(config, &mut dev, now);
        // Our IP input decides what is local; smoltcp takes what it is given.
        iface.set_any_ip(true);
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Address::new(0, 0, 0, 1));
        let _ = iface
            .routes_mut()
            .add_default_ipv6_route(Ipv6Address::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
        let mut inet = Inet {
            vnet: cx.id,
            iface,
            dev,
            sockets: SocketSet::new(Vec::new()),
            routes: RouteTable::default(),
            addrs: Vec::new(),
            nbr: NeighborCache::default(),
            ports: PortTable::default(),
            socks: SockTable::charged_to(std::sync::Arc::clone(cx.account)),
            tunables: Tunables::default(),
            stats: InetStats::default(),
            now,
            rng: ChaCha8Rng::seed_from_u64(cx.seed ^ 0x1e7),
            wake: Vec::new(),
            next_arrival: None,
            frag_ident: 0,
            reasm: reassembly::Reassembly::default(),
            fw: firewall::Firewall::new(
                ChaCha8Rng::seed_from_u64(cx.seed ^ 0xf12e_3a11).next_u64(),
            ),
        };
        let lo = cx
            .vars
            .get_mut::<IfnetTable>()
            .and_then(|t| t.by_name("lo0").map(|i| i.index()));
        if let Some(lo) = lo {
            let v4 = IpCidr::Ipv4(Ipv4Cidr::new(Ipv4Address::LOCALHOST, 8));
            let v6 = IpCidr::Ipv6(Ipv6Cidr::new(Ipv6Address::LOCALHOST, 128));
            for cidr in [v4, v6] {
                let _ = inet.add_addr(lo, cidr);
            }
        }
        inet
    }

    fn uninit(&mut self, rest: &mut VnetVars, cx: &mut TeardownCx) {
        let (sockets, resets) = self.abort_all();
        cx.report.sockets_closed += sockets;
        cx.report.connections_reset += resets;
        // Let the resets out while the interfaces still exist.
        if let Some(ifs) = rest.get_mut::<IfnetTable>() {
            let now = self.now;
            let out = self.poll(ifs, now);
            for (v, _) in out.wake {
                if !cx.report.wake.contains(&v) {
                    cx.report.wake.push(v);
                }
            }
        }
        cx.report.addresses_removed += self.addrs.len();
        cx.report.routes_removed += self.routes.len();
        cx.report.neighbors_flushed += self.nbr.clear();
    }
}

/// What one [`poll`] of a vnet produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollOutcome {
    /// When the vnet needs polling again at the latest (`None`: only when a
    /// frame or a call arrives).
    pub deadline: Option<Instant>,
    /// Vnets that were sent frames, and when the first becomes deliverable.
    pub wake: Vec<(VnetId, Instant)>,
    /// Packets were handed to this vnet's sockets: whoever reads them (the
    /// socket server's pump) has something to do.
    pub delivered: bool,
}

/// Why an address or route change was refused. Nothing changed when one is
/// returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Interface trouble (unknown name, no vnet).
    #[error(transparent)]
    If(#[from] IfError),
    /// Addresses go on interfaces that are up.
    #[error("interface {0:?} is down; set it up before adding addresses")]
    InterfaceDown(String),
    /// Not a usable unicast address.
    #[error("{0}: not a usable unicast address")]
    BadAddress(IpCidr),
    /// A prefix longer than the family allows or host bits in a route.
    #[error("{0}: invalid prefix")]
    BadPrefix(String),
    /// The address is already configured in this vnet.
    #[error("address {0} already exists in this vnet")]
    AddrExists(IpAddress),
    /// No such address on that interface.
    #[error("address {0} is not on interface {1:?}")]
    NoSuchAddr(IpCidr, String),
    /// A route for that prefix exists.
    #[error("route to {0} already exists")]
    RouteExists(IpCidr),
    /// No route for that prefix.
    #[error("no route to {0}")]
    NoSuchRoute(IpCidr),
    /// The gateway is not on any connected prefix (of the given interface).
    #[error("gateway {0} is unreachable: it is not on a connected network")]
    GatewayUnreachable(IpAddress),
    /// A route needs a gateway or an interface.
    #[error("a route needs a gateway or an interface")]
    NeedGatewayOrDev,
    /// Gateway and prefix of different families.
    #[error("gateway {0} and prefix {1} are of different families")]
    FamilyMismatch(IpAddress, IpCidr),
    /// The vnet could not be entered.
    #[error(transparent)]
    Vnet(#[from] CurVnetError),
}

fn usable_unicast(a: IpAddress) -> bool {
    match a {
        IpAddress::Ipv4(a) => !a.is_unspecified() && !a.is_broadcast() && !a.is_multicast(),
        IpAddress::Ipv6(a) => !a.is_unspecified() && !a.is_multicast(),
    }
}

impl Inet {
    /// The vnet this stack belongs to.
    pub fn vnet(&self) -> VnetId {
        self.vnet
    }

    /// The time of the last poll.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Whether `a` is one of this vnet's addresses.
    pub fn is_local(&self, a: IpAddress) -> bool {
        self.addrs.iter().any(|x| x.cidr.address() == a)
    }

    fn is_loopback_dst(a: IpAddress) -> bool {
        match a {
            IpAddress::Ipv4(a) => a.is_loopback(),
            IpAddress::Ipv6(a) => a.is_loopback(),
        }
    }

    /// The address to send from towards `dst` out of `ifindex`: one of that
    /// interface's addresses in the same family, preferring one whose prefix
    /// holds `dst`.
    pub fn source_for(&self, ifindex: IfIndex, dst: IpAddress) -> Option<IpAddress> {
        let same_family = |c: &IpCidr| {
            matches!(
                (c.address(), dst),
                (IpAddress::Ipv4(_), IpAddress::Ipv4(_)) | (IpAddress::Ipv6(_), IpAddress::Ipv6(_))
            )
        };
        let on_if = self
            .addrs
            .iter()
            .filter(|a| a.ifindex == ifindex && same_family(&a.cidr));
        on_if
            .clone()
            .find(|a| a.cidr.contains_addr(&dst))
            .or_else(|| on_if.clone().next())
            .or_else(|| {
                self.addrs
                    .iter()
                    .find(|a| same_family(&a.cidr) && !Self::is_loopback_dst(a.cidr.address()))
            })
            .map(|a| a.cidr.address())
    }

    /// Gives smoltcp the addresses it chooses sources from (for sockets
    /// that do not name one): loopback ones last, so that the fallback
    /// "first address of the family" is a routable one.
    fn sync_smoltcp_addrs(&mut self) {
        let mut addrs: Vec<IpCidr> = self.addrs.iter().map(|a| a.cidr).collect();
        addrs.sort_by_key(|c| Self::is_loopback_dst(c.address()));
        self.iface.update_ip_addrs(|v| {
            v.clear();
            for c in addrs.into_iter().take(v.capacity()) {
                let _ = v.push(c);
            }
        });
    }

    fn add_addr(&mut self, ifindex: IfIndex, cidr: IpCidr) -> Result<(), ConfigError> {
        if !usable_unicast(cidr.address()) {
            return Err(ConfigError::BadAddress(cidr));
        }
        if self.is_local(cidr.address()) {
            return Err(ConfigError::AddrExists(cidr.address()));
        }
        self.addrs.push(IfAddr { ifindex, cidr });
        let host = matches!(cidr, IpCidr::Ipv4(c) if c.prefix_len() == 32)
            || matches!(cidr, IpCidr::Ipv6(c) if c.prefix_len() == 128);
        if !host && self.routes.get(cidr).is_none() {
            self.routes.insert(Route {
                dst: route::network(cidr),
                gateway: None,
                ifindex,
                kind: RouteKind::Connected,
            });
        }
        self.sync_smoltcp_addrs();
        Ok(())
    }

    fn del_addr(&mut self, ifindex: IfIndex, cidr: IpCidr) -> bool {
        let before = self.addrs.len();
        self.addrs
            .retain(|a| !(a.ifindex == ifindex && a.cidr.address() == cidr.address()));
        if self.addrs.len() == before {
            return false;
        }
        self.prune_routes();
        self.ensure_connected_routes();
        self.sync_smoltcp_addrs();
        true
    }

    /// Gives every address whose prefix has no route its connected route
    /// back (another interface may share the prefix of a removed address).
    fn ensure_connected_routes(&mut self) {
        for a in self.addrs.clone() {
            let host = matches!(a.cidr, IpCidr::Ipv4(c) if c.prefix_len() == 32)
                || matches!(a.cidr, IpCidr::Ipv6(c) if c.prefix_len() == 128);
            if !host && self.routes.get(a.cidr).is_none() {
                self.routes.insert(Route {
                    dst: route::network(a.cidr),
                    gateway: None,
                    ifindex: a.ifindex,
                    kind: RouteKind::Connected,
                });
            }
        }
    }

    /// Drops connected routes no address backs any more, and static routes
    /// whose gateway is no longer on a connected network of their interface.
    fn prune_routes(&mut self) -> usize {
        let addrs = self.addrs.clone();
        let connected: Vec<Route> = self
            .routes
            .routes()
            .into_iter()
            .filter(|r| {
                r.kind == RouteKind::Connected
                    && addrs
                        .iter()
                        .any(|a| a.ifindex == r.ifindex && route::network(a.cidr) == r.dst)
            })
            .collect();
        self.routes.retain(|r| match r.kind {
            RouteKind::Connected => connected.contains(r),
            RouteKind::Static => match r.gateway {
                None => true,
                Some(gw) => connected
                    .iter()
                    .any(|c| c.ifindex == r.ifindex && c.dst.contains_addr(&gw)),
            },
        })
    }

    /// Forgets everything layer 3 knows of an interface that is leaving this
    /// vnet: its addresses, routes through it, its neighbors.
    pub(crate) fn forget_interface(&mut self, ifindex: IfIndex) {
        self.addrs.retain(|a| a.ifindex != ifindex);
        self.routes.retain(|r| r.ifindex != ifindex);
        self.prune_routes();
        self.nbr.purge_if(ifindex);
        self.sync_smoltcp_addrs();
    }

    /// Runs the stack at time `now`: input from every interface, smoltcp,
    /// routing and output, timers.
    pub fn poll(&mut self, ifs: &mut IfnetTable, now: Instant) -> PollOutcome {
        self.now = now;
        self.next_arrival = None;
        self.input_all(ifs);
        self.iface.poll_maintenance(now);
        let mut rounds = 0;
        let mut delivered = false;
        loop {
            delivered |= !self.dev.rx.is_empty();
            self.ingress();
            while self
                .iface
                .poll_egress(now, &mut self.dev, &mut self.sockets)
                != smoltcp::iface::PollResult::None
            {}
            self.route_tx(ifs);
            self.socket_maintenance();
            rounds += 1;
            if self.dev.rx.is_empty() || rounds >= MAX_ROUNDS {
                break;
            }
        }
        self.neighbor_timers(ifs);
        self.stats.ip_reasm_fails += self.reasm.expire(now) as u64;
        self.fw.tick(now);
        let mut deadline = self.iface.poll_at(now, &self.sockets);
        let mut fold = |d: Option<Instant>| {
            deadline = match (deadline, d) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        if !self.dev.rx.is_empty() || !self.dev.tx.is_empty() {
            fold(Some(now));
        }
        fold(self.nbr.next_deadline());
        fold(self.next_arrival);
        fold(self.socks.next_deadline());
        fold(self.reasm.next_deadline());
        PollOutcome {
            deadline,
            wake: std::mem::take(&mut self.wake),
            delivered,
        }
    }

    fn note_wake(&mut self, v: VnetId, at: Instant) {
        match self.wake.iter_mut().find(|(w, _)| *w == v) {
            Some((_, t)) => *t = (*t).min(at),
            None => self.wake.push((v, at)),
        }
    }

    fn route_tx(&mut self, ifs: &mut IfnetTable) {
        while let Some(p) = self.dev.tx.pop_front() {
            self.stats.ip_out += 1;
            self.ip_output(ifs, p, output::Origin::Local);
        }
    }
}

fn with_stack<R>(
    f: impl FnOnce(&mut IfnetTable, &mut Inet) -> Result<R, ConfigError>,
) -> Result<R, ConfigError> {
    vnet::with_vars(|vars| {
        let (ifs, inet) = vars
            .get2_mut::<IfnetTable, Inet>()
            .ok_or(CurVnetError::NoSubsystem(Inet::NAME))?;
        f(ifs, inet)
    })?
}

/// Polls the current vnet's stack at `now` (see [`Inet::poll`]).
///
/// # Errors
/// No current vnet, or it was destroyed.
pub fn poll(now: Instant) -> Result<PollOutcome, CurVnetError> {
    vnet::with_vars(|vars| {
        let (ifs, inet) = vars
            .get2_mut::<IfnetTable, Inet>()
            .ok_or(CurVnetError::NoSubsystem(Inet::NAME))?;
        Ok(inet.poll(ifs, now))
    })?
}

/// Adds an address to an interface of the current vnet; a prefix shorter
/// than the host length also adds its connected route.
///
/// # Errors
/// See [`ConfigError`]; nothing changes on error.
pub fn addr_add(ifname: &str, cidr: IpCidr) -> Result<(), ConfigError> {
    with_stack(|ifs, inet| {
        let ifp = ifs
            .by_name(ifname)
            .ok_or_else(|| IfError::NoSuchInterface(ifname.to_string()))?;
        if !ifp.is_up() {
            return Err(ConfigError::InterfaceDown(ifname.to_string()));
        }
        inet.add_addr(ifp.index(), cidr)
    })
}

/// Removes an address (and what depended on it) from an interface.
///
/// # Errors
/// No such interface or address.
pub fn addr_del(ifname: &str, cidr: IpCidr) -> Result<(), ConfigError> {
    with_stack(|ifs, inet| {
        let idx = ifs.index_of(ifname)?;
        if inet.del_addr(idx, cidr) {
            Ok(())
        } else {
            Err(ConfigError::NoSuchAddr(cidr, ifname.to_string()))
        }
    })
}

/// The addresses of the current vnet: (interface name, address/prefix).
///
/// # Errors
/// No current vnet.
pub fn addrs() -> Result<Vec<(String, IpCidr)>, ConfigError> {
    with_stack(|ifs, inet| {
        Ok(inet
            .addrs
            .iter()
            .map(|a| {
                let name = ifs.get(a.ifindex).map_or("?", |i| i.name()).to_string();
                (name, a.cidr)
            })
            .collect())
    })
}

/// Adds a route to `dst` via `gateway` and/or out of interface `dev`. A
/// gateway must be on a connected network (of `dev`, if given).
///
/// # Errors
/// See [`ConfigError`]; nothing changes on error.
pub fn route_add(
    dst: IpCidr,
    gateway: Option<IpAddress>,
    dev: Option<&str>,
) -> Result<(), ConfigError> {
    with_stack(|ifs, inet| {
        let dev_idx = dev.map(|d| ifs.index_of(d)).transpose()?;
        if let Some(gw) = gateway {
            let same = matches!(
                (gw, dst),
                (IpAddress::Ipv4(_), IpCidr::Ipv4(_)) | (IpAddress::Ipv6(_), IpCidr::Ipv6(_))
            );
            if !same {
                return Err(ConfigError::FamilyMismatch(gw, dst));
            }
        }
        if inet.routes.get(dst).is_some() {
            return Err(ConfigError::RouteExists(route::network(dst)));
        }
        let ifindex = match (gateway, dev_idx) {
            (Some(gw), idx) => {
                let on_link = inet
                    .routes
                    .routes()
                    .into_iter()
                    .filter(|r| {
                        r.kind == RouteKind::Connected && idx.is_none_or(|i| i == r.ifindex)
                    })
                    .filter(|r| r.dst.contains_addr(&gw))
                    .max_by_key(|r| r.dst.prefix_len());
                on_link.ok_or(ConfigError::GatewayUnreachable(gw))?.ifindex
            }
            (None, Some(i)) => i,
            (None, None) => return Err(ConfigError::NeedGatewayOrDev),
        };
        inet.routes.insert(Route {
            dst: route::network(dst),
            gateway,
            ifindex,
            kind: RouteKind::Static,
        });
        Ok(())
    })
}

/// Removes the route for exactly `dst`.
///
/// # Errors
/// No such route.
pub fn route_del(dst: IpCidr) -> Result<(), ConfigError> {
    with_stack(|_, inet| {
        let removed = inet
            .routes
            .remove(dst)
            .ok_or(ConfigError::NoSuchRoute(route::network(dst)))?;
        // Removing a static route that shadowed an address's own prefix
        // brings the connected route back.
        if removed.kind == RouteKind::Static {
            inet.ensure_connected_routes();
        }
        Ok(())
    })
}

/// A route as listed: prefix, gateway, interface name, origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// Destination prefix.
    pub dst: IpCidr,
    /// Next hop, if not on-link.
    pub gateway: Option<IpAddress>,
    /// Outgoing interface name.
    pub dev: String,
    /// Origin.
    pub kind: RouteKind,
}

/// The current vnet's routes.
///
/// # Errors
/// No current vnet.
pub fn routes() -> Result<Vec<RouteInfo>, ConfigError> {
    with_stack(|ifs, inet| {
        Ok(inet
            .routes
            .routes()
            .into_iter()
            .map(|r| RouteInfo {
                dst: r.dst,
                gateway: r.gateway,
                dev: ifs.get(r.ifindex).map_or("?", |i| i.name()).to_string(),
                kind: r.kind,
            })
            .collect())
    })
}

/// The current vnet's resolved neighbors: (interface, address, MAC).
///
/// # Errors
/// No current vnet.
pub fn neighbors() -> Result<Vec<(String, IpAddress, EthernetAddress)>, ConfigError> {
    with_stack(|ifs, inet| {
        Ok(inet
            .nbr
            .entries()
            .into_iter()
            .map(|(i, a, m)| (ifs.get(i).map_or("?", |i| i.name()).to_string(), a, m))
            .collect())
    })
}

/// The current vnet's counters.
///
/// # Errors
/// No current vnet.
pub fn stats() -> Result<InetStats, CurVnetError> {
    vnet::with::<Inet, _>(|i| i.stats.clone())
}

/// Default neighbor lifetime as a `Duration`.
fn max_age(t: &Tunables) -> Duration {
    Duration::from_secs(t.neighbor_max_age_s)
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Inet>();
    is_send::<Pkt>();
}
