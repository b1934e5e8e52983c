//! The control server: carries out requests on a registry of vnets run by a
//! real-time driver, after checking that the caller may.
//!
//! [`Server::handle`] is the whole request path and touches no socket, so it
//! is tested directly; [`Server::serve`] adds the Unix-socket transport: one
//! thread per client, each request answered in order, a bad request answered
//! with an error and the connection kept, a broken frame answered (when
//! possible) and the connection closed. No client can stop the others.

use std::io::{BufReader, BufWriter, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use smoltcp::wire::{IpAddress, IpCidr};

use super::proto::{self, ErrorBody, ErrorKind, FrameError, Op, Outcome, Reply, Request, VERSION};
use super::topology;
use crate::driver::realtime::Realtime;
use crate::ifnet::{self, IfError};
use crate::sockets::dns::{self, Resolv};
use crate::stack::firewall::{self, FwError};
use crate::stack::route::RouteKind;
use crate::stack::sysctl::{self, SysctlError};
use crate::stack::{self, ConfigError};
use crate::vnet::{Registry, RegistryError, Vnet, VnetId};

/// Writes a success reply to request `id` on `conn`.
pub(super) fn write_ok(mut conn: &UnixStream, id: u64, v: Value) -> std::io::Result<()> {
    let reply = Reply {
        v: VERSION,
        id,
        outcome: Outcome::Ok(v),
    };
    proto::write_frame(&mut conn, &serde_json::to_vec(&reply).unwrap_or_default())?;
    conn.flush()
}

/// Most clients of users other than root served at once; more are told so
/// and closed. Root is always served.
pub const MAX_CLIENTS: usize = 256;

/// Most connections one user other than root may hold at once.
pub const MAX_CLIENTS_PER_USER: usize = 32;

/// A client slot, given back on drop.
struct Slot<'a> {
    server: &'a Server,
    uid: u32,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.server.clients.fetch_sub(1, Ordering::SeqCst);
        let mut per = self
            .server
            .per_uid
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per.remove(&self.uid);
            }
        }
    }
}

pub(super) fn err(kind: ErrorKind, message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        kind,
        message: message.into(),
    }
}

fn reg_err(e: RegistryError) -> ErrorBody {
    let kind = match e {
        RegistryError::NoSuchVnet(_) => ErrorKind::NotFound,
        RegistryError::Exists(_) => ErrorKind::Exists,
        RegistryError::HasChildren { .. } | RegistryError::InUse(_) | RegistryError::Dying(_) => {
            ErrorKind::Busy
        }
        RegistryError::BadName(_) | RegistryError::Vnet0 | RegistryError::IdsExhausted => {
            ErrorKind::Invalid
        }
        RegistryError::Quota(_) => ErrorKind::Quota,
    };
    err(kind, e.to_string())
}

pub(super) fn if_err(vnet: &str, e: IfError) -> ErrorBody {
    let kind = match e {
        IfError::NoSuchInterface(_) | IfError::Vnet(_) => ErrorKind::NotFound,
        IfError::Exists(_) => ErrorKind::Exists,
        IfError::Quota(_) => ErrorKind::Quota,
        _ => ErrorKind::Invalid,
    };
    err(kind, format!("vnet {vnet:?}: {e}"))
}

fn cfg_err(vnet: &str, e: ConfigError) -> ErrorBody {
    match e {
        ConfigError::If(e) => if_err(vnet, e),
        e => {
            let kind = match e {
                ConfigError::NoSuchAddr(..)
                | ConfigError::NoSuchRoute(_)
                | ConfigError::Vnet(_) => ErrorKind::NotFound,
                ConfigError::AddrExists(_) | ConfigError::RouteExists(_) => ErrorKind::Exists,
                _ => ErrorKind::Invalid,
            };
            err(kind, format!("vnet {vnet:?}: {e}"))
        }
    }
}

fn sysctl_err(vnet: &str, e: SysctlError) -> ErrorBody {
    let kind = match e {
        SysctlError::Unknown(_) | SysctlError::Vnet(_) => ErrorKind::NotFound,
        SysctlError::BadValue { .. } => ErrorKind::Invalid,
    };
    err(kind, format!("vnet {vnet:?}: {e}"))
}

fn fw_err(vnet: &str, e: FwError) -> ErrorBody {
    let kind = match e {
        FwError::NoSuchRule(_) | FwError::Vnet(_) => ErrorKind::NotFound,
        FwError::Exists(_) => ErrorKind::Exists,
        FwError::BadRule { .. } | FwError::NoNumberLeft(_) => ErrorKind::Invalid,
    };
    err(kind, format!("vnet {vnet:?}: {e}"))
}

fn parse_cidr(s: &str) -> Result<IpCidr, ErrorBody> {
    s.parse::<IpCidr>().map_err(|_| {
        err(
            ErrorKind::Invalid,
            format!("{s:?} is not an address with a prefix length (10.0.0.1/24, fd00::1/64)"),
        )
    })
}

fn parse_ip(s: &str) -> Result<IpAddress, ErrorBody> {
    s.parse::<IpAddress>()
        .map_err(|_| err(ErrorKind::Invalid, format!("{s:?} is not an IP address")))
}

/// A route destination: a prefix, or `default` (IPv4, or IPv6 when the
/// gateway is) / `default6`.
fn parse_dst(s: &str, via: Option<IpAddress>) -> Result<IpCidr, ErrorBody> {
    match s {
        "default" if matches!(via, Some(IpAddress::Ipv6(_))) => Ok(stack::route::DEFAULT_V6),
        "default" => Ok(stack::route::DEFAULT_V4),
        "default6" => Ok(stack::route::DEFAULT_V6),
        _ => parse_cidr(s),
    }
}

/// The control server of one vnetd.
pub struct Server {
    reg: Arc<Registry>,
    rt: Mutex<Realtime>,
    /// The user vnetd runs as: it administers this server as root does (an
    /// unprivileged user's own vnetd is theirs to run).
    admin: u32,
    clients: AtomicUsize,
    per_uid: Mutex<std::collections::HashMap<u32, usize>>,
    stopping: AtomicBool,
    switches: super::l2::Switches,
    delegations: super::tenancy::Delegations,
}

impl Server {
    /// A server for `reg`, whose vnets `rt` runs (all current vnets are
    /// given to it now).
    pub fn new(reg: Arc<Registry>, mut rt: Realtime) -> Server {
        for v in reg.list() {
            rt.adopt(&v);
        }
        let admin =
            std::fs::metadata("/proc/self").map_or(0, |m| std::os::unix::fs::MetadataExt::uid(&m));
        reg.set_unlimited(admin);
        Server {
            reg,
            rt: Mutex::new(rt),
            admin,
            clients: AtomicUsize::new(0),
            per_uid: Mutex::new(std::collections::HashMap::new()),
            stopping: AtomicBool::new(false),
            switches: super::l2::Switches::default(),
            delegations: super::tenancy::Delegations::default(),
        }
    }

    /// The uplinks root delegated.
    pub fn delegations(&self) -> &super::tenancy::Delegations {
        &self.delegations
    }

    /// The registry served.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.reg
    }

    fn rt(&self) -> std::sync::MutexGuard<'_, Realtime> {
        self.rt.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the driver (to attach the socket server to it).
    pub fn with_driver<R>(&self, f: impl FnOnce(&Realtime) -> R) -> R {
        f(&self.rt())
    }

    /// Whether `uid` may do anything here: root, and the user vnetd runs as.
    pub fn is_admin(&self, uid: u32) -> bool {
        uid == 0 || uid == self.admin
    }

    /// The user vnetd runs as.
    pub fn admin(&self) -> u32 {
        self.admin
    }

    /// vnetd's switches.
    pub fn switches(&self) -> &super::l2::Switches {
        &self.switches
    }

    /// The driver's clock.
    pub(super) fn now(&self) -> smoltcp::time::Instant {
        self.rt().now()
    }

    /// The clock and waker for a host-side pump.
    pub(super) fn host_io(&self) -> ifnet::HostIo {
        self.rt().host_io()
    }

    /// Polls every vnet now (after a change that may concern any of them).
    pub(super) fn kick_all(&self) {
        let rt = self.rt();
        for v in self.reg.list() {
            rt.kick(&v);
        }
    }

    /// A vnet `uid` may change.
    pub(super) fn owned_vnet(&self, uid: u32, name: &str) -> Result<Arc<Vnet>, ErrorBody> {
        self.owned(uid, name)
    }

    fn vnet(&self, name: &str) -> Result<Arc<Vnet>, ErrorBody> {
        self.reg
            .by_name(name)
            .ok_or_else(|| err(ErrorKind::NotFound, format!("vnet {name:?}: no such vnet")))
    }

    fn owned(&self, uid: u32, name: &str) -> Result<Arc<Vnet>, ErrorBody> {
        self.mine(uid, name, "change")
    }

    /// A vnet `uid` may look at (and into): its own; root's, all.
    fn seen(&self, uid: u32, name: &str) -> Result<Arc<Vnet>, ErrorBody> {
        self.mine(uid, name, "see")
    }

    fn mine(&self, uid: u32, name: &str, verb: &str) -> Result<Arc<Vnet>, ErrorBody> {
        let v = self.vnet(name)?;
        if !self.is_admin(uid) && v.owner() != uid {
            let who = if v.owner() == 0 {
                "root".to_string()
            } else {
                format!("uid {}", v.owner())
            };
            return Err(err(
                ErrorKind::PermissionDenied,
                format!(
                    "vnet {name:?} belongs to {who}; uid {uid} may {verb} only its own vnets (rule: owner or root)"
                ),
            ));
        }
        Ok(v)
    }

    /// A refusal by a vnet's restriction (see `Registry::check_*`).
    fn restricted(vnet: &str, r: Result<(), String>) -> Result<(), ErrorBody> {
        r.map_err(|m| err(ErrorKind::PermissionDenied, format!("vnet {vnet:?}: {m}")))
    }

    /// Puts delegation `d`'s policy on interface `name` of `v` (just made
    /// under it); on failure the interface goes.
    pub(super) fn police(
        &self,
        v: &Arc<Vnet>,
        name: &str,
        d: Option<&super::tenancy::Delegation>,
    ) -> Result<(), ErrorBody> {
        let Some(d) = d else { return Ok(()) };
        let got = v
            .enter(|| {
                ifnet::with_ifnet(name, |i| {
                    (i.tx_wire().cloned(), i.rx_wire().cloned(), i.mac().0)
                })
            })
            .map_err(|e| if_err(v.name(), e))?;
        let r = match got {
            (Some(tx), Some(rx), mac) => Self::put_policy(d, &tx, &rx, mac),
            _ => Err(err(ErrorKind::Invalid, "no link to police")),
        };
        if r.is_err() {
            let _ = v.enter(|| ifnet::destroy(name));
        }
        r
    }

    /// Carries out one request for the user `uid`. A capture is refused
    /// here: it needs the connection ([`Server::serve`] runs it).
    pub fn handle(&self, req: Request, uid: u32) -> Reply {
        let outcome = match if matches!(req.op, Op::Capture { .. } | Op::UplinkOpen { .. }) {
            Err(err(
                ErrorKind::BadRequest,
                "a capture or an uplink needs a connection of its own; it cannot be batched",
            ))
        } else {
            self.run(req.op, uid)
        } {
            Ok(v) => Outcome::Ok(v),
            Err(e) => Outcome::Error(e),
        };
        Reply {
            v: VERSION,
            id: req.id,
            outcome,
        }
    }

    fn run(&self, op: Op, uid: u32) -> Result<Value, ErrorBody> {
        if let Some(r) = self.run_l2(&op, uid) {
            return r;
        }
        if let Some(r) = self.run_tenancy(&op, uid) {
            return r;
        }
        match op {
            Op::VnetAdd {
                name,
                parent,
                restrict,
            } => {
                let parent = match parent {
                    None => None,
                    Some(p) if p == "vnet0" => Some(VnetId::VNET0),
                    Some(p) => Some(self.owned(uid, &p)?.id()),
                };
                let (limits, restrict) =
                    super::tenancy::restriction(&restrict.unwrap_or_default())?;
                let v = self
                    .reg
                    .create_limited(&name, parent, uid, limits, restrict)
                    .map_err(reg_err)?;
                self.rt().adopt(&v);
                log::info!("uid {uid} created vnet {name:?} (id {})", v.id());
                Ok(self.vnet_view(&v))
            }
            Op::VnetDel { name, recursive } => {
                let v = self.owned(uid, &name)?;
                if recursive && !self.is_admin(uid) {
                    // Every vnet it would take along must be the caller's.
                    for cv in self.subtree(&v).iter().skip(1) {
                        self.owned(uid, cv.name())?;
                    }
                }
                let r = self.reg.destroy(v.id(), recursive).map_err(reg_err)?;
                let rt = self.rt();
                rt.kick(&v);
                for w in &r.wake {
                    if let Some(w) = self.reg.get(*w) {
                        rt.kick(&w);
                    }
                }
                log::info!("uid {uid} destroyed vnet {name:?}: {r:?}");
                Ok(json!({
                    "vnets": r.vnets.len(),
                    "sockets_closed": r.sockets_closed,
                    "connections_reset": r.connections_reset,
                    "interfaces_destroyed": r.interfaces_destroyed,
                    "interfaces_returned": r.interfaces_returned,
                    "addresses_removed": r.addresses_removed,
                    "routes_removed": r.routes_removed,
                }))
            }
            Op::VnetList => Ok(Value::Array(
                self.reg
                    .list()
                    .iter()
                    .filter(|v| self.is_admin(uid) || v.owner() == uid)
                    .map(|v| self.vnet_view(v))
                    .collect(),
            )),
            Op::VnetShow { name } => {
                let v = self.seen(uid, &name)?;
                let mut view = self.vnet_view(&v);
                if let (Value::Object(m), Value::Object(l)) =
                    (&mut view, super::tenancy::limits_view(&v))
                {
                    m.extend(l);
                }
                Ok(view)
            }
            Op::LinkAddEpair {
                vnet,
                name,
                peer,
                peer_vnet,
            } => {
                let a = self.owned(uid, &vnet)?;
                let pv = peer_vnet.unwrap_or_else(|| vnet.clone());
                let b = self.owned(uid, &pv)?;
                Self::restricted(&vnet, self.reg.check_link(&a, "epair"))?;
                Self::restricted(&pv, self.reg.check_link(&b, "epair"))?;
                ifnet::epair(&a, &name, &b, &peer).map_err(|e| if_err(&vnet, e))?;
                Ok(Value::Null)
            }
            Op::LinkAddTap { vnet, name, host } => {
                let (v, d) = self.may_host_link(uid, &vnet, &host)?;
                Self::restricted(&vnet, self.reg.check_link(&v, "tap"))?;
                let io = self.rt().host_io();
                let got = ifnet::tap(&v, &name, &host, io).map_err(|e| if_err(&vnet, e))?;
                self.police(&v, &name, d.as_ref())?;
                log::info!("vnet {vnet:?}: interface {name:?} joined to TAP {got:?}");
                Ok(json!({ "host": got }))
            }
            Op::LinkAddAfPacket { vnet, name, host } => {
                let (v, d) = self.may_host_link(uid, &vnet, &host)?;
                Self::restricted(&vnet, self.reg.check_link(&v, "af_packet"))?;
                let io = self.rt().host_io();
                ifnet::af_packet(&v, &name, &host, io).map_err(|e| if_err(&vnet, e))?;
                self.police(&v, &name, d.as_ref())?;
                log::info!("vnet {vnet:?}: interface {name:?} attached to host interface {host:?}");
                Ok(json!({ "host": host }))
            }
            Op::LinkSet {
                vnet,
                name,
                up,
                mtu,
                to_vnet,
            } => {
                let mut v = self.owned(uid, &vnet)?;
                let mut at = vnet.clone();
                // Check and move first, so that a refused move changes
                // nothing and the settings land where the interface ends up.
                if let Some(t) = to_vnet {
                    let to = self.owned(uid, &t)?;
                    // The target's restrictions hold for what moves in.
                    let kind = v
                        .enter(ifnet::list)
                        .map_err(|e| if_err(&vnet, e))?
                        .into_iter()
                        .find(|l| l.name == name)
                        .map(|l| l.kind);
                    if let Some(k) = kind.filter(|k| *k != "loopback") {
                        Self::restricted(&t, self.reg.check_link(&to, k))?;
                    }
                    ifnet::vmove(&v, &name, &to).map_err(|e| if_err(&vnet, e))?;
                    self.rt().kick(&v);
                    v = to;
                    at = t;
                }
                if let Some(m) = mtu {
                    v.enter(|| ifnet::set_mtu(&name, m))
                        .map_err(|e| if_err(&at, e))?;
                }
                if let Some(u) = up {
                    v.enter(|| ifnet::set_up(&name, u))
                        .map_err(|e| if_err(&at, e))?;
                }
                self.rt().kick(&v);
                Ok(Value::Null)
            }
            Op::LinkDel { vnet, name } => {
                let v = self.owned(uid, &vnet)?;
                v.enter(|| ifnet::destroy(&name))
                    .map_err(|e| if_err(&vnet, e))?;
                self.rt().kick(&v);
                Ok(Value::Null)
            }
            Op::LinkShow { vnet } => {
                let v = self.seen(uid, &vnet)?;
                let links = v.enter(ifnet::list).map_err(|e| if_err(&vnet, e))?;
                Ok(Value::Array(
                    links
                        .into_iter()
                        .map(|l| {
                            json!({
                                "index": l.index, "name": l.name, "kind": l.kind,
                                "mac": l.mac.0.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
                                "mtu": l.mtu, "up": l.up, "host": l.host,
                                "running": l.running,
                                "home": self.reg.get(l.home).map(|h| h.name().to_string()),
                                "stats": {
                                    "rx_packets": l.stats.ipackets, "rx_bytes": l.stats.ibytes,
                                    "tx_packets": l.stats.opackets, "tx_bytes": l.stats.obytes,
                                    "rx_dropped": l.stats.idrops, "tx_errors": l.stats.oerrors,
                                },
                            })
                        })
                        .collect(),
                ))
            }
            Op::AddrAdd { vnet, dev, addr } => {
                let v = self.owned(uid, &vnet)?;
                let cidr = parse_cidr(&addr)?;
                Self::restricted(&vnet, self.reg.check_addr(&v, &cidr))?;
                v.enter(|| stack::addr_add(&dev, cidr))
                    .map_err(|e| cfg_err(&vnet, e))?;
                self.rt().kick(&v);
                Ok(Value::Null)
            }
            Op::AddrDel { vnet, dev, addr } => {
                let v = self.owned(uid, &vnet)?;
                let cidr = parse_cidr(&addr)?;
                v.enter(|| stack::addr_del(&dev, cidr))
                    .map_err(|e| cfg_err(&vnet, e))?;
                Ok(Value::Null)
            }
            Op::AddrShow { vnet } => {
                let v = self.seen(uid, &vnet)?;
                let addrs = v.enter(stack::addrs).map_err(|e| cfg_err(&vnet, e))?;
                Ok(Value::Array(
                    addrs
                        .into_iter()
                        .map(|(dev, c)| {
                            let family = if matches!(c, IpCidr::Ipv4(_)) {
                                "inet"
                            } else {
                                "inet6"
                            };
                            json!({"dev": dev, "family": family, "addr": c.to_string()})
                        })
                        .collect(),
                ))
            }
            Op::RouteAdd {
                vnet,
                dst,
                via,
                dev,
            } => {
                let v = self.owned(uid, &vnet)?;
                let gw = via.as_deref().map(parse_ip).transpose()?;
                let dst = parse_dst(&dst, gw)?;
                v.enter(|| stack::route_add(dst, gw, dev.as_deref()))
                    .map_err(|e| cfg_err(&vnet, e))?;
                self.rt().kick(&v);
                Ok(Value::Null)
            }
            Op::RouteDel { vnet, dst } => {
                let v = self.owned(uid, &vnet)?;
                let dst = parse_dst(&dst, None)?;
                v.enter(|| stack::route_del(dst))
                    .map_err(|e| cfg_err(&vnet, e))?;
                Ok(Value::Null)
            }
            Op::RouteShow { vnet } => {
                let v = self.seen(uid, &vnet)?;
                let routes = v.enter(stack::routes).map_err(|e| cfg_err(&vnet, e))?;
                Ok(Value::Array(
                    routes
                        .into_iter()
                        .map(|r| {
                            let dst = if r.dst.prefix_len() == 0 { "default".to_string() } else { r.dst.to_string() };
                            json!({
                                "dst": dst,
                                "family": if matches!(r.dst, IpCidr::Ipv4(_)) { "inet" } else { "inet6" },
                                "via": r.gateway.map(|g| g.to_string()),
                                "dev": r.dev,
                                "proto": match r.kind { RouteKind::Connected => "kernel", RouteKind::Static => "static" },
                            })
                        })
                        .collect(),
                ))
            }
            Op::SysctlGet { vnet, key } => {
                let v = self.seen(uid, &vnet)?;
                let all = match key {
                    Some(k) => vec![(
                        k.clone(),
                        v.enter(|| sysctl::get(&k))
                            .map_err(|e| sysctl_err(&vnet, e))?,
                    )],
                    None => v
                        .enter(sysctl::all)
                        .map_err(|e| sysctl_err(&vnet, e))?
                        .into_iter()
                        .map(|(k, x)| (k.to_string(), x))
                        .collect(),
                };
                Ok(Value::Array(
                    all.into_iter()
                        .map(|(k, x)| json!({"key": k, "value": x}))
                        .collect(),
                ))
            }
            Op::SysctlSet { vnet, key, value } => {
                let v = self.owned(uid, &vnet)?;
                if key.ends_with(".forwarding") && value.trim() != "0" {
                    Self::restricted(&vnet, self.reg.check_forward(&v))?;
                }
                v.enter(|| sysctl::set(&key, &value))
                    .map_err(|e| sysctl_err(&vnet, e))?;
                Ok(Value::Null)
            }
            Op::SocketShow { vnet } => {
                let v = self.seen(uid, &vnet)?;
                let list = v
                    .enter(stack::socket::list)
                    .map_err(|e| err(ErrorKind::NotFound, format!("vnet {vnet:?}: {e}")))?;
                Ok(Value::Array(
                    list.into_iter()
                        .map(|s| {
                            json!({
                                "proto": s.proto,
                                "state": s.state,
                                "local": s.local.to_string(),
                                "peer": s.peer.map(|p| p.to_string()),
                            })
                        })
                        .collect(),
                ))
            }
            Op::DnsShow { vnet } => {
                let v = self.seen(uid, &vnet)?;
                let r = v
                    .enter(|| crate::vnet::with::<Resolv, _>(|r| r.clone()))
                    .map_err(|e| err(ErrorKind::NotFound, format!("vnet {vnet:?}: {e}")))?;
                Ok(json!({
                    "hosts": r.hosts.iter().map(|(n, a)| json!({
                        "name": n,
                        "addrs": a.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "nameservers": r.nameservers.iter().map(|x| x.to_string()).collect::<Vec<_>>(),
                    "search": r.search,
                }))
            }
            Op::HostAdd { vnet, name, addrs } => {
                let v = self.owned(uid, &vnet)?;
                dns::check_name(&name).map_err(|m| err(ErrorKind::Invalid, m))?;
                if addrs.is_empty() {
                    return Err(err(
                        ErrorKind::Invalid,
                        format!("host {name}: no addresses"),
                    ));
                }
                let ips = addrs
                    .iter()
                    .map(|a| {
                        a.parse::<std::net::IpAddr>().map_err(|_| {
                            err(ErrorKind::Invalid, format!("{a:?} is not an IP address"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                v.enter(|| crate::vnet::with::<Resolv, _>(|r| r.add_host(&name, &ips)))
                    .map_err(|e| err(ErrorKind::NotFound, format!("vnet {vnet:?}: {e}")))?;
                Ok(Value::Null)
            }
            Op::HostDel { vnet, name } => {
                let v = self.owned(uid, &vnet)?;
                let had = v
                    .enter(|| crate::vnet::with::<Resolv, _>(|r| r.del_host(&name)))
                    .map_err(|e| err(ErrorKind::NotFound, format!("vnet {vnet:?}: {e}")))?;
                if !had {
                    return Err(err(
                        ErrorKind::NotFound,
                        format!("vnet {vnet:?}: no host entry {name:?}"),
                    ));
                }
                Ok(Value::Null)
            }
            Op::DnsSet {
                vnet,
                nameservers,
                search,
            } => {
                let v = self.owned(uid, &vnet)?;
                let ns = nameservers
                    .map(|l| {
                        l.iter()
                            .map(|a| {
                                a.parse::<std::net::IpAddr>().map_err(|_| {
                                    err(ErrorKind::Invalid, format!("{a:?} is not an IP address"))
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()?;
                if let Some(s) = &search {
                    for d in s {
                        dns::check_name(d).map_err(|m| err(ErrorKind::Invalid, m))?;
                    }
                }
                v.enter(|| {
                    crate::vnet::with::<Resolv, _>(|r| {
                        if let Some(ns) = ns {
                            r.nameservers = ns;
                        }
                        if let Some(s) = search {
                            r.search = s;
                        }
                    })
                })
                .map_err(|e| err(ErrorKind::NotFound, format!("vnet {vnet:?}: {e}")))?;
                Ok(Value::Null)
            }
            Op::FwAdd { vnet, rule } => {
                let v = self.owned(uid, &vnet)?;
                let mut r = firewall::parse(&rule).map_err(|e| fw_err(&vnet, e))?;
                let n = v
                    .enter(|| firewall::add_rule(r.clone()))
                    .map_err(|e| fw_err(&vnet, e))?;
                r.number = Some(n);
                Ok(json!({ "number": n, "rule": r.to_string() }))
            }
            Op::FwDel { vnet, number } => {
                let v = self.owned(uid, &vnet)?;
                let n = u16::try_from(number)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        err(
                            ErrorKind::Invalid,
                            format!(
                                "vnet {vnet:?}: rule number {number} is not from 1 to {}",
                                firewall::MAX_NUMBER
                            ),
                        )
                    })?;
                v.enter(|| firewall::del(n)).map_err(|e| fw_err(&vnet, e))?;
                Ok(Value::Null)
            }
            Op::FwFlush { vnet } => {
                let v = self.owned(uid, &vnet)?;
                v.enter(firewall::flush).map_err(|e| fw_err(&vnet, e))?;
                Ok(Value::Null)
            }
            Op::FwPolicy { vnet, hook, action } => {
                let v = self.owned(uid, &vnet)?;
                let bad = |m: String| err(ErrorKind::Invalid, format!("vnet {vnet:?}: {m}"));
                let hook: firewall::Hook = hook.parse().map_err(bad)?;
                let action: firewall::Action = action.parse().map_err(bad)?;
                v.enter(|| firewall::set_policy(hook, action))
                    .map_err(|e| fw_err(&vnet, e))?;
                Ok(Value::Null)
            }
            Op::FwShow { vnet } => {
                let v = self.seen(uid, &vnet)?;
                let now = self.rt().now();
                let l = v
                    .enter(|| firewall::show(now))
                    .map_err(|e| fw_err(&vnet, e))?;
                Ok(json!({
                    "rules": l.rules.iter().map(|r| json!({
                        "number": r.rule.number,
                        "rule": r.rule.to_string(),
                        "packets": r.counter.packets,
                        "bytes": r.counter.bytes,
                    })).collect::<Vec<_>>(),
                    "policy": l.policies.iter().map(|p| json!({
                        "hook": p.hook.name(),
                        "action": p.action.to_string(),
                        "packets": p.counter.packets,
                        "bytes": p.counter.bytes,
                    })).collect::<Vec<_>>(),
                    "states": l.states,
                    "states_max": l.states_max,
                }))
            }
            Op::Stats { vnet } => {
                let v = self.seen(uid, &vnet)?;
                let st = v
                    .enter(stack::stats)
                    .map_err(|e| err(ErrorKind::NotFound, format!("vnet {vnet:?}: {e}")))?;
                let mut m: serde_json::Map<String, Value> = st
                    .entries()
                    .into_iter()
                    .map(|(k, x)| (k.to_string(), json!(x)))
                    .collect();
                // Gauges beside the counters: the stack's sockets (closing
                // ones included) and those the socket server holds for
                // programs.
                let (socks, served) = v.enter(|| {
                    (
                        stack::socket::count().unwrap_or(0),
                        crate::vnet::with::<crate::sockets::table::Sockets, _>(|t| t.len())
                            .unwrap_or(0),
                    )
                });
                m.insert("sockets".into(), json!(socks));
                m.insert("sockets_served".into(), json!(served));
                let now = self.rt().now();
                let states = v.enter(|| firewall::show(now)).map_or(0, |l| l.states);
                m.insert("fw_states".into(), json!(states));
                Ok(Value::Object(m))
            }
            Op::Apply { toml } => Ok(json!(self.apply(&toml, uid)?)),
            Op::Batch { ops, keep_going } => {
                let mut out = Vec::with_capacity(ops.len());
                for op in ops {
                    let r = if matches!(op, Op::Batch { .. }) {
                        Err(err(ErrorKind::BadRequest, "batches do not nest"))
                    } else {
                        self.run(op, uid)
                    };
                    let failed = r.is_err();
                    out.push(match r {
                        Ok(v) => json!({ "ok": v }),
                        Err(e) => json!({ "error": e }),
                    });
                    if failed && !keep_going {
                        break;
                    }
                }
                Ok(Value::Array(out))
            }
            Op::SwitchAdd { .. }
            | Op::SwitchSet { .. }
            | Op::SwitchDel { .. }
            | Op::SwitchShow { .. }
            | Op::SwitchPortAdd { .. }
            | Op::SwitchPortDel { .. }
            | Op::LinkAddPort { .. }
            | Op::FilterAdd { .. }
            | Op::FilterDel { .. }
            | Op::FilterShow { .. }
            | Op::VnetRestrict { .. }
            | Op::QuotaShow { .. }
            | Op::QuotaSet { .. }
            | Op::DelegateAdd { .. }
            | Op::DelegateDel { .. }
            | Op::DelegateShow
            | Op::LinkAddUplink { .. }
            | Op::UplinkOpen { .. }
            | Op::Capture { .. } => Err(err(
                ErrorKind::BadRequest,
                "this request is not served here",
            )),
            Op::Dump => {
                let t = topology::dump(
                    &self.reg,
                    &self.switches,
                    &self.delegations,
                    uid,
                    self.is_admin(uid),
                );
                let text = toml::to_string_pretty(&t)
                    .map_err(|e| err(ErrorKind::Invalid, e.to_string()))?;
                Ok(json!({ "toml": text }))
            }
        }
    }

    /// Makes the running state match a topology (see [`super::topology`]),
    /// acting as `uid`. Returns the changes made, one line each.
    ///
    /// # Errors
    /// The file's parse error, or the first change refused (the changes
    /// before it stay made; the message counts them).
    pub fn apply(&self, text: &str, uid: u32) -> Result<Vec<String>, ErrorBody> {
        let want = topology::parse(text).map_err(|e| err(ErrorKind::BadRequest, e))?;
        let mut done = Vec::new();
        let plan = topology::plan(
            &self.reg,
            &self.switches,
            &self.delegations,
            &want,
            uid,
            self.is_admin(uid),
        )
        .map_err(|e| err(ErrorKind::Invalid, e))?;
        for op in plan {
            let line = topology::describe(&op);
            let removal = matches!(op, Op::RouteDel { .. } | Op::AddrDel { .. });
            if let Err(e) = self.run(op, uid) {
                // Already gone (taken with an address or link): done.
                if removal && e.kind == ErrorKind::NotFound {
                    continue;
                }
                return Err(err(
                    e.kind,
                    format!(
                        "{} (while doing `{line}`; {} change(s) made before)",
                        e.message,
                        done.len()
                    ),
                ));
            }
            done.push(line);
        }
        if !done.is_empty() {
            log::info!("topology applied: {} change(s)", done.len());
        }
        Ok(done)
    }

    fn vnet_view(&self, v: &Vnet) -> Value {
        json!({
            "id": v.id().0,
            "name": v.name(),
            "parent": v.parent().and_then(|p| self.reg.get(p)).map(|p| p.name().to_string()),
            "owner": v.owner(),
            "children": self.reg.children(v.id()).len(),
        })
    }

    /// Destroys every vnet but `vnet0` (children first) and stops the
    /// driver's workers; returns how many vnets were destroyed.
    pub fn shutdown(&self) -> usize {
        let mut n = 0;
        for v in self.reg.list().into_iter().rev() {
            if v.id() != VnetId::VNET0
                && let Ok(r) = self.reg.destroy(v.id(), true)
            {
                n += r.vnets.len();
            }
        }
        // Host ports close their devices.
        self.switches.clear();
        self.rt().shutdown();
        n
    }

    /// Asks [`Server::serve`] to return (after its next connection).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Takes a client slot for `uid`: root is always let in; other users
    /// get at most [`MAX_CLIENTS_PER_USER`] each and [`MAX_CLIENTS`] in all,
    /// so no user can crowd out root or the others.
    fn admit(&self, uid: u32) -> Option<Slot<'_>> {
        let mut per = self.per_uid.lock().unwrap_or_else(|p| p.into_inner());
        let mine = per.entry(uid).or_insert(0);
        let total = self.clients.load(Ordering::SeqCst);
        if !self.is_admin(uid) && (*mine >= MAX_CLIENTS_PER_USER || total >= MAX_CLIENTS) {
            return None;
        }
        *mine += 1;
        self.clients.fetch_add(1, Ordering::SeqCst);
        Some(Slot { server: self, uid })
    }

    /// Serves clients on `listener` until [`Server::stop`]; each client gets
    /// a thread. `uid_of` says who a client is (`SO_PEERCRED`).
    pub fn serve(self: &Arc<Self>, listener: UnixListener, uid_of: fn(&UnixStream) -> Option<u32>) {
        for conn in listener.incoming() {
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let Some(uid) = uid_of(&conn) else {
                log::warn!("control client with unknown credentials refused");
                continue;
            };
            // The slot's count is handed to the client thread, which gives
            // it back with a slot of its own when it ends.
            if self.admit(uid).map(std::mem::forget).is_none() {
                let mut w = &conn;
                let busy = Reply {
                    v: VERSION,
                    id: 0,
                    outcome: Outcome::Error(err(
                        ErrorKind::Busy,
                        format!(
                            "server busy: uid {uid} has too many connections ({MAX_CLIENTS_PER_USER} per user, {MAX_CLIENTS} in all)"
                        ),
                    )),
                };
                let _ = proto::write_frame(&mut w, &serde_json::to_vec(&busy).unwrap_or_default());
                continue;
            }
            let me = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name(format!("vnetd-client-{uid}"))
                .spawn(move || {
                    // Given back however the thread ends, panics included.
                    let _slot = Slot { server: &me, uid };
                    me.client(conn, uid);
                });
            if spawned.is_err() {
                drop(Slot { server: self, uid });
            }
        }
    }

    fn client(&self, conn: UnixStream, uid: u32) {
        let Ok(rd) = conn.try_clone() else { return };
        let mut rd = BufReader::new(rd);
        let mut wr = BufWriter::new(conn);
        loop {
            let (reply, close) = match proto::read_frame(&mut rd) {
                Ok(frame) => match proto::decode_request(&frame) {
                    // A capture turns the connection into the capture
                    // file's stream, and an uplink holds it for the port's
                    // life: either ends with it.
                    Ok(Request {
                        id,
                        op: op @ (Op::Capture { .. } | Op::UplinkOpen { .. }),
                        ..
                    }) => {
                        if wr.flush().is_err() {
                            return;
                        }
                        let held = if matches!(op, Op::Capture { .. }) {
                            self.capture(op, uid, wr.get_ref(), id)
                        } else {
                            self.uplink_open(op, uid, wr.get_ref(), id)
                        };
                        match held {
                            Ok(()) => return,
                            Err(e) => (
                                Reply {
                                    v: VERSION,
                                    id,
                                    outcome: Outcome::Error(e),
                                },
                                false,
                            ),
                        }
                    }
                    Ok(req) => (self.handle(req, uid), false),
                    Err(bad) => (bad, false),
                },
                Err(FrameError::Closed) => return,
                Err(e) => (
                    Reply {
                        v: VERSION,
                        id: 0,
                        outcome: Outcome::Error(err(ErrorKind::BadRequest, e.to_string())),
                    },
                    true,
                ),
            };
            let body = serde_json::to_vec(&reply).unwrap_or_default();
            if proto::write_frame(&mut wr, &body)
                .and_then(|()| wr.flush())
                .is_err()
                || close
            {
                return;
            }
        }
    }
}
