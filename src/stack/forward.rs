//! Forwarding between a vnet's interfaces (through the firewall's `fwd`
//! hook), and the ICMP errors a router sends (time exceeded, destination
//! unreachable, fragmentation needed / packet too big), which the firewall's
//! `reject` sends too.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, Icmpv4TimeExceeded, Icmpv6DstUnreachable,
    Icmpv6Repr, Icmpv6TimeExceeded, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet,
    Ipv6Repr,
};

use super::Inet;
use super::device::{HEADROOM, Pkt};
use super::firewall::Hook;
use super::output::Origin;
use crate::ifnet::{IfIndex, IfnetTable};

/// Most of an offending packet quoted in an ICMP error (RFC 1812: keep the
/// error within 576 bytes for IPv4; RFC 4443: within the IPv6 minimum MTU).
const V4_ERR_MAX: usize = 576;
const V6_ERR_MAX: usize = 1280;

enum V4Err {
    TimeExceeded,
    Unreachable(Icmpv4DstUnreachable),
    NeedFrag(u16),
}

enum V6Err {
    TimeExceeded,
    Unreachable(Icmpv6DstUnreachable),
    TooBig(u32),
}

/// Where an ICMP error comes from.
#[derive(Debug, Clone, Copy)]
pub(super) enum ErrFrom {
    /// An address of this interface (the one the offending packet came in
    /// on), else of the interface that leads back to its sender.
    Iface(Option<IfIndex>),
    /// This address (the offending packet's destination).
    Addr(IpAddress),
}

impl Inet {
    pub(super) fn forward4(&mut self, ifs: &mut IfnetTable, in_if: IfIndex, mut pkt: Pkt) {
        let ttl = Ipv4Packet::new_unchecked(pkt.ip()).hop_limit();
        if ttl <= 1 {
            self.stats.ip_ttl_exceeded += 1;
            self.icmp4_error(ifs, Some(in_if), pkt.ip(), V4Err::TimeExceeded);
            return;
        }
        if !self.fw_pass(ifs, Hook::Fwd, Some(in_if), None, pkt.ip()) {
            return;
        }
        {
            let mut p = Ipv4Packet::new_unchecked(pkt.ip_mut());
            p.set_hop_limit(ttl - 1);
            p.fill_checksum();
        }
        self.stats.ip_forwarded += 1;
        self.ip_output(ifs, pkt, Origin::Forward);
    }

    pub(super) fn forward6(&mut self, ifs: &mut IfnetTable, in_if: IfIndex, mut pkt: Pkt) {
        let hl = Ipv6Packet::new_unchecked(pkt.ip()).hop_limit();
        if hl <= 1 {
            self.stats.ip_ttl_exceeded += 1;
            self.icmp6_error(ifs, Some(in_if), pkt.ip(), V6Err::TimeExceeded);
            return;
        }
        if !self.fw_pass(ifs, Hook::Fwd, Some(in_if), None, pkt.ip()) {
            return;
        }
        Ipv6Packet::new_unchecked(pkt.ip_mut()).set_hop_limit(hl - 1);
        self.stats.ip_forwarded += 1;
        self.ip_output(ifs, pkt, Origin::Forward);
    }

    /// A forwarded packet had no route.
    pub(super) fn icmp_unreachable_no_route(&mut self, ifs: &mut IfnetTable, ip: &[u8]) {
        match ip.first().map(|b| b >> 4) {
            Some(4) => self.icmp4_error(
                ifs,
                None,
                ip,
                V4Err::Unreachable(Icmpv4DstUnreachable::NetUnreachable),
            ),
            Some(6) => self.icmp6_error(
                ifs,
                None,
                ip,
                V6Err::Unreachable(Icmpv6DstUnreachable::NoRoute),
            ),
            _ => {}
        }
    }

    /// A forwarded packet was too big for the next link and may not be
    /// fragmented. The error is queued for output at the end of this round
    /// (through the routing device) since an interface is borrowed here.
    pub(super) fn icmp_too_big(&mut self, ip: &[u8], mtu: usize) {
        let from = ErrFrom::Iface(None);
        let pkt = match ip.first().map(|b| b >> 4) {
            Some(4) => self.build_icmp4(from, ip, V4Err::NeedFrag(mtu as u16)),
            Some(6) => self.build_icmp6(from, ip, V6Err::TooBig(mtu as u32)),
            _ => None,
        };
        if let Some(p) = pkt {
            self.stats.icmp_errors_out += 1;
            self.dev.tx.push_back(p);
        }
    }

    fn icmp4_error(
        &mut self,
        ifs: &mut IfnetTable,
        in_if: Option<IfIndex>,
        ip: &[u8],
        kind: V4Err,
    ) {
        if let Some(p) = self.build_icmp4(ErrFrom::Iface(in_if), ip, kind) {
            self.stats.icmp_errors_out += 1;
            self.ip_output(ifs, p, Origin::Local);
        }
    }

    fn icmp6_error(
        &mut self,
        ifs: &mut IfnetTable,
        in_if: Option<IfIndex>,
        ip: &[u8],
        kind: V6Err,
    ) {
        if let Some(p) = self.build_icmp6(ErrFrom::Iface(in_if), ip, kind) {
            self.stats.icmp_errors_out += 1;
            self.ip_output(ifs, p, Origin::Local);
        }
    }

    /// The source of an ICMP error about a packet from `to`.
    fn error_source(&self, from: ErrFrom, to: IpAddress) -> Option<IpAddress> {
        match from {
            ErrFrom::Addr(a) => Some(a),
            ErrFrom::Iface(in_if) => {
                let back =
                    in_if.or_else(|| self.routes.lookup(to, &|_| true).map(|r| r.ifindex))?;
                self.source_for(back, to)
            }
        }
    }

    /// A destination unreachable answering a packet the firewall rejected:
    /// port unreachable, or administratively prohibited.
    pub(super) fn build_unreachable(&self, from: ErrFrom, ip: &[u8], admin: bool) -> Option<Pkt> {
        match ip.first().map(|b| b >> 4) {
            Some(4) => {
                let reason = if admin {
                    Icmpv4DstUnreachable::CommProhibited
                } else {
                    Icmpv4DstUnreachable::PortUnreachable
                };
                self.build_icmp4(from, ip, V4Err::Unreachable(reason))
            }
            Some(6) => {
                let reason = if admin {
                    Icmpv6DstUnreachable::AdminProhibit
                } else {
                    Icmpv6DstUnreachable::PortUnreachable
                };
                self.build_icmp6(from, ip, V6Err::Unreachable(reason))
            }
            _ => None,
        }
    }

    fn build_icmp4(&self, from: ErrFrom, ip: &[u8], kind: V4Err) -> Option<Pkt> {
        if !self.tunables.icmp_errors {
            return None;
        }
        let caps = ChecksumCapabilities::default();
        let orig = Ipv4Packet::new_checked(ip).ok()?;
        let header = Ipv4Repr::parse(&orig, &caps).ok()?;
        // Never about an ICMP error, a non-first fragment, or a packet from
        // an address that cannot be answered.
        if header.src_addr.is_unspecified()
            || header.src_addr.is_multicast()
            || header.src_addr.is_broadcast()
            || header.dst_addr.is_multicast()
            || header.dst_addr.is_broadcast()
            || orig.frag_offset() != 0
        {
            return None;
        }
        if header.next_header == IpProtocol::Icmp {
            let t = orig.payload().first().copied().unwrap_or(0);
            if t != 0 && t != 8 {
                return None;
            }
        }
        let IpAddress::Ipv4(src) = self.error_source(from, IpAddress::Ipv4(header.src_addr))?
        else {
            return None;
        };
        let room = V4_ERR_MAX - 20 - 8 - usize::from(orig.header_len());
        let data = &orig.payload()[..orig.payload().len().min(room)];
        let icmp = match kind {
            V4Err::TimeExceeded => Icmpv4Repr::TimeExceeded {
                reason: Icmpv4TimeExceeded::TtlExpired,
                header,
                data,
            },
            V4Err::Unreachable(reason) => Icmpv4Repr::DstUnreachable {
                reason,
                header,
                data,
            },
            V4Err::NeedFrag(_) => Icmpv4Repr::DstUnreachable {
                reason: Icmpv4DstUnreachable::FragRequired,
                header,
                data,
            },
        };
        let out = Ipv4Repr {
            src_addr: src,
            dst_addr: header.src_addr,
            next_header: IpProtocol::Icmp,
            payload_len: icmp.buffer_len(),
            hop_limit: self.tunables.ip_ttl,
        };
        let mut buf = vec![0u8; HEADROOM + out.buffer_len() + icmp.buffer_len()];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[HEADROOM..]);
        out.emit(&mut p, &caps);
        let mut ip4 = Icmpv4Packet::new_unchecked(p.payload_mut());
        icmp.emit(&mut ip4, &caps);
        if let V4Err::NeedFrag(mtu) = kind {
            // RFC 1191: the next-hop MTU sits in the low half of the
            // otherwise unused word.
            let b = ip4.into_inner();
            b[6..8].copy_from_slice(&mtu.to_be_bytes());
            let mut ip4 = Icmpv4Packet::new_unchecked(b);
            ip4.fill_checksum();
        }
        Some(Pkt { buf, off: HEADROOM })
    }

    fn build_icmp6(&self, from: ErrFrom, ip: &[u8], kind: V6Err) -> Option<Pkt> {
        if !self.tunables.icmp_errors {
            return None;
        }
        let orig = Ipv6Packet::new_checked(ip).ok()?;
        let header = Ipv6Repr::parse(&orig).ok()?;
        if header.src_addr.is_unspecified() || header.src_addr.is_multicast() {
            return None;
        }
        // Only "packet too big" may answer a multicast packet (RFC 4443
        // section 2.4); nothing answers a fragment other than the first.
        if header.dst_addr.is_multicast() && !matches!(kind, V6Err::TooBig(_)) {
            return None;
        }
        if u8::from(header.next_header) == 44
            && orig
                .payload()
                .get(2..4)
                .is_some_and(|o| u16::from_be_bytes([o[0], o[1]]) >> 3 != 0)
        {
            return None;
        }
        if header.next_header == IpProtocol::Icmpv6 {
            let t = orig.payload().first().copied().unwrap_or(0);
            if t < 128 {
                return None;
            }
        }
        let IpAddress::Ipv6(src) = self.error_source(from, IpAddress::Ipv6(header.src_addr))?
        else {
            return None;
        };
        let room = V6_ERR_MAX - 40 - 8 - 40;
        let data = &orig.payload()[..orig.payload().len().min(room)];
        let icmp = match kind {
            V6Err::TimeExceeded => Icmpv6Repr::TimeExceeded {
                reason: Icmpv6TimeExceeded::HopLimitExceeded,
                header,
                data,
            },
            V6Err::Unreachable(reason) => Icmpv6Repr::DstUnreachable {
                reason,
                header,
                data,
            },
            V6Err::TooBig(mtu) => Icmpv6Repr::PktTooBig { mtu, header, data },
        };
        let frame = self.icmpv6_frame(src, header.src_addr, self.tunables.ip_ttl, &icmp);
        Some(Pkt {
            buf: frame,
            off: HEADROOM,
        })
    }
}
