//! Neighbor caches: ARP for IPv4 and neighbor discovery for IPv6, one table
//! per vnet keyed by (interface, address), with a small queue of packets
//! held while an address is being resolved (FreeBSD's `la_hold`).

use std::collections::HashMap;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, IpAddress};

use crate::ifnet::IfIndex;

/// Packets held per unresolved neighbor; older ones are dropped first.
pub const HOLD_MAX: usize = 16;
/// Resolution attempts before giving up.
pub const MAX_TRIES: u8 = 3;
/// Time between attempts.
pub const RETRY: Duration = Duration::from_millis(1000);
/// Most entries one vnet keeps; past it, new neighbors are not resolved
/// (their packets are dropped and counted) until entries age out, so a
/// scan of a large prefix cannot exhaust memory.
pub const MAX_ENTRIES: usize = 8192;

#[derive(Debug)]
struct Entry {
    mac: Option<EthernetAddress>,
    expires: Instant,
    tries: u8,
    next_try: Instant,
    hold: Vec<Vec<u8>>,
}

/// What to do after a lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Send to this MAC address now.
    Found(EthernetAddress),
    /// Send to this MAC now, and also send a fresh request (the entry is
    /// stale).
    Refresh(EthernetAddress),
    /// The packet was held; send a request now.
    HeldSendRequest,
    /// The packet was held; a request is already out.
    Held,
}

/// Result of a timer pass.
#[derive(Debug, Default)]
pub struct Expired {
    /// Requests to retransmit: (interface, address).
    pub retry: Vec<(IfIndex, IpAddress)>,
    /// Packets dropped because their neighbor never answered.
    pub dropped: usize,
}

/// The neighbor table of one vnet.
#[derive(Debug, Default)]
pub struct NeighborCache {
    map: HashMap<(IfIndex, IpAddress), Entry>,
}

impl NeighborCache {
    /// Looks up `ip` on `ifindex`; when it is unknown, holds `pkt` (a frame
    /// with headroom for the Ethernet header) until it is resolved.
    /// Returns the packet back when it can be sent now.
    pub fn resolve(
        &mut self,
        ifindex: IfIndex,
        ip: IpAddress,
        pkt: Vec<u8>,
        now: Instant,
        dropped: &mut u64,
    ) -> (Lookup, Option<Vec<u8>>) {
        if self.map.len() >= MAX_ENTRIES && !self.map.contains_key(&(ifindex, ip)) {
            *dropped += 1;
            return (Lookup::Held, None);
        }
        let e = self.map.entry((ifindex, ip)).or_insert_with(|| Entry {
            mac: None,
            expires: now,
            tries: 0,
            next_try: now,
            hold: Vec::new(),
        });
        if let Some(mac) = e.mac {
            if now < e.expires {
                return (Lookup::Found(mac), Some(pkt));
            }
            if now >= e.next_try {
                e.next_try = now + RETRY;
                return (Lookup::Refresh(mac), Some(pkt));
            }
            return (Lookup::Found(mac), Some(pkt));
        }
        if e.hold.len() >= HOLD_MAX {
            e.hold.remove(0);
            *dropped += 1;
        }
        e.hold.push(pkt);
        if e.tries == 0 {
            e.tries = 1;
            e.next_try = now + RETRY;
            (Lookup::HeldSendRequest, None)
        } else {
            (Lookup::Held, None)
        }
    }

    /// Records that `ip` on `ifindex` is at `mac`, valid for `max_age`.
    /// With `create` false only an existing entry is updated (an ARP
    /// request not for us must not fill the table). Returns the packets
    /// that were waiting.
    pub fn learn(
        &mut self,
        ifindex: IfIndex,
        ip: IpAddress,
        mac: EthernetAddress,
        now: Instant,
        max_age: Duration,
        create: bool,
    ) -> Vec<Vec<u8>> {
        if !mac.is_unicast() {
            return Vec::new();
        }
        let key = (ifindex, ip);
        let known = self.map.contains_key(&key);
        if !known && (!create || self.map.len() >= MAX_ENTRIES) {
            return Vec::new();
        }
        let e = self.map.entry(key).or_insert_with(|| Entry {
            mac: None,
            expires: now,
            tries: 0,
            next_try: now,
            hold: Vec::new(),
        });
        e.mac = Some(mac);
        e.expires = now + max_age;
        e.tries = 0;
        e.next_try = now;
        std::mem::take(&mut e.hold)
    }

    /// The MAC address of a resolved neighbor.
    pub fn get(&self, ifindex: IfIndex, ip: IpAddress) -> Option<EthernetAddress> {
        self.map.get(&(ifindex, ip)).and_then(|e| e.mac)
    }

    /// Retransmits and gives up on unresolved entries whose time has come;
    /// forgets entries long expired.
    pub fn poll(&mut self, now: Instant) -> Expired {
        let mut out = Expired::default();
        self.map.retain(|key, e| {
            if e.mac.is_some() {
                // Keep stale entries a while for refresh, then forget them.
                return now < e.expires + Duration::from_secs(60);
            }
            if now < e.next_try {
                return true;
            }
            if e.tries >= MAX_TRIES {
                out.dropped += e.hold.len();
                return false;
            }
            e.tries += 1;
            e.next_try = now + RETRY;
            out.retry.push(*key);
            true
        });
        out
    }

    /// The next time [`NeighborCache::poll`] has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.map
            .values()
            .filter(|e| e.mac.is_none())
            .map(|e| e.next_try)
            .min()
    }

    /// Forgets every entry on an interface; returns how many.
    pub fn purge_if(&mut self, ifindex: IfIndex) -> usize {
        let before = self.map.len();
        self.map.retain(|(i, _), _| *i != ifindex);
        before - self.map.len()
    }

    /// Forgets everything; returns how many entries there were.
    pub fn clear(&mut self) -> usize {
        let n = self.map.len();
        self.map = HashMap::new();
        n
    }

    /// Resolved entries: (interface, address, MAC).
    pub fn entries(&self) -> Vec<(IfIndex, IpAddress, EthernetAddress)> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .filter_map(|((i, a), e)| e.mac.map(|m| (*i, *a, m)))
            .collect();
        v.sort_by_key(|(i, a, _)| (*i, a.to_string()));
        v
    }
}
