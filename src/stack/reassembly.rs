//! Reassembly of IPv4 and IPv6 fragments addressed to this vnet.
//!
//! smoltcp's own reassembly uses fixed buffers inside every vnet; ours uses
//! the heap only while fragments are in flight, reassembles datagrams up to
//! 65535 bytes, and is bounded: at most [`MAX_FLOWS`] datagrams and
//! [`MAX_BYTES`] bytes per vnet, each given [`TIMEOUT`] to complete.
//! Overlapping fragments discard the whole datagram (RFC 5722).

use std::collections::HashMap;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, Ipv4Packet, Ipv6FragmentHeader, Ipv6Packet};

use super::device::{HEADROOM, Pkt};

/// Datagrams reassembled at once per vnet.
pub const MAX_FLOWS: usize = 64;
/// Bytes held for reassembly per vnet.
pub const MAX_BYTES: usize = 1 << 20;
/// Time a datagram has to arrive whole.
pub const TIMEOUT: Duration = Duration::from_secs(30);
const MAX_DATAGRAM: usize = 65535;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddress,
    dst: IpAddress,
    proto: u8,
    id: u32,
}

#[derive(Debug)]
struct Flow {
    deadline: Instant,
    /// The unfragmentable part: the first fragment's IP header.
    header: Option<Vec<u8>>,
    data: Vec<u8>,
    have: Vec<(usize, usize)>,
    total: Option<usize>,
}

/// What happened to a fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Kept; the datagram is not whole yet.
    Held,
    /// The datagram is whole.
    Done(Pkt),
    /// Dropped (malformed, overlapping, too big, or over the limits).
    Dropped,
}

impl PartialEq for Pkt {
    fn eq(&self, o: &Pkt) -> bool {
        self.ip() == o.ip()
    }
}
impl Eq for Pkt {}

/// The fragments in flight for one vnet.
#[derive(Debug, Default)]
pub struct Reassembly {
    flows: HashMap<Key, Flow>,
    bytes: usize,
}

impl Reassembly {
    /// Whether an IPv4 packet is a fragment.
    pub fn is_v4_fragment(ip: &[u8]) -> bool {
        Ipv4Packet::new_checked(ip).is_ok_and(|p| p.more_frags() || p.frag_offset() != 0)
    }

    /// Whether an IPv6 packet carries a fragment header right after its
    /// fixed header.
    pub fn is_v6_fragment(ip: &[u8]) -> bool {
        Ipv6Packet::new_checked(ip).is_ok_and(|p| u8::from(p.next_header()) == 44)
    }

    /// Takes an IPv4 fragment (already validated).
    pub fn push_v4(&mut self, ip: &[u8], now: Instant) -> Outcome {
        let Ok(p) = Ipv4Packet::new_checked(ip) else {
            return Outcome::Dropped;
        };
        let key = Key {
            src: IpAddress::Ipv4(p.src_addr()),
            dst: IpAddress::Ipv4(p.dst_addr()),
            proto: p.next_header().into(),
            id: u32::from(p.ident()),
        };
        let hlen = usize::from(p.header_len());
        let off = usize::from(p.frag_offset());
        let header = (off == 0).then(|| ip[..hlen].to_vec());
        self.push(key, header, off, p.payload(), !p.more_frags(), now)
    }

    /// Takes an IPv6 packet whose fragment header follows the fixed header.
    pub fn push_v6(&mut self, ip: &[u8], now: Instant) -> Outcome {
        let Ok(p) = Ipv6Packet::new_checked(ip) else {
            return Outcome::Dropped;
        };
        // The extension header's first two bytes (next header, reserved)
        // precede smoltcp's fragment-header view.
        let ext = p.payload();
        let Some(Ok(f)) = ext.get(2..8).map(Ipv6FragmentHeader::new_checked) else {
            return Outcome::Dropped;
        };
        let next = ext[0];
        let key = Key {
            src: IpAddress::Ipv6(p.src_addr()),
            dst: IpAddress::Ipv6(p.dst_addr()),
            proto: next,
            id: f.ident(),
        };
        let off = usize::from(f.frag_offset()) * 8;
        let mut header = None;
        if off == 0 {
            let mut h = ip[..40].to_vec();
            h[6] = next;
            header = Some(h);
        }
        self.push(key, header, off, &p.payload()[8..], !f.more_frags(), now)
    }

    fn push(
        &mut self,
        key: Key,
        header: Option<Vec<u8>>,
        off: usize,
        data: &[u8],
        last: bool,
        now: Instant,
    ) -> Outcome {
        let end = off + data.len();
        if end > MAX_DATAGRAM || (!last && !data.len().is_multiple_of(8)) {
            self.discard(&key);
            return Outcome::Dropped;
        }
        if !self.flows.contains_key(&key) && self.flows.len() >= MAX_FLOWS {
            return Outcome::Dropped;
        }
        let f = self.flows.entry(key).or_insert_with(|| Flow {
            deadline: now + TIMEOUT,
            header: None,
            data: Vec::new(),
            have: Vec::new(),
            total: None,
        });
        let overlaps = f.have.iter().any(|(a, b)| off < *b && *a < end);
        let bad_total = match f.total {
            Some(t) => end > t || (last && end != t),
            None => last && f.have.iter().any(|(_, b)| *b > end),
        };
        let grow = end.saturating_sub(f.data.len());
        if overlaps || bad_total || self.bytes + grow > MAX_BYTES {
            self.discard(&key);
            return Outcome::Dropped;
        }
        let f = self.flows.get_mut(&key).expect("flow exists");
        if grow > 0 {
            f.data.resize(end, 0);
            self.bytes += grow;
        }
        f.data[off..end].copy_from_slice(data);
        f.have.push((off, end));
        if header.is_some() {
            f.header = header;
        }
        if last {
            f.total = Some(end);
        }
        let Some(total) = f.total else {
            return Outcome::Held;
        };
        f.have.sort_unstable();
        let mut covered = 0;
        for (a, b) in &f.have {
            if *a > covered {
                return Outcome::Held;
            }
            covered = covered.max(*b);
        }
        if covered < total || f.header.is_none() {
            return Outcome::Held;
        }
        let f = self.flows.remove(&key).expect("flow exists");
        self.bytes -= f.data.len();
        let header = f.header.expect("checked above");
        let mut buf = Vec::with_capacity(HEADROOM + header.len() + total);
        buf.resize(HEADROOM, 0);
        buf.extend_from_slice(&header);
        buf.extend_from_slice(&f.data[..total]);
        let ip = &mut buf[HEADROOM..];
        match key.src {
            IpAddress::Ipv4(_) => {
                if header.len() + total > MAX_DATAGRAM {
                    return Outcome::Dropped;
                }
                let mut p = Ipv4Packet::new_unchecked(ip);
                p.set_total_len((header.len() + total) as u16);
                p.set_more_frags(false);
                p.set_frag_offset(0);
                p.fill_checksum();
            }
            IpAddress::Ipv6(_) => {
                Ipv6Packet::new_unchecked(ip).set_payload_len(total as u16);
            }
        }
        Outcome::Done(Pkt { buf, off: HEADROOM })
    }

    fn discard(&mut self, key: &Key) {
        if let Some(f) = self.flows.remove(key) {
            self.bytes -= f.data.len();
        }
    }

    /// Drops datagrams whose time is up; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let dead: Vec<Key> = self
            .flows
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in &dead {
            self.discard(k);
        }
        dead.len()
    }

    /// When the oldest datagram in flight times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.flows.values().map(|f| f.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_fragment(id: u16, off: usize, more: bool, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 20 + data.len()];
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_version(4);
        p.set_header_len(20);
        p.set_total_len((20 + data.len()) as u16);
        p.set_ident(id);
        p.set_more_frags(more);
        p.set_frag_offset(off as u16);
        p.set_hop_limit(64);
        p.set_next_header(smoltcp::wire::IpProtocol::Udp);
        p.set_src_addr(smoltcp::wire::Ipv4Address::new(10, 0, 0, 1));
        p.set_dst_addr(smoltcp::wire::Ipv4Address::new(10, 0, 0, 2));
        p.fill_checksum();
        b[20..].copy_from_slice(data);
        b
    }

    #[test]
    fn fragments_in_any_order_make_the_datagram() {
        let mut r = Reassembly::default();
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let now = Instant::ZERO;
        assert_eq!(
            r.push_v4(&v4_fragment(7, 1480, true, &data[1480..2960]), now),
            Outcome::Held
        );
        assert_eq!(
            r.push_v4(&v4_fragment(7, 2960, false, &data[2960..]), now),
            Outcome::Held
        );
        let Outcome::Done(p) = r.push_v4(&v4_fragment(7, 0, true, &data[..1480]), now) else {
            panic!("not done")
        };
        let ip = Ipv4Packet::new_checked(p.ip()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.payload(), &data[..]);
        assert!(!ip.more_frags());
        assert_eq!(r.bytes, 0);
    }

    #[test]
    fn overlaps_and_timeouts_discard_the_datagram() {
        let mut r = Reassembly::default();
        let now = Instant::ZERO;
        assert_eq!(
            r.push_v4(&v4_fragment(1, 0, true, &[1; 16]), now),
            Outcome::Held
        );
        assert_eq!(
            r.push_v4(&v4_fragment(1, 8, false, &[2; 16]), now),
            Outcome::Dropped
        );
        assert!(r.flows.is_empty());
        assert_eq!(
            r.push_v4(&v4_fragment(2, 0, true, &[1; 16]), now),
            Outcome::Held
        );
        assert_eq!(r.expire(now + TIMEOUT), 1);
        assert_eq!(r.bytes, 0);
    }

    #[test]
    fn limits_hold() {
        let mut r = Reassembly::default();
        let now = Instant::ZERO;
        for id in 0..MAX_FLOWS as u16 {
            assert_eq!(
                r.push_v4(&v4_fragment(id, 0, true, &[0; 8]), now),
                Outcome::Held
            );
        }
        assert_eq!(
            r.push_v4(&v4_fragment(999, 0, true, &[0; 8]), now),
            Outcome::Dropped
        );
        // A fragment reaching past 65535 bytes.
        assert_eq!(
            r.push_v4(&v4_fragment(3, 65528, false, &[0; 16]), now),
            Outcome::Dropped
        );
    }
}
