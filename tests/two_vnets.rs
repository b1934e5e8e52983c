//! Two vnets joined by an epair talk over IPv4 and IPv6: ping, a 16 MiB TCP
//! transfer with its checksum verified, UDP both ways.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use vnet::Duration;
use vnet::driver::sim::Sim;
use vnet::stack::socket::{self, SockError};

#[test]
fn ping_both_ways_over_ipv4_and_ipv6() {
    let mut sim = Sim::new(1);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    for (from, dst) in [
        (&a, "10.0.0.2"),
        (&b, "10.0.0.1"),
        (&a, "fd00:0::2"),
        (&b, "fd00:0::1"),
    ] {
        let dst: IpAddr = dst.parse().unwrap();
        assert_eq!(
            ping(&mut sim, from, dst),
            Some(dst),
            "ping {dst} from {}",
            from.name()
        );
    }
}

#[test]
fn tcp_16mib_transfer_arrives_intact_over_ipv4_and_ipv6() {
    let mut sim = Sim::new(2);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    for addr in ["10.0.0.2:5001", "[fd00:0::2]:5002"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let t = tcp_transfer(&mut sim, &b, &a, addr, 16 << 20, Duration::from_secs(600));
        assert_eq!(t.received, 16 << 20, "{addr}");
        assert_eq!(t.recv_sha, t.sent_sha, "{addr}");
    }
}

#[test]
fn udp_both_ways_over_ipv4_and_ipv6() {
    let mut sim = Sim::new(3);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    for (a_addr, b_addr) in [
        ("10.0.0.1:7000", "10.0.0.2:7000"),
        ("[fd00:0::1]:7001", "[fd00:0::2]:7001"),
    ] {
        let a_addr: SocketAddr = a_addr.parse().unwrap();
        let b_addr: SocketAddr = b_addr.parse().unwrap();
        let sa = sim.with(&a, || socket::udp_bind(a_addr, false)).unwrap();
        let sb = sim.with(&b, || socket::udp_bind(b_addr, false)).unwrap();
        sim.with(&a, || socket::udp_send_to(sa, b"hello b", b_addr))
            .unwrap();
        let mut got = None;
        sim.run_until(Duration::from_secs(5), |s| {
            let mut buf = [0u8; 64];
            match s.with(&b, || socket::udp_recv_from(sb, &mut buf)) {
                Ok((n, from)) => {
                    got = Some((buf[..n].to_vec(), from));
                    true
                }
                Err(SockError::WouldBlock) => false,
                Err(e) => panic!("{e}"),
            }
        })
        .unwrap();
        assert_eq!(got, Some((b"hello b".to_vec(), a_addr)));
        sim.with(&b, || socket::udp_send_to(sb, b"hello a", a_addr))
            .unwrap();
        let mut got = None;
        sim.run_until(Duration::from_secs(5), |s| {
            let mut buf = [0u8; 64];
            match s.with(&a, || socket::udp_recv_from(sa, &mut buf)) {
                Ok((n, from)) => {
                    got = Some((buf[..n].to_vec(), from));
                    true
                }
                Err(_) => false,
            }
        })
        .unwrap();
        assert_eq!(got, Some((b"hello a".to_vec(), b_addr)));
    }
}

#[test]
fn udp_datagrams_larger_than_the_mtu_are_fragmented_and_reassembled() {
    let mut sim = Sim::new(4);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    for (a_addr, b_addr) in [
        ("10.0.0.1:7100", "10.0.0.2:7100"),
        ("[fd00:0::1]:7101", "[fd00:0::2]:7101"),
    ] {
        let a_addr: SocketAddr = a_addr.parse().unwrap();
        let b_addr: SocketAddr = b_addr.parse().unwrap();
        let sa = sim.with(&a, || socket::udp_bind(a_addr, false)).unwrap();
        let sb = sim.with(&b, || socket::udp_bind(b_addr, false)).unwrap();
        let big = pattern(8000, 9);
        sim.with(&a, || socket::udp_send_to(sa, &big, b_addr))
            .unwrap();
        let mut got = None;
        sim.run_until(Duration::from_secs(5), |s| {
            let mut buf = vec![0u8; 65536];
            match s.with(&b, || socket::udp_recv_from(sb, &mut buf)) {
                Ok((n, from)) => {
                    got = Some((buf[..n].to_vec(), from));
                    true
                }
                Err(_) => false,
            }
        })
        .unwrap_or_else(|e| panic!("{b_addr}: {e}"));
        assert_eq!(got, Some((big, a_addr)), "{b_addr}");
    }
    let sent = sim.with(&a, vnet::stack::stats).unwrap();
    let got = sim.with(&b, vnet::stack::stats).unwrap();
    assert_eq!(sent.ip_frag_created, 12, "six fragments per family");
    assert_eq!(
        (got.ip_reasm_fragments, got.ip_reasm_ok, got.ip_reasm_fails),
        (12, 2, 0)
    );
}
