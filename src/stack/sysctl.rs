//! Per-vnet tunables: a small sysctl tree, one value set per vnet.
//!
//! The names follow FreeBSD's. Every tunable is a field of [`Tunables`]
//! (owned by the vnet's IP stack) and one row of [`TUNABLES`], which gives
//! its name, description and bounds, so listing, reading and validated
//! writing are table-driven.

use crate::vnet::{self, CurVnetError};

use super::Inet;

/// The tunables of one vnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunables {
    /// `net.inet.ip.forwarding`: forward IPv4 between interfaces.
    pub ip_forwarding: bool,
    /// `net.inet6.ip6.forwarding`: forward IPv6 between interfaces.
    pub ip6_forwarding: bool,
    /// `net.inet.ip.ttl`: TTL / hop limit of packets this vnet originates.
    pub ip_ttl: u8,
    /// `net.inet.ip.portrange.first`: lowest ephemeral port.
    pub port_first: u16,
    /// `net.inet.ip.portrange.last`: highest ephemeral port.
    pub port_last: u16,
    /// `net.inet.tcp.sendspace`: TCP send buffer, bytes.
    pub tcp_sendspace: usize,
    /// `net.inet.tcp.recvspace`: TCP receive buffer, bytes.
    pub tcp_recvspace: usize,
    /// `net.inet.tcp.keepinit`: connect timeout, milliseconds.
    pub tcp_keepinit_ms: u64,
    /// `net.inet.tcp.msl`: maximum segment lifetime, milliseconds; a
    /// closed connection holds its port in TIME_WAIT for twice this.
    pub tcp_msl_ms: u64,
    /// `net.inet.udp.recvspace`: UDP receive buffer, bytes.
    pub udp_recvspace: usize,
    /// `kern.ipc.maxsockets`: most sockets this vnet may hold.
    pub max_sockets: usize,
    /// `net.link.ether.inet.max_age`: neighbor entry lifetime, seconds.
    pub neighbor_max_age_s: u64,
    /// `net.inet.icmp.errors`: send ICMP errors (time exceeded, unreachable).
    pub icmp_errors: bool,
    /// `net.inet.ip.fw.dyn_max`: most firewall state entries.
    pub fw_dyn_max: usize,
    /// `net.inet.ip.fw.dyn_syn_lifetime`: seconds a TCP connection being
    /// opened is tracked after its last packet.
    pub fw_dyn_syn_lifetime_s: u64,
    /// `net.inet.ip.fw.dyn_ack_lifetime`: the same for an established one.
    pub fw_dyn_ack_lifetime_s: u64,
    /// `net.inet.ip.fw.dyn_fin_lifetime`: the same for one closed (FIN both
    /// ways, or a reset).
    pub fw_dyn_fin_lifetime_s: u64,
    /// `net.inet.ip.fw.dyn_udp_lifetime`: the same for a UDP flow.
    pub fw_dyn_udp_lifetime_s: u64,
    /// `net.inet.ip.fw.dyn_short_lifetime`: the same for ICMP echo and other
    /// protocols.
    pub fw_dyn_short_lifetime_s: u64,
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables {
            ip_forwarding: false,
            ip6_forwarding: false,
            ip_ttl: 64,
            port_first: 49152,
            port_last: 65535,
            tcp_sendspace: 256 * 1024,
            tcp_recvspace: 256 * 1024,
            tcp_keepinit_ms: 75_000,
            // FreeBSD says 30 s for the Internet; vnets mostly talk over
            // virtual links with no reordering, where a long TIME_WAIT
            // only exhausts ports.
            tcp_msl_ms: 1_000,
            udp_recvspace: 64 * 1024,
            max_sockets: 4096,
            neighbor_max_age_s: 300,
            icmp_errors: true,
            fw_dyn_max: 65536,
            fw_dyn_syn_lifetime_s: 30,
            fw_dyn_ack_lifetime_s: 86_400,
            fw_dyn_fin_lifetime_s: 10,
            fw_dyn_udp_lifetime_s: 60,
            fw_dyn_short_lifetime_s: 30,
        }
    }
}

/// Why a tunable could not be read or set. Nothing changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysctlError {
    /// No such name.
    #[error("sysctl {0:?}: unknown name")]
    Unknown(String),
    /// The value does not parse or is out of range.
    #[error("sysctl {name:?}: bad value {value:?} (expected {expected})")]
    BadValue {
        /// The name.
        name: String,
        /// What was given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// The vnet could not be entered.
    #[error(transparent)]
    Vnet(#[from] CurVnetError),
}

/// One tunable: name, meaning, accepted values, and how to reach it.
pub struct Tunable {
    /// Dotted name.
    pub name: &'static str,
    /// One line on what it does.
    pub description: &'static str,
    /// What values are accepted.
    pub expected: &'static str,
    get: fn(&Tunables) -> u64,
    set: fn(&mut Tunables, u64),
    min: u64,
    max: u64,
}

macro_rules! tunable {
    ($name:literal, $desc:literal, $exp:literal, $field:ident, $ty:ty, $min:expr, $max:expr) => {
        Tunable {
            name: $name,
            description: $desc,
            expected: $exp,
            get: |t| t.$field as u64,
            set: |t, v| t.$field = v as $ty,
            min: $min,
            max: $max,
        }
    };
    ($name:literal, $desc:literal, bool, $field:ident) => {
        Tunable {
            name: $name,
            description: $desc,
            expected: "0 or 1",
            get: |t| u64::from(t.$field),
            set: |t, v| t.$field = v != 0,
            min: 0,
            max: 1,
        }
    };
}

/// Every tunable, in listing order.
pub static TUNABLES: &[Tunable] = &[
    tunable!(
        "net.inet.ip.forwarding",
        "forward IPv4 packets between interfaces",
        bool,
        ip_forwarding
    ),
    tunable!(
        "net.inet6.ip6.forwarding",
        "forward IPv6 packets between interfaces",
        bool,
        ip6_forwarding
    ),
    tunable!(
        "net.inet.ip.ttl",
        "TTL of packets this vnet originates",
        "1 to 255",
        ip_ttl,
        u8,
        1,
        255
    ),
    tunable!(
        "net.inet.ip.portrange.first",
        "lowest ephemeral port",
        "1024 to 65535",
        port_first,
        u16,
        1024,
        65535
    ),
    tunable!(
        "net.inet.ip.portrange.last",
        "highest ephemeral port",
        "1024 to 65535",
        port_last,
        u16,
        1024,
        65535
    ),
    tunable!(
        "net.inet.tcp.sendspace",
        "TCP send buffer in bytes",
        "1024 to 67108864",
        tcp_sendspace,
        usize,
        1024,
        64 << 20
    ),
    tunable!(
        "net.inet.tcp.recvspace",
        "TCP receive buffer in bytes",
        "1024 to 67108864",
        tcp_recvspace,
        usize,
        1024,
        64 << 20
    ),
    tunable!(
        "net.inet.tcp.keepinit",
        "TCP connect timeout in milliseconds",
        "100 to 3600000",
        tcp_keepinit_ms,
        u64,
        100,
        3_600_000
    ),
    tunable!(
        "net.inet.tcp.msl",
        "TCP maximum segment lifetime in milliseconds (TIME_WAIT lasts twice this)",
        "0 to 120000",
        tcp_msl_ms,
        u64,
        0,
        120_000
    ),
    tunable!(
        "net.inet.udp.recvspace",
        "UDP receive buffer in bytes",
        "2048 to 67108864",
        udp_recvspace,
        usize,
        2048,
        64 << 20
    ),
    tunable!(
        "kern.ipc.maxsockets",
        "most sockets this vnet may hold",
        "1 to 1048576",
        max_sockets,
        usize,
        1,
        1 << 20
    ),
    tunable!(
        "net.link.ether.inet.max_age",
        "neighbor cache entry lifetime in seconds",
        "1 to 86400",
        neighbor_max_age_s,
        u64,
        1,
        86_400
    ),
    tunable!(
        "net.inet.icmp.errors",
        "send ICMP errors (time exceeded, unreachable)",
        bool,
        icmp_errors
    ),
    tunable!(
        "net.inet.ip.fw.dyn_max",
        "most firewall state entries (new flows are dropped beyond)",
        "1 to 1048576",
        fw_dyn_max,
        usize,
        1,
        1 << 20
    ),
    tunable!(
        "net.inet.ip.fw.dyn_syn_lifetime",
        "seconds a TCP connection being opened stays tracked after its last packet",
        "1 to 86400",
        fw_dyn_syn_lifetime_s,
        u64,
        1,
        86_400
    ),
    tunable!(
        "net.inet.ip.fw.dyn_ack_lifetime",
        "seconds an established TCP connection stays tracked after its last packet",
        "1 to 2592000",
        fw_dyn_ack_lifetime_s,
        u64,
        1,
        2_592_000
    ),
    tunable!(
        "net.inet.ip.fw.dyn_fin_lifetime",
        "seconds a closed TCP connection (FIN both ways, or reset) stays tracked",
        "1 to 86400",
        fw_dyn_fin_lifetime_s,
        u64,
        1,
        86_400
    ),
    tunable!(
        "net.inet.ip.fw.dyn_udp_lifetime",
        "seconds a UDP flow stays tracked after its last packet",
        "1 to 86400",
        fw_dyn_udp_lifetime_s,
        u64,
        1,
        86_400
    ),
    tunable!(
        "net.inet.ip.fw.dyn_short_lifetime",
        "seconds an ICMP echo or other flow stays tracked after its last packet",
        "1 to 86400",
        fw_dyn_short_lifetime_s,
        u64,
        1,
        86_400
    ),
];

fn find(name: &str) -> Result<&'static Tunable, SysctlError> {
    TUNABLES
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| SysctlError::Unknown(name.to_string()))
}

impl Tunables {
    /// Reads a tunable by name.
    ///
    /// # Errors
    /// [`SysctlError::Unknown`].
    pub fn get(&self, name: &str) -> Result<u64, SysctlError> {
        Ok((find(name)?.get)(self))
    }

    /// Sets a tunable by name from its text form; checks range and the
    /// port range's order.
    ///
    /// # Errors
    /// Unknown name or bad value; nothing changes then.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SysctlError> {
        let t = find(name)?;
        let bad = || SysctlError::BadValue {
            name: name.to_string(),
            value: value.to_string(),
            expected: t.expected,
        };
        let v: u64 = value.trim().parse().map_err(|_| bad())?;
        if v < t.min || v > t.max {
            return Err(bad());
        }
        let mut next = self.clone();
        (t.set)(&mut next, v);
        if next.port_first > next.port_last {
            return Err(SysctlError::BadValue {
                name: name.to_string(),
                value: value.to_string(),
                expected: "portrange.first <= portrange.last",
            });
        }
        *self = next;
        Ok(())
    }

    /// Every tunable with its current value.
    pub fn all(&self) -> Vec<(&'static str, u64)> {
        TUNABLES.iter().map(|t| (t.name, (t.get)(self))).collect()
    }
}

/// Reads a tunable of the current vnet.
///
/// # Errors
/// No current vnet, or unknown name.
pub fn get(name: &str) -> Result<u64, SysctlError> {
    vnet::with::<Inet, _>(|i| i.tunables.get(name))?
}

/// Sets a tunable of the current vnet.
///
/// # Errors
/// No current vnet, unknown name or bad value.
pub fn set(name: &str, value: &str) -> Result<(), SysctlError> {
    vnet::with::<Inet, _>(|i| i.tunables.set(name, value))?
}

/// Every tunable of the current vnet with its value.
///
/// # Errors
/// No current vnet.
pub fn all() -> Result<Vec<(&'static str, u64)>, SysctlError> {
    Ok(vnet::with::<Inet, _>(|i| i.tunables.all())?)
}
