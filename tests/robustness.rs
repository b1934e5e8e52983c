//! Behaviours found in review: wrong-family sends, aborts that must reach
//! the peer, handshakes that never complete, lossy handshakes, vnets
//! destroyed under a running driver, and datagrams sent just before a
//! close.

mod common;

use std::net::SocketAddr;

use common::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber,
};
use vnet::Duration;
use vnet::driver::realtime::{AppCtl, Realtime};
use vnet::driver::sim::Sim;
use vnet::ifnet::{self, Impairment};
use vnet::stack::socket::{self, SockError, TcpState};
use vnet::stack::{self, sysctl};

#[test]
fn a_udp_send_to_the_other_family_is_refused_and_the_vnet_keeps_working() {
    let mut sim = Sim::new(81);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    let s4 = sim
        .with(&a, || {
            socket::udp_bind("10.0.0.1:0".parse().unwrap(), false)
        })
        .unwrap();
    let to6: SocketAddr = "[fd00:0::2]:53".parse().unwrap();
    assert_eq!(
        sim.with(&a, || socket::udp_send_to(s4, b"x", to6)),
        Err(SockError::InvalidInput)
    );
    // A v4-mapped address means the IPv4 host.
    let rx = sim
        .with(&b, || {
            socket::udp_bind("0.0.0.0:53".parse().unwrap(), false)
        })
        .unwrap();
    let mapped: SocketAddr = "[::ffff:10.0.0.2]:53".parse().unwrap();
    sim.with(&a, || socket::udp_send_to(s4, b"mapped", mapped))
        .unwrap();
    let mut got = Vec::new();
    sim.run_until(Duration::from_secs(5), |s| {
        let mut buf = [0u8; 64];
        match s.with(&b, || socket::udp_recv_from(rx, &mut buf)) {
            Ok((n, _)) => {
                got = buf[..n].to_vec();
                true
            }
            Err(_) => false,
        }
    })
    .unwrap();
    assert_eq!(got, b"mapped");
}

#[test]
fn datagrams_sent_just_before_a_close_still_go_out() {
    let mut sim = Sim::new(82);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    let rx = sim
        .with(&b, || {
            socket::udp_bind("0.0.0.0:9000".parse().unwrap(), false)
        })
        .unwrap();
    // The first datagram to b waits for its address (ARP); the socket is
    // closed before any poll has sent anything.
    let tx = sim
        .with(&a, || {
            socket::udp_bind("10.0.0.1:0".parse().unwrap(), false)
        })
        .unwrap();
    for i in 0..5u8 {
        sim.with(&a, || {
            socket::udp_send_to(tx, &[i; 10], "10.0.0.2:9000".parse().unwrap())
        })
        .unwrap();
    }
    sim.with(&a, || socket::close(tx)).unwrap();
    let mut got = Vec::new();
    let _ = sim.run_until(Duration::from_secs(3), |s| {
        let mut buf = [0u8; 64];
        while let Ok((n, _)) = s.with(&b, || socket::udp_recv_from(rx, &mut buf)) {
            got.push(buf[..n].to_vec());
        }
        got.len() == 5
    });
    assert_eq!(got, (0..5u8).map(|i| vec![i; 10]).collect::<Vec<_>>());
    // And the socket is gone once they are out: its port is free again.
    let port = sim
        .with(&a, || {
            socket::udp_bind("10.0.0.1:0".parse().unwrap(), false)
        })
        .unwrap();
    let _ = port;
    assert_eq!(sim.with(&a, stack::socket::count).unwrap(), 1);
}

#[test]
fn an_abort_reaches_the_peer_as_a_reset() {
    let mut sim = Sim::new(82);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    let addr: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let l = sim.with(&b, || socket::tcp_listen(addr, 4, false)).unwrap();
    let c = sim.with(&a, || socket::tcp_connect(addr, None)).unwrap();
    let mut srv = None;
    sim.run_until(Duration::from_secs(5), |s| {
        srv = s.with(&b, || socket::tcp_accept(l)).ok().map(|x| x.0);
        srv.is_some()
    })
    .unwrap();
    sim.with(&a, || socket::abort(c)).unwrap();
    let srv = srv.unwrap();
    sim.run_until(Duration::from_secs(5), |s| {
        let mut buf = [0u8; 8];
        s.with(&b, || socket::recv(srv, &mut buf)) == Err(SockError::ConnReset)
    })
    .expect("the peer, which only reads, learns of the abort");
    assert_eq!(
        sim.with(&a, || socket::send(c, b"x")),
        Err(SockError::BadSocket)
    );
    assert_eq!(sim.with(&a, socket::count).unwrap(), 0);
}

/// An IPv4 TCP SYN from `src:sport` to `dst:dport`, as a raw IP packet.
fn syn(src: Ipv4Address, sport: u16, dst: Ipv4Address, dport: u16) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port: sport,
        dst_port: dport,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(1000),
        ack_number: None,
        window_len: 1024,
        window_scale: None,
        max_seg_size: Some(1460),
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0u8; ip.buffer_len() + tcp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.emit(&mut p, &caps);
    tcp.emit(
        &mut TcpPacket::new_unchecked(p.payload_mut()),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        &caps,
    );
    buf
}

#[test]
fn a_handshake_the_peer_never_completes_frees_its_backlog_slot() {
    let mut sim = Sim::new(83);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    sim.with(&b, || sysctl::set("net.inet.tcp.keepinit", "2000"))
        .unwrap();
    let addr: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let l = sim.with(&b, || socket::tcp_listen(addr, 1, false)).unwrap();
    // A SYN from an address nobody has: its SYN-ACK can never be answered.
    let raw = sim.with(&a, || socket::raw_open(false, 6)).unwrap();
    let forged = syn(
        Ipv4Address::new(10, 0, 0, 77),
        4444,
        Ipv4Address::new(10, 0, 0, 2),
        80,
    );
    sim.with(&a, || socket::raw_send(raw, &forged)).unwrap();
    sim.run_for(Duration::from_millis(100)).unwrap();
    let c = sim.with(&a, || socket::tcp_connect(addr, None)).unwrap();
    sim.run_for(Duration::from_millis(500)).unwrap();
    assert_eq!(
        sim.with(&a, || socket::tcp_state(c)),
        Ok(TcpState::Connecting),
        "the only slot is taken"
    );
    assert!(sim.with(&b, stack::stats).unwrap().tcp_listen_drops >= 1);
    let (st, err) = wait_connect(&mut sim, &a, c);
    assert_eq!(
        (st, err),
        (TcpState::Connected, None),
        "the half-open slot timed out"
    );
    assert!(sim.with(&b, || socket::tcp_accept(l)).is_ok());
}

#[test]
fn twenty_connections_over_a_lossy_link_are_each_accepted_exactly_once() {
    let mut sim = Sim::new(84);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    for v in [&a, &b] {
        sim.with(v, || {
            ifnet::push_tx_stage(
                "eth0",
                Box::new(Impairment::new(Duration::from_millis(2), 0.3, 84)),
            )
        })
        .unwrap();
    }
    let addr: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let l = sim
        .with(&b, || socket::tcp_listen(addr, 32, false))
        .unwrap();
    let conns: Vec<_> = (0..20)
        .map(|_| sim.with(&a, || socket::tcp_connect(addr, None)).unwrap())
        .collect();
    let mut accepted = Vec::new();
    sim.run_until(Duration::from_secs(300), |s| {
        while let Ok((id, _)) = s.with(&b, || socket::tcp_accept(l)) {
            accepted.push(id);
        }
        accepted.len() == 20
            && conns
                .iter()
                .all(|c| s.with(&a, || socket::tcp_state(*c)) == Ok(TcpState::Connected))
    })
    .unwrap();
    // Each accepted socket hears from exactly one client.
    for (i, c) in conns.iter().enumerate() {
        sim.with(&a, || socket::send(*c, &[i as u8])).unwrap();
    }
    let mut seen = [0u8; 20];
    sim.run_until(Duration::from_secs(300), |s| {
        for id in &accepted {
            let mut buf = [0u8; 4];
            if let Ok(1) = s.with(&b, || socket::recv(*id, &mut buf)) {
                seen[usize::from(buf[0])] += 1;
            }
        }
        seen.iter().all(|n| *n == 1)
    })
    .unwrap();
}

#[test]
fn destroying_a_vnet_under_the_realtime_driver_retires_its_hooks() {
    let reg = vnet::vnet::Registry::new(85);
    let v = reg.create("doomed", None, 0).unwrap();
    let mut rt = Realtime::start(1);
    rt.adopt(&v);
    rt.add_app(&v, Box::new(|_| AppCtl::Continue));
    assert!(rt.apps_running());
    reg.destroy(v.id(), false).unwrap();
    rt.kick(&v);
    let t0 = std::time::Instant::now();
    while rt.apps_running() && t0.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!rt.apps_running());
    rt.stop();
}
