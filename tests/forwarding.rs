//! A chain A - R - B: A reaches B only when R forwards; an expiring TTL
//! brings back ICMP time-exceeded from R.

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use common::*;
use vnet::driver::sim::Sim;
use vnet::stack::socket::{self, SockError};
use vnet::stack::sysctl;
use vnet::vnet::Vnet;
use vnet::{Duration, ifnet, stack};

fn chain(sim: &mut Sim) -> (Arc<Vnet>, Arc<Vnet>, Arc<Vnet>) {
    let a = sim.create("a").unwrap();
    let r = sim.create("r").unwrap();
    let b = sim.create("b").unwrap();
    ifnet::epair(&a, "eth0", &r, "eth0").unwrap();
    ifnet::epair(&r, "eth1", &b, "eth0").unwrap();
    sim.with(&a, || {
        ifnet::set_up("eth0", true).unwrap();
        stack::addr_add("eth0", "10.1.0.1/24".parse().unwrap()).unwrap();
        stack::addr_add("eth0", "fd01::1/64".parse().unwrap()).unwrap();
        stack::route_add(
            "0.0.0.0/0".parse().unwrap(),
            Some("10.1.0.254".parse().unwrap()),
            None,
        )
        .unwrap();
        stack::route_add(
            "::/0".parse().unwrap(),
            Some("fd01::fe".parse().unwrap()),
            None,
        )
        .unwrap();
    });
    sim.with(&r, || {
        for (i, v4, v6) in [
            ("eth0", "10.1.0.254/24", "fd01::fe/64"),
            ("eth1", "10.2.0.254/24", "fd02::fe/64"),
        ] {
            ifnet::set_up(i, true).unwrap();
            stack::addr_add(i, v4.parse().unwrap()).unwrap();
            stack::addr_add(i, v6.parse().unwrap()).unwrap();
        }
    });
    sim.with(&b, || {
        ifnet::set_up("eth0", true).unwrap();
        stack::addr_add("eth0", "10.2.0.1/24".parse().unwrap()).unwrap();
        stack::addr_add("eth0", "fd02::1/64".parse().unwrap()).unwrap();
        stack::route_add(
            "0.0.0.0/0".parse().unwrap(),
            Some("10.2.0.254".parse().unwrap()),
            None,
        )
        .unwrap();
        stack::route_add(
            "::/0".parse().unwrap(),
            Some("fd02::fe".parse().unwrap()),
            None,
        )
        .unwrap();
    });
    (a, r, b)
}

fn forwarding(sim: &mut Sim, r: &Arc<Vnet>, on: bool) {
    let v = if on { "1" } else { "0" };
    sim.with(r, || {
        sysctl::set("net.inet.ip.forwarding", v).unwrap();
        sysctl::set("net.inet6.ip6.forwarding", v).unwrap();
    });
}

#[test]
fn a_reaches_b_only_when_r_forwards() {
    let mut sim = Sim::new(21);
    let (a, r, b) = chain(&mut sim);
    let b4: IpAddr = "10.2.0.1".parse().unwrap();
    let b6: IpAddr = "fd02::1".parse().unwrap();
    assert_eq!(ping(&mut sim, &a, b4), None);
    assert_eq!(ping(&mut sim, &a, b6), None);
    let st = sim.with(&r, stack::stats).unwrap();
    assert!(st.ip_in_not_forwarding >= 2, "{st:?}");
    assert_eq!(st.ip_forwarded, 0);

    forwarding(&mut sim, &r, true);
    assert_eq!(ping(&mut sim, &a, b4), Some(b4));
    assert_eq!(ping(&mut sim, &a, b6), Some(b6));
    let t = tcp_transfer(
        &mut sim,
        &b,
        &a,
        "10.2.0.1:9000".parse().unwrap(),
        1 << 20,
        Duration::from_secs(60),
    );
    assert_eq!(t.recv_sha, t.sent_sha);
    let t = tcp_transfer(
        &mut sim,
        &b,
        &a,
        "[fd02::1]:9001".parse().unwrap(),
        1 << 20,
        Duration::from_secs(60),
    );
    assert_eq!(t.recv_sha, t.sent_sha);
    assert!(sim.with(&r, stack::stats).unwrap().ip_forwarded > 1000);

    forwarding(&mut sim, &r, false);
    assert_eq!(ping(&mut sim, &a, b4), None);
}

/// Sends a ping with TTL 1 from `a` towards `dst` and returns the ICMP
/// (type, source) that came back on a raw socket.
fn expire(sim: &mut Sim, a: &Arc<Vnet>, dst: IpAddr) -> Option<(u8, IpAddr)> {
    let v6 = dst.is_ipv6();
    let raw = sim
        .with(a, || socket::raw_open(v6, if v6 { 58 } else { 1 }))
        .unwrap();
    sim.with(a, || sysctl::set("net.inet.ip.ttl", "1")).unwrap();
    let id = sim.with(a, || socket::icmp_open(77)).unwrap();
    sim.with(a, || {
        socket::icmp_send(id, &echo_request(v6, 77, 1, b"ttl"), dst)
    })
    .unwrap();
    let mut got = None;
    let _ = sim.run_until(Duration::from_secs(5), |s| {
        let mut buf = [0u8; 2048];
        while let Ok(n) = s.with(a, || socket::raw_recv(raw, &mut buf)) {
            let (hl, src): (usize, IpAddr) = if v6 {
                (40, IpAddr::from(<[u8; 16]>::try_from(&buf[8..24]).unwrap()))
            } else {
                (
                    usize::from(buf[0] & 0xf) * 4,
                    IpAddr::from(<[u8; 4]>::try_from(&buf[12..16]).unwrap()),
                )
            };
            let t = buf[hl];
            if n > hl && t != 8 && t != 128 {
                got = Some((t, src));
                return true;
            }
        }
        false
    });
    sim.with(a, || sysctl::set("net.inet.ip.ttl", "64"))
        .unwrap();
    got
}

#[test]
fn ttl_expiry_at_the_router_returns_icmp_time_exceeded() {
    let mut sim = Sim::new(22);
    let (a, r, _b) = chain(&mut sim);
    forwarding(&mut sim, &r, true);
    assert_eq!(
        expire(&mut sim, &a, "10.2.0.1".parse().unwrap()),
        Some((11, "10.1.0.254".parse().unwrap())),
        "ICMPv4 time exceeded from R"
    );
    assert_eq!(
        expire(&mut sim, &a, "fd02::1".parse().unwrap()),
        Some((3, "fd01::fe".parse().unwrap())),
        "ICMPv6 time exceeded from R"
    );
    assert_eq!(sim.with(&r, stack::stats).unwrap().ip_ttl_exceeded, 2);
}

#[test]
fn no_route_at_the_router_returns_net_unreachable_and_connect_without_route_fails() {
    let mut sim = Sim::new(23);
    let (a, r, _b) = chain(&mut sim);
    forwarding(&mut sim, &r, true);
    let raw = sim.with(&a, || socket::raw_open(false, 1)).unwrap();
    let id = sim.with(&a, || socket::icmp_open(9)).unwrap();
    let dst: IpAddr = "192.0.2.1".parse().unwrap();
    sim.with(&a, || {
        socket::icmp_send(id, &echo_request(false, 9, 1, b"x"), dst)
    })
    .unwrap();
    let mut got = None;
    let _ = sim.run_until(Duration::from_secs(5), |s| {
        let mut buf = [0u8; 1500];
        while let Ok(_n) = s.with(&a, || socket::raw_recv(raw, &mut buf)) {
            let hl = usize::from(buf[0] & 0xf) * 4;
            if buf[hl] == 3 {
                got = Some((buf[hl], buf[hl + 1]));
                return true;
            }
        }
        false
    });
    assert_eq!(got, Some((3, 0)), "net unreachable from R");
    // In B, nothing routes to 192.0.2.0/24 without the default route.
    let b = sim.registry().by_name("b").unwrap();
    sim.with(&b, || stack::route_del("0.0.0.0/0".parse().unwrap()))
        .unwrap();
    assert_eq!(
        sim.with(&b, || socket::tcp_connect(
            "192.0.2.1:80".parse().unwrap(),
            None
        )),
        Err(SockError::NetUnreachable)
    );
}
