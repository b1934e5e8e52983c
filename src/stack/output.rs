//! IP output: route, fit the MTU, resolve the next hop, frame and send.

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, ETHERNET_HEADER_LEN, EthernetAddress, EthernetFrame,
    EthernetProtocol, Icmpv6Packet, Icmpv6Repr, IpAddress, IpProtocol, Ipv4Address, Ipv4Packet,
    Ipv6Address, Ipv6Packet, Ipv6Repr, NdiscRepr, TcpPacket,
};

use super::Inet;
use super::device::{HEADROOM, Pkt};
use super::firewall::Hook;
use super::neighbor::Lookup;
use crate::ifnet::{IfIndex, IfnetTable};

/// Who made a packet: this vnet's sockets, another host (forwarding), or
/// the firewall (a reject's answer, which the firewall does not filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Local,
    Forward,
    Firewall,
}

pub(super) fn ip_dst(ip: &[u8]) -> Option<IpAddress> {
    match ip.first()? >> 4 {
        4 => Ipv4Packet::new_checked(ip)
            .ok()
            .map(|p| IpAddress::Ipv4(p.dst_addr())),
        6 => Ipv6Packet::new_checked(ip)
            .ok()
            .map(|p| IpAddress::Ipv6(p.dst_addr())),
        _ => None,
    }
}

fn v6_multicast_mac(a: Ipv6Address) -> EthernetAddress {
    let o = a.octets();
    EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

fn v4_multicast_mac(a: Ipv4Address) -> EthernetAddress {
    let o = a.octets();
    EthernetAddress([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
}

/// The solicited-node multicast address of `a`.
pub(super) fn solicited_node(a: Ipv6Address) -> Ipv6Address {
    let o = a.octets();
    Ipv6Address::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

impl Inet {
    /// Sends an IP packet on its way: to this vnet's own sockets if it is
    /// for us, else out of the interface its route names.
    pub(super) fn ip_output(&mut self, ifs: &mut IfnetTable, pkt: Pkt, origin: Origin) {
        let Some(dst) = ip_dst(pkt.ip()) else {
            self.stats.ip_in_hdr_errors += 1;
            return;
        };
        if origin != Origin::Forward && (self.is_local(dst) || Self::is_loopback_dst(dst)) {
            if let Some(lo) = ifs.get_mut(1) {
                lo.stats.opackets += 1;
                lo.stats.obytes += pkt.ip().len() as u64;
                lo.stats.ipackets += 1;
                lo.stats.ibytes += pkt.ip().len() as u64;
            }
            self.dev.rx.push_back(pkt);
            return;
        }
        let limited_bcast = matches!(dst, IpAddress::Ipv4(a) if a.is_broadcast());
        let route = if limited_bcast {
            // 255.255.255.255 leaves by the interface of its source address.
            let src = Ipv4Packet::new_checked(pkt.ip()).map(|p| p.src_addr()).ok();
            self.addrs
                .iter()
                .find(|a| Some(a.cidr.address()) == src.map(IpAddress::Ipv4))
                .map(|a| (a.ifindex, dst))
        } else {
            self.routes
                .lookup(dst, &|r| ifs.get(r.ifindex).is_some_and(|i| i.is_running()))
                .map(|r| (r.ifindex, r.gateway.unwrap_or(dst)))
        };
        let Some((ifindex, nexthop)) = route else {
            self.stats.ip_no_route += 1;
            if origin == Origin::Forward {
                self.icmp_unreachable_no_route(ifs, pkt.ip());
            }
            return;
        };
        if origin == Origin::Local && !self.fw_pass(ifs, Hook::Out, None, Some(ifindex), pkt.ip()) {
            return;
        }
        self.if_output(ifs, ifindex, nexthop, pkt, origin);
    }

    /// Sends an IP packet out of one interface towards `nexthop`.
    pub(super) fn if_output(
        &mut self,
        ifs: &mut IfnetTable,
        ifindex: IfIndex,
        nexthop: IpAddress,
        mut pkt: Pkt,
        origin: Origin,
    ) {
        let Some(ifp) = ifs.get(ifindex) else {
            self.stats.ip_no_route += 1;
            return;
        };
        if !ifp.is_running() {
            self.stats.ip_out_if_down += 1;
            return;
        }
        if ifp.is_loopback() {
            // A route through lo0 is a blackhole for other hosts' packets.
            if origin != Origin::Forward {
                self.dev.rx.push_back(pkt);
            } else {
                self.stats.ip_no_route += 1;
            }
            return;
        }
        let mtu = ifp.mtu();
        if self.clamp_mss(pkt.ip_mut(), mtu) {
            self.stats.tcp_mss_clamped += 1;
        }
        // A link that segments TCP itself (TSO) takes large segments whole.
        let tso_tcp = ifp.tso() && is_tcp(pkt.ip());
        if pkt.ip().len() > mtu && !tso_tcp {
            match self.fragment(pkt, mtu, origin) {
                Some(frags) => {
                    for f in frags {
                        self.resolve_and_send(ifs, ifindex, nexthop, f);
                    }
                }
                None => self.stats.ip_too_big += 1,
            }
            return;
        }
        self.resolve_and_send(ifs, ifindex, nexthop, pkt);
    }

    fn resolve_and_send(
        &mut self,
        ifs: &mut IfnetTable,
        ifindex: IfIndex,
        nexthop: IpAddress,
        pkt: Pkt,
    ) {
        let ethertype = match nexthop {
            IpAddress::Ipv4(_) => EthernetProtocol::Ipv4,
            IpAddress::Ipv6(_) => EthernetProtocol::Ipv6,
        };
        let frame = into_frame(pkt);
        let mac = match nexthop {
            IpAddress::Ipv4(a) if a.is_broadcast() || self.is_subnet_broadcast(ifindex, a) => {
                Some(EthernetAddress::BROADCAST)
            }
            IpAddress::Ipv4(a) if a.is_multicast() => Some(v4_multicast_mac(a)),
            IpAddress::Ipv6(a) if a.is_multicast() => Some(v6_multicast_mac(a)),
            _ => None,
        };
        if let Some(mac) = mac {
            self.send_frame(ifs, ifindex, mac, ethertype, frame);
            return;
        }
        let mut dropped = 0;
        let (what, frame) = self
            .nbr
            .resolve(ifindex, nexthop, frame, self.now, &mut dropped);
        self.stats.neighbor_hold_drops += dropped;
        match what {
            Lookup::Found(mac) => {
                if let Some(f) = frame {
                    self.send_frame(ifs, ifindex, mac, ethertype, f);
                }
            }
            Lookup::Refresh(mac) => {
                if let Some(f) = frame {
                    self.send_frame(ifs, ifindex, mac, ethertype, f);
                }
                self.solicit(ifs, ifindex, nexthop, Some(mac));
            }
            Lookup::HeldSendRequest => self.solicit(ifs, ifindex, nexthop, None),
            Lookup::Held => {}
        }
    }

    /// Retransmits neighbor requests and drops what waited in vain.
    pub(super) fn neighbor_timers(&mut self, ifs: &mut IfnetTable) {
        let exp = self.nbr.poll(self.now);
        self.stats.neighbor_unresolved_drops += exp.dropped as u64;
        for (ifindex, addr) in exp.retry {
            self.solicit(ifs, ifindex, addr, None);
        }
    }

    pub(super) fn is_subnet_broadcast(&self, ifindex: IfIndex, a: Ipv4Address) -> bool {
        self.addrs.iter().any(|x| {
            x.ifindex == ifindex
                && matches!(x.cidr, smoltcp::wire::IpCidr::Ipv4(c) if c.prefix_len() < 31 && c.broadcast() == Some(a))
        })
    }

    /// Puts an Ethernet header on `frame` (which has room for it) and sends
    /// it on the interface's wire.
    pub(super) fn send_frame(
        &mut self,
        ifs: &mut IfnetTable,
        ifindex: IfIndex,
        dst: EthernetAddress,
        ethertype: EthernetProtocol,
        mut frame: Vec<u8>,
    ) {
        let Some(ifp) = ifs.get_mut(ifindex) else {
            return;
        };
        {
            let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
            eth.set_dst_addr(dst);
            eth.set_src_addr(ifp.mac());
            eth.set_ethertype(ethertype);
        }
        let len = frame.len() as u64;
        let Some(wire) = ifp.tx_wire() else {
            return;
        };
        let now = self.now;
        match wire.send(now, frame, &mut |vnet, at| self.note_wake(vnet, at)) {
            Ok(()) => {
                ifp.stats.opackets += 1;
                ifp.stats.obytes += len;
            }
            Err(_) => {
                ifp.stats.oerrors += 1;
                self.stats.eth_out_drops += 1;
            }
        }
    }

    /// Asks who has `target` on an interface: ARP request or IPv6 neighbor
    /// solicitation (unicast to `known` when refreshing a stale entry).
    pub(super) fn solicit(
        &mut self,
        ifs: &mut IfnetTable,
        ifindex: IfIndex,
        target: IpAddress,
        known: Option<EthernetAddress>,
    ) {
        let Some(ifp) = ifs.get(ifindex) else { return };
        let mac = ifp.mac();
        match target {
            IpAddress::Ipv4(t) => {
                let src = match self.source_for(ifindex, target) {
                    Some(IpAddress::Ipv4(s)) => s,
                    _ => Ipv4Address::UNSPECIFIED,
                };
                let repr = ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Request,
                    source_hardware_addr: mac,
                    source_protocol_addr: src,
                    target_hardware_addr: EthernetAddress([0; 6]),
                    target_protocol_addr: t,
                };
                let mut frame = vec![0u8; ETHERNET_HEADER_LEN + repr.buffer_len()];
                repr.emit(&mut ArpPacket::new_unchecked(
                    &mut frame[ETHERNET_HEADER_LEN..],
                ));
                self.stats.arp_requests_out += 1;
                let dst = known.unwrap_or(EthernetAddress::BROADCAST);
                self.send_frame(ifs, ifindex, dst, EthernetProtocol::Arp, frame);
            }
            IpAddress::Ipv6(t) => {
                let Some(IpAddress::Ipv6(src)) = self.source_for(ifindex, target) else {
                    return;
                };
                let dst_ip = if known.is_some() {
                    t
                } else {
                    solicited_node(t)
                };
                let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                    target_addr: t,
                    lladdr: Some(mac.into()),
                });
                let frame = self.icmpv6_frame(src, dst_ip, 255, &icmp);
                self.stats.nd_solicits_out += 1;
                let dst = known.unwrap_or_else(|| v6_multicast_mac(dst_ip));
                self.send_frame(ifs, ifindex, dst, EthernetProtocol::Ipv6, frame);
            }
        }
    }

    /// An Ethernet-headroomed frame holding an IPv6 packet with one ICMPv6
    /// message.
    pub(super) fn icmpv6_frame(
        &self,
        src: Ipv6Address,
        dst: Ipv6Address,
        hop_limit: u8,
        icmp: &Icmpv6Repr<'_>,
    ) -> Vec<u8> {
        let ip = Ipv6Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Icmpv6,
            payload_len: icmp.buffer_len(),
            hop_limit,
        };
        let mut frame = vec![0u8; HEADROOM + ip.buffer_len() + icmp.buffer_len()];
        let mut p = Ipv6Packet::new_unchecked(&mut frame[HEADROOM..]);
        ip.emit(&mut p);
        icmp.emit(
            &src,
            &dst,
            &mut Icmpv6Packet::new_unchecked(p.payload_mut()),
            &smoltcp::phy::ChecksumCapabilities::default(),
        );
        frame
    }

    /// Lowers the MSS option of a TCP SYN to fit `mtu`. Returns whether it
    /// changed anything.
    fn clamp_mss(&self, ip: &mut [u8], mtu: usize) -> bool {
        let (hdr, src, dst) = match ip.first().map(|b| b >> 4) {
            Some(4) => {
                let Ok(p) = Ipv4Packet::new_checked(&*ip) else {
                    return false;
                };
                if p.next_header() != IpProtocol::Tcp || p.frag_offset() != 0 {
                    return false;
                }
                (
                    usize::from(p.header_len()),
                    IpAddress::Ipv4(p.src_addr()),
                    IpAddress::Ipv4(p.dst_addr()),
                )
            }
            Some(6) => {
                let Ok(p) = Ipv6Packet::new_checked(&*ip) else {
                    return false;
                };
                if p.next_header() != IpProtocol::Tcp {
                    return false;
                }
                (
                    40,
                    IpAddress::Ipv6(p.src_addr()),
                    IpAddress::Ipv6(p.dst_addr()),
                )
            }
            _ => return false,
        };
        let limit = mtu.saturating_sub(hdr + 20).min(usize::from(u16::MAX)) as u16;
        clamp_tcp_mss(&mut ip[hdr..], limit, &src, &dst)
    }

    /// Splits an IPv4 packet into fragments that fit `mtu`. Returns `None`
    /// (after sending an ICMP error for a forwarded packet) when it may not
    /// be fragmented.
    fn fragment(&mut self, pkt: Pkt, mtu: usize, origin: Origin) -> Option<Vec<Pkt>> {
        let ip = pkt.ip();
        if ip.first().map(|b| b >> 4) == Some(6) {
            // IPv6 routers never fragment: only the source does.
            if origin == Origin::Forward {
                self.icmp_too_big(pkt.ip(), mtu);
                return None;
            }
            return self.fragment6(&pkt, mtu);
        }
        let p = Ipv4Packet::new_checked(ip).ok()?;
        // Our own packets are fragmented whatever their DF bit says (the
        // sending host knows its first hop); forwarded ones with DF are not.
        if p.dont_frag() && origin == Origin::Forward {
            self.icmp_too_big(pkt.ip(), mtu);
            return None;
        }
        let hlen = usize::from(p.header_len());
        let payload = p.payload();
        let base_off = usize::from(p.frag_offset());
        let more = p.more_frags();
        let chunk = (mtu - hlen) & !7;
        if chunk == 0 {
            return None;
        }
        // smoltcp sends every datagram with identification 0 (it never
        // fragments): give each datagram we split an identification of its
        // own, so a receiver cannot mix pieces of two.
        let ident = if origin != Origin::Forward {
            self.frag_ident = self.frag_ident.wrapping_add(1);
            self.frag_ident
        } else {
            p.ident()
        };
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < payload.len() {
            let end = (pos + chunk).min(payload.len());
            let last = end == payload.len();
            let mut buf = vec![0u8; HEADROOM + hlen + (end - pos)];
            buf[HEADROOM..HEADROOM + hlen].copy_from_slice(&ip[..hlen]);
            buf[HEADROOM + hlen..].copy_from_slice(&payload[pos..end]);
            let mut f = Ipv4Packet::new_unchecked(&mut buf[HEADROOM..]);
            f.set_total_len((hlen + end - pos) as u16);
            f.set_frag_offset((base_off + pos) as u16);
            f.set_more_frags(more || !last);
            f.set_ident(ident);
            f.set_dont_frag(false);
            f.fill_checksum();
            out.push(Pkt { buf, off: HEADROOM });
            pos = end;
        }
        self.stats.ip_frag_created += out.len() as u64;
        Some(out)
    }
}

impl Inet {
    /// Splits one of our IPv6 packets with a fragment header (RFC 8200
    /// section 4.5); the fixed header is the unfragmentable part.
    fn fragment6(&mut self, pkt: &Pkt, mtu: usize) -> Option<Vec<Pkt>> {
        let p = Ipv6Packet::new_checked(pkt.ip()).ok()?;
        let next: u8 = p.next_header().into();
        let payload = p.payload();
        let chunk = (mtu - 40 - 8) & !7;
        self.frag_ident = self.frag_ident.wrapping_add(1);
        let ident = u32::from(self.frag_ident) | (u32::from(self.vnet.0 as u16) << 16);
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < payload.len() {
            let end = (pos + chunk).min(payload.len());
            let more = end < payload.len();
            let mut buf = vec![0u8; HEADROOM + 48 + (end - pos)];
            buf[HEADROOM..HEADROOM + 40].copy_from_slice(&pkt.ip()[..40]);
            let f = &mut buf[HEADROOM..];
            f[6] = 44; // next header: fragment
            f[4..6].copy_from_slice(&((8 + end - pos) as u16).to_be_bytes());
            f[40] = next;
            f[41] = 0;
            let off_m = ((pos / 8) as u16) << 3 | u16::from(more);
            f[42..44].copy_from_slice(&off_m.to_be_bytes());
            f[44..48].copy_from_slice(&ident.to_be_bytes());
            f[48..].copy_from_slice(&payload[pos..end]);
            out.push(Pkt { buf, off: HEADROOM });
            pos = end;
        }
        self.stats.ip_frag_created += out.len() as u64;
        Some(out)
    }
}

fn is_tcp(ip: &[u8]) -> bool {
    match ip.first().map(|b| b >> 4) {
        Some(4) => ip.get(9) == Some(&6),
        Some(6) => ip.get(6) == Some(&6),
        _ => false,
    }
}

/// Turns a packet into a frame buffer with exactly an Ethernet header's room
/// in front.
fn into_frame(mut pkt: Pkt) -> Vec<u8> {
    if pkt.off == ETHERNET_HEADER_LEN {
        return pkt.buf;
    }
    if pkt.off > ETHERNET_HEADER_LEN {
        pkt.buf.drain(..pkt.off - ETHERNET_HEADER_LEN);
        return pkt.buf;
    }
    let mut f = vec![0u8; ETHERNET_HEADER_LEN];
    f.extend_from_slice(pkt.ip());
    f
}

/// Lowers the MSS option of a TCP SYN segment to `limit` and refreshes its
/// checksum. A segment whose checksum is already wrong is left alone, so
/// that TCP still refuses it. Returns whether it changed anything.
pub(super) fn clamp_tcp_mss(seg: &mut [u8], limit: u16, src: &IpAddress, dst: &IpAddress) -> bool {
    rewrite_mss(seg, src, dst, |mss| mss.min(limit))
}

/// Rewrites the MSS option of a TCP SYN segment with `f` (same checksum
/// rule as [`clamp_tcp_mss`]). Returns whether it changed anything.
pub(super) fn rewrite_mss(
    seg: &mut [u8],
    src: &IpAddress,
    dst: &IpAddress,
    f: impl Fn(u16) -> u16,
) -> bool {
    let Ok(tcp) = TcpPacket::new_checked(&*seg) else {
        return false;
    };
    if !tcp.syn() || !tcp.verify_checksum(src, dst) {
        return false;
    }
    let hlen = usize::from(tcp.header_len());
    let mut i = 20;
    let mut changed = false;
    while i < hlen {
        match seg[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = seg.get(i + 1) else { break };
                let len = usize::from(len);
                if len < 2 || i + len > hlen {
                    break;
                }
                if kind == 2 && len == 4 {
                    let mss = u16::from_be_bytes([seg[i + 2], seg[i + 3]]);
                    let new = f(mss);
                    if new != mss {
                        seg[i + 2..i + 4].copy_from_slice(&new.to_be_bytes());
                        changed = true;
                    }
                }
                i += len;
            }
        }
    }
    if changed {
        TcpPacket::new_unchecked(&mut *seg).fill_checksum(src, dst);
    }
    changed
}
