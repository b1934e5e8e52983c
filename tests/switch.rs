//! Switches through vnetd: vnets and a Linux namespace (behind a TAP port)
//! on a learning switch reach each other, a vnet on another switch sees
//! none of it (checked by capture), and tshark reads our capture files.

mod daemon;
mod kernel;

use std::process::Command;
use std::time::Duration;

use daemon::Vnetd;
use daemon::host::{Bg, tshark, wait_for};
use kernel::{Netns, privileged};

fn ping_ok(c: &mut Command) {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn three_vnets_and_a_namespace_on_a_learning_switch_reach_each_other_and_another_switch_sees_nothing()
 {
    if !privileged() {
        return;
    }
    let d = Vnetd::start("switch-four", "");
    d.ctl_ok(&["switch", "add", "br0"]);
    d.ctl_ok(&["switch", "add", "br1", "--mode", "learning"]);
    for (v, a) in [
        ("a", "10.9.0.1/24"),
        ("b", "10.9.0.2/24"),
        ("c", "10.9.0.3/24"),
    ] {
        d.on_switch(v, "br0", &[a]);
    }
    // The fourth vnet is on the same subnet, but on another switch.
    d.on_switch("d", "br1", &["10.9.0.4/24"]);
    let ns = Netns::new("sw");
    let tap = format!("vsw{}", std::process::id() % 100_000);
    let out = d.ctl_ok(&["switch", "port", "add", "br0", "tap", &tap]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&tap));
    ns.adopt(&tap, &["10.9.0.100/24"]);

    let dcap = d.dir.join("d.pcap");
    let dcapture = d.capture(&["-n", "d", "eth0"], &dcap);
    let allcap = d.dir.join("br0.pcap");
    let allcapture = d.capture(&["--switch", "br0"], &allcap);
    // The TAP's port is the fourth made on br0.
    let tapcap = d.dir.join("tap.pcap");
    let tapcapture = d.capture(&["br0:4"], &tapcap);

    // The kernel reaches each vnet, each vnet the kernel and the others.
    for ip in ["10.9.0.1", "10.9.0.2", "10.9.0.3"] {
        ping_ok(&mut ns.exec(&["ping", "-n", "-c", "1", "-W", "3", ip]));
    }
    for (from, to) in [
        ("a", "10.9.0.2"),
        ("a", "10.9.0.3"),
        ("b", "10.9.0.3"),
        ("c", "10.9.0.100"),
    ] {
        ping_ok(&mut d.exec(from, &["ping", "-n", "-c", "1", "-W", "3", to]));
    }
    // d asks for a (ARP on br1, which nobody answers): its own frames show
    // that its capture works.
    let o = d
        .exec("d", &["ping", "-n", "-c", "1", "-W", "1", "10.9.0.1"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "d must not reach a across switches");

    // The switch learned the four stations, each on its own port.
    let show = d.ctl_ok(&["-j", "switch", "show", "br0"]);
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let sw = &v[0];
    let macs = sw["macs"].as_array().unwrap();
    assert_eq!(macs.len(), 4, "{sw}");
    let mut ports: Vec<u64> = macs.iter().map(|m| m["port"].as_u64().unwrap()).collect();
    ports.dedup();
    assert_eq!(ports.len(), 4, "one station per port: {sw}");
    assert!(sw["stats"]["unicast"].as_u64().unwrap() > 0, "{sw}");
    for p in sw["ports"].as_array().unwrap() {
        assert!(p["stats"]["rx_frames"].as_u64().unwrap() > 0, "{p}");
        assert!(p["stats"]["tx_frames"].as_u64().unwrap() > 0, "{p}");
    }
    // The text form shows the same.
    let text = String::from_utf8(d.ctl_ok(&["switch", "show"]).stdout).unwrap();
    assert!(
        text.contains("br0: learning") && text.contains("br1: learning"),
        "{text}"
    );
    assert!(text.contains(&format!("tap {tap}")), "{text}");

    drop(dcapture);
    drop(allcapture);
    drop(tapcapture);
    // d saw only its own ARP requests: nothing from a, b, c or the kernel.
    let seen = tshark(&dcap, &["eth.src", "arp.src.proto_ipv4", "ip.src"], None);
    assert!(!seen.is_empty(), "d's capture is empty: it does not work");
    for l in &seen {
        assert!(
            l.contains("10.9.0.4") && !l.contains("10.9.0.1\t") && !l.contains("10.9.0.2"),
            "d saw a frame that is not its own: {l}"
        );
    }
    // The whole switch's capture has the kernel's echo requests to each
    // vnet, and their replies.
    let icmp = tshark(&allcap, &["ip.src", "ip.dst", "icmp.type"], Some("icmp"));
    for ip in ["10.9.0.1", "10.9.0.2", "10.9.0.3"] {
        assert!(
            icmp.iter().any(|l| l == &format!("10.9.0.100\t{ip}\t8")),
            "no echo request to {ip} in {icmp:?}"
        );
        assert!(
            icmp.iter().any(|l| l == &format!("{ip}\t10.9.0.100\t0")),
            "no echo reply from {ip} in {icmp:?}"
        );
    }
    // The TAP's port saw the kernel's pings, and none of the vnets' pings
    // to each other once the switch had learned where they are.
    let icmp = tshark(&tapcap, &["ip.src", "ip.dst"], Some("icmp"));
    assert!(icmp.iter().any(|l| l == "10.9.0.100\t10.9.0.1"), "{icmp:?}");
    assert!(
        icmp.iter().all(|l| l.contains("10.9.0.100")),
        "the TAP's port got unicast frames between vnets: {icmp:?}"
    );
    // Unplugging the TAP port removes the device and what was learned on it.
    let tap_port = v[0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "tap")
        .unwrap()["port"]
        .as_u64()
        .unwrap()
        .to_string();
    d.ctl_ok(&["switch", "port", "del", "br0", &tap_port]);
    wait_for("the TAP to go", Duration::from_secs(5), || {
        let o = Command::new("ip")
            .args(["-n", &ns.0, "link", "show"])
            .output()
            .unwrap();
        !String::from_utf8_lossy(&o.stdout).contains(&tap)
    });
    let v: serde_json::Value =
        serde_json::from_slice(&d.ctl_ok(&["-j", "switch", "show", "br0"]).stdout).unwrap();
    assert_eq!(v[0]["ports"].as_array().unwrap().len(), 3);
    assert_eq!(v[0]["macs"].as_array().unwrap().len(), 3);
}

#[test]
fn ports_come_and_go_while_traffic_flows_and_a_hub_floods() {
    let d = Vnetd::start("switch-hub", "");
    d.ctl_ok(&["switch", "add", "hub0", "--mode", "hub"]);
    d.on_switch("a", "hub0", &["10.8.0.1/24"]);
    d.on_switch("b", "hub0", &["10.8.0.2/24"]);
    d.on_switch("c", "hub0", &["10.8.0.3/24"]);
    // c hears a and b talking: a hub sends every frame everywhere.
    let ccap = d.dir.join("c.pcap");
    let cc = d.capture(&["-n", "c", "eth0"], &ccap);
    let mut flood = d.exec("a", &["ping", "-n", "-i", "0.05", "-c", "60", "10.8.0.2"]);
    let pinger = Bg::spawn({
        flood.stdout(std::process::Stdio::null());
        flood
    });
    // Meanwhile ports are added and removed.
    for i in 0..5 {
        let name = format!("x{i}");
        d.on_switch(&name, "hub0", &[&format!("10.8.0.{}/24", 10 + i)]);
        d.ctl_ok(&["-n", &name, "link", "del", "eth0"]);
        d.ctl_ok(&["vnet", "del", &name]);
    }
    let st = pinger.wait(Duration::from_secs(30));
    assert!(st.success(), "pings lost while ports came and went");
    drop(cc);
    let icmp = tshark(&ccap, &["ip.src", "ip.dst"], Some("icmp"));
    assert!(
        icmp.iter().filter(|l| *l == "10.8.0.1\t10.8.0.2").count() >= 50,
        "c should hear a's echo requests to b: {} heard",
        icmp.len()
    );
    let v: serde_json::Value =
        serde_json::from_slice(&d.ctl_ok(&["-j", "switch", "show", "hub0"]).stdout).unwrap();
    assert_eq!(v[0]["mode"], "hub");
    assert_eq!(v[0]["ports"].as_array().unwrap().len(), 3);
    assert!(v[0]["macs"].as_array().unwrap().is_empty());
}

#[test]
fn bad_switch_requests_are_refused_and_change_nothing() {
    let d = Vnetd::start("switch-bad", "");
    d.ctl_ok(&["switch", "add", "br0"]);
    d.ctl_ok(&["vnet", "add", "a"]);
    let fails = |args: &[&str], want: &str| {
        let o = d.ctl().args(args).output().unwrap();
        assert!(!o.status.success(), "{args:?} succeeded");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(want), "{args:?}: {e}");
    };
    fails(&["switch", "add", "br0"], "already exists");
    fails(&["switch", "add", "a/b"], "invalid");
    fails(
        &["switch", "add", "x", "--mode", "bus"],
        "use hub or learning",
    );
    fails(&["switch", "del", "nope"], "no such switch");
    fails(
        &[
            "-n", "a", "link", "add", "eth0", "type", "port", "switch", "nope",
        ],
        "no such switch",
    );
    fails(
        &["switch", "port", "add", "br0", "usb", "x"],
        "use tap or af_packet",
    );
    fails(&["switch", "port", "del", "br0", "7"], "no port 7");
    d.ctl_ok(&[
        "-n", "a", "link", "add", "eth0", "type", "port", "switch", "br0",
    ]);
    fails(
        &[
            "-n", "a", "link", "add", "eth0", "type", "port", "switch", "br0",
        ],
        "already exists",
    );
    fails(&["switch", "port", "del", "br0", "1"], "link del");
    fails(&["capture", "-n", "a", "lo0", "-c", "1"], "loopback");
    fails(
        &["capture", "-n", "a", "eth9", "-c", "1"],
        "no such interface",
    );
    // One port: the refused second interface left none behind.
    let v: serde_json::Value =
        serde_json::from_slice(&d.ctl_ok(&["-j", "switch", "show", "br0"]).stdout).unwrap();
    assert_eq!(v[0]["ports"].as_array().unwrap().len(), 1, "{v}");
    // Deleting the switch leaves the interface, its link down.
    d.ctl_ok(&["switch", "del", "br0"]);
    let l: serde_json::Value =
        serde_json::from_slice(&d.ctl_ok(&["-j", "-n", "a", "link", "show"]).stdout).unwrap();
    let eth0 = l
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "eth0")
        .unwrap();
    assert_eq!(eth0["running"], false, "{eth0}");
    fails(&["switch", "show", "br0"], "no such switch");
}

#[test]
fn a_topology_file_makes_switches_and_ports_and_a_dump_applies_with_no_changes() {
    let d = Vnetd::start(
        "switch-topo",
        r#"
[switch.br0]
mode = "hub"
aging = 60

[switch.br1]

[vnet.a.link.eth0]
type = "port"
switch = "br0"
up = true
addr = ["10.7.0.1/24"]
filter = [
  { name = "spoof", dir = "out", allow_src = ["10.7.0.1"], allow_mac = [] },
  { name = "mine", dir = "in", expr = "arp or ip dst host 10.7.0.1" },
]

[vnet.b.link.eth0]
type = "port"
switch = "br0"
up = true
addr = ["10.7.0.2/24"]

[vnet.b.link.eth1]
type = "port"
switch = "br1"
"#,
    );
    ping_ok(&mut d.exec("a", &["ping", "-n", "-c", "1", "-W", "3", "10.7.0.2"]));
    let dump = String::from_utf8(d.ctl_ok(&["dump"]).stdout).unwrap();
    assert!(
        dump.contains("[switch.br0]") && dump.contains("mode = \"hub\""),
        "{dump}"
    );
    assert!(dump.contains("switch = \"br1\""), "{dump}");
    let file = d.dir.join("dump.toml");
    std::fs::write(&file, &dump).unwrap();
    let again = d.ctl_ok(&["apply", file.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), "no changes");
    // A filter that changes goes and comes back; the other stays.
    let changed = dump.replace("arp or ip dst host 10.7.0.1", "arp or ip host 10.7.0.1");
    assert_ne!(changed, dump);
    std::fs::write(&file, &changed).unwrap();
    let out = String::from_utf8(d.ctl_ok(&["apply", file.to_str().unwrap()]).stdout).unwrap();
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "-n a filter del eth0 in mine",
            "-n a filter add eth0 in --name mine"
        ],
        "{out}"
    );
    let dump = String::from_utf8(d.ctl_ok(&["dump"]).stdout).unwrap();
    // A switch that leaves the file goes, with the interfaces on it first.
    let less = dump.replace("[switch.br1]\n", "").replace(
        "[vnet.b.link.eth1]\ntype = \"port\"\nswitch = \"br1\"\nup = false\n",
        "",
    );
    assert!(!less.contains("br1"), "{less}");
    std::fs::write(&file, &less).unwrap();
    let changes = String::from_utf8(d.ctl_ok(&["apply", file.to_str().unwrap()]).stdout).unwrap();
    assert_eq!(
        changes.lines().collect::<Vec<_>>(),
        ["-n b link del eth1", "switch del br1"],
        "{changes}"
    );
    let o = d.ctl().args(["switch", "show", "br1"]).output().unwrap();
    assert!(!o.status.success());
    // A port on a switch the file does not have is refused with the reason.
    std::fs::write(
        &file,
        "[vnet.c.link.eth0]\ntype = \"port\"\nswitch = \"nope\"\n",
    )
    .unwrap();
    let o = d
        .ctl()
        .args(["apply", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("its switch \"nope\" is not in the file"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
