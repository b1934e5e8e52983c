//! The firewall of a vnet (its ipfw or pf): ordered rules on three hooks,
//! with connection tracking.
//!
//! **Hooks.** `in` sees packets addressed to this vnet once IP input has
//! validated them, reassembled them and decided they are local, before
//! smoltcp does; `out` sees packets this vnet originates once they are
//! routed, before neighbor resolution and fragmentation; `fwd` sees packets
//! routed through the vnet, after the TTL check. Traffic a vnet sends to
//! itself (its own addresses, loopback) is not filtered, as pf's
//! `set skip on lo0`; neither are ARP and neighbor discovery.
//!
//! **Rules** ([`Rule`]) have a number and are evaluated in number order on
//! the hook they name (or every hook); the first that matches decides. A
//! packet no rule matches gets the hook's default policy. Each rule counts
//! the packets and bytes it matched, each policy those it decided.
//!
//! **Connection tracking** ([`Conntrack`]) follows every packet the
//! firewall lets through, by its 5-tuple in either direction: TCP loosely
//! (opening, established, closing), UDP, ICMP echo and other protocols as
//! pseudo-connections; an ICMP error quoting a tracked flow is `related`. An
//! entry is made for a `new` packet that is let through, lives for the
//! `net.inet.ip.fw.dyn_*_lifetime` of its state after its last packet, and
//! the table holds at most `net.inet.ip.fw.dyn_max` entries (a new flow is
//! then dropped, and counted). Expired entries are ignored when looked up
//! and freed by a sweep of bounded steps, so no poll does unbounded work.
//!
//! **Cost.** A vnet with no rules and every policy `allow` has an inactive
//! firewall: each hook is one test of a flag, and nothing is tracked.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    IpAddress, IpCidr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, Ipv6Address, Ipv6Packet,
    Ipv6Repr, TcpPacket, TcpSeqNumber,
};

use super::device::{HEADROOM, Pkt};
use super::forward::ErrFrom;
use super::output::Origin;
use super::sysctl::Tunables;
use super::{Inet, route};
use crate::ifnet::{IfIndex, IfnetTable};
use crate::vnet::{self, CurVnetError};

/// What stands for "any protocol" where a protocol is a `u16`.
const ANY_PROTO: u16 = 256;

/// Highest rule number.
pub const MAX_NUMBER: u16 = 65535;

/// The step between rule numbers given automatically.
pub const AUTO_STEP: u16 = 100;

/// Slots of the state table visited per sweep.
const SWEEP_SLOTS: usize = 1024;

/// Time between sweeps while packets flow.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// Slots visited to make room when the state table is full.
const EVICT_SLOTS: usize = 256;

/// Where a rule is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    /// Packets addressed to this vnet.
    In,
    /// Packets this vnet originates.
    Out,
    /// Packets routed through this vnet.
    Fwd,
}

impl Hook {
    /// The hooks, in listing order.
    pub const ALL: [Hook; 3] = [Hook::In, Hook::Out, Hook::Fwd];

    fn index(self) -> usize {
        match self {
            Hook::In => 0,
            Hook::Out => 1,
            Hook::Fwd => 2,
        }
    }

    /// Its name: `in`, `out` or `fwd`.
    pub fn name(self) -> &'static str {
        match self {
            Hook::In => "in",
            Hook::Out => "out",
            Hook::Fwd => "fwd",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Hook {
    type Err = String;
    fn from_str(s: &str) -> Result<Hook, String> {
        match s {
            "in" => Ok(Hook::In),
            "out" => Ok(Hook::Out),
            "fwd" => Ok(Hook::Fwd),
            _ => Err(format!("{s:?} is not a hook (in, out, fwd)")),
        }
    }
}

/// What a rule, or a hook's default policy, does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let it through.
    Allow,
    /// Drop it silently.
    Drop,
    /// Drop it and tell the sender: a TCP reset for TCP, ICMP port
    /// unreachable (ICMPv6 port unreachable) for anything else.
    Reject,
    /// Drop it and send ICMP "communication administratively prohibited"
    /// (ICMPv6 "administratively prohibited"), TCP included.
    RejectAdmin,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Drop => "drop",
            Action::Reject => "reject",
            Action::RejectAdmin => "reject admin",
        })
    }
}

impl FromStr for Action {
    type Err = String;
    /// `allow` (or `accept`, `pass`), `drop` (or `deny`), `reject`,
    /// `reject admin`.
    fn from_str(s: &str) -> Result<Action, String> {
        let mut t = Tokens::new(s);
        let a = parse_action(&mut t)?;
        match t.next() {
            None => Ok(a),
            Some(w) => Err(format!("unexpected {w:?} after the action")),
        }
    }
}

/// A condition, possibly negated (`not`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond<T> {
    /// Match when the condition does not hold.
    pub not: bool,
    /// The condition.
    pub value: T,
}

impl<T> Cond<T> {
    fn test(&self, holds: bool) -> bool {
        holds != self.not
    }
}

impl<T: fmt::Display> fmt::Display for Cond<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.not {
            f.write_str("not ")?;
        }
        self.value.fmt(f)
    }
}

/// An inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// Lowest port.
    pub first: u16,
    /// Highest port.
    pub last: u16,
}

impl PortRange {
    fn contains(self, p: u16) -> bool {
        self.first <= p && p <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<PortRange, String> {
        let port = |x: &str| {
            x.parse::<u16>()
                .map_err(|_| format!("{x:?} is not a port (0 to 65535)"))
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if first > last {
            return Err(format!("port range {s:?} is empty (first above last)"));
        }
        Ok(PortRange { first, last })
    }
}

/// The connection-tracking state of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtState {
    /// It opens a flow, or belongs to one not yet answered.
    New,
    /// It belongs to a flow that has seen packets both ways.
    Established,
    /// An ICMP error about a tracked flow.
    Related,
    /// Not part of anything tracked and cannot open a flow: a TCP reset or
    /// echo reply without a flow, an ICMP error about an unknown flow, a
    /// truncated header.
    Invalid,
}

impl CtState {
    const ALL: [CtState; 4] = [
        CtState::New,
        CtState::Established,
        CtState::Related,
        CtState::Invalid,
    ];

    fn bit(self) -> u8 {
        match self {
            CtState::New => 1,
            CtState::Established => 2,
            CtState::Related => 4,
            CtState::Invalid => 8,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            CtState::New => "new",
            CtState::Established => "established",
            CtState::Related => "related",
            CtState::Invalid => "invalid",
        }
    }
}

/// A set of connection states, as `state new,established` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct States(u8);

impl States {
    /// Whether `s` is in the set.
    pub fn contains(self, s: CtState) -> bool {
        self.0 & s.bit() != 0
    }
}

impl fmt::Display for States {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = CtState::ALL
            .iter()
            .filter(|s| self.contains(**s))
            .map(|s| s.name())
            .collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for States {
    type Err = String;
    fn from_str(s: &str) -> Result<States, String> {
        let mut bits = 0;
        for n in s.split(',') {
            let st = CtState::ALL.iter().find(|x| x.name() == n).ok_or_else(|| {
                format!("{n:?} is not a state (new, established, related, invalid)")
            })?;
            bits |= st.bit();
        }
        Ok(States(bits))
    }
}

/// A prefix to match addresses against; a host address prints without its
/// length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix(pub IpCidr);

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpCidr::Ipv4(c) if c.prefix_len() == 32 => write!(f, "{}", c.address()),
            IpCidr::Ipv6(c) if c.prefix_len() == 128 => write!(f, "{}", c.address()),
            c => write!(f, "{c}"),
        }
    }
}

impl Prefix {
    fn is_v6(self) -> bool {
        matches!(self.0, IpCidr::Ipv6(_))
    }
}

/// One side of a rule: `from` or `to`, an address prefix and ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Side {
    /// The prefix (`any` when absent).
    pub addr: Option<Cond<Prefix>>,
    /// The ports.
    pub port: Option<Cond<PortRange>>,
}

impl Side {
    fn is_empty(&self) -> bool {
        self.addr.is_none() && self.port.is_none()
    }
}

/// A firewall rule. Its text form is
/// `[NUM] ACTION [in|out|fwd] [recv|xmit|via [not] IF] [proto P]
/// [from [not] PREFIX|any [port [not] A[-B]]] [to ...] [icmp-type T [code C]]
/// [state [not] S[,S...]]`; [`fmt::Display`] writes what [`FromStr`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Its number (given when added if absent).
    pub number: Option<u16>,
    /// What it does.
    pub action: Action,
    /// The hook it is evaluated on; every hook when absent.
    pub hook: Option<Hook>,
    /// The interface the packet came in on (`in` and `fwd`).
    pub recv: Option<Cond<String>>,
    /// The interface the packet leaves by (`out` and `fwd`).
    pub xmit: Option<Cond<String>>,
    /// The interface either way: `recv` on `in`, `xmit` on `out`, either on `fwd`.
    pub via: Option<Cond<String>>,
    /// The IP protocol number; any when absent.
    pub proto: Option<u8>,
    /// Source.
    pub from: Side,
    /// Destination.
    pub to: Side,
    /// ICMP (or ICMPv6) type and optionally code.
    pub icmp: Option<(u8, Option<u8>)>,
    /// Connection states.
    pub state: Option<Cond<States>>,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMP6: u8 = 58;

fn proto_name(p: u8) -> Option<&'static str> {
    match p {
        TCP => Some("tcp"),
        UDP => Some("udp"),
        ICMP => Some("icmp"),
        ICMP6 => Some("icmp6"),
        _ => None,
    }
}

/// Words of a rule, with the one being looked at.
struct Tokens<'a> {
    words: std::iter::Peekable<std::str::SplitWhitespace<'a>>,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a str) -> Tokens<'a> {
        Tokens {
            words: s.split_whitespace().peekable(),
        }
    }
    fn next(&mut self) -> Option<&'a str> {
        self.words.next()
    }
    fn peek(&mut self) -> Option<&'a str> {
        self.words.peek().copied()
    }
    fn value(&mut self, what: &str) -> Result<&'a str, String> {
        self.next().ok_or_else(|| format!("{what} needs a value"))
    }
    fn not(&mut self) -> bool {
        if self.peek() == Some("not") {
            self.next();
            true
        } else {
            false
        }
    }
}

fn parse_action(t: &mut Tokens<'_>) -> Result<Action, String> {
    match t.next() {
        Some("allow" | "accept" | "pass") => Ok(Action::Allow),
        Some("drop" | "deny") => Ok(Action::Drop),
        Some("reject") => {
            if t.peek() == Some("admin") {
                t.next();
                Ok(Action::RejectAdmin)
            } else {
                Ok(Action::Reject)
            }
        }
        Some(w) => Err(format!(
            "{w:?} is not an action (allow, drop, reject, reject admin)"
        )),
        None => Err("no action (allow, drop, reject, reject admin)".into()),
    }
}

fn parse_prefix(s: &str) -> Result<Prefix, String> {
    if let Ok(c) = s.parse::<IpCidr>() {
        return Ok(Prefix(route::network(c)));
    }
    match s.parse::<IpAddress>() {
        Ok(a) => Ok(Prefix(IpCidr::new(
            a,
            if matches!(a, IpAddress::Ipv4(_)) {
                32
            } else {
                128
            },
        ))),
        Err(_) => Err(format!(
            "{s:?} is not an address or prefix (10.0.0.0/24, fd00::1, any)"
        )),
    }
}

fn parse_side(t: &mut Tokens<'_>, which: &str) -> Result<Side, String> {
    let mut side = Side::default();
    if t.peek() != Some("port") {
        let not = t.not();
        let a = t.value(which)?;
        if a == "any" {
            if not {
                return Err(format!("{which} not any matches nothing"));
            }
        } else {
            side.addr = Some(Cond {
                not,
                value: parse_prefix(a)?,
            });
        }
    }
    if t.peek() == Some("port") {
        t.next();
        let not = t.not();
        let r = t.value("port")?;
        side.port = Some(Cond {
            not,
            value: r.parse()?,
        });
    }
    Ok(side)
}

fn parse_u8(s: &str, what: &str) -> Result<u8, String> {
    s.parse::<u8>()
        .map_err(|_| format!("{what} {s:?} is not a number from 0 to 255"))
}

impl FromStr for Rule {
    type Err = String;

    fn from_str(s: &str) -> Result<Rule, String> {
        let mut t = Tokens::new(s);
        let mut number = None;
        if let Some(w) = t.peek()
            && w.starts_with(|c: char| c.is_ascii_digit())
        {
            t.next();
            match w.parse::<u32>() {
                Ok(n) if (1..=u32::from(MAX_NUMBER)).contains(&n) => number = Some(n as u16),
                _ => {
                    return Err(format!("rule number {w:?} is not from 1 to {MAX_NUMBER}"));
                }
            }
        }
        let action = parse_action(&mut t)?;
        let mut r = Rule {
            number,
            action,
            hook: None,
            recv: None,
            xmit: None,
            via: None,
            proto: None,
            from: Side::default(),
            to: Side::default(),
            icmp: None,
            state: None,
        };
        if let Some(h) = t.peek().and_then(|w| w.parse::<Hook>().ok()) {
            t.next();
            r.hook = Some(h);
        }
        let mut seen: Vec<&str> = Vec::new();
        while let Some(w) = t.next() {
            if seen.contains(&w) {
                return Err(format!("{w} given twice"));
            }
            seen.push(w);
            match w {
                "recv" | "xmit" | "via" => {
                    let not = t.not();
                    let name = t.value(w)?.to_string();
                    let c = Some(Cond { not, value: name });
                    match w {
                        "recv" => r.recv = c,
                        "xmit" => r.xmit = c,
                        _ => r.via = c,
                    }
                }
                "proto" => {
                    r.proto = match t.value("proto")? {
                        "any" => None,
                        "tcp" => Some(TCP),
                        "udp" => Some(UDP),
                        "icmp" => Some(ICMP),
                        "icmp6" | "ipv6-icmp" => Some(ICMP6),
                        n => Some(n.parse::<u8>().map_err(|_| {
                            format!(
                                "{n:?} is not a protocol (tcp, udp, icmp, icmp6, any, or a number)"
                            )
                        })?),
                    }
                }
                "from" => r.from = parse_side(&mut t, "from")?,
                "to" => r.to = parse_side(&mut t, "to")?,
                "icmp-type" => {
                    let ty = parse_u8(t.value("icmp-type")?, "icmp-type")?;
                    let code = if t.peek() == Some("code") {
                        t.next();
                        Some(parse_u8(t.value("code")?, "code")?)
                    } else {
                        None
                    };
                    r.icmp = Some((ty, code));
                }
                "state" => {
                    let not = t.not();
                    r.state = Some(Cond {
                        not,
                        value: t.value("state")?.parse()?,
                    });
                }
                "port" => {
                    return Err("port belongs after from ADDR or to ADDR".into());
                }
                w => {
                    return Err(format!(
                        "unexpected {w:?} (expected recv, xmit, via, proto, from, to, icmp-type or state)"
                    ));
                }
            }
        }
        r.check()?;
        Ok(r)
    }
}

impl Rule {
    /// Refuses combinations that can never match.
    fn check(&self) -> Result<(), String> {
        let ports = self.from.port.is_some() || self.to.port.is_some();
        if ports && !matches!(self.proto, Some(TCP | UDP)) {
            return Err("ports need proto tcp or proto udp".into());
        }
        if self.icmp.is_some() && !matches!(self.proto, Some(ICMP | ICMP6)) {
            return Err("icmp-type needs proto icmp or proto icmp6".into());
        }
        let fams: Vec<bool> = [&self.from.addr, &self.to.addr]
            .into_iter()
            .flatten()
            .map(|c| c.value.is_v6())
            .collect();
        if fams.len() == 2 && fams[0] != fams[1] {
            return Err("from and to are of different address families".into());
        }
        if let Some(&v6) = fams.first() {
            if v6 && self.proto == Some(ICMP) {
                return Err("proto icmp is IPv4; use proto icmp6 with IPv6 addresses".into());
            }
            if !v6 && self.proto == Some(ICMP6) {
                return Err("proto icmp6 is IPv6; use proto icmp with IPv4 addresses".into());
            }
        }
        if self.hook == Some(Hook::Out) && self.recv.is_some() {
            return Err("recv names the interface a packet came in on: not on the out hook".into());
        }
        if self.hook == Some(Hook::In) && self.xmit.is_some() {
            return Err("xmit names the interface a packet leaves by: not on the in hook".into());
        }
        Ok(())
    }

    /// Whether the rule matches a packet on `hook`.
    fn matches(&self, hook: Hook, p: &PktInfo, state: Option<CtState>, ifs: &IfCx<'_>) -> bool {
        if self.hook.is_some_and(|h| h != hook) {
            return false;
        }
        if let Some(pr) = self.proto
            && pr != p.proto
        {
            return false;
        }
        for (side, addr) in [(&self.from, p.src), (&self.to, p.dst)] {
            if let Some(c) = &side.addr
                && !c.test(c.value.0.contains_addr(&addr))
            {
                return false;
            }
        }
        if self.from.port.is_some() || self.to.port.is_some() {
            let Some((sport, dport)) = p.l4.ports() else {
                return false;
            };
            for (side, port) in [(&self.from, sport), (&self.to, dport)] {
                if let Some(c) = &side.port
                    && !c.test(c.value.contains(port))
                {
                    return false;
                }
            }
        }
        if let Some((ty, code)) = self.icmp {
            let Some((t, c)) = p.l4.icmp() else {
                return false;
            };
            if t != ty || code.is_some_and(|x| x != c) {
                return false;
            }
        }
        if let Some(c) = &self.state {
            let Some(s) = state else { return false };
            if !c.test(c.value.contains(s)) {
                return false;
            }
        }
        let is = |c: &Cond<String>, name: Option<&str>| name == Some(c.value.as_str());
        if let Some(c) = &self.recv
            && !c.test(is(c, ifs.in_name))
        {
            return false;
        }
        if let Some(c) = &self.xmit
            && !c.test(is(c, ifs.out_name))
        {
            return false;
        }
        if let Some(c) = &self.via {
            let holds = match hook {
                Hook::In => is(c, ifs.in_name),
                Hook::Out => is(c, ifs.out_name),
                Hook::Fwd => is(c, ifs.in_name) || is(c, ifs.out_name),
            };
            if !c.test(holds) {
                return false;
            }
        }
        true
    }

    fn names_interfaces(&self) -> bool {
        self.recv.is_some() || self.xmit.is_some() || self.via.is_some()
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = self.number {
            write!(f, "{n} ")?;
        }
        write!(f, "{}", self.action)?;
        if let Some(h) = self.hook {
            write!(f, " {h}")?;
        }
        for (kw, c) in [
            ("recv", &self.recv),
            ("xmit", &self.xmit),
            ("via", &self.via),
        ] {
            if let Some(c) = c {
                write!(f, " {kw} {c}")?;
            }
        }
        if let Some(p) = self.proto {
            match proto_name(p) {
                Some(n) => write!(f, " proto {n}")?,
                None => write!(f, " proto {p}")?,
            }
        }
        for (kw, side) in [("from", &self.from), ("to", &self.to)] {
            if side.is_empty() {
                continue;
            }
            match &side.addr {
                Some(a) => write!(f, " {kw} {a}")?,
                None => write!(f, " {kw} any")?,
            }
            if let Some(p) = &side.port {
                write!(f, " port {p}")?;
            }
        }
        if let Some((t, c)) = self.icmp {
            write!(f, " icmp-type {t}")?;
            if let Some(c) = c {
                write!(f, " code {c}")?;
            }
        }
        if let Some(s) = &self.state {
            write!(f, " state {s}")?;
        }
        Ok(())
    }
}

/// The names of the interfaces a packet came in on and leaves by (looked
/// up only when a rule names interfaces).
#[derive(Debug, Clone, Copy, Default)]
struct IfCx<'a> {
    in_name: Option<&'a str>,
    out_name: Option<&'a str>,
}

/// What the transport header of a packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Echo {
        request: bool,
        ty: u8,
        id: u16,
    },
    IcmpError {
        ty: u8,
        code: u8,
        inner: Option<(Key, bool)>,
    },
    IcmpOther {
        ty: u8,
        code: u8,
    },
    Other,
    /// A fragment other than the first: no transport header.
    Fragment,
    /// A transport header cut short.
    Truncated,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

impl L4 {
    fn ports(self) -> Option<(u16, u16)> {
        match self {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => Some((sport, dport)),
            _ => None,
        }
    }
    fn icmp(self) -> Option<(u8, u8)> {
        match self {
            L4::Echo { ty, .. } => Some((ty, 0)),
            L4::IcmpError { ty, code, .. } | L4::IcmpOther { ty, code } => Some((ty, code)),
            _ => None,
        }
    }
}

/// What the firewall knows of a packet.
#[derive(Debug, Clone, Copy)]
struct PktInfo {
    src: IpAddress,
    dst: IpAddress,
    proto: u8,
    len: usize,
    l4: L4,
}

/// Source, destination, transport protocol and transport bytes of an IP
/// packet (`None` for a fragment other than the first). A `quoted` packet
/// (inside an ICMP error) may be cut short: its length field is not
/// trusted.
fn headers(ip: &[u8], quoted: bool) -> Option<(IpAddress, IpAddress, u8, Option<&[u8]>)> {
    match ip.first()? >> 4 {
        4 => {
            let hl = usize::from(ip[0] & 0x0f) * 4;
            if ip.len() < 20 || hl < 20 {
                return None;
            }
            let src = Ipv4Address::from(<[u8; 4]>::try_from(&ip[12..16]).ok()?);
            let dst = Ipv4Address::from(<[u8; 4]>::try_from(&ip[16..20]).ok()?);
            let frag_off = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
            let end = if quoted {
                ip.len()
            } else {
                usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len())
            };
            let l4 = (frag_off == 0).then(|| ip.get(hl..end).unwrap_or(&[]));
            Some((IpAddress::Ipv4(src), IpAddress::Ipv4(dst), ip[9], l4))
        }
        6 => {
            if ip.len() < 40 {
                return None;
            }
            let src = Ipv6Address::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
            let dst = Ipv6Address::from(<[u8; 16]>::try_from(&ip[24..40]).ok()?);
            let end = if quoted {
                ip.len()
            } else {
                (40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]))).min(ip.len())
            };
            let (mut next, mut off) = (ip[6], 40);
            // Extension headers, a bounded number of them.
            for _ in 0..8 {
                match next {
                    0 | 43 | 60 | 51 => {
                        let Some(h) = ip.get(off..off + 2) else { break };
                        let len = if next == 51 {
                            (usize::from(h[1]) + 2) * 4
                        } else {
                            (usize::from(h[1]) + 1) * 8
                        };
                        next = h[0];
                        off += len;
                    }
                    44 => {
                        let Some(h) = ip.get(off..off + 8) else { break };
                        next = h[0];
                        off += 8;
                        if u16::from_be_bytes([h[2], h[3]]) >> 3 != 0 {
                            return Some((IpAddress::Ipv6(src), IpAddress::Ipv6(dst), next, None));
                        }
                    }
                    _ => break,
                }
            }
            let l4 = ip.get(off..end).unwrap_or(&[]);
            Some((IpAddress::Ipv6(src), IpAddress::Ipv6(dst), next, Some(l4)))
        }
        _ => None,
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

impl PktInfo {
    fn parse(ip: &[u8]) -> Option<PktInfo> {
        let (src, dst, proto, l4) = headers(ip, false)?;
        let v6 = matches!(src, IpAddress::Ipv6(_));
        let l4 = match l4 {
            None => L4::Fragment,
            Some(b) => transport(proto, b, v6),
        };
        Some(PktInfo {
            src,
            dst,
            proto,
            len: ip.len(),
            l4,
        })
    }

    /// The flow this packet belongs to: its key, and whether the packet
    /// goes from the key's first end to its second.
    fn flow(&self) -> Option<(Key, bool)> {
        let (sp, dp) = match self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (sport, dport),
            L4::Echo { id, .. } => (id, id),
            L4::Other => (0, 0),
            _ => return None,
        };
        Some(Key::of(self.proto, (self.src, sp), (self.dst, dp)))
    }
}

fn transport(proto: u8, b: &[u8], v6: bool) -> L4 {
    match proto {
        TCP if b.len() >= 20 => L4::Tcp {
            sport: be16(b, 0),
            dport: be16(b, 2),
            flags: b[13],
        },
        UDP if b.len() >= 8 => L4::Udp {
            sport: be16(b, 0),
            dport: be16(b, 2),
        },
        ICMP | ICMP6 if (proto == ICMP6) == v6 => {
            if b.len() < 8 {
                return L4::Truncated;
            }
            let (ty, code) = (b[0], b[1]);
            let (req, rep, error) = if v6 {
                (128, 129, (1..=4).contains(&ty))
            } else {
                (8, 0, matches!(ty, 3 | 4 | 5 | 11 | 12))
            };
            if ty == req || ty == rep {
                L4::Echo {
                    request: ty == req,
                    ty,
                    id: be16(b, 4),
                }
            } else if error {
                L4::IcmpError {
                    ty,
                    code,
                    inner: quoted_flow(&b[8..]),
                }
            } else {
                L4::IcmpOther { ty, code }
            }
        }
        TCP | UDP => L4::Truncated,
        _ => L4::Other,
    }
}

/// The flow of the packet an ICMP error quotes.
fn quoted_flow(ip: &[u8]) -> Option<(Key, bool)> {
    let (src, dst, proto, l4) = headers(ip, true)?;
    let b = l4?;
    let (sp, dp) = match proto {
        TCP | UDP if b.len() >= 4 => (be16(b, 0), be16(b, 2)),
        ICMP | ICMP6 if b.len() >= 6 => (be16(b, 4), be16(b, 4)),
        TCP | UDP | ICMP | ICMP6 => return None,
        _ => (0, 0),
    };
    Some(Key::of(proto, (src, sp), (dst, dp)))
}

/// A flow, the same whichever way its packets go: the protocol and its two
/// ends (address, port; an echo's identifier twice), the lower end first.
/// Addresses are kept as 128-bit numbers (IPv4 in the low bits, the family
/// apart) so that hashing a key is a few multiplications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    v6: bool,
    proto: u8,
    a: (u128, u16),
    b: (u128, u16),
}

fn bits(a: IpAddress) -> u128 {
    match a {
        IpAddress::Ipv4(a) => u128::from(a.to_bits()),
        IpAddress::Ipv6(a) => a.to_bits(),
    }
}

impl Key {
    /// The key of a flow from `src` to `dst`, and whether `src` is its
    /// first end.
    fn of(proto: u8, src: (IpAddress, u16), dst: (IpAddress, u16)) -> (Key, bool) {
        let v6 = matches!(src.0, IpAddress::Ipv6(_));
        let (s, d) = ((bits(src.0), src.1), (bits(dst.0), dst.1));
        if s <= d {
            (
                Key {
                    v6,
                    proto,
                    a: s,
                    b: d,
                },
                true,
            )
        } else {
            (
                Key {
                    v6,
                    proto,
                    a: d,
                    b: s,
                },
                false,
            )
        }
    }
}

/// Hashes flow keys with a multiplier drawn from the vnet's seed: cheap on
/// the packet path, and not predictable by whoever chooses the addresses
/// and ports.
#[derive(Debug, Clone, Copy)]
struct FlowHash {
    k: u64,
}

impl FlowHash {
    fn new(seed: u64) -> FlowHash {
        // An odd multiplier with high bits set.
        FlowHash {
            k: seed | 0x8000_0000_0000_0001,
        }
    }
}

impl Default for FlowHash {
    fn default() -> FlowHash {
        FlowHash::new(0x9e37_79b9_7f4a_7c15)
    }
}

struct FlowHasher {
    h: u64,
    k: u64,
}

fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl std::hash::BuildHasher for FlowHash {
    type Hasher = FlowHasher;
    fn build_hasher(&self) -> FlowHasher {
        FlowHasher {
            h: self.k.rotate_left(17),
            k: self.k,
        }
    }
}

impl std::hash::Hasher for FlowHasher {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, x: u8) {
        self.write_u64(u64::from(x));
    }
    fn write_u16(&mut self, x: u16) {
        self.write_u64(u64::from(x));
    }
    fn write_u64(&mut self, x: u64) {
        self.h = fold(self.h ^ x, self.k);
    }
    fn write_u128(&mut self, x: u128) {
        self.write_u64(x as u64);
        self.write_u64((x >> 64) as u64);
    }
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
    fn finish(&self) -> u64 {
        fold(self.h, self.k.rotate_left(29))
    }
}

/// Where a TCP connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Opening,
    Established,
    Closing,
}

#[derive(Debug, Clone)]
struct Conn {
    key: Key,
    /// Whether the initiator is the key's first end.
    orig_is_a: bool,
    replied: bool,
    phase: Phase,
    fin_orig: bool,
    fin_reply: bool,
    expires: Instant,
}

/// The state table of one vnet: entries in slots (so that a sweep can
/// resume where it stopped), found by key.
#[derive(Debug, Default)]
pub struct Conntrack {
    slots: Vec<Option<Conn>>,
    free: Vec<u32>,
    map: HashMap<Key, u32, FlowHash>,
    cursor: usize,
    next_sweep: Option<Instant>,
}

impl Conntrack {
    fn new(seed: u64) -> Conntrack {
        Conntrack {
            map: HashMap::with_hasher(FlowHash::new(seed)),
            ..Conntrack::default()
        }
    }

    fn live(&self, idx: u32, now: Instant) -> bool {
        self.slots[idx as usize]
            .as_ref()
            .is_some_and(|c| c.expires > now)
    }

    /// The entry of `key` if it has not expired (an expired one is freed).
    fn lookup(&mut self, key: &Key, now: Instant) -> Option<u32> {
        let idx = *self.map.get(key)?;
        if self.live(idx, now) {
            Some(idx)
        } else {
            self.remove(idx);
            None
        }
    }

    fn remove(&mut self, idx: u32) {
        if let Some(c) = self.slots[idx as usize].take() {
            self.map.remove(&c.key);
            self.free.push(idx);
        }
    }

    /// Adds an entry; false when the table is full even after freeing
    /// what has expired nearby.
    fn insert(&mut self, c: Conn, max: usize, now: Instant) -> bool {
        if self.map.len() >= max {
            self.sweep(now, EVICT_SLOTS);
            if self.map.len() >= max {
                return false;
            }
        }
        let key = c.key;
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(c);
                i
            }
            None => {
                self.slots.push(Some(c));
                (self.slots.len() - 1) as u32
            }
        };
        self.map.insert(key, idx);
        true
    }

    /// Frees expired entries among the next `budget` slots.
    fn sweep(&mut self, now: Instant, budget: usize) {
        if self.map.is_empty() {
            // Give the memory back once the table is empty.
            if !self.slots.is_empty() {
                *self = Conntrack::new(self.map.hasher().k);
            }
            return;
        }
        for _ in 0..budget.min(self.slots.len()) {
            if self.cursor >= self.slots.len() {
                self.cursor = 0;
            }
            let idx = self.cursor as u32;
            if self.slots[self.cursor].is_some() && !self.live(idx, now) {
                self.remove(idx);
            }
            self.cursor += 1;
        }
    }

    /// Runs a sweep step if one is due.
    fn tick(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|t| now >= t) {
            self.sweep(now, SWEEP_SLOTS);
            self.next_sweep = Some(now + SWEEP_EVERY);
        }
    }

    /// Entries that have not expired at `now`.
    pub fn len(&self, now: Instant) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|c| c.expires > now)
            .count()
    }

    /// Entries held, expired or not (what the memory holds).
    pub fn held(&self) -> usize {
        self.map.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn lifetime(t: &Tunables, proto: u8, phase: Phase) -> Duration {
        let s = match (proto, phase) {
            (TCP, Phase::Opening) => t.fw_dyn_syn_lifetime_s,
            (TCP, Phase::Established) => t.fw_dyn_ack_lifetime_s,
            (TCP, Phase::Closing) => t.fw_dyn_fin_lifetime_s,
            (UDP, _) => t.fw_dyn_udp_lifetime_s,
            _ => t.fw_dyn_short_lifetime_s,
        };
        Duration::from_secs(s)
    }
}

/// How a packet relates to the state table.
struct Class {
    state: Option<CtState>,
    /// Its entry, and whether it goes the way the flow was opened.
    entry: Option<(u32, bool)>,
}

impl Conntrack {
    fn classify(&mut self, p: &PktInfo, now: Instant) -> Class {
        let none = |state| Class { state, entry: None };
        match p.l4 {
            L4::Fragment => return none(None),
            L4::Truncated => return none(Some(CtState::Invalid)),
            L4::IcmpError { inner, .. } => {
                let found = inner.is_some_and(|(k, _)| self.lookup(&k, now).is_some());
                return none(Some(if found {
                    CtState::Related
                } else {
                    CtState::Invalid
                }));
            }
            L4::IcmpOther { .. } => return none(Some(CtState::New)),
            _ => {}
        }
        let Some((key, fwd)) = p.flow() else {
            return none(Some(CtState::Invalid));
        };
        let tcp_flags = match p.l4 {
            L4::Tcp { flags, .. } => Some(flags),
            _ => None,
        };
        if let Some(idx) = self.lookup(&key, now) {
            let c = self.slots[idx as usize].as_ref().expect("live entry");
            let orig = fwd == c.orig_is_a;
            // A new connection on the ports of one that is closing.
            let reopen = tcp_flags.is_some_and(|f| f & (SYN | ACK) == SYN);
            if reopen && c.phase == Phase::Closing {
                self.remove(idx);
            } else {
                let st = if c.replied || !orig {
                    CtState::Established
                } else {
                    CtState::New
                };
                return Class {
                    state: Some(st),
                    entry: Some((idx, orig)),
                };
            }
        }
        let invalid = match p.l4 {
            L4::Tcp { flags, .. } => flags & RST != 0,
            L4::Echo { request, .. } => !request,
            _ => false,
        };
        none(Some(if invalid {
            CtState::Invalid
        } else {
            CtState::New
        }))
    }

    /// Follows a packet that was let through.
    fn update(&mut self, idx: u32, orig: bool, p: &PktInfo, t: &Tunables, now: Instant) {
        let Some(c) = self.slots[idx as usize].as_mut() else {
            return;
        };
        if !orig {
            c.replied = true;
        }
        if let L4::Tcp { flags, .. } = p.l4 {
            if flags & RST != 0 {
                c.phase = Phase::Closing;
            } else {
                if flags & FIN != 0 {
                    if orig {
                        c.fin_orig = true;
                    } else {
                        c.fin_reply = true;
                    }
                }
                if c.fin_orig && c.fin_reply {
                    c.phase = Phase::Closing;
                } else if c.phase == Phase::Opening && !orig && flags & ACK != 0 {
                    c.phase = Phase::Established;
                }
            }
        }
        c.expires = now + Self::lifetime(t, p.proto, c.phase);
    }

    /// Makes an entry for a new flow that was let through; false when the
    /// table is full.
    fn open(&mut self, p: &PktInfo, t: &Tunables, now: Instant) -> bool {
        let Some((key, fwd)) = p.flow() else {
            return true;
        };
        let phase = match p.l4 {
            L4::Tcp { flags, .. } if flags & (SYN | ACK) == SYN => Phase::Opening,
            _ => Phase::Established,
        };
        let c = Conn {
            key,
            orig_is_a: fwd,
            replied: false,
            phase,
            fin_orig: matches!(p.l4, L4::Tcp { flags, .. } if flags & FIN != 0),
            fin_reply: false,
            expires: now + Self::lifetime(t, p.proto, phase),
        };
        self.insert(c, t.fw_dyn_max, now)
    }
}

/// A rule in the list, with its counters.
#[derive(Debug, Clone)]
struct Entry {
    rule: Rule,
    number: u16,
    packets: u64,
    bytes: u64,
}

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets.
    pub packets: u64,
    /// Bytes of IP (headers included).
    pub bytes: u64,
}

impl Counter {
    fn add(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
    }
}

/// What the firewall decided about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Pass,
    Drop,
    Reject(Action),
    /// Let through by the rules, but the state table is full.
    Full,
}

/// The firewall of one vnet (part of its [`Inet`]).
#[derive(Debug)]
pub struct Firewall {
    /// Sorted by number.
    rules: Vec<Entry>,
    /// Per hook, the rules evaluated there: their position in `rules` and
    /// their protocol ([`ANY_PROTO`] for any), so that a rule for another
    /// protocol is skipped without reading it.
    by_hook: [Vec<(u32, u16)>; 3],
    seed: u64,
    policy: [Action; 3],
    policy_hits: [Counter; 3],
    active: bool,
    names_needed: bool,
    ct: Conntrack,
}

impl Default for Firewall {
    fn default() -> Self {
        Firewall::new(FlowHash::default().k)
    }
}

/// Why a firewall change was refused. Nothing changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FwError {
    /// The rule does not parse or can never match.
    #[error("fw rule {rule:?}: {reason}")]
    BadRule {
        /// The rule's text.
        rule: String,
        /// What is wrong.
        reason: String,
    },
    /// A rule with that number exists.
    #[error("fw rule {0} already exists")]
    Exists(u16),
    /// No rule with that number.
    #[error("no fw rule {0}")]
    NoSuchRule(u16),
    /// No number is left after the last rule for an unnumbered one.
    #[error("no rule number is left after {0}; give the rule a number")]
    NoNumberLeft(u16),
    /// The vnet could not be entered.
    #[error(transparent)]
    Vnet(#[from] CurVnetError),
}

/// A rule as listed, with its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// The rule (numbered).
    pub rule: Rule,
    /// What it matched.
    pub counter: Counter,
}

/// A hook's default policy as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyInfo {
    /// The hook.
    pub hook: Hook,
    /// Its policy.
    pub action: Action,
    /// The packets it decided.
    pub counter: Counter,
}

/// The firewall of a vnet as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The rules in evaluation order.
    pub rules: Vec<RuleInfo>,
    /// The policies of `in`, `out`, `fwd`.
    pub policies: Vec<PolicyInfo>,
    /// Live state entries.
    pub states: usize,
    /// The state table's limit (`net.inet.ip.fw.dyn_max`).
    pub states_max: usize,
}

impl Firewall {
    /// An empty firewall (every policy `allow`); `seed` keys the state
    /// table's hash.
    pub fn new(seed: u64) -> Firewall {
        Firewall {
            rules: Vec::new(),
            by_hook: Default::default(),
            seed,
            policy: [Action::Allow; 3],
            policy_hits: [Counter::default(); 3],
            active: false,
            names_needed: false,
            ct: Conntrack::new(seed),
        }
    }

    /// Whether any rule or policy can refuse a packet: when not, the hooks
    /// cost a test of this flag and nothing is tracked.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active
    }

    fn refresh(&mut self) {
        self.active = !self.rules.is_empty() || self.policy.iter().any(|a| *a != Action::Allow);
        self.names_needed = self.rules.iter().any(|e| e.rule.names_interfaces());
        for h in Hook::ALL {
            self.by_hook[h.index()] = self
                .rules
                .iter()
                .enumerate()
                .filter(|(_, e)| e.rule.hook.is_none_or(|rh| rh == h))
                .map(|(i, e)| (i as u32, e.rule.proto.map_or(ANY_PROTO, u16::from)))
                .collect();
        }
        if !self.active {
            self.ct = Conntrack::new(self.seed);
        }
    }

    /// Adds a rule, numbered [`AUTO_STEP`] after the last when it has no
    /// number; returns its number.
    ///
    /// # Errors
    /// Its number is taken, or none is left.
    pub fn add(&mut self, mut rule: Rule) -> Result<u16, FwError> {
        let n = match rule.number {
            Some(n) => n,
            None => {
                let last = self.rules.last().map_or(0, |e| e.number);
                last.checked_add(AUTO_STEP)
                    .ok_or(FwError::NoNumberLeft(last))?
            }
        };
        let at = match self.rules.binary_search_by_key(&n, |e| e.number) {
            Ok(_) => return Err(FwError::Exists(n)),
            Err(at) => at,
        };
        rule.number = Some(n);
        self.rules.insert(
            at,
            Entry {
                rule,
                number: n,
                packets: 0,
                bytes: 0,
            },
        );
        self.refresh();
        Ok(n)
    }

    /// Removes rule `n`.
    ///
    /// # Errors
    /// No such rule.
    pub fn del(&mut self, n: u16) -> Result<(), FwError> {
        let at = self
            .rules
            .binary_search_by_key(&n, |e| e.number)
            .map_err(|_| FwError::NoSuchRule(n))?;
        self.rules.remove(at);
        self.refresh();
        Ok(())
    }

    /// Removes every rule (the policies stay).
    pub fn flush(&mut self) {
        self.rules.clear();
        self.refresh();
    }

    /// Sets a hook's default policy.
    pub fn set_policy(&mut self, hook: Hook, action: Action) {
        self.policy[hook.index()] = action;
        self.refresh();
    }

    /// A hook's default policy.
    pub fn policy(&self, hook: Hook) -> Action {
        self.policy[hook.index()]
    }

    /// The rules, numbered, in order.
    pub fn rules(&self) -> Vec<Rule> {
        self.rules.iter().map(|e| e.rule.clone()).collect()
    }

    /// The state table.
    pub fn conntrack(&self) -> &Conntrack {
        &self.ct
    }

    /// Rules, policies, counters and the state table's size at `now`.
    pub fn listing(&self, t: &Tunables, now: Instant) -> Listing {
        Listing {
            rules: self
                .rules
                .iter()
                .map(|e| RuleInfo {
                    rule: e.rule.clone(),
                    counter: Counter {
                        packets: e.packets,
                        bytes: e.bytes,
                    },
                })
                .collect(),
            policies: Hook::ALL
                .iter()
                .map(|h| PolicyInfo {
                    hook: *h,
                    action: self.policy[h.index()],
                    counter: self.policy_hits[h.index()],
                })
                .collect(),
            states: self.ct.len(now),
            states_max: t.fw_dyn_max,
        }
    }

    /// Runs a sweep step of the state table if one is due.
    pub(super) fn tick(&mut self, now: Instant) {
        if self.active {
            self.ct.tick(now);
        }
    }

    /// Evaluates a packet on `hook`, following it in the state table when it
    /// is let through.
    fn check(
        &mut self,
        hook: Hook,
        p: &PktInfo,
        ifs: &IfCx<'_>,
        t: &Tunables,
        now: Instant,
    ) -> Verdict {
        let class = self.ct.classify(p, now);
        let mut action = None;
        for &(i, proto) in &self.by_hook[hook.index()] {
            if proto != ANY_PROTO && proto != u16::from(p.proto) {
                continue;
            }
            let e = &mut self.rules[i as usize];
            if e.rule.matches(hook, p, class.state, ifs) {
                e.packets += 1;
                e.bytes += p.len as u64;
                action = Some(e.rule.action);
                break;
            }
        }
        let action = action.unwrap_or_else(|| {
            self.policy_hits[hook.index()].add(p.len);
            self.policy[hook.index()]
        });
        match action {
            Action::Allow => match (class.entry, class.state) {
                (Some((idx, orig)), _) => {
                    self.ct.update(idx, orig, p, t, now);
                    Verdict::Pass
                }
                (None, Some(CtState::New)) if !self.ct.open(p, t, now) => Verdict::Full,
                _ => Verdict::Pass,
            },
            Action::Drop => Verdict::Drop,
            a => Verdict::Reject(a),
        }
    }
}

impl Inet {
    /// Runs the firewall of `hook` on a packet; false when it may not go
    /// on (it was dropped, or rejected and the sender told).
    #[inline]
    pub(super) fn fw_pass(
        &mut self,
        ifs: &mut IfnetTable,
        hook: Hook,
        in_if: Option<IfIndex>,
        out_if: Option<IfIndex>,
        ip: &[u8],
    ) -> bool {
        if !self.fw.is_active() {
            return true;
        }
        self.fw_eval(ifs, hook, in_if, out_if, ip)
    }

    fn fw_eval(
        &mut self,
        ifs: &mut IfnetTable,
        hook: Hook,
        in_if: Option<IfIndex>,
        mut out_if: Option<IfIndex>,
        ip: &[u8],
    ) -> bool {
        let Some(p) = PktInfo::parse(ip) else {
            self.stats.fw_dropped += 1;
            return false;
        };
        let verdict = if self.fw.names_needed {
            if hook == Hook::Fwd && out_if.is_none() {
                out_if = self
                    .routes
                    .lookup(p.dst, &|r| {
                        ifs.get(r.ifindex).is_some_and(|i| i.is_running())
                    })
                    .map(|r| r.ifindex);
            }
            let name = |i: Option<IfIndex>| i.and_then(|i| ifs.get(i)).map(|x| x.name());
            let cx = IfCx {
                in_name: name(in_if),
                out_name: name(out_if),
            };
            self.fw.check(hook, &p, &cx, &self.tunables, self.now)
        } else {
            self.fw
                .check(hook, &p, &IfCx::default(), &self.tunables, self.now)
        };
        match verdict {
            Verdict::Pass => true,
            Verdict::Drop => {
                self.stats.fw_dropped += 1;
                false
            }
            Verdict::Full => {
                self.stats.fw_states_full += 1;
                false
            }
            Verdict::Reject(a) => {
                self.stats.fw_dropped += 1;
                self.fw_reject(ifs, hook, in_if, ip, &p, a == Action::RejectAdmin);
                false
            }
        }
    }

    /// Tells the sender of a rejected packet: a TCP reset, or an ICMP
    /// destination unreachable (never about an ICMP error, a fragment other
    /// than the first, or a broadcast or multicast packet).
    fn fw_reject(
        &mut self,
        ifs: &mut IfnetTable,
        hook: Hook,
        in_if: Option<IfIndex>,
        ip: &[u8],
        p: &PktInfo,
        admin: bool,
    ) {
        // Only what was sent to one of our addresses is answered on input;
        // nothing sent to a subnet's broadcast address is answered anywhere.
        let subnet_bcast = matches!(p.dst, IpAddress::Ipv4(d) if self.addrs.iter().any(
            |x| matches!(x.cidr, IpCidr::Ipv4(c) if c.prefix_len() < 31 && c.broadcast() == Some(d))
        ));
        if subnet_bcast || (hook == Hook::In && !self.is_local(p.dst)) {
            return;
        }
        let reply = if let (L4::Tcp { .. }, false) = (p.l4, admin) {
            self.tcp_reset(ip, p)
        } else {
            let from = match hook {
                Hook::Fwd => ErrFrom::Iface(in_if),
                Hook::In | Hook::Out => ErrFrom::Addr(p.dst),
            };
            let r = self.build_unreachable(from, ip, admin);
            if r.is_some() {
                self.stats.icmp_errors_out += 1;
            }
            r
        };
        if let Some(r) = reply {
            self.stats.fw_rejects_out += 1;
            self.ip_output(ifs, r, Origin::Firewall);
        }
    }

    /// The reset answering a TCP segment, from its destination (RFC 9293's
    /// reset generation for a closed port).
    fn tcp_reset(&self, ip: &[u8], p: &PktInfo) -> Option<Pkt> {
        let L4::Tcp { flags, .. } = p.l4 else {
            return None;
        };
        let unicast = |a: IpAddress| match a {
            IpAddress::Ipv4(a) => !a.is_unspecified() && !a.is_broadcast() && !a.is_multicast(),
            IpAddress::Ipv6(a) => !a.is_unspecified() && !a.is_multicast(),
        };
        if flags & RST != 0 || !unicast(p.src) || !unicast(p.dst) {
            return None;
        }
        let (_, _, _, seg) = headers(ip, false)?;
        let seg = TcpPacket::new_checked(seg?).ok()?;
        // A segment TCP itself would discard gets no answer either.
        if !seg.verify_checksum(&p.src, &p.dst) {
            return None;
        }
        let (seq, ack) = if seg.ack() {
            (seg.ack_number(), None)
        } else {
            (TcpSeqNumber(0), Some(seg.seq_number() + seg.segment_len()))
        };
        let mut tcp = [0u8; 20];
        {
            let mut t = TcpPacket::new_unchecked(&mut tcp[..]);
            t.set_src_port(seg.dst_port());
            t.set_dst_port(seg.src_port());
            t.set_seq_number(seq);
            t.set_ack_number(ack.unwrap_or(TcpSeqNumber(0)));
            t.set_header_len(20);
            t.clear_flags();
            t.set_rst(true);
            t.set_ack(ack.is_some());
            t.set_window_len(0);
            t.set_urgent_at(0);
            t.fill_checksum(&p.dst, &p.src);
        }
        let ttl = self.tunables.ip_ttl;
        let buf = match (p.dst, p.src) {
            (IpAddress::Ipv4(src), IpAddress::Ipv4(dst)) => {
                let repr = Ipv4Repr {
                    src_addr: src,
                    dst_addr: dst,
                    next_header: IpProtocol::Tcp,
                    payload_len: tcp.len(),
                    hop_limit: ttl,
                };
                let mut buf = vec![0u8; HEADROOM + repr.buffer_len() + tcp.len()];
                let mut ip4 = Ipv4Packet::new_unchecked(&mut buf[HEADROOM..]);
                repr.emit(&mut ip4, &ChecksumCapabilities::default());
                ip4.payload_mut().copy_from_slice(&tcp);
                buf
            }
            (IpAddress::Ipv6(src), IpAddress::Ipv6(dst)) => {
                let repr = Ipv6Repr {
                    src_addr: src,
                    dst_addr: dst,
                    next_header: IpProtocol::Tcp,
                    payload_len: tcp.len(),
                    hop_limit: ttl,
                };
                let mut buf = vec![0u8; HEADROOM + repr.buffer_len() + tcp.len()];
                let mut ip6 = Ipv6Packet::new_unchecked(&mut buf[HEADROOM..]);
                repr.emit(&mut ip6);
                ip6.payload_mut().copy_from_slice(&tcp);
                buf
            }
            _ => return None,
        };
        Some(Pkt { buf, off: HEADROOM })
    }
}

fn with_fw<R>(f: impl FnOnce(&mut Inet) -> Result<R, FwError>) -> Result<R, FwError> {
    vnet::with::<Inet, _>(f)?
}

/// Parses a rule.
///
/// # Errors
/// [`FwError::BadRule`] saying what is wrong.
pub fn parse(text: &str) -> Result<Rule, FwError> {
    text.parse().map_err(|reason| FwError::BadRule {
        rule: text.trim().to_string(),
        reason,
    })
}

/// Adds a rule (its text form) to the current vnet's firewall; returns its
/// number.
///
/// # Errors
/// A bad rule, a taken number, no current vnet; nothing changes then.
pub fn add(text: &str) -> Result<u16, FwError> {
    add_rule(parse(text)?)
}

/// Adds a parsed rule to the current vnet's firewall; returns its number.
///
/// # Errors
/// A taken number, no number left, no current vnet; nothing changes then.
pub fn add_rule(rule: Rule) -> Result<u16, FwError> {
    with_fw(|i| i.fw.add(rule))
}

/// Removes rule `n` from the current vnet's firewall.
///
/// # Errors
/// No such rule, or no current vnet.
pub fn del(n: u16) -> Result<(), FwError> {
    with_fw(|i| i.fw.del(n))
}

/// Removes every rule of the current vnet's firewall (the policies stay).
///
/// # Errors
/// No current vnet.
pub fn flush() -> Result<(), FwError> {
    with_fw(|i| {
        i.fw.flush();
        Ok(())
    })
}

/// Sets a hook's default policy in the current vnet.
///
/// # Errors
/// No current vnet.
pub fn set_policy(hook: Hook, action: Action) -> Result<(), FwError> {
    with_fw(|i| {
        i.fw.set_policy(hook, action);
        Ok(())
    })
}

/// The current vnet's firewall: rules, policies, counters, and the state
/// entries live at `now` (the caller's clock: an idle vnet's own time is
/// that of its last poll).
///
/// # Errors
/// No current vnet.
pub fn show(now: Instant) -> Result<Listing, FwError> {
    with_fw(|i| Ok(i.fw.listing(&i.tunables, now.max(i.now))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> Rule {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn rules_print_as_they_parse() {
        for s in [
            "100 allow",
            "100 allow in proto tcp to 10.0.0.0/24 port 80",
            "200 drop out xmit eth0 proto udp from any port 1000-2000",
            "300 reject fwd recv not eth1 proto tcp from not 192.168.0.0/16 port not 22 to 10.1.0.0/16 port 80",
            "400 reject admin in via lo0 proto icmp icmp-type 8 code 0",
            "500 allow proto icmp6 from fd00::1 icmp-type 128",
            "600 allow in state established,related",
            "700 drop state not new,established",
            "800 allow proto 47 from 10.0.0.1 to 10.0.0.2",
            "900 allow xmit eth0 via eth1",
        ] {
            let r = rule(s);
            assert_eq!(r.to_string(), s);
            assert_eq!(rule(&r.to_string()), r);
        }
    }

    #[test]
    fn aliases_and_host_bits_come_out_canonical() {
        let cases = [
            (
                "deny in to port 80 proto tcp",
                "drop in proto tcp to any port 80",
            ),
            ("pass proto any from 10.1.2.3/8", "allow from 10.0.0.0/8"),
            ("accept from 10.0.0.1/32", "allow from 10.0.0.1"),
            (
                "allow state related,new proto ipv6-icmp",
                "allow proto icmp6 state new,related",
            ),
            (
                "allow to port 53 proto udp",
                "allow proto udp to any port 53",
            ),
        ];
        for (given, canon) in cases {
            assert_eq!(rule(given).to_string(), canon, "{given}");
        }
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (s, needle) in [
            ("", "no action"),
            ("0 allow", "rule number"),
            ("70000 allow", "rule number"),
            ("100 permit", "not an action"),
            ("allow proto tcp proto udp", "proto given twice"),
            ("allow to any port 80", "ports need proto tcp"),
            ("allow proto tcp to any port 90-80", "empty"),
            ("allow proto tcp to any port http", "not a port"),
            ("allow icmp-type 8", "icmp-type needs proto icmp"),
            (
                "allow from 10.0.0.0/8 to fd00::/8",
                "different address families",
            ),
            ("allow proto icmp to fd00::1", "proto icmp is IPv4"),
            ("allow proto icmp6 to 10.0.0.1", "proto icmp6 is IPv6"),
            ("allow out recv eth0", "not on the out hook"),
            ("allow in xmit eth0", "not on the in hook"),
            ("allow state open", "not a state"),
            ("allow from", "from needs a value"),
            ("allow from not any", "matches nothing"),
            ("allow from 10.0.0.300", "not an address"),
            ("allow proto tcp port 80", "port belongs after"),
            ("allow frm 10.0.0.1", "unexpected \"frm\""),
            ("allow proto sctp", "not a protocol"),
        ] {
            let e = s.parse::<Rule>().expect_err(s);
            assert!(e.contains(needle), "{s:?}: {e}");
        }
    }

    fn v4_tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[8] = 64;
        p[9] = TCP;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[32] = 0x50;
        p[33] = flags;
        p
    }

    fn v4_udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut p = v4_tcp(src, sport, dst, dport, 0);
        p.truncate(28);
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[9] = UDP;
        p
    }

    fn v4_icmp(src: [u8; 4], dst: [u8; 4], ty: u8, code: u8, rest: &[u8]) -> Vec<u8> {
        let mut p = v4_tcp(src, 0, dst, 0, 0);
        p.truncate(20);
        p[9] = ICMP;
        p.extend_from_slice(&[ty, code, 0, 0]);
        p.extend_from_slice(rest);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];

    struct Bench {
        fw: Firewall,
        t: Tunables,
        now: Instant,
    }

    impl Bench {
        fn new(rules: &[&str]) -> Bench {
            let mut fw = Firewall::default();
            for r in rules {
                fw.add(rule(r)).unwrap();
            }
            Bench {
                fw,
                t: Tunables::default(),
                now: Instant::from_secs(1),
            }
        }
        fn check(&mut self, hook: Hook, ip: &[u8]) -> Verdict {
            self.check_via(hook, ip, None, None)
        }
        fn check_via(
            &mut self,
            hook: Hook,
            ip: &[u8],
            in_name: Option<&str>,
            out_name: Option<&str>,
        ) -> Verdict {
            let p = PktInfo::parse(ip).unwrap();
            let cx = IfCx { in_name, out_name };
            self.fw.check(hook, &p, &cx, &self.t, self.now)
        }
        fn state(&mut self, ip: &[u8]) -> Option<CtState> {
            let p = PktInfo::parse(ip).unwrap();
            self.fw.ct.classify(&p, self.now).state
        }
    }

    #[test]
    fn the_first_matching_rule_decides_in_number_order() {
        let mut b = Bench::new(&[
            "300 allow in proto tcp",
            "100 drop in proto tcp to any port 22",
            "200 reject in proto tcp from 10.0.0.0/24 to any port 23",
        ]);
        let nums: Vec<u16> = b.fw.rules().iter().filter_map(|r| r.number).collect();
        assert_eq!(nums, [100, 200, 300]);
        assert_eq!(
            b.check(Hook::In, &v4_tcp(A, 1000, B, 22, SYN)),
            Verdict::Drop
        );
        assert_eq!(
            b.check(Hook::In, &v4_tcp(A, 1000, B, 23, SYN)),
            Verdict::Reject(Action::Reject)
        );
        assert_eq!(
            b.check(Hook::In, &v4_tcp(A, 1000, B, 80, SYN)),
            Verdict::Pass
        );
        // Another hook: the policy (allow) decides, and counts.
        assert_eq!(
            b.check(Hook::Out, &v4_tcp(A, 1000, B, 22, SYN)),
            Verdict::Pass
        );
        let l = b.fw.listing(&b.t, b.now);
        let counts: Vec<u64> = l.rules.iter().map(|r| r.counter.packets).collect();
        assert_eq!(counts, [1, 1, 1]);
        assert_eq!(l.rules[0].counter.bytes, 40);
        assert_eq!(l.policies[1].counter.packets, 1);
        assert_eq!(l.policies[0].counter.packets, 0);
    }

    #[test]
    fn negations_ranges_and_icmp_types_match_as_written() {
        let mut b = Bench::new(&[
            "100 allow proto udp from not 10.0.0.0/30 port 1000-1999",
            "200 allow proto icmp icmp-type 8",
            "300 allow proto udp to any port not 53",
        ]);
        b.fw.set_policy(Hook::In, Action::Drop);
        // From inside 10.0.0.0/30: rule 100 does not match; 300 does.
        assert_eq!(b.check(Hook::In, &v4_udp(A, 1500, B, 53)), Verdict::Drop);
        assert_eq!(b.check(Hook::In, &v4_udp(A, 1500, B, 54)), Verdict::Pass);
        assert_eq!(
            b.check(Hook::In, &v4_udp([10, 9, 0, 1], 1500, B, 53)),
            Verdict::Pass
        );
        assert_eq!(
            b.check(Hook::In, &v4_udp([10, 9, 0, 1], 2000, B, 53)),
            Verdict::Drop
        );
        let echo = v4_icmp(A, B, 8, 0, &[0, 7, 0, 1]);
        assert_eq!(b.check(Hook::In, &echo), Verdict::Pass);
        let ts = v4_icmp(A, B, 13, 0, &[0, 7, 0, 1]);
        assert_eq!(b.check(Hook::In, &ts), Verdict::Drop);
    }

    #[test]
    fn replies_are_established_and_icmp_errors_about_a_flow_are_related() {
        let mut b = Bench::new(&["100 allow in state established,related"]);
        b.fw.set_policy(Hook::In, Action::Drop);
        let syn = v4_tcp(B, 40000, A, 80, SYN);
        let synack = v4_tcp(A, 80, B, 40000, SYN | ACK);
        // Unsolicited: dropped, and nothing is tracked.
        assert_eq!(b.check(Hook::In, &synack), Verdict::Drop);
        assert_eq!(b.fw.ct.held(), 0);
        assert_eq!(b.check(Hook::Out, &syn), Verdict::Pass);
        assert_eq!(b.state(&syn), Some(CtState::New));
        assert_eq!(b.state(&synack), Some(CtState::Established));
        assert_eq!(b.check(Hook::In, &synack), Verdict::Pass);
        assert_eq!(b.state(&syn), Some(CtState::Established));
        // An ICMP error quoting our SYN is related; one quoting another
        // flow is invalid.
        let err = v4_icmp([10, 0, 9, 9], B, 3, 3, &[0, 0, 0, 0]);
        let mut ok = err.clone();
        ok.extend_from_slice(&syn[..28]);
        let ok = fix_len(ok);
        let mut other = err;
        other.extend_from_slice(&v4_tcp(B, 40001, A, 80, SYN)[..28]);
        let other = fix_len(other);
        assert_eq!(b.state(&ok), Some(CtState::Related));
        assert_eq!(b.state(&other), Some(CtState::Invalid));
        assert_eq!(b.check(Hook::In, &ok), Verdict::Pass);
        assert_eq!(b.check(Hook::In, &other), Verdict::Drop);
        // A reset with no flow, and an echo reply with no request, are
        // invalid.
        assert_eq!(b.state(&v4_tcp(A, 1, B, 2, RST)), Some(CtState::Invalid));
        assert_eq!(
            b.state(&v4_icmp(A, B, 0, 0, &[0, 1, 0, 1])),
            Some(CtState::Invalid)
        );
    }

    fn fix_len(mut p: Vec<u8>) -> Vec<u8> {
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p
    }

    #[test]
    fn entries_expire_after_their_states_lifetime() {
        let mut b = Bench::new(&["100 allow in state established"]);
        b.fw.set_policy(Hook::In, Action::Drop);
        b.t.fw_dyn_udp_lifetime_s = 5;
        let out = v4_udp(B, 5000, A, 53);
        let back = v4_udp(A, 53, B, 5000);
        assert_eq!(b.check(Hook::Out, &out), Verdict::Pass);
        b.now += Duration::from_secs(4);
        assert_eq!(b.check(Hook::In, &back), Verdict::Pass);
        // Each packet renews the lifetime.
        b.now += Duration::from_secs(4);
        assert_eq!(b.check(Hook::In, &back), Verdict::Pass);
        assert_eq!(b.fw.ct.len(b.now), 1);
        b.now += Duration::from_secs(6);
        assert_eq!(b.fw.ct.len(b.now), 0);
        assert_eq!(b.check(Hook::In, &back), Verdict::Drop);
        // A TCP connection that closed lives dyn_fin_lifetime.
        let syn = v4_tcp(B, 40000, A, 80, SYN);
        assert_eq!(b.check(Hook::Out, &syn), Verdict::Pass);
        assert_eq!(
            b.check(Hook::In, &v4_tcp(A, 80, B, 40000, SYN | ACK)),
            Verdict::Pass
        );
        b.check(Hook::Out, &v4_tcp(B, 40000, A, 80, FIN | ACK));
        b.check(Hook::In, &v4_tcp(A, 80, B, 40000, FIN | ACK));
        b.now += Duration::from_secs(b.t.fw_dyn_fin_lifetime_s + 1);
        assert_eq!(
            b.check(Hook::In, &v4_tcp(A, 80, B, 40000, ACK)),
            Verdict::Drop
        );
    }

    #[test]
    fn a_full_table_refuses_new_flows_until_entries_expire() {
        let mut b = Bench::new(&["100 allow"]);
        b.t.fw_dyn_max = 3;
        for port in 1..=3 {
            assert_eq!(b.check(Hook::Out, &v4_udp(B, port, A, 53)), Verdict::Pass);
        }
        assert_eq!(b.check(Hook::Out, &v4_udp(B, 4, A, 53)), Verdict::Full);
        // Known flows still pass.
        assert_eq!(b.check(Hook::In, &v4_udp(A, 53, B, 2)), Verdict::Pass);
        b.now += Duration::from_secs(b.t.fw_dyn_udp_lifetime_s + 1);
        assert_eq!(b.check(Hook::Out, &v4_udp(B, 4, A, 53)), Verdict::Pass);
        assert_eq!(b.fw.ct.held(), 1);
    }

    #[test]
    fn sweeps_free_expired_entries_in_bounded_steps() {
        let mut b = Bench::new(&["100 allow"]);
        let n = 3 * SWEEP_SLOTS as u16;
        for port in 0..n {
            b.check(Hook::Out, &v4_udp(B, port, A, 53));
        }
        assert_eq!(b.fw.ct.held(), usize::from(n));
        b.now += Duration::from_secs(b.t.fw_dyn_udp_lifetime_s + 1);
        b.fw.tick(b.now);
        assert_eq!(b.fw.ct.held(), usize::from(n) - SWEEP_SLOTS);
        // Not again until SWEEP_EVERY has passed.
        b.fw.tick(b.now);
        assert_eq!(b.fw.ct.held(), usize::from(n) - SWEEP_SLOTS);
        for _ in 0..3 {
            b.now += SWEEP_EVERY;
            b.fw.tick(b.now);
        }
        assert_eq!(b.fw.ct.held(), 0);
        b.now += SWEEP_EVERY;
        b.fw.tick(b.now);
        assert!(b.fw.ct.slots.is_empty(), "memory given back");
    }

    #[test]
    fn a_firewall_without_rules_or_policies_is_inactive_and_forgets_its_states() {
        let mut fw = Firewall::default();
        assert!(!fw.is_active());
        fw.set_policy(Hook::Fwd, Action::Drop);
        assert!(fw.is_active());
        fw.set_policy(Hook::Fwd, Action::Allow);
        assert!(!fw.is_active());
        let n = fw.add(rule("allow")).unwrap();
        assert_eq!(n, AUTO_STEP);
        assert_eq!(fw.add(rule("drop")).unwrap(), 2 * AUTO_STEP);
        assert_eq!(fw.add(rule("200 drop")), Err(FwError::Exists(200)));
        assert_eq!(fw.del(150), Err(FwError::NoSuchRule(150)));
        fw.add(rule("65535 drop")).unwrap();
        assert_eq!(fw.add(rule("allow")), Err(FwError::NoNumberLeft(65535)));
        fw.flush();
        assert!(!fw.is_active());
    }

    #[test]
    fn interfaces_match_by_name_on_the_side_each_hook_has() {
        let mut b = Bench::new(&[
            "100 drop recv eth0",
            "200 drop xmit eth1",
            "300 reject via not lo0",
        ]);
        let p = v4_udp(A, 1, B, 2);
        let (e0, e1, lo) = (Some("eth0"), Some("eth1"), Some("lo0"));
        assert_eq!(b.check_via(Hook::In, &p, e0, None), Verdict::Drop);
        assert_eq!(b.check_via(Hook::Fwd, &p, e0, e1), Verdict::Drop);
        assert_eq!(b.check_via(Hook::Out, &p, None, e1), Verdict::Drop);
        assert_eq!(
            b.check_via(Hook::Out, &p, None, e0),
            Verdict::Reject(Action::Reject)
        );
        // via is the in side on `in`, the out side on `out`, either on `fwd`.
        assert_eq!(b.check_via(Hook::In, &p, lo, None), Verdict::Pass);
        assert_eq!(b.check_via(Hook::Out, &p, None, lo), Verdict::Pass);
        assert_eq!(b.check_via(Hook::Fwd, &p, lo, Some("eth2")), Verdict::Pass);
        assert_eq!(
            b.check_via(Hook::Fwd, &p, Some("eth2"), Some("eth3")),
            Verdict::Reject(Action::Reject)
        );
    }

    #[test]
    fn fragments_match_no_port_or_state_and_v6_headers_are_walked() {
        let mut b = Bench::new(&[
            "100 allow proto udp to any port 53",
            "200 allow state new",
            "300 drop proto udp",
        ]);
        let mut frag = v4_udp(A, 1, B, 53);
        frag[6..8].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(b.check(Hook::Fwd, &frag), Verdict::Drop);
        // IPv6 UDP behind a hop-by-hop header and a first fragment header.
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[6] = 0;
        v6[8..24].copy_from_slice(&"fd00::1".parse::<Ipv6Address>().unwrap().octets());
        v6[24..40].copy_from_slice(&"fd00::2".parse::<Ipv6Address>().unwrap().octets());
        v6.extend_from_slice(&[44, 0, 0, 0, 0, 0, 0, 0]);
        v6.extend_from_slice(&[UDP, 0, 0, 0, 0, 0, 0, 1]);
        v6.extend_from_slice(&[0, 9, 0, 53, 0, 8, 0, 0]);
        let plen = (v6.len() - 40) as u16;
        v6[4..6].copy_from_slice(&plen.to_be_bytes());
        let p = PktInfo::parse(&v6).unwrap();
        assert_eq!(p.proto, UDP);
        assert_eq!(p.l4.ports(), Some((9, 53)));
        assert_eq!(b.check(Hook::Fwd, &v6), Verdict::Pass);
        assert_eq!(b.fw.listing(&b.t, b.now).rules[0].counter.packets, 1);
    }
}
