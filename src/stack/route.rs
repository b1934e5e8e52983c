//! The routing table of one vnet: longest-prefix match over IPv4 and IPv6.
//!
//! Routes are kept in one hash map per prefix length present; a lookup
//! probes the lengths present from longest to shortest, so its cost is the
//! number of distinct prefix lengths, not the number of routes.

use std::collections::HashMap;

use smoltcp::wire::{IpAddress, IpCidr, Ipv4Address, Ipv4Cidr, Ipv6Address, Ipv6Cidr};

use crate::ifnet::IfIndex;

/// Where a route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Made by adding an address: the prefix is on the interface's link.
    Connected,
    /// Added by hand (or by a topology file).
    Static,
}

/// One route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix (host bits zero).
    pub dst: IpCidr,
    /// Next hop; `None` when the destination is on the link.
    pub gateway: Option<IpAddress>,
    /// Outgoing interface.
    pub ifindex: IfIndex,
    /// Origin.
    pub kind: RouteKind,
}

/// Masks an address down to its network.
pub fn network(cidr: IpCidr) -> IpCidr {
    match cidr {
        IpCidr::Ipv4(c) => IpCidr::Ipv4(c.network()),
        IpCidr::Ipv6(c) => {
            let bits = u128::from_be_bytes(c.address().octets());
            let len = c.prefix_len();
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpCidr::Ipv6(Ipv6Cidr::new(Ipv6Address::from_bits(bits & mask), len))
        }
    }
}

fn key(addr: IpAddress, len: u8) -> u128 {
    match addr {
        IpAddress::Ipv4(a) => {
            let b = u32::from_be_bytes(a.octets());
            u128::from(if len == 0 {
                0
            } else {
                b & (u32::MAX << (32 - u32::from(len)))
            })
        }
        IpAddress::Ipv6(a) => {
            let b = u128::from_be_bytes(a.octets());
            if len == 0 {
                0
            } else {
                b & (u128::MAX << (128 - u32::from(len)))
            }
        }
    }
}

#[derive(Debug, Default)]
struct Family {
    /// Prefix lengths present, longest first.
    lens: Vec<u8>,
    by_len: HashMap<u8, HashMap<u128, Route>>,
}

impl Family {
    fn insert(&mut self, r: Route) -> Option<Route> {
        let len = r.dst.prefix_len();
        if !self.lens.contains(&len) {
            self.lens.push(len);
            self.lens.sort_unstable_by(|a, b| b.cmp(a));
        }
        self.by_len
            .entry(len)
            .or_default()
            .insert(key(r.dst.address(), len), r)
    }

    fn remove(&mut self, dst: IpCidr) -> Option<Route> {
        let len = dst.prefix_len();
        let m = self.by_len.get_mut(&len)?;
        let r = m.remove(&key(dst.address(), len));
        if m.is_empty() {
            self.by_len.remove(&len);
            self.lens.retain(|l| *l != len);
        }
        r
    }

    fn lookup(&self, addr: IpAddress, usable: &dyn Fn(&Route) -> bool) -> Option<Route> {
        for len in &self.lens {
            if let Some(r) = self.by_len.get(len).and_then(|m| m.get(&key(addr, *len)))
                && usable(r)
            {
                return Some(*r);
            }
        }
        None
    }

    fn iter(&self) -> impl Iterator<Item = &Route> {
        self.lens
            .iter()
            .flat_map(move |l| self.by_len.get(l).into_iter().flat_map(|m| m.values()))
    }

    fn retain(&mut self, keep: impl Fn(&Route) -> bool) -> usize {
        let mut removed = 0;
        for m in self.by_len.values_mut() {
            let before = m.len();
            m.retain(|_, r| keep(r));
            removed += before - m.len();
        }
        self.by_len.retain(|_, m| !m.is_empty());
        let by_len = &self.by_len;
        self.lens.retain(|l| by_len.contains_key(l));
        removed
    }
}

/// The routing table (one per vnet).
#[derive(Debug, Default)]
pub struct RouteTable {
    v4: Family,
    v6: Family,
}

impl RouteTable {
    fn fam(&self, a: &IpAddress) -> &Family {
        match a {
            IpAddress::Ipv4(_) => &self.v4,
            IpAddress::Ipv6(_) => &self.v6,
        }
    }

    fn fam_mut(&mut self, a: &IpAddress) -> &mut Family {
        match a {
            IpAddress::Ipv4(_) => &mut self.v4,
            IpAddress::Ipv6(_) => &mut self.v6,
        }
    }

    /// Inserts or replaces the route for `r.dst`; returns the one replaced.
    pub fn insert(&mut self, mut r: Route) -> Option<Route> {
        r.dst = network(r.dst);
        let a = r.dst.address();
        self.fam_mut(&a).insert(r)
    }

    /// Removes the route for exactly this prefix.
    pub fn remove(&mut self, dst: IpCidr) -> Option<Route> {
        let dst = network(dst);
        let a = dst.address();
        self.fam_mut(&a).remove(dst)
    }

    /// The route for exactly this prefix.
    pub fn get(&self, dst: IpCidr) -> Option<Route> {
        let dst = network(dst);
        let a = dst.address();
        self.fam(&a)
            .by_len
            .get(&dst.prefix_len())
            .and_then(|m| m.get(&key(a, dst.prefix_len())))
            .copied()
    }

    /// Longest-prefix match among the routes `usable` accepts (for example,
    /// those whose interface is up).
    pub fn lookup(&self, addr: IpAddress, usable: &dyn Fn(&Route) -> bool) -> Option<Route> {
        self.fam(&addr).lookup(addr, usable)
    }

    /// Every route, IPv4 first, longest prefixes first.
    pub fn routes(&self) -> Vec<Route> {
        self.v4.iter().chain(self.v6.iter()).copied().collect()
    }

    /// Removes the routes `keep` rejects; returns how many.
    pub fn retain(&mut self, keep: impl Fn(&Route) -> bool) -> usize {
        self.v4.retain(&keep) + self.v6.retain(&keep)
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.v4.iter().count() + self.v6.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.v4.lens.is_empty() && self.v6.lens.is_empty()
    }
}

/// The default IPv4 route prefix.
pub const DEFAULT_V4: IpCidr = IpCidr::Ipv4(Ipv4Cidr::new(Ipv4Address::UNSPECIFIED, 0));
/// The default IPv6 route prefix.
pub const DEFAULT_V6: IpCidr = IpCidr::Ipv6(Ipv6Cidr::new(Ipv6Address::UNSPECIFIED, 0));

#[cfg(test)]
mod tests {
    use super::*;

    fn r(dst: &str, ifindex: IfIndex) -> Route {
        Route {
            dst: dst.parse().unwrap(),
            gateway: None,
            ifindex,
            kind: RouteKind::Static,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = RouteTable::default();
        t.insert(r("0.0.0.0/0", 1));
        t.insert(r("10.0.0.0/8", 2));
        t.insert(r("10.1.0.0/16", 3));
        t.insert(r("10.1.2.3/32", 4));
        let ok = |_: &Route| true;
        let get = |a: &str| t.lookup(a.parse().unwrap(), &ok).unwrap().ifindex;
        assert_eq!(get("10.1.2.3"), 4);
        assert_eq!(get("10.1.9.9"), 3);
        assert_eq!(get("10.200.0.1"), 2);
        assert_eq!(get("192.0.2.1"), 1);
    }

    #[test]
    fn ipv6_longest_prefix_and_no_default() {
        let mut t = RouteTable::default();
        t.insert(r("2001:db8::/32", 1));
        t.insert(r("2001:db8:1::/48", 2));
        let ok = |_: &Route| true;
        assert_eq!(
            t.lookup("2001:db8:1::5".parse().unwrap(), &ok)
                .unwrap()
                .ifindex,
            2
        );
        assert_eq!(
            t.lookup("2001:db8:2::5".parse().unwrap(), &ok)
                .unwrap()
                .ifindex,
            1
        );
        assert!(t.lookup("2001:db9::1".parse().unwrap(), &ok).is_none());
    }

    #[test]
    fn unusable_routes_fall_back_to_shorter_prefixes() {
        let mut t = RouteTable::default();
        t.insert(r("0.0.0.0/0", 1));
        t.insert(r("10.0.0.0/8", 2));
        let got = t.lookup("10.0.0.1".parse().unwrap(), &|r: &Route| r.ifindex != 2);
        assert_eq!(got.unwrap().ifindex, 1);
    }

    #[test]
    fn host_bits_are_masked_and_remove_cleans_up() {
        let mut t = RouteTable::default();
        t.insert(r("10.1.2.3/24", 2));
        assert_eq!(t.routes()[0].dst, "10.1.2.0/24".parse().unwrap());
        assert!(t.remove("10.1.2.77/24".parse().unwrap()).is_some());
        assert!(t.is_empty());
    }
}
