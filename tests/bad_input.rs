//! Bad input gets a typed error (or a counted drop for frames) and changes
//! nothing else.

mod common;

use std::net::IpAddr;

use common::*;
use vnet::driver::sim::Sim;
use vnet::ifnet::{self, IfError};
use vnet::stack::sysctl::{self, SysctlError};
use vnet::stack::{self, ConfigError};
use vnet::vnet::RegistryError;

#[test]
fn invalid_prefixes_do_not_parse_and_unusable_addresses_are_refused() {
    assert!("10.0.0.1/33".parse::<smoltcp::wire::IpCidr>().is_err());
    assert!("fd00::1/129".parse::<smoltcp::wire::IpCidr>().is_err());
    let mut sim = Sim::new(61);
    let (a, _b) = pair(&mut sim, "a", "b", 0);
    let before = sim.with(&a, stack::addrs).unwrap();
    for bad in [
        "0.0.0.0/8",
        "224.0.0.1/4",
        "255.255.255.255/32",
        "ff02::1/16",
        "::/0",
    ] {
        let r = sim.with(&a, || stack::addr_add("eth0", bad.parse().unwrap()));
        assert!(matches!(r, Err(ConfigError::BadAddress(_))), "{bad}: {r:?}");
    }
    assert_eq!(
        sim.with(&a, || stack::addr_add(
            "eth0",
            "10.0.0.1/24".parse().unwrap()
        )),
        Err(ConfigError::AddrExists("10.0.0.1".parse().unwrap()))
    );
    assert_eq!(sim.with(&a, stack::addrs).unwrap(), before);
}

#[test]
fn duplicate_names_are_refused() {
    let mut sim = Sim::new(62);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    assert_eq!(
        sim.create("a").unwrap_err(),
        RegistryError::Exists("a".into())
    );
    assert_eq!(
        sim.create("").unwrap_err(),
        RegistryError::BadName("".into())
    );
    assert!(matches!(sim.create("-x"), Err(RegistryError::BadName(_))));
    assert_eq!(
        ifnet::epair(&a, "eth0", &b, "eth9"),
        Err(IfError::Exists("eth0".into()))
    );
    assert_eq!(
        ifnet::epair(&a, "eth9", &b, "eth0"),
        Err(IfError::Exists("eth0".into()))
    );
    assert_eq!(
        ifnet::epair(&a, "x", &a, "x"),
        Err(IfError::Exists("x".into()))
    );
    assert!(matches!(
        ifnet::epair(&a, "a-very-long-interface-name", &b, "y"),
        Err(IfError::BadName(_))
    ));
    // Nothing half-made: a still has just lo0 and eth0.
    let names: Vec<String> = sim
        .with(&a, ifnet::list)
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["lo0", "eth0"]);
}

#[test]
fn addresses_on_down_or_foreign_interfaces_are_refused() {
    let mut sim = Sim::new(63);
    let a = sim.create("a").unwrap();
    let b = sim.create("b").unwrap();
    ifnet::epair(&a, "eth0", &b, "eth1").unwrap();
    assert_eq!(
        sim.with(&a, || stack::addr_add(
            "eth0",
            "10.0.0.1/24".parse().unwrap()
        )),
        Err(ConfigError::InterfaceDown("eth0".into()))
    );
    // eth1 lives in b: from a it is somebody else's.
    assert_eq!(
        sim.with(&a, || stack::addr_add(
            "eth1",
            "10.0.0.1/24".parse().unwrap()
        )),
        Err(ConfigError::If(IfError::NoSuchInterface("eth1".into())))
    );
    assert_eq!(sim.with(&a, stack::addrs).unwrap().len(), 2, "only lo0's");
}

#[test]
fn moving_an_interface_where_it_is_or_onto_a_taken_name_is_refused() {
    let mut sim = Sim::new(64);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    assert_eq!(
        ifnet::vmove(&a, "eth0", &a),
        Err(IfError::SameVnet("eth0".into()))
    );
    assert_eq!(
        ifnet::vmove(&a, "eth0", &b),
        Err(IfError::Exists("eth0".into()))
    );
    let c = sim.create("c").unwrap();
    assert_eq!(ifnet::vmove(&a, "lo0", &c), Err(IfError::Loopback));
    assert_eq!(
        ifnet::vmove(&a, "nope", &c),
        Err(IfError::NoSuchInterface("nope".into()))
    );
    // a still works.
    let dst: IpAddr = "10.0.0.2".parse().unwrap();
    assert_eq!(ping(&mut sim, &a, dst), Some(dst));
}

#[test]
fn routes_to_unreachable_gateways_and_bad_routes_are_refused() {
    let mut sim = Sim::new(65);
    let (a, _b) = pair(&mut sim, "a", "b", 0);
    let before = sim.with(&a, stack::routes).unwrap();
    let gw = "192.0.2.1".parse().unwrap();
    assert_eq!(
        sim.with(&a, || stack::route_add(
            "0.0.0.0/0".parse().unwrap(),
            Some(gw),
            None
        )),
        Err(ConfigError::GatewayUnreachable(gw))
    );
    assert_eq!(
        sim.with(&a, || stack::route_add(
            "0.0.0.0/0".parse().unwrap(),
            Some("10.0.0.2".parse().unwrap()),
            Some("lo0")
        )),
        Err(ConfigError::GatewayUnreachable("10.0.0.2".parse().unwrap()))
    );
    assert!(matches!(
        sim.with(&a, || stack::route_add(
            "10.5.0.0/16".parse().unwrap(),
            Some("fd00::2".parse().unwrap()),
            None
        )),
        Err(ConfigError::FamilyMismatch(..))
    ));
    assert_eq!(
        sim.with(&a, || stack::route_add(
            "10.5.0.0/16".parse().unwrap(),
            None,
            None
        )),
        Err(ConfigError::NeedGatewayOrDev)
    );
    assert_eq!(
        sim.with(&a, || stack::route_add(
            "10.0.0.0/24".parse().unwrap(),
            None,
            Some("eth0")
        )),
        Err(ConfigError::RouteExists("10.0.0.0/24".parse().unwrap()))
    );
    assert_eq!(
        sim.with(&a, || stack::route_del("10.7.0.0/16".parse().unwrap())),
        Err(ConfigError::NoSuchRoute("10.7.0.0/16".parse().unwrap()))
    );
    assert_eq!(sim.with(&a, stack::routes).unwrap(), before);
}

#[test]
fn bad_tunable_values_are_refused_and_leave_the_old_value() {
    let mut sim = Sim::new(66);
    let a = sim.create("a").unwrap();
    sim.with(&a, || {
        assert!(matches!(
            sysctl::set("net.inet.ip.ttl", "0"),
            Err(SysctlError::BadValue { .. })
        ));
        assert!(matches!(
            sysctl::set("net.inet.ip.ttl", "abc"),
            Err(SysctlError::BadValue { .. })
        ));
        assert!(matches!(
            sysctl::set("net.inet.ip.portrange.last", "2000"),
            Err(SysctlError::BadValue { .. })
        ));
        assert_eq!(
            sysctl::set("no.such.knob", "1"),
            Err(SysctlError::Unknown("no.such.knob".into()))
        );
        assert_eq!(sysctl::get("net.inet.ip.ttl"), Ok(64));
        sysctl::set("net.inet.ip.forwarding", "1").unwrap();
        assert_eq!(sysctl::get("net.inet.ip.forwarding"), Ok(1));
    });
    // Tunables are per vnet.
    let b = sim.create("b").unwrap();
    assert_eq!(
        sim.with(&b, || sysctl::get("net.inet.ip.forwarding")),
        Ok(0)
    );
}

#[test]
fn malformed_frames_are_counted_drops_and_the_stack_carries_on() {
    let mut sim = Sim::new(67);
    let (a, b) = pair(&mut sim, "a", "b", 0);
    let wire = sim
        .with(&b, || ifnet::with_ifnet("eth0", |i| i.tx_wire().cloned()))
        .unwrap()
        .unwrap();
    let a_mac = sim.with(&a, ifnet::list).unwrap()[1].mac.0;
    let eth = |ethertype: [u8; 2], payload: &[u8]| {
        let mut f = a_mac.to_vec();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
        f.extend_from_slice(&ethertype);
        f.extend_from_slice(payload);
        f
    };
    let mut frames = vec![
        vec![],
        vec![1, 2, 3],
        eth([0x08, 0x06], &[0; 5]),                // truncated ARP
        eth([0x08, 0x00], &[0x45, 0, 0, 10]),      // truncated IPv4
        eth([0x08, 0x00], &[0x65; 40]),            // wrong version
        eth([0x86, 0xdd], &[0x60, 0, 0, 0, 0xff]), // truncated IPv6
        eth([0x88, 0xb5], b"experimental"),        // unknown ethertype
    ];
    // A valid-looking IPv4 header with a bad checksum.
    let mut ip = vec![
        0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0xde, 0xad, 10, 0, 0, 2, 10, 0, 0, 1,
    ];
    ip.extend_from_slice(&[0; 8]);
    frames.push(eth([0x08, 0x00], &ip));
    // Random garbage of every length up to 100.
    for n in 0..100usize {
        let g: Vec<u8> = (0..n).map(|i| (i * 37 + n * 11) as u8).collect();
        frames.push(eth([0x08, 0x00], &g));
        frames.push(eth([0x86, 0xdd], &g));
    }
    let n = frames.len() as u64;
    for f in frames {
        wire.send(sim.now(), f, &mut |_, _| ()).unwrap();
    }
    sim.with(&a, || ());
    sim.run_until_idle().unwrap();
    let st = sim.with(&a, stack::stats).unwrap();
    let drops =
        st.eth_in_malformed + st.ip_in_hdr_errors + st.eth_in_unknown_proto + st.arp_in_malformed;
    assert_eq!(drops, n, "{st:?}");
    assert_eq!(st.ip_in_delivered, 0);
    let dst: IpAddr = "10.0.0.2".parse().unwrap();
    assert_eq!(ping(&mut sim, &a, dst), Some(dst));
}
