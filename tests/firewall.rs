//! The per-vnet firewall: rules on the in, out and fwd hooks, reject,
//! connection tracking and its timeouts, the control plane (vnetctl fw,
//! topology files), and the Linux kernel as the peer behind a TAP device in
//! a namespace of the test's own (those tests need root and /dev/net/tun;
//! they skip without, unless VNET_REQUIRE_PRIV is set).

mod common;
mod daemon;
mod kernel;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Instant as WallInstant;

use common::*;
use daemon::{TWO_HOSTS, Vnetd};
use kernel::{Netns, Proc};
use serde_json::Value;
use vnet::driver::sim::Sim;
use vnet::sockets::client::{Net, TcpListener, TcpStream, UdpSocket};
use vnet::stack::firewall::{self, Action, Hook};
use vnet::stack::socket::{self, SockError, SocketId};
use vnet::stack::sysctl;
use vnet::vnet::Vnet;
use vnet::{Duration, ifnet, stack};

// ---- in the simulation ----

/// A - R - B: 10.1.0.0/24 and fd01::/64 between A and R, 10.2.0.0/24 and
/// fd02::/64 between R and B; R forwards.
fn chain(sim: &mut Sim) -> (Arc<Vnet>, Arc<Vnet>, Arc<Vnet>) {
    let a = sim.create("a").unwrap();
    let r = sim.create("r").unwrap();
    let b = sim.create("b").unwrap();
    ifnet::epair(&a, "eth0", &r, "eth0").unwrap();
    ifnet::epair(&r, "eth1", &b, "eth0").unwrap();
    let host = |sim: &mut Sim, v: &Arc<Vnet>, v4: &str, v6: &str, gw4: &str, gw6: &str| {
        sim.with(v, || {
            ifnet::set_up("eth0", true).unwrap();
            stack::addr_add("eth0", v4.parse().unwrap()).unwrap();
            stack::addr_add("eth0", v6.parse().unwrap()).unwrap();
            stack::route_add(
                "0.0.0.0/0".parse().unwrap(),
                Some(gw4.parse().unwrap()),
                None,
            )
            .unwrap();
            stack::route_add("::/0".parse().unwrap(), Some(gw6.parse().unwrap()), None).unwrap();
        });
    };
    host(
        sim,
        &a,
        "10.1.0.1/24",
        "fd01::1/64",
        "10.1.0.254",
        "fd01::fe",
    );
    host(
        sim,
        &b,
        "10.2.0.1/24",
        "fd02::1/64",
        "10.2.0.254",
        "fd02::fe",
    );
    sim.with(&r, || {
        for (i, v4, v6) in [
            ("eth0", "10.1.0.254/24", "fd01::fe/64"),
            ("eth1", "10.2.0.254/24", "fd02::fe/64"),
        ] {
            ifnet::set_up(i, true).unwrap();
            stack::addr_add(i, v4.parse().unwrap()).unwrap();
            stack::addr_add(i, v6.parse().unwrap()).unwrap();
        }
        sysctl::set("net.inet.ip.forwarding", "1").unwrap();
        sysctl::set("net.inet6.ip6.forwarding", "1").unwrap();
    });
    (a, r, b)
}

fn fw(sim: &mut Sim, v: &Arc<Vnet>, rules: &[&str]) {
    sim.with(v, || {
        for r in rules {
            firewall::add(r).unwrap_or_else(|e| panic!("{r}: {e}"));
        }
    });
}

fn listing(sim: &mut Sim, v: &Arc<Vnet>) -> firewall::Listing {
    let now = sim.now();
    sim.with(v, || firewall::show(now)).unwrap()
}

/// The packets rule `n` of `v` has matched.
fn hits(sim: &mut Sim, v: &Arc<Vnet>, n: u16) -> u64 {
    listing(sim, v)
        .rules
        .iter()
        .find(|r| r.rule.number == Some(n))
        .map(|r| r.counter.packets)
        .unwrap_or_else(|| panic!("no rule {n}"))
}

/// Starts a connect from `v` to `to` and waits for the outcome; returns it
/// and the simulated time it took.
fn connect(sim: &mut Sim, v: &Arc<Vnet>, to: &str) -> (Option<SockError>, Duration) {
    let t0 = sim.now();
    let id = sim
        .with(v, || socket::tcp_connect(to.parse().unwrap(), None))
        .unwrap();
    let (_, err) = wait_connect(sim, v, id);
    let took = sim.now() - t0;
    sim.with(v, || socket::close(id)).unwrap();
    (err, took)
}

/// Sends one UDP datagram from `v` to `to`, then returns the (type, code)
/// of the first ICMP error `v` receives within 2 s.
fn icmp_error_for_udp(sim: &mut Sim, v: &Arc<Vnet>, to: &str) -> Option<(u8, u8)> {
    let to: SocketAddr = to.parse().unwrap();
    let v6 = to.is_ipv6();
    let raw = sim
        .with(v, || socket::raw_open(v6, if v6 { 58 } else { 1 }))
        .unwrap();
    let any: SocketAddr = if v6 { "[::]:0" } else { "0.0.0.0:0" }.parse().unwrap();
    let u = sim.with(v, || socket::udp_bind(any, false)).unwrap();
    sim.with(v, || socket::udp_send_to(u, b"knock", to))
        .unwrap();
    let mut got = None;
    let _ = sim.run_until(Duration::from_secs(2), |s| {
        let mut buf = [0u8; 1500];
        while let Ok(n) = s.with(v, || socket::raw_recv(raw, &mut buf)) {
            let hl = if v6 {
                40
            } else {
                usize::from(buf[0] & 0xf) * 4
            };
            let error = if v6 { buf[hl] < 128 } else { buf[hl] == 3 };
            if n > hl + 1 && error {
                got = Some((buf[hl], buf[hl + 1]));
                return true;
            }
        }
        false
    });
    sim.with(v, || {
        socket::close(raw).unwrap();
        socket::close(u).unwrap();
    });
    got
}

#[test]
fn a_vnet_without_rules_pays_nothing_and_tracks_nothing() {
    let mut sim = Sim::new(30);
    let (a, b) = pair(&mut sim, "a", "b", 1);
    let t = tcp_transfer(
        &mut sim,
        &b,
        &a,
        "10.0.1.2:80".parse().unwrap(),
        1 << 16,
        Duration::from_secs(10),
    );
    assert_eq!(t.recv_sha, t.sent_sha);
    let l = listing(&mut sim, &b);
    assert_eq!(l.states, 0);
    assert!(l.policies.iter().all(|p| p.counter.packets == 0));
    // A rule makes the firewall follow every flow, whatever decides it.
    fw(&mut sim, &b, &["100 drop in proto udp"]);
    let t = tcp_transfer(
        &mut sim,
        &b,
        &a,
        "10.0.1.2:81".parse().unwrap(),
        1 << 16,
        Duration::from_secs(10),
    );
    assert_eq!(t.recv_sha, t.sent_sha);
    let l = listing(&mut sim, &b);
    assert_eq!(l.states, 1, "the connection is tracked");
    assert!(l.policies[0].counter.packets > 10 && l.policies[1].counter.packets > 10);
    sim.with(&b, firewall::flush).unwrap();
    assert_eq!(listing(&mut sim, &b).states, 0, "an idle firewall forgets");
}

#[test]
fn reject_answers_tcp_with_a_reset_and_udp_with_port_or_admin_unreachable() {
    let mut sim = Sim::new(31);
    let (a, b) = pair(&mut sim, "a", "b", 1);
    // Something listens: a refusal is the firewall's, not a closed port's.
    for addr in ["10.0.1.2:81", "[fd00:1::2]:81"] {
        sim.with(&b, || socket::tcp_listen(addr.parse().unwrap(), 8, false))
            .unwrap();
    }
    for p in [
        "10.0.1.2:9",
        "10.0.1.2:10",
        "[fd00:1::2]:9",
        "[fd00:1::2]:10",
    ] {
        sim.with(&b, || socket::udp_bind(p.parse().unwrap(), false))
            .unwrap();
    }
    fw(
        &mut sim,
        &b,
        &[
            "100 reject in proto tcp to any port 81",
            "110 reject in proto udp to any port 9",
            "120 reject admin in proto udp to any port 10",
        ],
    );
    for to in ["10.0.1.2:81", "[fd00:1::2]:81"] {
        let (err, took) = connect(&mut sim, &a, to);
        assert_eq!(err, Some(SockError::ConnRefused), "{to}");
        assert!(took < Duration::from_millis(100), "{to}: took {took}");
    }
    assert_eq!(
        icmp_error_for_udp(&mut sim, &a, "10.0.1.2:9"),
        Some((3, 3)),
        "port unreachable"
    );
    assert_eq!(
        icmp_error_for_udp(&mut sim, &a, "10.0.1.2:10"),
        Some((3, 13)),
        "communication administratively prohibited"
    );
    assert_eq!(
        icmp_error_for_udp(&mut sim, &a, "[fd00:1::2]:9"),
        Some((1, 4))
    );
    assert_eq!(
        icmp_error_for_udp(&mut sim, &a, "[fd00:1::2]:10"),
        Some((1, 1))
    );
    assert_eq!(hits(&mut sim, &b, 100), 2);
    let st = sim.with(&b, stack::stats).unwrap();
    assert_eq!(st.fw_rejects_out, 6, "{st:?}");
    // Nothing answers a broadcast.
    let u = sim
        .with(&a, || socket::udp_bind("0.0.0.0:0".parse().unwrap(), false))
        .unwrap();
    sim.with(&a, || {
        socket::udp_send_to(u, b"all", "10.0.1.255:9".parse().unwrap())
    })
    .unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(sim.with(&b, stack::stats).unwrap().fw_rejects_out, 6);
}

#[test]
fn an_out_rule_refuses_a_local_connect_without_sending_anything() {
    let mut sim = Sim::new(32);
    let (a, b) = pair(&mut sim, "a", "b", 1);
    sim.with(&b, || {
        socket::tcp_listen("10.0.1.2:81".parse().unwrap(), 8, false)
    })
    .unwrap();
    fw(
        &mut sim,
        &a,
        &["100 reject out proto tcp to 10.0.1.2 port 81"],
    );
    let frames = |sim: &mut Sim| {
        sim.with(&b, ifnet::list)
            .unwrap()
            .into_iter()
            .find(|l| l.name == "eth0")
            .unwrap()
            .stats
            .ipackets
    };
    let before = frames(&mut sim);
    let (err, took) = connect(&mut sim, &a, "10.0.1.2:81");
    assert_eq!(err, Some(SockError::ConnRefused));
    assert!(took < Duration::from_millis(100), "took {took}");
    assert_eq!(frames(&mut sim), before, "the SYN never left");
    assert_eq!(hits(&mut sim, &a, 100), 1);
}

#[test]
fn a_forward_rule_drops_one_flow_and_passes_another() {
    let mut sim = Sim::new(33);
    let (a, r, b) = chain(&mut sim);
    fw(
        &mut sim,
        &r,
        &[
            "100 drop fwd recv eth0 proto tcp to 10.2.0.1 port 81",
            "110 drop fwd xmit eth1 proto tcp to fd02::1 port 81",
        ],
    );
    for addr in ["10.2.0.1:80", "[fd02::1]:80"] {
        let t = tcp_transfer(
            &mut sim,
            &b,
            &a,
            addr.parse().unwrap(),
            1 << 18,
            Duration::from_secs(30),
        );
        assert_eq!(t.recv_sha, t.sent_sha, "{addr}");
    }
    sim.with(&a, || sysctl::set("net.inet.tcp.keepinit", "3000"))
        .unwrap();
    for (addr, rule) in [("10.2.0.1:81", 100), ("[fd02::1]:81", 110)] {
        sim.with(&b, || socket::tcp_listen(addr.parse().unwrap(), 8, false))
            .unwrap();
        let (err, _) = connect(&mut sim, &a, addr);
        assert_eq!(err, Some(SockError::TimedOut), "{addr}");
        // The SYN and its retransmissions, all dropped at R.
        assert!(hits(&mut sim, &r, rule) >= 2, "{addr}");
    }
    assert_eq!(
        ping(&mut sim, &a, "10.2.0.1".parse().unwrap()),
        Some("10.2.0.1".parse().unwrap())
    );
    let l = listing(&mut sim, &r);
    assert!(
        l.policies[2].counter.packets > 100,
        "the rest passed by policy"
    );
    assert_eq!(l.policies[0].counter.packets, 0, "nothing was for R itself");
}

#[test]
fn tracked_flows_expire_on_the_simulated_clock() {
    let mut sim = Sim::new(34);
    let (a, b) = pair(&mut sim, "a", "b", 1);
    // B lets in only what answers its own traffic.
    fw(&mut sim, &b, &["100 allow in state established,related"]);
    sim.with(&b, || {
        firewall::set_policy(Hook::In, Action::Drop).unwrap();
        sysctl::set("net.inet.ip.fw.dyn_udp_lifetime", "5").unwrap();
        sysctl::set("net.inet.ip.fw.dyn_ack_lifetime", "20").unwrap();
    });
    let ua = sim
        .with(&a, || {
            socket::udp_bind("10.0.1.1:7000".parse().unwrap(), false)
        })
        .unwrap();
    let ub = sim
        .with(&b, || {
            socket::udp_bind("10.0.1.2:7001".parse().unwrap(), false)
        })
        .unwrap();
    let a_to_b = |sim: &mut Sim| -> bool {
        sim.with(&a, || {
            socket::udp_send_to(ua, b"from a", "10.0.1.2:7001".parse().unwrap())
        })
        .unwrap();
        sim.run_for(Duration::from_millis(200)).unwrap();
        let mut buf = [0u8; 64];
        sim.with(&b, || socket::udp_recv_from(ub, &mut buf)).is_ok()
    };
    assert!(!a_to_b(&mut sim), "A may not start");
    sim.with(&b, || {
        socket::udp_send_to(ub, b"from b", "10.0.1.1:7000".parse().unwrap())
    })
    .unwrap();
    sim.run_for(Duration::from_millis(200)).unwrap();
    assert!(a_to_b(&mut sim), "A answers B");
    sim.run_for(Duration::from_secs(4)).unwrap();
    assert!(a_to_b(&mut sim), "each packet renews the flow");
    assert_eq!(listing(&mut sim, &b).states, 1);
    sim.run_for(Duration::from_secs(6)).unwrap();
    assert_eq!(listing(&mut sim, &b).states, 0, "5 s of silence: forgotten");
    assert!(!a_to_b(&mut sim), "A may not start again");

    // A TCP connection B opened outlives a silence shorter than
    // dyn_ack_lifetime, not a longer one.
    let lst = sim
        .with(&a, || {
            socket::tcp_listen("10.0.1.1:80".parse().unwrap(), 8, false)
        })
        .unwrap();
    let c = sim
        .with(&b, || {
            socket::tcp_connect("10.0.1.1:80".parse().unwrap(), None)
        })
        .unwrap();
    let (st, err) = wait_connect(&mut sim, &b, c);
    assert_eq!((st, err), (socket::TcpState::Connected, None));
    let (s, _) = sim.with(&a, || socket::tcp_accept(lst)).unwrap();
    let a_says = |sim: &mut Sim, s: SocketId, msg: &[u8]| -> bool {
        sim.with(&a, || socket::send(s, msg)).unwrap();
        sim.run_for(Duration::from_millis(500)).unwrap();
        let mut buf = [0u8; 64];
        sim.with(&b, || socket::recv(c, &mut buf)) == Ok(msg.len())
    };
    sim.run_for(Duration::from_secs(15)).unwrap();
    assert!(a_says(&mut sim, s, b"still here"));
    sim.run_for(Duration::from_secs(25)).unwrap();
    assert!(!a_says(&mut sim, s, b"forgotten"), "dropped at B's input");
    let dropped = sim.with(&b, stack::stats).unwrap().fw_dropped;
    assert!(dropped >= 2, "{dropped}");
}

#[test]
fn an_icmp_error_about_a_tracked_flow_is_related_and_gets_in() {
    let mut sim = Sim::new(36);
    let (a, b) = pair(&mut sim, "a", "b", 1);
    fw(
        &mut sim,
        &b,
        &[
            "100 allow in state related",
            "110 allow in state established",
        ],
    );
    sim.with(&b, || firewall::set_policy(Hook::In, Action::Drop))
        .unwrap();
    // Nothing listens on A's port 9: A's stack answers port unreachable,
    // which quotes B's datagram.
    assert_eq!(icmp_error_for_udp(&mut sim, &b, "10.0.1.1:9"), Some((3, 3)));
    assert_eq!(hits(&mut sim, &b, 100), 1);
    // An error about a flow B never opened is dropped.
    let raw = sim.with(&b, || socket::raw_open(false, 1)).unwrap();
    let raw_a = sim.with(&a, || socket::raw_open(false, 1)).unwrap();
    // Port unreachable, quoting 10.0.1.2:4000 -> 10.0.1.1:9, which B never
    // sent.
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&[
        0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 1, 2, 10, 0, 1, 1, 0x0f, 0xa0, 0, 9, 0, 8,
        0, 0,
    ]);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let drops = sim.with(&b, stack::stats).unwrap().fw_dropped;
    sim.with(&a, || {
        socket::raw_send(raw_a, &ipv4(&icmp, [10, 0, 1, 1], [10, 0, 1, 2]))
    })
    .unwrap();
    sim.run_for(Duration::from_millis(200)).unwrap();
    let mut buf = [0u8; 256];
    assert!(sim.with(&b, || socket::raw_recv(raw, &mut buf)).is_err());
    assert_eq!(sim.with(&b, stack::stats).unwrap().fw_dropped, drops + 1);
}

/// The Internet checksum of `b`.
fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet carrying ICMP `payload`.
fn ipv4(payload: &[u8], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    let len = (20 + payload.len()) as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    let sum = checksum(&p);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

#[test]
fn a_full_state_table_drops_new_flows_and_counts_them() {
    let mut sim = Sim::new(35);
    let (a, b) = pair(&mut sim, "a", "b", 1);
    fw(&mut sim, &a, &["100 allow out"]);
    sim.with(&a, || sysctl::set("net.inet.ip.fw.dyn_max", "2"))
        .unwrap();
    let ub = sim
        .with(&b, || {
            socket::udp_bind("10.0.1.2:53".parse().unwrap(), false)
        })
        .unwrap();
    for port in [5001, 5002, 5003] {
        let u = sim
            .with(&a, || {
                socket::udp_bind(format!("10.0.1.1:{port}").parse().unwrap(), false)
            })
            .unwrap();
        sim.with(&a, || {
            socket::udp_send_to(u, b"q", "10.0.1.2:53".parse().unwrap())
        })
        .unwrap();
    }
    sim.run_for(Duration::from_millis(200)).unwrap();
    let mut buf = [0u8; 8];
    let mut got = Vec::new();
    while let Ok((_, from)) = sim.with(&b, || socket::udp_recv_from(ub, &mut buf)) {
        got.push(from.port());
    }
    assert_eq!(got, [5001, 5002]);
    let st = sim.with(&a, stack::stats).unwrap();
    assert_eq!(st.fw_states_full, 1);
    assert_eq!(listing(&mut sim, &a).states, 2);
}

// ---- through vnetd ----

/// The JSON a vnetctl command prints with `-j`.
fn json(d: &Vnetd, args: &[&str]) -> Value {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    serde_json::from_slice(&d.ctl_ok(&all).stdout).unwrap()
}

fn fw_rules(d: &Vnetd, vnet: &str) -> Vec<String> {
    json(d, &["-n", vnet, "fw", "show"])["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap().to_string())
        .collect()
}

fn refused(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn vnetctl_fw_adds_shows_and_removes_rules_and_refuses_bad_ones() {
    let d = Vnetd::start("fw-ctl", TWO_HOSTS);
    let added = d.ctl_ok(&[
        "-n",
        "red",
        "fw",
        "add",
        "allow",
        "in",
        "proto",
        "tcp",
        "to",
        "10.0.0.0/24",
        "port",
        "80",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&added.stdout).trim(),
        "100 allow in proto tcp to 10.0.0.0/24 port 80"
    );
    for rule in [
        "50 reject admin fwd recv eth0 proto udp from not 10.9.0.0/16 port 1000-2000",
        "drop out xmit eth0 proto icmp6 to fd00::/64 icmp-type 128 code 0",
        "allow in state established,related",
    ] {
        d.ctl_ok(&["-n", "red", "fw", "add", rule]);
    }
    let rules = fw_rules(&d, "red");
    assert_eq!(
        rules,
        [
            "50 reject admin fwd recv eth0 proto udp from not 10.9.0.0/16 port 1000-2000",
            "100 allow in proto tcp to 10.0.0.0/24 port 80",
            "200 drop out xmit eth0 proto icmp6 to fd00::/64 icmp-type 128 code 0",
            "300 allow in state established,related",
        ]
    );
    // What show prints, add takes back: the same rules in another vnet.
    for r in &rules {
        d.ctl_ok(&["-n", "blue", "fw", "add", r]);
    }
    assert_eq!(fw_rules(&d, "blue"), rules);
    let text = String::from_utf8(d.ctl_ok(&["-n", "red", "fw", "show"]).stdout).unwrap();
    assert!(text.contains("  100 allow in proto tcp"), "{text}");
    assert!(text.contains("policy in allow"), "{text}");
    // Bad rules are refused with the reason, and change nothing.
    for (rule, why) in [
        ("allow to any port 80", "ports need proto tcp"),
        ("100 drop", "fw rule 100 already exists"),
        ("allow from 10.0.0.0/33", "not an address or prefix"),
        ("permit all", "not an action"),
    ] {
        let o = d
            .ctl()
            .args(["-n", "red", "fw", "add", rule])
            .output()
            .unwrap();
        let e = refused(&o);
        assert!(e.contains(why), "{rule}: {e}");
    }
    assert!(
        refused(
            &d.ctl()
                .args(["-n", "red", "fw", "del", "99"])
                .output()
                .unwrap()
        )
        .contains("no fw rule 99")
    );
    assert!(
        refused(
            &d.ctl()
                .args(["-n", "red", "fw", "policy", "sideways", "drop"])
                .output()
                .unwrap()
        )
        .contains("not a hook")
    );
    assert!(
        refused(
            &d.ctl()
                .args(["-n", "nowhere", "fw", "add", "allow"])
                .output()
                .unwrap()
        )
        .contains("no such vnet")
    );
    assert_eq!(fw_rules(&d, "red"), rules);
    d.ctl_ok(&["-n", "red", "fw", "del", "200"]);
    d.ctl_ok(&["-n", "red", "fw", "policy", "fwd", "reject", "admin"]);
    let shown = json(&d, &["-n", "red", "fw", "show"]);
    assert_eq!(shown["rules"].as_array().unwrap().len(), 3);
    assert_eq!(shown["policy"][2]["action"], "reject admin");
    d.ctl_ok(&["-n", "red", "fw", "flush"]);
    let shown = json(&d, &["-n", "red", "fw", "show"]);
    assert!(shown["rules"].as_array().unwrap().is_empty());
    assert_eq!(
        shown["policy"][2]["action"], "reject admin",
        "policies stay"
    );
    let stats = json(&d, &["-n", "red", "stats"]);
    for k in [
        "fw_dropped",
        "fw_rejects_out",
        "fw_states",
        "fw_states_full",
    ] {
        assert!(stats[k].is_u64(), "stats lacks {k}: {stats}");
    }
}

#[test]
fn only_a_vnets_owner_may_change_its_firewall() {
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !kernel::privileged() {
        return;
    }
    if !setpriv {
        assert!(
            std::env::var_os("VNET_REQUIRE_PRIV").is_none(),
            "VNET_REQUIRE_PRIV is set but setpriv is missing"
        );
        eprintln!("skipped: needs setpriv to act as another user");
        return;
    }
    let d = Vnetd::start("fw-users", TWO_HOSTS);
    let as_nobody = |args: &[&str]| -> Output {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_vnetctl"))
            .arg("--socket")
            .arg(&d.sock)
            .args(args)
            .output()
            .unwrap()
    };
    d.ctl_ok(&["-n", "red", "fw", "add", "100", "allow"]);
    for args in [
        &["-n", "red", "fw", "add", "200", "drop"][..],
        &["-n", "red", "fw", "del", "100"],
        &["-n", "red", "fw", "flush"],
        &["-n", "red", "fw", "policy", "in", "drop"],
    ] {
        let e = refused(&as_nobody(args));
        assert!(e.contains("belongs to root"), "{args:?}: {e}");
    }
    let e = refused(&as_nobody(&["-n", "red", "fw", "show"]));
    assert!(e.contains("may see only its own vnets"), "{e}");
    assert_eq!(fw_rules(&d, "red"), ["100 allow"]);
    // A user's own vnet is theirs to filter.
    assert!(as_nobody(&["vnet", "add", "mine"]).status.success());
    let o = as_nobody(&["-n", "mine", "fw", "add", "drop", "in"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

const FW_TOPOLOGY: &str = r#"
[vnet.blue.fw]
policy = { in = "drop" }
rules = [
    "100 allow in state established,related",
    "allow in proto tcp to 10.0.0.2 port 22",
    "deny in proto udp from any port 53",
]
"#;

#[test]
fn firewall_rules_in_a_topology_file_round_trip_through_dump_and_apply() {
    let d = Vnetd::start("fw-topo", &format!("{TWO_HOSTS}{FW_TOPOLOGY}"));
    assert_eq!(
        fw_rules(&d, "blue"),
        [
            "100 allow in state established,related",
            "200 allow in proto tcp to 10.0.0.2 port 22",
            "300 drop in proto udp from any port 53",
        ]
    );
    let dump = String::from_utf8(d.ctl_ok(&["dump"]).stdout).unwrap();
    assert!(
        dump.contains("300 drop in proto udp from any port 53"),
        "{dump}"
    );
    let apply = |text: &str| -> String {
        let f = d.dir.join("apply.toml");
        std::fs::write(&f, text).unwrap();
        String::from_utf8(d.ctl_ok(&["apply", f.to_str().unwrap()]).stdout).unwrap()
    };
    assert_eq!(apply(&dump).trim(), "no changes");
    // A changed file changes only what differs, and keeps the counters of
    // the rules it keeps.
    let changed = dump
        .replace(
            "300 drop in proto udp from any port 53",
            "300 reject in proto udp",
        )
        .replace("in = \"drop\"", "in = \"allow\"\nfwd = \"drop\"");
    let lines = apply(&changed);
    assert_eq!(
        lines.lines().collect::<Vec<_>>(),
        [
            "-n blue fw del 300",
            "-n blue fw add 300 reject in proto udp",
            "-n blue fw policy in allow",
            "-n blue fw policy fwd drop",
        ],
        "{lines}"
    );
    assert_eq!(apply(&changed).trim(), "no changes");
    // A bad rule in a file is refused before any change, naming the vnet.
    let f = d.dir.join("bad.toml");
    std::fs::write(
        &f,
        format!("{TWO_HOSTS}\n[vnet.blue.fw]\nrules = [\"100 allow\", \"100 drop\"]\n"),
    )
    .unwrap();
    let o = d
        .ctl()
        .args(["apply", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("vnet \"blue\"") && e.contains("given twice"),
        "{e}"
    );
    assert_eq!(fw_rules(&d, "blue").len(), 3);
}

const ROUTED: &str = r#"
[vnet.a]
sysctl = { "net.inet.tcp.keepinit" = 2000 }
route = [{ dst = "default", via = "10.1.0.254" }]
[vnet.a.link.eth0]
type = "epair"
peer = { vnet = "r", name = "eth0" }
up = true
addr = ["10.1.0.1/24"]

[vnet.r]
sysctl = { "net.inet.ip.forwarding" = 1 }
[vnet.r.link.eth0]
up = true
addr = ["10.1.0.254/24"]
[vnet.r.link.eth1]
type = "epair"
peer = { vnet = "b", name = "eth0" }
up = true
addr = ["10.2.0.254/24"]
[vnet.r.fw]
rules = ["100 drop fwd proto tcp to 10.2.0.1 port 81", "200 reject fwd proto tcp to any port 82"]

[vnet.b]
route = [{ dst = "default", via = "10.2.0.254" }]
[vnet.b.link.eth0]
up = true
addr = ["10.2.0.1/24"]
"#;

#[test]
fn a_forward_rule_on_a_router_vnet_drops_one_flow_rejects_another_and_passes_a_third() {
    let d = Vnetd::start("fw-fwd", ROUTED);
    let (na, nb) = (
        Net::open_at(&d.sockets(), "a").unwrap(),
        Net::open_at(&d.sockets(), "b").unwrap(),
    );
    let listeners: Vec<TcpListener> = [80, 81, 82]
        .iter()
        .map(|p| TcpListener::bind(&nb, format!("10.2.0.1:{p}").parse().unwrap()).unwrap())
        .collect();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listeners[0].accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let mut c = TcpStream::connect(&na, "10.2.0.1:80".parse().unwrap()).unwrap();
    c.write_all(b"through the router").unwrap();
    drop(c);
    assert_eq!(server.join().unwrap(), b"through the router");
    let t0 = WallInstant::now();
    let e = TcpStream::connect(&na, "10.2.0.1:81".parse().unwrap())
        .err()
        .expect("port 81 is dropped");
    assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT), "{e}");
    assert!(t0.elapsed() >= std::time::Duration::from_millis(1500));
    let t0 = WallInstant::now();
    let e = TcpStream::connect(&na, "10.2.0.1:82".parse().unwrap())
        .err()
        .expect("port 82 is rejected");
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}");
    assert!(t0.elapsed() < std::time::Duration::from_millis(500));
    let shown = json(&d, &["-n", "r", "fw", "show"]);
    assert!(
        shown["rules"][0]["packets"].as_u64().unwrap() >= 1,
        "{shown}"
    );
    assert_eq!(shown["rules"][1]["packets"], 1, "{shown}");
    assert!(
        shown["policy"][2]["packets"].as_u64().unwrap() >= 6,
        "{shown}"
    );
}

// ---- with the Linux kernel as the peer ----

/// vnetd with a vnet `v` (10.77.0.2/24, fd77::2/64) whose `eth0` is a TAP
/// moved into a namespace of the test's own (10.77.0.1/24, fd77::1/64).
struct KernelPeer {
    d: Vnetd,
    ns: Netns,
    net: Net,
}

fn kernel_peer(tag: &str) -> Option<KernelPeer> {
    if !kernel::privileged() {
        return None;
    }
    let host = format!("vf{}{tag}", std::process::id() % 100_000);
    let topo = format!(
        "[vnet.v.link.eth0]\ntype = \"tap\"\nhost = \"{host}\"\nup = true\naddr = [\"10.77.0.2/24\", \"fd77::2/64\"]\n"
    );
    let ns = Netns::new(&format!("fw{tag}"));
    let d = Vnetd::start(&format!("fw-k{tag}"), &topo);
    ns.adopt(&host, &["10.77.0.1/24", "fd77::1/64"]);
    let net = Net::open_at(&d.sockets(), "v").unwrap();
    Some(KernelPeer { d, ns, net })
}

impl KernelPeer {
    fn fw(&self, args: &[&str]) {
        let mut all = vec!["-n", "v", "fw"];
        all.extend_from_slice(args);
        self.d.ctl_ok(&all);
    }

    /// Runs a python script in the namespace; returns what it prints.
    fn python(&self, script: &str, args: &[&str]) -> String {
        let mut argv = vec!["python3", "-c", script];
        argv.extend_from_slice(args);
        let o = self.ns.exec(&argv).output().unwrap();
        assert!(
            o.status.success(),
            "python: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn rule_hits(&self, n: u64) -> (u64, u64) {
        let shown = json(&self.d, &["-n", "v", "fw", "show"]);
        let r = shown["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["number"] == n)
            .unwrap_or_else(|| panic!("no rule {n}: {shown}"))
            .clone();
        (r["packets"].as_u64().unwrap(), r["bytes"].as_u64().unwrap())
    }
}

/// Connects from the kernel: prints `connected`, the errno's name, or
/// `timeout`, and the seconds it took.
const TCP_PROBE: &str = r#"
import errno, socket, sys, time
dst, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ':' in dst else socket.AF_INET)
s.settimeout(float(sys.argv[3]))
t = time.time()
try:
    s.connect((dst, port))
    r = 'connected'
except socket.timeout:
    r = 'timeout'
except OSError as e:
    r = errno.errorcode.get(e.errno, str(e.errno))
print(r, round(time.time() - t, 3))
"#;

/// Sends one datagram on a connected UDP socket and waits for an answer:
/// prints `reply`, the errno's name, or `timeout`.
const UDP_PROBE: &str = r#"
import errno, socket, sys
dst, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if ':' in dst else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((dst, port))
s.send(b'knock')
try:
    s.recv(100)
    print('reply')
except socket.timeout:
    print('timeout')
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

fn probe_tcp(k: &KernelPeer, dst: &str, port: u16, timeout: &str) -> (String, f64) {
    let out = k.python(TCP_PROBE, &[dst, &port.to_string(), timeout]);
    let (what, secs) = out.split_once(' ').unwrap();
    (what.to_string(), secs.parse().unwrap())
}

/// Accepts connections on `l` forever (until vnetd goes), closing each.
fn accept_all(l: TcpListener) {
    std::thread::spawn(move || while l.accept().is_ok() {});
}

#[test]
fn a_reject_rule_refuses_the_kernels_tcp_connect_at_once() {
    let Some(k) = kernel_peer("a") else { return };
    for a in ["10.77.0.2:7001", "[fd77::2]:7001"] {
        accept_all(TcpListener::bind(&k.net, a.parse().unwrap()).unwrap());
    }
    assert_eq!(probe_tcp(&k, "10.77.0.2", 7001, "5").0, "connected");
    k.fw(&[
        "add", "100", "reject", "in", "proto", "tcp", "to", "any", "port", "7001",
    ]);
    for dst in ["10.77.0.2", "fd77::2"] {
        let (what, secs) = probe_tcp(&k, dst, 7001, "5");
        assert_eq!(what, "ECONNREFUSED", "{dst}");
        assert!(secs < 1.0, "{dst}: refused after {secs} s");
    }
    assert_eq!(k.rule_hits(100).0, 2);
    let stats = json(&k.d, &["-n", "v", "stats"]);
    assert_eq!(stats["fw_rejects_out"], 2, "{stats}");
}

#[test]
fn a_reject_rule_answers_the_kernels_udp_and_ping_with_icmp_unreachable() {
    let Some(k) = kernel_peer("b") else { return };
    for a in [
        "10.77.0.2:7002",
        "[fd77::2]:7002",
        "10.77.0.2:7003",
        "[fd77::2]:7003",
    ] {
        let u = UdpSocket::bind(&k.net, a.parse().unwrap()).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = u.recv_from(&mut buf) {
                let _ = u.send_to(&buf[..n], from);
            }
        });
    }
    for dst in ["10.77.0.2", "fd77::2"] {
        assert_eq!(k.python(UDP_PROBE, &[dst, "7002"]), "reply", "{dst}");
    }
    k.fw(&[
        "add", "100", "reject", "in", "proto", "udp", "to", "any", "port", "7002",
    ]);
    k.fw(&[
        "add", "110", "reject", "admin", "in", "proto", "udp", "to", "any", "port", "7003",
    ]);
    k.fw(&[
        "add",
        "120",
        "reject",
        "in",
        "proto",
        "icmp",
        "icmp-type",
        "8",
    ]);
    // Linux reports "administratively prohibited" as EHOSTUNREACH for
    // ICMP and as EACCES for ICMPv6.
    for (dst, admin) in [("10.77.0.2", "EHOSTUNREACH"), ("fd77::2", "EACCES")] {
        assert_eq!(
            k.python(UDP_PROBE, &[dst, "7002"]),
            "ECONNREFUSED",
            "{dst}: port unreachable"
        );
        assert_eq!(
            k.python(UDP_PROBE, &[dst, "7003"]),
            admin,
            "{dst}: administratively prohibited"
        );
    }
    let o =
        k.ns.exec(&["ping", "-c", "1", "-W", "2", "10.77.0.2"])
            .output()
            .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("Destination Port Unreachable"), "{text}");
    assert_eq!(k.rule_hits(100).0, 2);
    assert_eq!(k.rule_hits(110).0, 2);
    assert_eq!(k.rule_hits(120).0, 1);
}

#[test]
fn with_input_dropped_but_replies_allowed_the_vnet_connects_out_and_nothing_connects_in() {
    let Some(k) = kernel_peer("c") else { return };
    /// A scratch directory removed however the test ends.
    struct Scratch(std::path::PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let scratch =
        Scratch(std::env::temp_dir().join(format!("vnet-fw-http-{}", std::process::id())));
    let dir = &scratch.0;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("hello"), b"hello from the kernel\n").unwrap();
    let _server = Proc(
        k.ns.exec(&[
            "python3",
            "-m",
            "http.server",
            "8000",
            "--bind",
            "10.77.0.1",
            "--directory",
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    accept_all(TcpListener::bind(&k.net, "0.0.0.0:7004".parse().unwrap()).unwrap());
    let t0 = WallInstant::now();
    while probe_tcp(&k, "10.77.0.1", 8000, "1").0 != "connected" {
        assert!(t0.elapsed().as_secs() < 20, "http.server did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(probe_tcp(&k, "10.77.0.2", 7004, "5").0, "connected");
    k.fw(&["add", "100", "allow", "in", "state", "established,related"]);
    k.fw(&["add", "200", "allow", "out"]);
    k.fw(&["policy", "in", "drop"]);
    let curl = |url: &str| -> Output {
        k.d.exec("v", &["curl", "-sS", "--max-time", "10", "-o", "-", url])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = curl("http://10.77.0.1:8000/hello");
    assert!(
        o.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.stdout, b"hello from the kernel\n");
    let (what, secs) = probe_tcp(&k, "10.77.0.2", 7004, "2");
    assert_eq!(what, "timeout", "the SYN was dropped, not refused");
    assert!(secs >= 1.9, "{secs}");
    let shown = json(&k.d, &["-n", "v", "fw", "show"]);
    assert!(
        shown["rules"][0]["packets"].as_u64().unwrap() >= 3,
        "{shown}"
    );
    assert!(
        shown["rules"][1]["packets"].as_u64().unwrap() >= 3,
        "{shown}"
    );
    assert!(
        shown["policy"][0]["packets"].as_u64().unwrap() >= 1,
        "{shown}"
    );
}

#[test]
fn rule_counters_count_exactly_the_pings_sent() {
    let Some(k) = kernel_peer("d") else { return };
    for r in [
        "100 allow in proto icmp icmp-type 8",
        "110 allow out proto icmp icmp-type 0",
        "120 allow in proto icmp6 icmp-type 128",
        "130 allow out proto icmp6 icmp-type 129",
    ] {
        k.fw(&["add", r]);
    }
    for (flag, dst, n) in [("-4", "10.77.0.2", "5"), ("-6", "fd77::2", "3")] {
        let o =
            k.ns.exec(&["ping", flag, "-c", n, "-i", "0.2", "-W", "2", dst])
                .output()
                .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
    // 56 bytes of data, 8 of ICMP header, 20 of IPv4 or 40 of IPv6 header.
    assert_eq!(k.rule_hits(100), (5, 5 * 84));
    assert_eq!(k.rule_hits(110), (5, 5 * 84));
    assert_eq!(k.rule_hits(120), (3, 3 * 104));
    assert_eq!(k.rule_hits(130), (3, 3 * 104));
}
