//! Input: frames from interfaces to ARP, ND, forwarding or this vnet's
//! sockets; and the gate in front of smoltcp (listen backlogs).

use smoltcp::phy::{ChecksumCapabilities, Medium};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, ETHERNET_HEADER_LEN, EthernetAddress, EthernetFrame,
    EthernetProtocol, HardwareAddress, Icmpv6Packet, Icmpv6Repr, IpAddress, IpEndpoint, IpProtocol,
    Ipv4Packet, Ipv6Address, Ipv6Packet, NdiscNeighborFlags, NdiscRepr, TcpPacket,
};

use super::device::Pkt;
use super::firewall::Hook;
use super::output::{clamp_tcp_mss, rewrite_mss, solicited_node};
use super::reassembly::{Outcome, Reassembly};
use super::{Inet, max_age};
use crate::ifnet::{IfIndex, IfnetTable};

impl Inet {
    /// Takes every frame due now from every interface's wire.
    pub(super) fn input_all(&mut self, ifs: &mut IfnetTable) {
        let mut frames = Vec::new();
        let indexes: Vec<IfIndex> = ifs.iter().map(|i| i.index()).collect();
        for idx in indexes {
            let Some(ifp) = ifs.get_mut(idx) else {
                continue;
            };
            let Some(rx) = ifp.rx_wire().cloned() else {
                continue;
            };
            if let Some(next) = rx.recv_due(self.now, &mut frames) {
                self.next_arrival = Some(self.next_arrival.map_or(next, |n| n.min(next)));
            }
            let up = ifp.is_up();
            for f in frames.drain(..) {
                let ifp = ifs.get_mut(idx).expect("interface exists");
                ifp.stats.ipackets += 1;
                ifp.stats.ibytes += f.len() as u64;
                if !up {
                    ifp.stats.idrops += 1;
                    continue;
                }
                self.ether_input(ifs, idx, f);
            }
        }
    }

    fn ether_input(&mut self, ifs: &mut IfnetTable, ifindex: IfIndex, frame: Vec<u8>) {
        self.stats.eth_in += 1;
        let (dst, ethertype) = match EthernetFrame::new_checked(&frame[..]) {
            Ok(eth) => (eth.dst_addr(), eth.ethertype()),
            Err(_) => {
                self.stats.eth_in_malformed += 1;
                return self.if_drop(ifs, ifindex);
            }
        };
        let mac = ifs.get(ifindex).map(|i| i.mac());
        if Some(dst) != mac && !dst.is_broadcast() && !dst.is_multicast() {
            self.stats.eth_in_not_for_us += 1;
            return self.if_drop(ifs, ifindex);
        }
        match ethertype {
            EthernetProtocol::Arp => self.arp_input(ifs, ifindex, &frame[ETHERNET_HEADER_LEN..]),
            EthernetProtocol::Ipv4 => self.ip4_input(
                ifs,
                ifindex,
                Pkt {
                    buf: frame,
                    off: ETHERNET_HEADER_LEN,
                },
            ),
            EthernetProtocol::Ipv6 => self.ip6_input(
                ifs,
                ifindex,
                Pkt {
                    buf: frame,
                    off: ETHERNET_HEADER_LEN,
                },
            ),
            _ => {
                self.stats.eth_in_unknown_proto += 1;
                self.if_drop(ifs, ifindex);
            }
        }
    }

    fn if_drop(&mut self, ifs: &mut IfnetTable, ifindex: IfIndex) {
        if let Some(i) = ifs.get_mut(ifindex) {
            i.stats.idrops += 1;
        }
    }

    fn has_addr_on(&self, ifindex: IfIndex, a: IpAddress) -> bool {
        self.addrs
            .iter()
            .any(|x| x.ifindex == ifindex && x.cidr.address() == a)
    }

    fn arp_input(&mut self, ifs: &mut IfnetTable, ifindex: IfIndex, payload: &[u8]) {
        self.stats.arp_in += 1;
        let repr = ArpPacket::new_checked(payload).and_then(|p| ArpRepr::parse(&p));
        let Ok(ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_protocol_addr: tpa,
            ..
        }) = repr
        else {
            self.stats.arp_in_malformed += 1;
            return;
        };
        let for_us = self.has_addr_on(ifindex, IpAddress::Ipv4(tpa));
        if !spa.is_unspecified() && sha.is_unicast() {
            let age = max_age(&self.tunables);
            let held = self
                .nbr
                .learn(ifindex, IpAddress::Ipv4(spa), sha, self.now, age, for_us);
            for f in held {
                self.send_frame(ifs, ifindex, sha, EthernetProtocol::Ipv4, f);
            }
        }
        if for_us && operation == ArpOperation::Request {
            let Some(mac) = ifs.get(ifindex).map(|i| i.mac()) else {
                return;
            };
            let reply = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: mac,
                source_protocol_addr: tpa,
                target_hardware_addr: sha,
                target_protocol_addr: spa,
            };
            let mut frame = vec![0u8; ETHERNET_HEADER_LEN + reply.buffer_len()];
            reply.emit(&mut ArpPacket::new_unchecked(
                &mut frame[ETHERNET_HEADER_LEN..],
            ));
            self.stats.arp_replies_out += 1;
            let dst = if sha.is_unicast() {
                sha
            } else {
                EthernetAddress::BROADCAST
            };
            self.send_frame(ifs, ifindex, dst, EthernetProtocol::Arp, frame);
        }
    }

    fn ip4_input(&mut self, ifs: &mut IfnetTable, ifindex: IfIndex, mut pkt: Pkt) {
        self.stats.ip_in += 1;
        let (src, dst, total) = match Ipv4Packet::new_checked(pkt.ip()) {
            Ok(p) if p.version() == 4 && p.verify_checksum() => {
                (p.src_addr(), p.dst_addr(), usize::from(p.total_len()))
            }
            _ => {
                self.stats.ip_in_hdr_errors += 1;
                return;
            }
        };
        // Drop the Ethernet padding of short frames.
        pkt.buf.truncate(pkt.off + total);
        if src.is_multicast() || src.is_broadcast() || src.is_loopback() {
            self.stats.ip_in_bad_src += 1;
            return;
        }
        // 127/8 never comes from a wire.
        if dst.is_loopback() {
            self.stats.ip_in_hdr_errors += 1;
            return;
        }
        let bcast_or_mcast =
            dst.is_broadcast() || dst.is_multicast() || self.is_subnet_broadcast(ifindex, dst);
        if bcast_or_mcast && Ipv4Packet::new_unchecked(pkt.ip()).next_header() == IpProtocol::Tcp {
            // TCP is unicast only; a SYN to a broadcast address would take a
            // backlog slot and be answered from a broadcast source.
            self.stats.ip_in_hdr_errors += 1;
            return;
        }
        let local = self.is_local(IpAddress::Ipv4(dst)) || bcast_or_mcast;
        if local {
            self.deliver(ifs, ifindex, pkt);
        } else if src.is_unspecified() || src.is_link_local() || dst.is_link_local() {
            // Not forwardable (RFC 3927, RFC 1122).
            self.stats.ip_in_not_forwarding += 1;
        } else if self.tunables.ip_forwarding {
            self.forward4(ifs, ifindex, pkt);
        } else {
            self.stats.ip_in_not_forwarding += 1;
        }
    }

    fn ip6_input(&mut self, ifs: &mut IfnetTable, ifindex: IfIndex, mut pkt: Pkt) {
        self.stats.ip_in += 1;
        let (src, dst, nh, plen) = match Ipv6Packet::new_checked(pkt.ip()) {
            Ok(p) if p.version() == 6 => (
                p.src_addr(),
                p.dst_addr(),
                p.next_header(),
                usize::from(p.payload_len()),
            ),
            _ => {
                self.stats.ip_in_hdr_errors += 1;
                return;
            }
        };
        pkt.buf.truncate(pkt.off + 40 + plen);
        if src.is_multicast() || src.is_loopback() {
            self.stats.ip_in_bad_src += 1;
            return;
        }
        if dst.is_loopback() || (dst.is_multicast() && nh == IpProtocol::Tcp) {
            self.stats.ip_in_hdr_errors += 1;
            return;
        }
        if nh == IpProtocol::Icmpv6 && self.nd_input(ifs, ifindex, &pkt, src, dst) {
            return;
        }
        let local = self.is_local(IpAddress::Ipv6(dst))
            || (dst.is_multicast()
                && (dst == smoltcp::wire::IPV6_LINK_LOCAL_ALL_NODES
                    || self.addrs.iter().any(|a| {
                        matches!(a.cidr.address(), IpAddress::Ipv6(x) if solicited_node(x) == dst)
                    })));
        if local {
            self.deliver(ifs, ifindex, pkt);
        } else if dst.is_multicast() {
            // Multicast we did not join: not ours to forward either.
            self.stats.ip_in_not_forwarding += 1;
        } else if src.is_unspecified() || src.is_unicast_link_local() || dst.is_unicast_link_local()
        {
            self.stats.ip_in_not_forwarding += 1;
        } else if self.tunables.ip6_forwarding {
            self.forward6(ifs, ifindex, pkt);
        } else {
            self.stats.ip_in_not_forwarding += 1;
        }
    }

    /// Queues a packet for this vnet's sockets (reassembling fragments
    /// first), fitting the MSS of an incoming SYN to the interface it came
    /// in on.
    fn deliver(&mut self, ifs: &mut IfnetTable, ifindex: IfIndex, pkt: Pkt) {
        let v4 = pkt.ip()[0] >> 4 == 4;
        let frag = if v4 {
            Reassembly::is_v4_fragment(pkt.ip())
        } else {
            Reassembly::is_v6_fragment(pkt.ip())
        };
        if !frag {
            return self.deliver_whole(ifs, ifindex, pkt);
        }
        self.stats.ip_reasm_fragments += 1;
        let out = if v4 {
            self.reasm.push_v4(pkt.ip(), self.now)
        } else {
            self.reasm.push_v6(pkt.ip(), self.now)
        };
        match out {
            Outcome::Held => {}
            Outcome::Dropped => self.stats.ip_reasm_fails += 1,
            Outcome::Done(whole) => {
                self.stats.ip_reasm_ok += 1;
                self.deliver_whole(ifs, ifindex, whole);
            }
        }
    }

    fn deliver_whole(&mut self, ifs: &mut IfnetTable, ifindex: IfIndex, mut pkt: Pkt) {
        if !self.fw_pass(ifs, Hook::In, Some(ifindex), None, pkt.ip()) {
            return;
        }
        if let Some((mtu, tso)) = ifs.get(ifindex).map(|i| (i.mtu(), i.tso())) {
            let ip = pkt.ip_mut();
            let hdr = match ip[0] >> 4 {
                4 => usize::from(ip[0] & 0x0f) * 4,
                _ => 40,
            };
            let is_tcp = match ip[0] >> 4 {
                4 => ip.get(9) == Some(&6),
                _ => ip.get(6) == Some(&6),
            };
            if is_tcp && ip.len() > hdr {
                let (src, dst) = match ip[0] >> 4 {
                    4 => {
                        let p = Ipv4Packet::new_unchecked(&*ip);
                        (IpAddress::Ipv4(p.src_addr()), IpAddress::Ipv4(p.dst_addr()))
                    }
                    _ => {
                        let p = Ipv6Packet::new_unchecked(&*ip);
                        (IpAddress::Ipv6(p.src_addr()), IpAddress::Ipv6(p.dst_addr()))
                    }
                };
                let changed = if tso {
                    // The link segments for us: let our TCP send segments
                    // as large as an IP packet allows.
                    let big = (super::device::DEVICE_MTU - hdr - 20) as u16;
                    rewrite_mss(&mut ip[hdr..], &src, &dst, |_| big)
                } else {
                    let limit = mtu.saturating_sub(hdr + 20).min(usize::from(u16::MAX)) as u16;
                    clamp_tcp_mss(&mut ip[hdr..], limit, &src, &dst)
                };
                if changed {
                    self.stats.tcp_mss_clamped += 1;
                }
            }
        }
        self.stats.ip_in_delivered += 1;
        self.dev.rx.push_back(pkt);
    }

    /// Handles neighbor discovery; returns false for other ICMPv6, which
    /// goes on to smoltcp.
    fn nd_input(
        &mut self,
        ifs: &mut IfnetTable,
        ifindex: IfIndex,
        pkt: &Pkt,
        src: Ipv6Address,
        dst: Ipv6Address,
    ) -> bool {
        let ip = pkt.ip();
        let Ok(v6) = Ipv6Packet::new_checked(ip) else {
            return false;
        };
        let payload = v6.payload();
        let Ok(icmp) = Icmpv6Packet::new_checked(payload) else {
            return false;
        };
        if !(133..=137).contains(&u8::from(icmp.msg_type())) {
            return false;
        }
        self.stats.nd_in += 1;
        if v6.hop_limit() != 255 {
            return true;
        }
        let Ok(Icmpv6Repr::Ndisc(nd)) =
            Icmpv6Repr::parse(&src, &dst, &icmp, &ChecksumCapabilities::default())
        else {
            return true;
        };
        let age = max_age(&self.tunables);
        let mac_of = |ll: Option<smoltcp::wire::RawHardwareAddress>| match ll
            .and_then(|l| l.parse(Medium::Ethernet).ok())
        {
            Some(HardwareAddress::Ethernet(m)) => Some(m),
            _ => None,
        };
        match nd {
            NdiscRepr::NeighborSolicit {
                target_addr,
                lladdr,
            } => {
                let for_us = self.has_addr_on(ifindex, IpAddress::Ipv6(target_addr));
                let their_mac = mac_of(lladdr);
                if let Some(m) = their_mac
                    && !src.is_unspecified()
                {
                    let held =
                        self.nbr
                            .learn(ifindex, IpAddress::Ipv6(src), m, self.now, age, for_us);
                    for f in held {
                        self.send_frame(ifs, ifindex, m, EthernetProtocol::Ipv6, f);
                    }
                }
                if for_us {
                    let Some(mac) = ifs.get(ifindex).map(|i| i.mac()) else {
                        return true;
                    };
                    let (to, flags) = if src.is_unspecified() {
                        (
                            smoltcp::wire::IPV6_LINK_LOCAL_ALL_NODES,
                            NdiscNeighborFlags::OVERRIDE,
                        )
                    } else {
                        (
                            src,
                            NdiscNeighborFlags::SOLICITED | NdiscNeighborFlags::OVERRIDE,
                        )
                    };
                    let na = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                        flags,
                        target_addr,
                        lladdr: Some(mac.into()),
                    });
                    let frame = self.icmpv6_frame(target_addr, to, 255, &na);
                    self.stats.nd_adverts_out += 1;
                    let dst_mac = match (src.is_unspecified(), their_mac) {
                        (false, Some(m)) => m,
                        _ => {
                            let o = to.octets();
                            EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]])
                        }
                    };
                    self.send_frame(ifs, ifindex, dst_mac, EthernetProtocol::Ipv6, frame);
                }
            }
            NdiscRepr::NeighborAdvert {
                target_addr,
                lladdr,
                ..
            } => {
                if let Some(m) = mac_of(lladdr) {
                    let held = self.nbr.learn(
                        ifindex,
                        IpAddress::Ipv6(target_addr),
                        m,
                        self.now,
                        age,
                        false,
                    );
                    for f in held {
                        self.send_frame(ifs, ifindex, m, EthernetProtocol::Ipv6, f);
                    }
                }
            }
            _ => {}
        }
        true
    }

    /// Feeds smoltcp the packets queued for it, one at a time, so that each
    /// SYN meets a listener with room in its backlog (or is dropped, as a
    /// full accept queue drops it, and the peer retries).
    pub(super) fn ingress(&mut self) {
        while let Some(p) = self.dev.rx.front() {
            if let Some((dst, port, remote)) = syn_target(p.ip())
                && let Some(listener) = self.ports.listener(port, dst)
                && !self.admit_syn(listener, remote)
            {
                self.dev.rx.pop_front();
                self.stats.tcp_listen_drops += 1;
                continue;
            }
            let _ = self
                .iface
                .poll_ingress_single(self.now, &mut self.dev, &mut self.sockets);
        }
    }
}

/// The destination address and port and the source endpoint of a bare TCP
/// SYN (no ACK), if `ip` is one.
fn syn_target(ip: &[u8]) -> Option<(IpAddress, u16, IpEndpoint)> {
    let (src, dst, hdr) = match ip.first()? >> 4 {
        4 => {
            let p = Ipv4Packet::new_checked(ip).ok()?;
            if p.next_header() != IpProtocol::Tcp || p.frag_offset() != 0 {
                return None;
            }
            (
                IpAddress::Ipv4(p.src_addr()),
                IpAddress::Ipv4(p.dst_addr()),
                usize::from(p.header_len()),
            )
        }
        6 => {
            let p = Ipv6Packet::new_checked(ip).ok()?;
            if p.next_header() != IpProtocol::Tcp {
                return None;
            }
            (
                IpAddress::Ipv6(p.src_addr()),
                IpAddress::Ipv6(p.dst_addr()),
                40,
            )
        }
        _ => return None,
    };
    let t = TcpPacket::new_checked(ip.get(hdr..)?).ok()?;
    (t.syn() && !t.ack()).then(|| (dst, t.dst_port(), IpEndpoint::new(src, t.src_port())))
}
