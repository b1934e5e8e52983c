//! Packet filters through vnetd: anti-spoofing on a switch port, a receive
//! filter that asks for another client's traffic and does not get it, bad
//! filters refused, and captures with a filter expression read back by
//! tshark and tcpdump.

mod daemon;

use std::process::{Command, Stdio};
use std::time::Duration;

use daemon::host::{Bg, tshark, wait_for};
use daemon::{TWO_HOSTS, Vnetd};

/// The number of `vnet`'s port on `switch`.
fn port_of(d: &Vnetd, switch: &str, vnet: &str) -> String {
    let v = d.json(&["switch", "show", switch]);
    v[0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["vnet"] == vnet)
        .unwrap_or_else(|| panic!("no port of {vnet} on {switch}: {v}"))["port"]
        .to_string()
}

/// Drops counted for `reason` by the filter `name` listed at `target`
/// (`-n VNET IF` or `SWITCH:PORT`).
fn drops(d: &Vnetd, target: &str, name: &str, reason: &str) -> u64 {
    let mut args: Vec<&str> = target.split(' ').collect();
    let t = args.pop().unwrap();
    args.extend(["filter", "show", t]);
    let v = d.json(&args);
    let f = v
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no filter {name} at {target}: {v}"));
    f["drops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["reason"] == reason)
        .and_then(|x| x["n"].as_u64())
        .unwrap_or(0)
}

const UDP_SINK: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 5000))
s.settimeout(3)
got = []
try:
    while True:
        got.append(s.recv(100).decode())
except socket.timeout:
    pass
print(' '.join(sorted(got)))
"#;

const UDP_SEND: &str = r#"
import socket, sys, time
for src in sys.argv[2:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    for i in range(3):
        s.sendto(f'{src}#{i}'.encode(), (sys.argv[1], 5000))
        time.sleep(0.05)
"#;

fn stack_sockets(d: &Vnetd, vnet: &str) -> u64 {
    d.json(&["-n", vnet, "stats"])["sockets"].as_u64().unwrap()
}

#[test]
fn a_port_policy_drops_a_forged_source_and_counts_it_while_legitimate_traffic_flows() {
    let d = Vnetd::start("filter-spoof", "");
    d.ctl_ok(&["switch", "add", "br0"]);
    // a owns 10.6.0.1; 10.6.0.66 is an address it gives itself.
    d.on_switch("a", "br0", &["10.6.0.1/24", "10.6.0.66/24"]);
    d.on_switch("b", "br0", &["10.6.0.2/24"]);
    let pa = format!("br0:{}", port_of(&d, "br0", "a"));
    let mac = d
        .json(&["-n", "a", "link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "eth0")
        .unwrap()["mac"]
        .as_str()
        .unwrap()
        .to_string();
    d.ctl_ok(&[
        "filter",
        "add",
        &pa,
        "out",
        "--name",
        "spoof",
        "--allow-src",
        "10.6.0.1",
        "--allow-mac",
        &mac,
    ]);
    let sink = Bg::spawn({
        let mut c = d.exec("b", &["python3", "-c", UDP_SINK]);
        c.stdout(Stdio::piped());
        c
    });
    wait_for("b's socket", Duration::from_secs(20), || {
        stack_sockets(&d, "b") >= 1
    });
    let st = d
        .exec(
            "a",
            &[
                "python3",
                "-c",
                UDP_SEND,
                "10.6.0.2",
                "10.6.0.66",
                "10.6.0.1",
            ],
        )
        .status()
        .unwrap();
    assert!(st.success());
    let out = sink.stdout();
    assert_eq!(
        out.trim(),
        "10.6.0.1#0 10.6.0.1#1 10.6.0.1#2",
        "b got forged datagrams, or lost legitimate ones"
    );
    assert!(drops(&d, &pa, "spoof", "source IP not allowed") >= 3);
    assert_eq!(drops(&d, &pa, "spoof", "source MAC not allowed"), 0);
    // Legitimate TCP flows through the filter too.
    let ping = d
        .exec(
            "a",
            &["ping", "-n", "-c", "2", "-i", "0.2", "-W", "3", "10.6.0.2"],
        )
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // The listing says what the filter is.
    let text = String::from_utf8(d.ctl_ok(&["filter", "show", &pa]).stdout).unwrap();
    assert!(
        text.contains("spoof")
            && text.contains("allow-src 10.6.0.1/32")
            && text.contains("source IP not allowed"),
        "{text}"
    );
    // Removed, the forged datagrams go through.
    d.ctl_ok(&["filter", "del", &pa, "out", "spoof"]);
    let sink = Bg::spawn({
        let mut c = d.exec("b", &["python3", "-c", UDP_SINK]);
        c.stdout(Stdio::piped());
        c
    });
    wait_for("b's socket", Duration::from_secs(20), || {
        stack_sockets(&d, "b") >= 1
    });
    d.exec("a", &["python3", "-c", UDP_SEND, "10.6.0.2", "10.6.0.66"])
        .status()
        .unwrap();
    assert_eq!(sink.stdout().trim(), "10.6.0.66#0 10.6.0.66#1 10.6.0.66#2");
}

#[test]
fn a_receive_filter_asking_for_another_clients_traffic_gets_none_of_it() {
    let d = Vnetd::start("filter-recv", "");
    // A hub: without filters every port gets every frame.
    d.ctl_ok(&["switch", "add", "hub0", "--mode", "hub"]);
    d.on_switch("a", "hub0", &["10.6.0.1/24"]);
    d.on_switch("b", "hub0", &["10.6.0.2/24"]);
    d.on_switch("c", "hub0", &["10.6.0.3/24"]);
    let pc = format!("hub0:{}", port_of(&d, "hub0", "c"));
    // c asks for b's traffic (its own receive filter)...
    d.ctl_ok(&[
        "-n",
        "c",
        "filter",
        "add",
        "eth0",
        "in",
        "--name",
        "mine",
        "-f",
        "arp or ip host 10.6.0.2",
    ]);
    // ...but the switch's owner lets c's port deliver only what is for c.
    d.ctl_ok(&[
        "filter",
        "add",
        &pc,
        "in",
        "--name",
        "policy",
        "--allow-dst",
        "10.6.0.3",
    ]);
    let file = d.dir.join("c.pcap");
    let cap = d.capture(&["-n", "c", "eth0"], &file);
    let ping = |n: &str| {
        let o = d
            .exec(
                "a",
                &["ping", "-n", "-c", n, "-i", "0.1", "-W", "3", "10.6.0.2"],
            )
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    };
    ping("10");
    drop(cap);
    let seen = tshark(&file, &["ip.src", "ip.dst"], Some("icmp"));
    assert!(seen.is_empty(), "c got a's and b's pings: {seen:?}");
    assert!(
        drops(&d, &pc, "policy", "destination not allowed") >= 20,
        "{}",
        d.json(&["filter", "show", &pc])
    );
    // The test can fail: without the policy, c's own filter lets b's
    // pings in.
    d.ctl_ok(&["filter", "del", &pc, "in", "policy"]);
    let file2 = d.dir.join("c2.pcap");
    let cap = d.capture(&["-n", "c", "eth0"], &file2);
    ping("5");
    // The capture streams as frames come: wait for the pings to be in the
    // file before stopping it (a loaded machine may lag).
    wait_for(
        "the capture to hold the pings",
        Duration::from_secs(10),
        || {
            Command::new("tshark")
                .args(["-n", "-r"])
                .arg(&file2)
                .args(["-Y", "icmp.type == 8 and ip.dst == 10.6.0.2"])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().count() >= 5)
        },
    );
    drop(cap);
    let seen = tshark(&file2, &["ip.src", "ip.dst"], Some("icmp"));
    assert!(
        seen.iter().filter(|l| *l == "10.6.0.1\t10.6.0.2").count() >= 5,
        "{seen:?}"
    );
    // c's own filter counted what it refused (none of a's pings are for
    // b's address alone... all are: it refused nothing of them), and the
    // listing of c's interfaces shows it.
    let all = d.json(&["-n", "c", "filter", "show"]);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all[0]["name"], "mine");
    assert!(all[0]["passed"].as_u64().unwrap() >= 10, "{all}");
}

#[test]
fn a_capture_with_a_filter_expression_holds_the_tcp_handshake_and_pipes_into_tcpdump() {
    let d = Vnetd::start("filter-capture", TWO_HOSTS);
    let file = d.dir.join("hs.pcap");
    let cap = d.capture(&["-n", "red", "eth0", "-f", "tcp port 7000"], &file);
    let ng = d.dir.join("hs.pcapng");
    let capng = d.capture(&["-n", "blue", "eth0", "--pcapng", "-f", "tcp"], &ng);
    let pipe = Bg::spawn({
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!(
            "'{}' --socket '{}' capture -n blue eth0 -f 'tcp port 7000' -c 3 -w - | tcpdump -n -r - 2>/dev/null",
            env!("CARGO_BIN_EXE_vnetctl"),
            d.sock.display()
        ));
        c.stdout(Stdio::piped());
        c
    });
    std::thread::sleep(Duration::from_millis(500));
    let server = Bg::spawn({
        let mut c = d.exec("blue", &["nc", "-l", "7000"]);
        c.stdout(Stdio::null());
        c
    });
    wait_for("blue's listener", Duration::from_secs(20), || {
        d.json(&["-n", "blue", "stats"])["sockets"]
            .as_u64()
            .unwrap()
            >= 1
    });
    let st = d
        .exec("red", &["nc", "-N", "10.0.0.2", "7000"])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert!(server.wait(Duration::from_secs(10)).success());
    std::thread::sleep(Duration::from_millis(300));
    drop(cap);
    drop(capng);
    // SYN, SYN-ACK, ACK, in that order, between the right ends.
    let flags = tshark(
        &file,
        &["ip.src", "ip.dst", "tcp.flags.syn", "tcp.flags.ack"],
        Some("tcp"),
    );
    assert!(flags.len() >= 3, "{flags:?}");
    assert_eq!(flags[0], "10.0.0.1\t10.0.0.2\t1\t0", "{flags:?}");
    assert_eq!(flags[1], "10.0.0.2\t10.0.0.1\t1\t1", "{flags:?}");
    assert_eq!(flags[2], "10.0.0.1\t10.0.0.2\t0\t1", "{flags:?}");
    // The pcapng capture of the other end holds the same handshake.
    let magic = std::fs::read(&ng).unwrap();
    assert_eq!(&magic[..4], &[0x0a, 0x0d, 0x0d, 0x0a], "not pcapng");
    let ngflags = tshark(
        &ng,
        &["ip.src", "ip.dst", "tcp.flags.syn", "tcp.flags.ack"],
        Some("tcp"),
    );
    assert_eq!(&ngflags[..3], &flags[..3], "{ngflags:?}");
    // Nothing but TCP port 7000 was written.
    let all = tshark(&file, &["frame.number"], Some("not (tcp.port == 7000)"));
    assert!(all.is_empty(), "{all:?}");
    // tcpdump read the live stream: three frames, the first a SYN.
    let out = pipe.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("10.0.0.1.") && lines[0].contains("Flags [S]"),
        "{out}"
    );
}

#[test]
fn bad_filters_are_refused_with_a_reason_and_change_nothing() {
    let d = Vnetd::start("filter-bad", TWO_HOSTS);
    let fails = |args: &[&str], want: &str| {
        let o = d.ctl().args(args).output().unwrap();
        assert!(!o.status.success(), "{args:?} succeeded");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(want), "{args:?}: {e}");
    };
    let add_fails = |extra: &[&str], want: &str| {
        let mut args = vec!["-n", "red", "filter", "add", "eth0", "out"];
        args.extend_from_slice(extra);
        fails(&args, want);
    };
    add_fails(&["-f", "ip and and"], "syntax error");
    add_fails(&["--bpf", "1,6 0 0 0,6 0 0 0"], "the count says 1");
    add_fails(&["--bpf", "1,21 5 0 1"], "jump");
    add_fails(&["--allow-src", "10.0.0.300"], "not an address");
    add_fails(&["--allow-mac", "zz:00"], "not a MAC");
    fails(
        &["-n", "red", "filter", "add", "eth0", "sideways", "-f", "ip"],
        "use in",
    );
    add_fails(&[], "needs something to check");
    fails(
        &["-n", "red", "filter", "add", "lo0", "out", "-f", "ip"],
        "loopback",
    );
    fails(
        &["-n", "red", "filter", "add", "eth7", "out", "-f", "ip"],
        "no such interface",
    );
    fails(
        &["-n", "red", "filter", "del", "eth0", "out", "f1"],
        "no filter",
    );
    fails(
        &["capture", "-n", "red", "eth0", "-f", "tcp port", "-c", "1"],
        "syntax error",
    );
    d.ctl_ok(&[
        "-n", "red", "filter", "add", "eth0", "out", "--name", "x", "-f", "ip",
    ]);
    fails(
        &[
            "-n", "red", "filter", "add", "eth0", "out", "--name", "x", "-f", "ip",
        ],
        "exists",
    );
    // Only the one good filter is there, and traffic (ARP is not IP) is
    // dropped by it and counted: the filter is live.
    let v = d.json(&["-n", "red", "filter", "show"]);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let o = d
        .exec("red", &["ping", "-n", "-c", "1", "-W", "1", "10.0.0.2"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "ARP should be filtered out");
    assert!(drops(&d, "-n red eth0", "x", "filter expression not matched") >= 1);
    // Other users cannot touch red's filters.
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_vnetctl"))
        .arg("--socket")
        .arg(&d.sock)
        .args(["-n", "red", "filter", "del", "eth0", "out", "x"])
        .output();
    if let Ok(o) = o
        && is_root()
    {
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("belongs to"),
            "{o:?}"
        );
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}
