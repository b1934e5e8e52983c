//! Topology files: a declarative TOML description of vnets, links,
//! addresses, routes and tunables.
//!
//! ```toml
//! [vnet.red.link.eth0]
//! type = "epair"                          # or "tap"/"af_packet" with host = "IF"
//! peer = { vnet = "blue", name = "eth0" }
//! up = true
//! mtu = 1500
//! addr = ["10.0.0.1/24", "fd00::1/64"]
//!
//! [vnet.blue]
//! route = [{ dst = "default", via = "10.0.0.1" }]
//! sysctl = { "net.inet.ip.forwarding" = 1 }
//!
//! [vnet.blue.link.eth0]                   # the epair's other end
//! up = true
//! addr = ["10.0.0.2/24"]
//!
//! [vnet.red.dns]                           # what programs in red resolve
//! hosts = { web = ["10.0.0.2", "fd00::2"] }
//! nameserver = ["10.0.0.53"]
//! search = ["lab.example"]
//!
//! [switch.br0]                             # a switch, and host devices on it
//! mode = "learning"                        # or "hub"
//! aging = 300
//! tap = ["vtap0"]                          # af_packet = ["eth1"]
//!
//! [vnet.green.link.eth0]
//! type = "port"                            # an interface on a switch port
//! switch = "br0"
//! filter = [{ name = "spoof", dir = "out", allow_src = ["10.0.0.3"] }]
//!
//! [vnet.blue.fw]                           # blue's firewall
//! policy = { in = "drop" }                 # hooks in, out, fwd; allow when absent
//! rules = ["100 allow in state established,related", "200 allow in proto tcp to any port 80"]
//!
//! [vnet.green.restrict]                    # limits on green and all under it
//! sockets = 1000                           # also vnets, interfaces, mem (bytes)
//! addrs = ["10.0.0.0/24"]                  # addresses it may use
//! links = ["epair", "port"]                # kinds of links it may make
//! no_forward = true
//!
//! [vnet.home.link.up0]                     # an uplink through another vnetd
//! type = "uplink"                          # (a port root delegated)
//! switch = "uplink"
//! server = "/run/vnetd.sock"               # the default
//!
//! [quota.alice]                            # root's files: a user's quota
//! sockets = 4096
//! mem = 1073741824
//!
//! [[delegate]]                             # root's files: an uplink for a user
//! user = "alice"                           # or a uid
//! uplink = "br0"                           # a switch, or a host interface
//! addr = ["10.0.0.16/28"]
//! rate = 20000                             # frames/s each way (optional)
//! ```
//!
//! [`plan`] compares a file with the running state and lists the requests
//! that make the state match it, creating, changing and removing only what
//! differs; [`dump`] writes the running state in the same format, so that
//! applying a dump changes nothing. Parse errors name the line, column and
//! field (from the TOML parser); semantic errors name the vnet, link and
//! field.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::l2::{Switches, canonical_prefixes, mac_text, parse_mac};
use super::proto::{Op, Restriction};
use super::tenancy::{self, Delegations, Uplink};
use crate::ifnet;
use crate::stack::firewall::{self, Action, Hook};
use crate::stack::route::RouteKind;
use crate::stack::sysctl::{self, Tunables};
use crate::stack::{self};
use crate::vnet::{Registry, VnetId};

/// A whole topology.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The vnets, by name (`vnet0` may appear, to describe its links).
    #[serde(default)]
    pub vnet: BTreeMap<String, VnetSpec>,
    /// The switches, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub switch: BTreeMap<String, SwitchSpec>,
    /// Users' quotas, by name or uid (root's files; the limits only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub quota: BTreeMap<String, Restriction>,
    /// Uplinks delegated to users (root's files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegate: Vec<DelegateSpec>,
}

/// A user, by name or uid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum UserRef {
    /// A uid.
    Uid(u32),
    /// A name, looked up when the file is applied.
    Name(String),
}

impl UserRef {
    fn uid(&self) -> Result<u32, String> {
        match self {
            UserRef::Uid(u) => Ok(*u),
            UserRef::Name(n) => tenancy::resolve_user(n),
        }
    }
}

/// One delegation, as `vnetctl delegate USER uplink TARGET` makes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegateSpec {
    /// The user.
    pub user: UserRef,
    /// A switch, or a host interface.
    pub uplink: String,
    /// The prefixes the user's stacks may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addr: Vec<String>,
    /// Frames per second each way, per port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// The burst, in frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

/// One switch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchSpec {
    /// `hub` or `learning` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ifnet::SwitchMode>,
    /// MAC aging in seconds (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aging: Option<u64>,
    /// Bound on the MAC table (default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_macs: Option<usize>,
    /// TAP devices plugged in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tap: Vec<String>,
    /// Host interfaces plugged in through `AF_PACKET`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub af_packet: Vec<String>,
}

/// One vnet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VnetSpec {
    /// Its parent (default `vnet0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Tunables that differ from the defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctl: BTreeMap<String, u64>,
    /// Static routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteSpec>,
    /// Interfaces other than `lo0`, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub link: BTreeMap<String, LinkSpec>,
    /// Name resolution for programs in the vnet.
    #[serde(default, skip_serializing_if = "DnsSpec::is_empty")]
    pub dns: DnsSpec,
    /// The firewall.
    #[serde(default, skip_serializing_if = "FwSpec::is_empty")]
    pub fw: FwSpec,
    /// Limits and restrictions on it and everything under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restrict: Option<Restriction>,
}

/// A vnet's firewall: its rules (in the text form `vnetctl fw add` takes)
/// and the default policies that are not `allow`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FwSpec {
    /// Default policies by hook (`in`, `out`, `fwd`); `allow` when absent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policy: BTreeMap<String, String>,
    /// Rules; one without a number gets the previous rule's plus 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
}

impl FwSpec {
    /// Whether it says nothing.
    pub fn is_empty(&self) -> bool {
        *self == FwSpec::default()
    }

    /// The rules, numbered, in canonical text, by number.
    ///
    /// # Errors
    /// A rule that does not parse, or two with one number.
    pub fn numbered(&self) -> Result<BTreeMap<u16, String>, String> {
        let mut out = BTreeMap::new();
        let mut last = 0u16;
        for text in &self.rules {
            let mut r = firewall::parse(text).map_err(|e| e.to_string())?;
            let n = match r.number {
                Some(n) => n,
                None => last
                    .checked_add(firewall::AUTO_STEP)
                    .ok_or_else(|| format!("fw rule {text:?}: no number is left after {last}"))?,
            };
            r.number = Some(n);
            if out.insert(n, r.to_string()).is_some() {
                return Err(format!("fw rule number {n} is given twice"));
            }
            last = n;
        }
        Ok(out)
    }

    /// The policies by hook, checked.
    ///
    /// # Errors
    /// An unknown hook or action.
    pub fn policies(&self) -> Result<BTreeMap<Hook, Action>, String> {
        let mut out = BTreeMap::new();
        for (h, a) in &self.policy {
            let hook: Hook = h.parse().map_err(|e| format!("fw policy: {e}"))?;
            let action: Action = a.parse().map_err(|e| format!("fw policy {h}: {e}"))?;
            out.insert(hook, action);
        }
        Ok(out)
    }
}

/// A vnet's resolver: its `/etc/hosts` and `/etc/resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSpec {
    /// Host names and their addresses.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, Vec<String>>,
    /// Name servers, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameserver: Vec<String>,
    /// Search domains, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
}

impl DnsSpec {
    /// Whether it says nothing.
    pub fn is_empty(&self) -> bool {
        *self == DnsSpec::default()
    }
}

/// The far end of an epair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSpec {
    /// Its vnet.
    pub vnet: String,
    /// Its name there.
    pub name: String,
}

/// One interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// `"epair"` or `"tap"` on the end that creates the link; absent on
    /// the far end of an epair.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// For an epair: the other end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerSpec>,
    /// For a TAP: the host-side name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// For a port or an uplink: its switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<String>,
    /// For an uplink: the other vnetd's control socket (default
    /// `/run/vnetd.sock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// MTU (default 1500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<usize>,
    /// Administratively up.
    #[serde(default)]
    pub up: bool,
    /// Addresses with prefix lengths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addr: Vec<String>,
    /// Packet filters on the interface (for a port: on the switch's port).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter: Vec<FilterSpec>,
}

/// One packet filter, as `vnetctl filter add` takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Its name (unique per interface and direction).
    pub name: String,
    /// `in` (what the interface receives) or `out` (what it sends).
    pub dir: String,
    /// Source MAC addresses allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_mac: Vec<String>,
    /// Source prefixes allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_src: Vec<String>,
    /// Destination prefixes allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_dst: Vec<String>,
    /// A classic BPF program (`tcpdump -ddd` form, or commas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf: Option<String>,
    /// A tcpdump expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
}

impl FilterSpec {
    /// The same filter in the words a running filter reports: prefixes in
    /// canonical form (a bare address is a host prefix), MAC addresses in
    /// lower case, a program on one line. What does not parse is left
    /// as it is (vnetd refuses it with the reason).
    fn canonical(&self) -> FilterSpec {
        FilterSpec {
            name: self.name.clone(),
            dir: self.dir.clone(),
            allow_mac: self
                .allow_mac
                .iter()
                .flat_map(|s| s.split(','))
                .map(|m| parse_mac(m.trim()).map_or_else(|| m.trim().to_string(), mac_text))
                .collect(),
            allow_src: canonical_prefixes(&self.allow_src),
            allow_dst: canonical_prefixes(&self.allow_dst),
            bpf: self.bpf.as_ref().map(|b| {
                ifnet::bpf::Program::from_text(b).map_or_else(|_| b.clone(), |p| p.to_line())
            }),
            expr: self.expr.clone(),
        }
    }

    /// Rebuilt from what a running filter reports of its checks.
    fn from_report(dir: &str, r: &ifnet::StageReport) -> FilterSpec {
        use ifnet::bpf::Check;
        let mut f = FilterSpec {
            name: r.name.clone(),
            dir: dir.to_string(),
            ..FilterSpec::default()
        };
        let list = |t: &str, kw: &str| -> Vec<String> {
            t.strip_prefix(kw)
                .unwrap_or(t)
                .split(',')
                .map(str::to_string)
                .collect()
        };
        for (reason, text) in &r.checks {
            match *reason {
                Check::MAC => f.allow_mac = list(text, "allow-mac "),
                Check::SRC => f.allow_src = list(text, "allow-src "),
                Check::DST => f.allow_dst = list(text, "allow-dst "),
                Check::PROGRAM => f.bpf = Some(text.clone()),
                _ => f.expr = Some(text.clone()),
            }
        }
        f
    }

    fn op(&self, vnet: &str, dev: &str) -> Op {
        Op::FilterAdd {
            at: target(vnet, dev),
            dir: self.dir.clone(),
            name: Some(self.name.clone()),
            expr: self.expr.clone(),
            bpf: self.bpf.clone(),
            allow_src: self.allow_src.clone(),
            allow_dst: self.allow_dst.clone(),
            allow_mac: self.allow_mac.clone(),
        }
    }
}

fn target(vnet: &str, dev: &str) -> super::proto::Target {
    super::proto::Target {
        vnet: Some(vnet.to_string()),
        dev: Some(dev.to_string()),
        ..super::proto::Target::default()
    }
}

/// The filters on interface `dev` of `v`, in the order they run, `in` first.
fn link_filters(v: &std::sync::Arc<crate::vnet::Vnet>, dev: &str) -> Vec<FilterSpec> {
    let wires = v
        .enter(|| ifnet::with_ifnet(dev, |i| (i.rx_wire().cloned(), i.tx_wire().cloned())))
        .ok();
    let Some((rx, tx)) = wires else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (dir, w) in [("in", rx), ("out", tx)] {
        for (_, r) in w.map(|w| w.reports()).unwrap_or_default() {
            // Root's policy stages come with a delegation, not from files.
            if r.kind == "filter" && !r.name.starts_with(super::tenancy::POLICY_PREFIX) {
                out.push(FilterSpec::from_report(dir, &r));
            }
        }
    }
    out
}

/// One static route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Destination prefix, or `default` / `default6`.
    pub dst: String,
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Outgoing interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
}

/// Reads a topology.
///
/// # Errors
/// The parser's message (line, column, and the field at fault), or what is
/// inconsistent in it (naming the vnet, link and field).
pub fn parse(text: &str) -> Result<Topology, String> {
    let t: Topology = toml::from_str(text).map_err(|e| e.to_string())?;
    for (u, q) in &t.quota {
        if q.addrs.is_some() || q.links.is_some() || q.no_forward {
            return Err(format!(
                "quota {u:?}: a user's quota has vnets, interfaces, sockets and mem only"
            ));
        }
    }
    for (i, d) in t.delegate.iter().enumerate() {
        if t.delegate[..i]
            .iter()
            .any(|e| e.user == d.user && e.uplink == d.uplink)
        {
            return Err(format!(
                "delegate: {:?} is given {:?} twice",
                d.user, d.uplink
            ));
        }
    }
    for (vn, v) in &t.vnet {
        if let Some(r) = &v.restrict {
            tenancy::restriction(r).map_err(|e| format!("vnet {vn:?} restrict: {}", e.message))?;
        }
        v.fw.numbered()
            .and_then(|_| v.fw.policies())
            .map_err(|e| format!("vnet {vn:?}: {e}"))?;
        if let Some(p) = &v.parent
            && p != "vnet0"
            && !t.vnet.contains_key(p)
        {
            return Err(format!("vnet {vn:?}: its parent {p:?} is not in the file"));
        }
        for (ln, l) in &v.link {
            let at = format!("vnet {vn:?} link {ln:?}");
            match l.kind.as_deref() {
                Some("epair") => {
                    let Some(p) = l.peer.as_ref() else {
                        return Err(format!("{at}: an epair needs peer = {{ vnet, name }}"));
                    };
                    if p.vnet != "vnet0" && !t.vnet.contains_key(&p.vnet) {
                        return Err(format!(
                            "{at}: its peer's vnet {:?} is not in the file",
                            p.vnet
                        ));
                    }
                    let far = t.vnet.get(&p.vnet).and_then(|fv| fv.link.get(&p.name));
                    if far.is_some_and(|f| f.kind.is_some()) {
                        return Err(format!(
                            "{at}: its peer {:?} in vnet {:?} declares a type too; describe the epair on one end only",
                            p.name, p.vnet
                        ));
                    }
                }
                Some(k @ ("tap" | "af_packet")) if l.host.is_none() => {
                    return Err(format!("{at}: a {k} link needs host = \"NAME\""));
                }
                Some("tap" | "af_packet") | None => {}
                Some("port") => match &l.switch {
                    None => return Err(format!("{at}: a port needs switch = \"NAME\"")),
                    Some(sw) if !t.switch.contains_key(sw) => {
                        return Err(format!("{at}: its switch {sw:?} is not in the file"));
                    }
                    Some(_) => {}
                },
                Some("uplink") if l.switch.is_none() => {
                    return Err(format!(
                        "{at}: an uplink needs switch = \"NAME\" (a switch of the other vnetd)"
                    ));
                }
                Some("uplink") => {}
                Some(k) => {
                    return Err(format!(
                        "{at}: type {k:?} is not one of \"epair\", \"tap\", \"af_packet\", \"port\", \"uplink\""
                    ));
                }
            }
            for f in &l.filter {
                if f.dir != "in" && f.dir != "out" {
                    return Err(format!(
                        "{at}: filter {:?}: dir {:?} is not \"in\" or \"out\"",
                        f.name, f.dir
                    ));
                }
                if l.filter
                    .iter()
                    .filter(|g| g.name == f.name && g.dir == f.dir)
                    .count()
                    > 1
                {
                    return Err(format!("{at}: two filters named {:?} ({})", f.name, f.dir));
                }
            }
            if l.kind.is_none() && !is_far_end(&t, vn, ln) {
                return Err(format!(
                    "{at}: no type, and no epair in the file names it as its peer"
                ));
            }
        }
    }
    Ok(t)
}

fn is_far_end(t: &Topology, vnet: &str, name: &str) -> bool {
    t.vnet.values().any(|v| {
        v.link.values().any(|l| {
            l.kind.as_deref() == Some("epair")
                && l.peer
                    .as_ref()
                    .is_some_and(|p| p.vnet == vnet && p.name == name)
        })
    })
}

/// What a link is, seen from either of its ends: comparing shapes tells
/// whether a link in the file is the one running, whichever end the file or
/// the dump describes it on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Epair(PeerSpec),
    Tap(String),
    AfPacket(String),
    Port(String),
    Uplink(String, String),
    Unknown,
}

fn desired_shape(t: &Topology, vnet: &str, name: &str, l: &LinkSpec) -> Shape {
    match (l.kind.as_deref(), &l.peer, &l.host) {
        (Some("epair"), Some(p), _) => Shape::Epair(p.clone()),
        (Some("tap"), _, Some(h)) => Shape::Tap(h.clone()),
        (Some("af_packet"), _, Some(h)) => Shape::AfPacket(h.clone()),
        (Some("port"), _, _) if l.switch.is_some() => {
            Shape::Port(l.switch.clone().unwrap_or_default())
        }
        (Some("uplink"), _, _) if l.switch.is_some() => Shape::Uplink(
            l.switch.clone().unwrap_or_default(),
            l.server
                .clone()
                .unwrap_or_else(|| tenancy::DEFAULT_ROOT_SOCKET.to_string()),
        ),
        _ => t
            .vnet
            .iter()
            .flat_map(|(ov, v)| v.link.iter().map(move |(on, l)| (ov, on, l)))
            .find(|(_, _, l)| {
                l.kind.as_deref() == Some("epair")
                    && l.peer
                        .as_ref()
                        .is_some_and(|p| p.vnet == vnet && p.name == name)
            })
            .map_or(Shape::Unknown, |(ov, on, _)| {
                Shape::Epair(PeerSpec {
                    vnet: ov.clone(),
                    name: on.clone(),
                })
            }),
    }
}

/// The running state of the vnets `uid` owns (an administrator: also `vnet0`),
/// in the file's shape. An epair end whose other end is gone (or outside
/// those vnets) is left out: it carries nothing.
pub fn dump(
    reg: &Registry,
    switches: &Switches,
    delegations: &Delegations,
    uid: u32,
    admin: bool,
) -> Topology {
    let mut t = state(reg, uid, admin);
    t.switch = switch_state(switches, uid, admin)
        .into_iter()
        .map(|(n, (spec, _))| (n, spec))
        .collect();
    if admin {
        t.quota = quota_state(reg);
        t.delegate = delegate_state(delegations)
            .into_iter()
            .map(|(_, d)| d)
            .collect();
    }
    for v in t.vnet.values_mut() {
        v.link.retain(|_, l| l.kind.as_deref() != Some(DEAD));
    }
    t
}

/// The users' quotas root set, by uid.
fn quota_state(reg: &Registry) -> BTreeMap<String, Restriction> {
    reg.user_limits()
        .into_iter()
        .map(|(u, l)| {
            (
                u.to_string(),
                Restriction {
                    vnets: l.vnets,
                    interfaces: l.ifaces,
                    sockets: l.sockets,
                    mem: l.mem,
                    ..Restriction::default()
                },
            )
        })
        .collect()
}

/// The delegations, with their numbers, in the file's shape.
fn delegate_state(delegations: &Delegations) -> Vec<(u64, DelegateSpec)> {
    delegations
        .all()
        .into_iter()
        .map(|d| {
            (
                d.id,
                DelegateSpec {
                    user: UserRef::Uid(d.uid),
                    uplink: match d.target {
                        Uplink::Switch(s) | Uplink::Host(s) => s,
                    },
                    addr: d.addrs.iter().map(ToString::to_string).collect(),
                    rate: d.rate.map(|(r, _)| r),
                    burst: d.rate.map(|(_, b)| b),
                },
            )
        })
        .collect()
}

/// Marks an epair end whose other end is gone.
const DEAD: &str = "dead";

fn state(reg: &Registry, uid: u32, admin: bool) -> Topology {
    let vnets: Vec<_> = reg
        .list()
        .into_iter()
        .filter(|v| v.owner() == uid || (admin && v.id() == VnetId::VNET0))
        .collect();
    let names: BTreeMap<VnetId, String> = vnets
        .iter()
        .map(|v| (v.id(), v.name().to_string()))
        .collect();
    // Which two interfaces share an epair.
    let mut ends: BTreeMap<usize, Vec<(String, String)>> = BTreeMap::new();
    let mut all = BTreeMap::new();
    for v in &vnets {
        let links = v.enter(ifnet::list).unwrap_or_default();
        for l in &links {
            if l.kind == "epair" {
                ends.entry(l.link_id)
                    .or_default()
                    .push((v.name().to_string(), l.name.clone()));
            }
        }
        all.insert(v.name().to_string(), (v.clone(), links));
    }
    let defaults = Tunables::default();
    let mut t = Topology::default();
    for (vn, (v, links)) in &all {
        let mut spec = VnetSpec {
            parent: v
                .parent()
                .filter(|p| *p != VnetId::VNET0)
                .and_then(|p| names.get(&p).cloned()),
            restrict: tenancy::restriction_of(v),
            ..VnetSpec::default()
        };
        for (k, val) in v.enter(sysctl::all).unwrap_or_default() {
            if defaults.get(k).ok() != Some(val) {
                spec.sysctl.insert(k.to_string(), val);
            }
        }
        let addrs = v.enter(stack::addrs).unwrap_or_default();
        for r in v.enter(stack::routes).unwrap_or_default() {
            if r.kind == RouteKind::Static {
                let dst = match (r.dst.prefix_len(), r.dst) {
                    (0, smoltcp::wire::IpCidr::Ipv4(_)) => "default".to_string(),
                    (0, _) => "default6".to_string(),
                    _ => r.dst.to_string(),
                };
                spec.route.push(RouteSpec {
                    dst,
                    via: r.gateway.map(|g| g.to_string()),
                    dev: r.gateway.is_none().then(|| r.dev.clone()),
                });
            }
        }
        spec.route.sort();
        if let Ok(r) =
            v.enter(|| crate::vnet::with::<crate::sockets::dns::Resolv, _>(|r| r.clone()))
        {
            let strs = |a: &[std::net::IpAddr]| a.iter().map(|x| x.to_string()).collect::<Vec<_>>();
            spec.dns = DnsSpec {
                hosts: r.hosts.iter().map(|(n, a)| (n.clone(), strs(a))).collect(),
                nameserver: strs(&r.nameservers),
                search: r.search.clone(),
            };
        }
        if let Ok(l) = v.enter(|| firewall::show(crate::Instant::ZERO)) {
            spec.fw = FwSpec {
                policy: l
                    .policies
                    .iter()
                    .filter(|p| p.action != Action::Allow)
                    .map(|p| (p.hook.name().to_string(), p.action.to_string()))
                    .collect(),
                rules: l.rules.iter().map(|r| r.rule.to_string()).collect(),
            };
        }
        for l in links.iter().filter(|l| l.kind != "loopback") {
            let mut ls = LinkSpec {
                filter: link_filters(v, &l.name),
                mtu: (l.mtu != 1500).then_some(l.mtu),
                up: l.up,
                addr: addrs
                    .iter()
                    .filter(|(d, _)| *d == l.name)
                    .map(|(_, c)| c.to_string())
                    .collect(),
                ..LinkSpec::default()
            };
            match l.kind {
                "tap" | "af_packet" => {
                    ls.kind = Some(l.kind.into());
                    ls.host = l.host.clone();
                }
                "port" => {
                    ls.kind = Some("port".into());
                    ls.switch = l.host.clone();
                }
                "uplink" => {
                    ls.kind = Some("uplink".into());
                    ls.switch = l.host.clone();
                    ls.server = l
                        .server
                        .clone()
                        .filter(|s| s != tenancy::DEFAULT_ROOT_SOCKET);
                }
                _ => {
                    let pair = ends.get(&l.link_id).cloned().unwrap_or_default();
                    let me = (vn.clone(), l.name.clone());
                    let mut sorted = pair.clone();
                    sorted.sort();
                    if pair.len() < 2 {
                        ls.kind = Some(DEAD.into());
                    } else if sorted.first() == Some(&me)
                        && let Some((pv, pn)) = pair.iter().find(|e| **e != me)
                    {
                        ls.kind = Some("epair".into());
                        ls.peer = Some(PeerSpec {
                            vnet: pv.clone(),
                            name: pn.clone(),
                        });
                    }
                }
            }
            spec.link.insert(l.name.clone(), ls);
        }
        t.vnet.insert(vn.clone(), spec);
    }
    // vnet0 appears only when it has something to say.
    if t.vnet
        .get("vnet0")
        .is_some_and(|s| *s == VnetSpec::default())
    {
        t.vnet.remove("vnet0");
    }
    t
}

/// A switch's host ports, by (through `AF_PACKET`?, host name), with
/// their numbers.
type HostPorts = BTreeMap<(bool, String), u32>;

/// The switches `uid` owns (an administrator: all), in the file's shape,
/// with the numbers of their host ports.
fn switch_state(
    switches: &Switches,
    uid: u32,
    admin: bool,
) -> BTreeMap<String, (SwitchSpec, HostPorts)> {
    let mut out = BTreeMap::new();
    for (name, e) in switches.all() {
        if !admin && e.owner != uid {
            continue;
        }
        let sw = &e.sw;
        let mut spec = SwitchSpec {
            mode: (sw.mode() != ifnet::SwitchMode::Learning).then(|| sw.mode()),
            aging: (sw.aging() != ifnet::switch::DEFAULT_AGING).then(|| sw.aging().secs()),
            max_macs: (sw.max_macs() != ifnet::switch::DEFAULT_MAX_MACS).then(|| sw.max_macs()),
            ..SwitchSpec::default()
        };
        let mut ports = BTreeMap::new();
        for p in sw.ports() {
            match p.kind() {
                ifnet::PortKind::Tap { host } => {
                    spec.tap.push(host.clone());
                    ports.insert((false, host.clone()), p.id());
                }
                ifnet::PortKind::Packet { host } => {
                    spec.af_packet.push(host.clone());
                    ports.insert((true, host.clone()), p.id());
                }
                // Vnets' ports are their links; another vnetd's uplinks
                // are that vnetd's to make.
                ifnet::PortKind::Vnet { .. } | ifnet::PortKind::Remote { .. } => {}
            }
        }
        out.insert(name, (spec, ports));
    }
    out
}

/// The switch requests of a plan: those to make before the links (new
/// switches, changed settings, host ports) and those after the removals
/// (host ports and switches that go).
fn plan_switches(
    switches: &Switches,
    want: &Topology,
    uid: u32,
    admin: bool,
) -> Result<(Vec<Op>, Vec<Op>), String> {
    let have = switch_state(switches, uid, admin);
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for (name, w) in &want.switch {
        let h = match have.get(name) {
            Some((h, _)) => h.clone(),
            None if switches.get(name).is_some() => {
                return Err(format!(
                    "switch {name:?} exists and belongs to another user"
                ));
            }
            None => {
                before.push(Op::SwitchAdd {
                    name: name.clone(),
                    mode: w.mode,
                    aging: w.aging,
                    max_macs: w.max_macs,
                });
                SwitchSpec {
                    mode: w.mode,
                    aging: w.aging,
                    max_macs: w.max_macs,
                    ..SwitchSpec::default()
                }
            }
        };
        let norm = |m: Option<ifnet::SwitchMode>| m.unwrap_or(ifnet::SwitchMode::Learning);
        let aging = |a: Option<u64>| a.unwrap_or(ifnet::switch::DEFAULT_AGING.secs());
        let macs = |m: Option<usize>| m.unwrap_or(ifnet::switch::DEFAULT_MAX_MACS);
        if norm(h.mode) != norm(w.mode)
            || aging(h.aging) != aging(w.aging)
            || macs(h.max_macs) != macs(w.max_macs)
        {
            before.push(Op::SwitchSet {
                name: name.clone(),
                mode: Some(norm(w.mode)),
                aging: Some(aging(w.aging)),
                max_macs: Some(macs(w.max_macs)),
            });
        }
        for (kind, hs, ws) in [
            ("tap", &h.tap, &w.tap),
            ("af_packet", &h.af_packet, &w.af_packet),
        ] {
            for host in ws.iter().filter(|x| !hs.contains(x)) {
                before.push(Op::SwitchPortAdd {
                    switch: name.clone(),
                    kind: kind.into(),
                    host: host.clone(),
                });
            }
        }
    }
    for (name, (_, ports)) in &have {
        match want.switch.get(name) {
            None => after.push(Op::SwitchDel { name: name.clone() }),
            Some(w) => {
                for (&(packet, ref host), &port) in ports {
                    let wanted = if packet { &w.af_packet } else { &w.tap };
                    if !wanted.contains(host) {
                        after.push(Op::SwitchPortDel {
                            switch: name.clone(),
                            port,
                        });
                    }
                }
            }
        }
    }
    Ok((before, after))
}

/// The requests that make the running state of `uid`'s vnets match
/// `want`, in an order that works: vnets (parents first), removals, links,
/// their settings and addresses, routes, tunables. Vnets of other owners
/// are neither looked at nor touched.
///
/// # Errors
/// A vnet that exists under another parent than the file says.
pub fn plan(
    reg: &Registry,
    switches: &Switches,
    delegations: &Delegations,
    want: &Topology,
    uid: u32,
    admin: bool,
) -> Result<Vec<Op>, String> {
    let (switch_first, switch_last) = plan_switches(switches, want, uid, admin)?;
    let (deleg_add, deleg_del, quotas) = plan_tenancy(reg, delegations, want, admin)?;
    let have = state(reg, uid, admin);
    let empty = VnetSpec::default();
    let parent_of = |s: &VnetSpec| s.parent.clone().unwrap_or_else(|| "vnet0".into());
    for (vn, wv) in &want.vnet {
        if let Some(hv) = have.vnet.get(vn)
            && vn != "vnet0"
            && parent_of(hv) != parent_of(wv)
        {
            return Err(format!(
                "vnet {vn:?} exists under {:?}; the file puts it under {:?} (delete it to move it)",
                parent_of(hv),
                parent_of(wv)
            ));
        }
        if !have.vnet.contains_key(vn) && reg.by_name(vn).is_some() {
            return Err(format!("vnet {vn:?} exists and belongs to another user"));
        }
    }
    let mut ops = Vec::new();
    // Vnets to create, parents first (parse made sure they are all here).
    let mut made: BTreeSet<String> = have.vnet.keys().cloned().collect();
    made.insert("vnet0".into());
    let mut pending: Vec<&String> = want.vnet.keys().filter(|n| !made.contains(*n)).collect();
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|n| {
            if made.contains(&parent_of(&want.vnet[*n])) {
                ops.push(Op::VnetAdd {
                    name: (*n).clone(),
                    parent: want.vnet[*n].parent.clone(),
                    restrict: want.vnet[*n].restrict.as_ref().and_then(tenancy::canonical),
                });
                made.insert((*n).clone());
                false
            } else {
                true
            }
        });
        if pending.len() == before {
            return Err(format!(
                "vnets {pending:?} have parents that are not in the file"
            ));
        }
    }
    // Whether a running link is the one the file wants at (vn, ln): the
    // same shape seen from this end, whichever end declares it.
    let wanted = |vn: &str, ln: &str| -> Option<Shape> {
        match want.vnet.get(vn).and_then(|v| v.link.get(ln)) {
            Some(l) => Some(desired_shape(want, vn, ln, l)),
            None if is_far_end(want, vn, ln) => {
                Some(desired_shape(want, vn, ln, &LinkSpec::default()))
            }
            None => None,
        }
    };
    let mut removed: BTreeSet<(String, String)> = BTreeSet::new();
    for (vn, hv) in &have.vnet {
        if !want.vnet.contains_key(vn) && vn != "vnet0" {
            continue; // the whole vnet goes below
        }
        for (ln, hl) in &hv.link {
            let keep = wanted(vn, ln).is_some_and(|w| w == desired_shape(&have, vn, ln, hl));
            if !keep {
                ops.push(Op::LinkDel {
                    vnet: vn.clone(),
                    name: ln.clone(),
                });
                removed.insert((vn.clone(), ln.clone()));
            }
        }
    }
    // Vnets that must go, children first.
    let mut doomed: Vec<&String> = have
        .vnet
        .keys()
        .filter(|n| *n != "vnet0" && !want.vnet.contains_key(*n))
        .collect();
    doomed.sort_by_key(|n| std::cmp::Reverse(reg.by_name(n).map_or(0, |v| v.id().0)));
    for n in doomed {
        ops.push(Op::VnetDel {
            name: n.clone(),
            recursive: true,
        });
    }
    let (mut links, mut settings, mut routes, mut tunables) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut filters_del, mut filters_add) = (Vec::new(), Vec::new());
    for (vn, wv) in &want.vnet {
        let hv = have.vnet.get(vn).unwrap_or(&empty);
        // Every link of this vnet the file mentions, or implies as the far
        // end of an epair declared elsewhere.
        let mut names: BTreeSet<String> = wv.link.keys().cloned().collect();
        for (ov, o) in &want.vnet {
            for l in o.link.values() {
                if let Some(p) = &l.peer
                    && p.vnet == *vn
                    && l.kind.as_deref() == Some("epair")
                {
                    names.insert(p.name.clone());
                }
            }
            let _ = ov;
        }
        for ln in &names {
            let default = LinkSpec::default();
            let wl = wv.link.get(ln).unwrap_or(&default);
            let fresh = removed.contains(&(vn.clone(), ln.clone()))
                || !hv.link.contains_key(ln)
                || {
                    // A far end is fresh when the end that declares it is.
                    matches!(desired_shape(want, vn, ln, wl), Shape::Epair(ref p) if wl.kind.is_none()
                    && (removed.contains(&(p.vnet.clone(), p.name.clone()))
                        || !have.vnet.get(&p.vnet).is_some_and(|h| h.link.contains_key(&p.name))))
                };
            if fresh && wl.kind.is_some() {
                match desired_shape(want, vn, ln, wl) {
                    Shape::Epair(p) => links.push(Op::LinkAddEpair {
                        vnet: vn.clone(),
                        name: ln.clone(),
                        peer: p.name,
                        peer_vnet: Some(p.vnet),
                    }),
                    Shape::Tap(h) => links.push(Op::LinkAddTap {
                        vnet: vn.clone(),
                        name: ln.clone(),
                        host: h,
                    }),
                    Shape::AfPacket(h) => links.push(Op::LinkAddAfPacket {
                        vnet: vn.clone(),
                        name: ln.clone(),
                        host: h,
                    }),
                    Shape::Port(sw) => links.push(Op::LinkAddPort {
                        vnet: vn.clone(),
                        name: ln.clone(),
                        switch: sw,
                    }),
                    Shape::Uplink(sw, server) => links.push(Op::LinkAddUplink {
                        vnet: vn.clone(),
                        name: ln.clone(),
                        switch: sw,
                        server: Some(server),
                    }),
                    Shape::Unknown => {}
                }
            }
            let hl = hv.link.get(ln).filter(|_| !fresh);
            let (h_mtu, h_up, h_addr) = match hl {
                Some(h) => (h.mtu.unwrap_or(1500), h.up, h.addr.clone()),
                None => (1500, false, Vec::new()),
            };
            let set = |up: Option<bool>, mtu: Option<usize>| Op::LinkSet {
                vnet: vn.clone(),
                name: ln.clone(),
                up,
                mtu,
                to_vnet: None,
            };
            let w_mtu = wl.mtu.unwrap_or(1500);
            if w_mtu != h_mtu {
                settings.push(set(None, Some(w_mtu)));
            }
            let norm = |a: &String| {
                a.parse::<smoltcp::wire::IpCidr>()
                    .map(|c| c.to_string())
                    .unwrap_or(a.clone())
            };
            let have_a: BTreeSet<String> = h_addr.iter().map(norm).collect();
            let want_a: BTreeSet<String> = wl.addr.iter().map(norm).collect();
            let addr_changes = have_a != want_a;
            // Addresses go on interfaces that are up: raise it for the
            // change if the file keeps it down.
            let mut up_now = h_up;
            if wl.up != h_up || (addr_changes && !h_up) {
                settings.push(set(Some(true), None));
                up_now = true;
            }
            // New addresses before old ones go, so that routes through a
            // prefix that stays are not dropped meanwhile.
            for a in want_a.difference(&have_a) {
                settings.push(Op::AddrAdd {
                    vnet: vn.clone(),
                    dev: ln.clone(),
                    addr: a.clone(),
                });
            }
            for a in have_a.difference(&want_a) {
                settings.push(Op::AddrDel {
                    vnet: vn.clone(),
                    dev: ln.clone(),
                    addr: a.clone(),
                });
            }
            if up_now && !wl.up {
                settings.push(set(Some(false), None));
            }
            // Filters that differ go and come back as the file says; the
            // others keep running (and counting).
            let h_filters = hl.map(|h| h.filter.clone()).unwrap_or_default();
            let w_filters: Vec<FilterSpec> = wl.filter.iter().map(FilterSpec::canonical).collect();
            for f in h_filters.iter().filter(|f| !w_filters.contains(f)) {
                filters_del.push(Op::FilterDel {
                    at: target(vn, ln),
                    dir: f.dir.clone(),
                    name: f.name.clone(),
                });
            }
            for f in w_filters.iter().filter(|f| !h_filters.contains(f)) {
                filters_add.push(f.op(vn, ln));
            }
        }
        // Routes through links that are removed are gone with them.
        let hr: BTreeMap<_, &RouteSpec> = hv
            .route
            .iter()
            .filter(|r| {
                r.dev
                    .as_ref()
                    .is_none_or(|d| !removed.contains(&(vn.clone(), d.clone())))
            })
            .map(|r| (route_key(r), r))
            .collect();
        let wr: BTreeMap<_, &RouteSpec> = wv.route.iter().map(|r| (route_key(r), r)).collect();
        for (k, r) in &hr {
            if !wr.contains_key(k) {
                routes.push(Op::RouteDel {
                    vnet: vn.clone(),
                    dst: r.dst.clone(),
                });
            }
        }
        for (k, r) in &wr {
            if !hr.contains_key(k) {
                routes.push(Op::RouteAdd {
                    vnet: vn.clone(),
                    dst: r.dst.clone(),
                    via: r.via.clone(),
                    dev: r.dev.clone(),
                });
            }
        }
        let defaults = Tunables::default();
        let value =
            |spec: &VnetSpec, k: &str| spec.sysctl.get(k).copied().or_else(|| defaults.get(k).ok());
        let mut keys: Vec<&String> = hv
            .sysctl
            .keys()
            .chain(wv.sysctl.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // The port range must stay ordered at every step: when it moves up,
        // raise its end first.
        let (first, last) = ("net.inet.ip.portrange.first", "net.inet.ip.portrange.last");
        if value(wv, first) > value(hv, last) {
            keys.sort_by_key(|k| k.as_str() != last);
        }
        for k in keys {
            if let Some(w) = value(wv, k)
                && value(hv, k) != Some(w)
            {
                tunables.push(Op::SysctlSet {
                    vnet: vn.clone(),
                    key: k.clone(),
                    value: w.to_string(),
                });
            }
        }
    }
    // Name resolution: hosts entries one by one, the lists whole.
    let mut dns = Vec::new();
    for (vn, wv) in &want.vnet {
        let (hd, wd) = (have.vnet.get(vn).map(|h| &h.dns), &wv.dns);
        let hd = hd.cloned().unwrap_or_default();
        let canon = |n: &str| n.trim_end_matches('.').to_ascii_lowercase();
        let want_hosts: BTreeMap<String, &Vec<String>> =
            wd.hosts.iter().map(|(n, a)| (canon(n), a)).collect();
        for (n, a) in &hd.hosts {
            if want_hosts.get(n).is_none_or(|w| *w != a) {
                dns.push(Op::HostDel {
                    vnet: vn.clone(),
                    name: n.clone(),
                });
            }
        }
        for (n, a) in &want_hosts {
            if hd.hosts.get(n) != Some(*a) {
                dns.push(Op::HostAdd {
                    vnet: vn.clone(),
                    name: n.clone(),
                    addrs: (*a).clone(),
                });
            }
        }
        if hd.nameserver != wd.nameserver || hd.search != wd.search {
            dns.push(Op::DnsSet {
                vnet: vn.clone(),
                nameservers: Some(wd.nameserver.clone()),
                search: Some(wd.search.clone()),
            });
        }
    }
    // The firewall: rules that differ go, then the new ones come, then
    // the policies.
    let mut fw = Vec::new();
    for (vn, wv) in &want.vnet {
        let hf = have.vnet.get(vn).map(|h| h.fw.clone()).unwrap_or_default();
        let (h_rules, w_rules) = (hf.numbered()?, wv.fw.numbered()?);
        for (n, text) in &h_rules {
            if w_rules.get(n) != Some(text) {
                fw.push(Op::FwDel {
                    vnet: vn.clone(),
                    number: u32::from(*n),
                });
            }
        }
        for (n, text) in &w_rules {
            if h_rules.get(n) != Some(text) {
                fw.push(Op::FwAdd {
                    vnet: vn.clone(),
                    rule: text.clone(),
                });
            }
        }
        let (h_pol, w_pol) = (hf.policies()?, wv.fw.policies()?);
        for hook in Hook::ALL {
            let w = w_pol.get(&hook).copied().unwrap_or(Action::Allow);
            if h_pol.get(&hook).copied().unwrap_or(Action::Allow) != w {
                fw.push(Op::FwPolicy {
                    vnet: vn.clone(),
                    hook: hook.name().to_string(),
                    action: w.to_string(),
                });
            }
        }
    }
    // Limits and restrictions of vnets that exist: what the file has,
    // and lifted what it no longer says.
    let mut restricts = Vec::new();
    for (vn, wv) in &want.vnet {
        let Some(hv) = have.vnet.get(vn) else {
            continue;
        };
        let w = wv.restrict.as_ref().and_then(tenancy::canonical);
        if w == hv.restrict || vn == "vnet0" {
            continue;
        }
        let (h, w) = (
            hv.restrict.clone().unwrap_or_default(),
            w.unwrap_or_default(),
        );
        let mut lift = Vec::new();
        for (name, had, wants) in [
            ("vnets", h.vnets.is_some(), w.vnets.is_some()),
            ("interfaces", h.interfaces.is_some(), w.interfaces.is_some()),
            ("sockets", h.sockets.is_some(), w.sockets.is_some()),
            ("mem", h.mem.is_some(), w.mem.is_some()),
            ("addrs", h.addrs.is_some(), w.addrs.is_some()),
            ("links", h.links.is_some(), w.links.is_some()),
            ("forward", h.no_forward, w.no_forward),
        ] {
            if had && !wants {
                lift.push(name.to_string());
            }
        }
        restricts.push(Op::VnetRestrict {
            name: vn.clone(),
            restrict: w,
            lift,
        });
    }
    // Switches before the links on them; removed ones once their links
    // are gone. Delegations go before their switch, come after it.
    ops.extend(deleg_del);
    ops.extend(switch_last);
    ops.extend(switch_first);
    ops.extend(deleg_add);
    ops.extend(quotas);
    ops.extend(restricts);
    ops.extend(filters_del);
    ops.extend(links);
    ops.extend(settings);
    ops.extend(filters_add);
    ops.extend(routes);
    ops.extend(tunables);
    ops.extend(dns);
    ops.extend(fw);
    Ok(ops)
}

/// Delegations to make, delegations to take back, quotas to set.
type TenancyPlan = (Vec<Op>, Vec<Op>, Vec<Op>);

/// The requests for root's users: delegations to take back and to make,
/// and quotas to set (those the file leaves out go back to the default).
///
/// # Errors
/// A user that does not exist, or quotas and delegations in a file that
/// is not root's.
fn plan_tenancy(
    reg: &Registry,
    delegations: &Delegations,
    want: &Topology,
    admin: bool,
) -> Result<TenancyPlan, String> {
    if !admin {
        if !want.quota.is_empty() || !want.delegate.is_empty() {
            return Err(
                "quotas and delegations are root's to set: leave [quota] and [[delegate]] out of this file"
                    .into(),
            );
        }
        return Ok(Default::default());
    }
    let canon = |uid: u32, d: &DelegateSpec| DelegateSpec {
        user: UserRef::Uid(uid),
        uplink: d.uplink.clone(),
        addr: canonical_prefixes(&d.addr),
        rate: d.rate,
        burst: d.rate.map(|r| {
            d.burst
                .unwrap_or_else(|| crate::ifnet::rate::RateLimit::default_burst(r))
        }),
    };
    let mut wanted = Vec::new();
    for d in &want.delegate {
        let uid = d.user.uid().map_err(|e| format!("delegate: {e}"))?;
        wanted.push(canon(uid, d));
    }
    let have = delegate_state(delegations);
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for (id, h) in &have {
        if !wanted.contains(h) {
            del.push(Op::DelegateDel { id: *id });
        }
    }
    for w in &wanted {
        if !have.iter().any(|(_, h)| h == w) {
            let UserRef::Uid(user) = w.user else { continue };
            add.push(Op::DelegateAdd {
                user,
                target: w.uplink.clone(),
                addrs: w.addr.clone(),
                rate: w.rate,
                burst: w.burst,
            });
        }
    }
    let mut quotas = Vec::new();
    let have_q = quota_state(reg);
    let mut want_q = BTreeMap::new();
    for (u, q) in &want.quota {
        let uid = tenancy::resolve_user(u).map_err(|e| format!("quota: {e}"))?;
        want_q.insert(uid.to_string(), q.clone());
    }
    for (u, q) in &want_q {
        if have_q.get(u) != Some(q) {
            quotas.push(Op::QuotaSet {
                user: u.parse().ok(),
                limits: q.clone(),
                reset: false,
            });
        }
    }
    for u in have_q.keys().filter(|u| !want_q.contains_key(*u)) {
        quotas.push(Op::QuotaSet {
            user: u.parse().ok(),
            limits: Restriction::default(),
            reset: true,
        });
    }
    Ok((add, del, quotas))
}

/// What makes two routes the same: the prefix, and the gateway, or the
/// interface when there is no gateway (a gateway's interface follows from
/// it).
fn route_key(r: &RouteSpec) -> (String, Option<String>, Option<String>) {
    let via: Option<smoltcp::wire::IpAddress> = r.via.as_deref().and_then(|v| v.parse().ok());
    let dst = match r.dst.as_str() {
        "default" if matches!(via, Some(smoltcp::wire::IpAddress::Ipv6(_))) => "::/0".to_string(),
        "default" => "0.0.0.0/0".to_string(),
        "default6" => "::/0".to_string(),
        d => d
            .parse::<smoltcp::wire::IpCidr>()
            .map(|c| crate::stack::route::network(c).to_string())
            .unwrap_or_else(|_| d.to_string()),
    };
    match via {
        Some(v) => (dst, Some(v.to_string()), None),
        None => (dst, r.via.clone(), r.dev.clone()),
    }
}

/// A one-line account of a request, for the list of changes.
pub fn describe(op: &Op) -> String {
    match op {
        Op::VnetAdd { name, .. } => format!("vnet add {name}"),
        Op::VnetDel { name, .. } => format!("vnet del {name}"),
        Op::LinkAddEpair {
            vnet,
            name,
            peer,
            peer_vnet,
        } => format!(
            "-n {vnet} link add {name} type epair peer {peer} vnet {}",
            peer_vnet.as_deref().unwrap_or(vnet)
        ),
        Op::LinkAddTap { vnet, name, host } => {
            format!("-n {vnet} link add {name} type tap host {host}")
        }
        Op::LinkSet {
            vnet,
            name,
            up,
            mtu,
            ..
        } => match (up, mtu) {
            (Some(true), _) => format!("-n {vnet} link set {name} up"),
            (Some(false), _) => format!("-n {vnet} link set {name} down"),
            (_, Some(m)) => format!("-n {vnet} link set {name} mtu {m}"),
            _ => format!("-n {vnet} link set {name}"),
        },
        Op::LinkDel { vnet, name } => format!("-n {vnet} link del {name}"),
        Op::HostAdd { vnet, name, addrs } => {
            format!("-n {vnet} dns host add {name} {}", addrs.join(" "))
        }
        Op::HostDel { vnet, name } => format!("-n {vnet} dns host del {name}"),
        Op::DnsSet {
            vnet,
            nameservers,
            search,
        } => format!(
            "-n {vnet} dns nameserver {} search {}",
            nameservers.as_deref().unwrap_or_default().join(" "),
            search.as_deref().unwrap_or_default().join(" ")
        ),
        Op::AddrAdd { vnet, dev, addr } => format!("-n {vnet} addr add {addr} dev {dev}"),
        Op::AddrDel { vnet, dev, addr } => format!("-n {vnet} addr del {addr} dev {dev}"),
        Op::RouteAdd {
            vnet,
            dst,
            via,
            dev,
        } => {
            let mut s = format!("-n {vnet} route add {dst}");
            if let Some(v) = via {
                s += &format!(" via {v}");
            }
            if let Some(d) = dev {
                s += &format!(" dev {d}");
            }
            s
        }
        Op::RouteDel { vnet, dst } => format!("-n {vnet} route del {dst}"),
        Op::SwitchAdd { name, mode, .. } => format!(
            "switch add {name} --mode {}",
            mode.unwrap_or(ifnet::SwitchMode::Learning)
        ),
        Op::SwitchSet { name, .. } => format!("switch set {name}"),
        Op::SwitchDel { name } => format!("switch del {name}"),
        Op::FilterAdd { at, dir, name, .. } => format!(
            "-n {} filter add {} {dir} --name {}",
            at.vnet.as_deref().unwrap_or_default(),
            at.dev.as_deref().unwrap_or_default(),
            name.as_deref().unwrap_or_default()
        ),
        Op::FilterDel { at, dir, name } => format!(
            "-n {} filter del {} {dir} {name}",
            at.vnet.as_deref().unwrap_or_default(),
            at.dev.as_deref().unwrap_or_default()
        ),
        Op::SwitchPortAdd { switch, kind, host } => {
            format!("switch port add {switch} {kind} {host}")
        }
        Op::SwitchPortDel { switch, port } => format!("switch port del {switch} {port}"),
        Op::LinkAddPort { vnet, name, switch } => {
            format!("-n {vnet} link add {name} type port switch {switch}")
        }
        Op::SysctlSet { vnet, key, value } => format!("-n {vnet} sysctl set {key}={value}"),
        Op::VnetRestrict { name, .. } => format!("vnet restrict {name}"),
        Op::QuotaSet { user, reset, .. } => match (user, reset) {
            (Some(u), true) => format!("quota set {u} --reset"),
            (Some(u), false) => format!("quota set {u}"),
            (None, _) => "quota set --default".into(),
        },
        Op::DelegateAdd { user, target, .. } => format!("delegate {user} uplink {target}"),
        Op::DelegateDel { id } => format!("delegate del {id}"),
        Op::LinkAddUplink {
            vnet, name, switch, ..
        } => format!("-n {vnet} link add {name} type uplink switch {switch}"),
        Op::FwAdd { vnet, rule } => format!("-n {vnet} fw add {rule}"),
        Op::FwDel { vnet, number } => format!("-n {vnet} fw del {number}"),
        Op::FwPolicy { vnet, hook, action } => format!("-n {vnet} fw policy {hook} {action}"),
        other => format!("{other:?}"),
    }
}
