//! Users other than root: their own vnets (which nobody else sees or
//! touches), restrictions a child inherits and can only narrow, quotas
//! with errors naming the rule, uplinks root delegates with a policy it
//! enforces, and a user's own unprivileged vnetd reaching the outside
//! through root's.
//!
//! The users are uids with no other use on a test machine (64101, 64102,
//! 64103...), acted as with `setpriv`; the kernel peers are namespaces of
//! the test's own behind TAP ports.

mod daemon;
mod kernel;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use daemon::Vnetd;
use daemon::host::{Bg, wait_for};
use daemon::user::{UserVnetd, as_user};
use kernel::{Netns, privileged};
use serde_json::Value;

const ALICE: u32 = 64101;
const BOB: u32 = 64102;
const CAROL: u32 = 64103;

/// Root, /dev/net/tun, setpriv and a python3 other users may run.
fn can_run() -> bool {
    if !privileged() {
        return false;
    }
    let ok = Command::new("setpriv").arg("--version").output().is_ok()
        && Path::new("/usr/bin/python3").exists();
    assert!(
        ok || std::env::var_os("VNET_REQUIRE_PRIV").is_none(),
        "VNET_REQUIRE_PRIV is set but these tests need setpriv and /usr/bin/python3"
    );
    ok
}

/// vnetctl on `sock` as `uid`.
fn ctl_at(sock: &Path, uid: u32, args: &[&str]) -> Output {
    as_user(uid, env!("CARGO_BIN_EXE_vnetctl"))
        .arg("--socket")
        .arg(sock)
        .args(args)
        .env("VNET_PRELOAD", daemon::preload())
        .output()
        .unwrap()
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Fails unless the command was refused with a message containing `why`.
fn refused(o: Output, what: &str, why: &str) {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{what} must be refused");
    assert!(err.contains(why), "{what}: expected {why:?} in {err:?}");
}

struct User<'a> {
    d: &'a Vnetd,
    uid: u32,
}

impl User<'_> {
    fn run(&self, args: &[&str]) -> Output {
        ctl_at(&self.d.sock, self.uid, args)
    }
    fn ok(&self, args: &[&str]) -> String {
        ok(
            self.run(args),
            &format!("uid {} vnetctl {args:?}", self.uid),
        )
    }
    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["-j"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
    fn refused(&self, args: &[&str], why: &str) {
        refused(
            self.run(args),
            &format!("uid {} vnetctl {args:?}", self.uid),
            why,
        );
    }
    /// Two new vnets (each under its parent, if given) joined by an epair
    /// `e0`, up, numbered NET.1/24 and NET.2/24.
    fn pair(&self, a: (&str, Option<&str>), b: (&str, Option<&str>), net: &str) {
        for (v, parent) in [a, b] {
            match parent {
                Some(p) => self.ok(&["vnet", "add", v, "--parent", p]),
                None => self.ok(&["vnet", "add", v]),
            };
        }
        self.ok(&[
            "-n", a.0, "link", "add", "e0", "type", "epair", "peer", "e0", "vnet", b.0,
        ]);
        for (v, host) in [(a.0, 1), (b.0, 2)] {
            self.ok(&["-n", v, "link", "set", "e0", "up"]);
            self.ok(&[
                "-n",
                v,
                "addr",
                "add",
                &format!("{net}.{host}/24"),
                "dev",
                "e0",
            ]);
        }
    }

    /// `vnetctl exec VNET -- python3 -c CODE ARGS` as this user.
    fn python(&self, vnet: &str, code: &str, args: &[&str]) -> Command {
        let mut c = as_user(self.uid, env!("CARGO_BIN_EXE_vnetctl"));
        c.arg("--socket")
            .arg(&self.d.sock)
            .env("VNET_PRELOAD", daemon::preload())
            .args(["exec", vnet, "--", "/usr/bin/python3", "-c", code])
            .args(args);
        c
    }
}

fn names(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Answers one TCP connection on (argv[1], 7000) with what it got;
/// touches argv[2] once listening.
const ECHO_SERVER: &str = r#"
import socket, sys
l = socket.socket(); l.bind((sys.argv[1], 7000)); l.listen(1)
open(sys.argv[2], "w").close()
c, _ = l.accept(); c.sendall(c.recv(100)); c.close()
"#;

/// Connects to (argv[1], 7000), sends a word, prints the answer.
const ECHO_CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], 7000), timeout=5)
s.sendall(b"mine"); print(s.recv(100).decode())
"#;

/// A directory in the daemon's for files the users' programs write.
fn shared(d: &Vnetd) -> PathBuf {
    let p = d.dir.join("shared");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o1777)).unwrap();
    p
}

#[test]
fn users_see_and_change_only_their_own_vnets_and_root_sees_all() {
    if !can_run() {
        return;
    }
    let d = Vnetd::start("ten-users", "");
    let alice = User { d: &d, uid: ALICE };
    let bob = User { d: &d, uid: BOB };
    // Alice: a vnet and a child of it, joined by an epair; her programs
    // work in them and traffic flows between them.
    alice.pair(("a1", None), ("a2", Some("a1")), "10.40.0");
    // (A program of hers in a2 answers one in a1; ping would not do: it
    // has file capabilities, so the loader ignores LD_PRELOAD for a user.)
    let ready = shared(&d).join("echo");
    let server =
        Bg::spawn(alice.python("a2", ECHO_SERVER, &["10.40.0.2", ready.to_str().unwrap()]));
    wait_for("alice's server", Duration::from_secs(10), || ready.exists());
    let o = alice
        .python("a1", ECHO_CLIENT, &["10.40.0.2"])
        .output()
        .unwrap();
    assert_eq!(ok(o, "alice's client").trim(), "mine");
    assert!(server.wait(Duration::from_secs(10)).success());
    alice.ok(&["switch", "add", "asw"]);

    // Bob sees none of it and changes none of it.
    bob.ok(&["vnet", "add", "b1"]);
    assert_eq!(names(&bob.json(&["vnet", "list"])), ["b1"]);
    assert_eq!(names(&alice.json(&["vnet", "list"])), ["a1", "a2"]);
    let rule = "belongs to uid 64101; uid 64102 may";
    bob.refused(&["vnet", "show", "a1"], rule);
    bob.refused(&["-n", "a1", "link", "show"], rule);
    bob.refused(&["-n", "a1", "addr", "show"], rule);
    bob.refused(&["-n", "a2", "sockets"], rule);
    bob.refused(&["-n", "a1", "stats"], rule);
    bob.refused(&["-n", "a1", "link", "set", "e0", "down"], rule);
    bob.refused(
        &["-n", "a1", "addr", "add", "10.40.0.9/24", "dev", "e0"],
        rule,
    );
    bob.refused(&["-n", "a1", "fw", "add", "drop", "in", "all"], rule);
    bob.refused(&["vnet", "del", "a2"], rule);
    bob.refused(&["vnet", "add", "b2", "--parent", "a1"], rule);
    bob.refused(&["-n", "a1", "capture", "e0", "-c", "1"], rule);
    bob.refused(&["-n", "a1", "filter", "add", "e0", "in", "-f", "ip"], rule);
    bob.refused(&["exec", "a1", "--", "/usr/bin/python3", "-c", "1"], rule);
    // A program the loader would run without the preload library (ping has
    // file capabilities) is refused rather than run on the host's network.
    let o = as_user(ALICE, env!("CARGO_BIN_EXE_vnetctl"))
        .arg("--socket")
        .arg(&d.sock)
        .env("VNET_PRELOAD", daemon::preload())
        .args(["exec", "a1", "--", "ping", "-c", "1", "10.40.0.2"])
        .output()
        .unwrap();
    if Command::new("getcap")
        .arg("/usr/bin/ping")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cap_net_raw"))
    {
        refused(o, "ping as a user", "has file capabilities");
    }
    // Nor connect into them: no link into her vnets, no port on her
    // switch, no socket made in her vnet however it is asked for.
    bob.refused(
        &[
            "-n", "b1", "link", "add", "x0", "type", "epair", "peer", "x1", "vnet", "a1",
        ],
        rule,
    );
    bob.refused(
        &[
            "-n", "b1", "link", "add", "p0", "type", "port", "switch", "asw",
        ],
        "switch \"asw\" belongs to uid 64101",
    );
    bob.refused(
        &["switch", "show", "asw"],
        "switch \"asw\" belongs to uid 64101",
    );
    bob.refused(
        &["capture", "--switch", "asw", "-c", "1"],
        "switch \"asw\" belongs to uid 64101",
    );
    let sockets = vnet::sockets::wire::sockets_path(&d.sock);
    let o = as_user(BOB, "/usr/bin/python3")
        .env("LD_PRELOAD", daemon::preload())
        .env("VNET", "a1")
        .env("VNET_SOCKETS", &sockets)
        .args([
            "-c",
            "import socket\ntry:\n socket.socket()\n print('made')\nexcept OSError as e:\n print(e.errno)",
        ])
        .output()
        .unwrap();
    assert_eq!(
        ok(o, "bob's direct socket").trim(),
        libc::EACCES.to_string(),
        "a socket in alice's vnet must be refused with EACCES"
    );
    // Alice's vnets are as she left them.
    let links = alice.json(&["-n", "a1", "link", "show"]);
    assert!(links.to_string().contains("\"up\":true"), "{links}");

    // Root sees both users' vnets and changes either.
    assert_eq!(
        names(&d.json(&["vnet", "list"])),
        ["a1", "a2", "b1", "vnet0"]
    );
    d.ctl_ok(&["-n", "a1", "link", "set", "e0", "mtu", "1400"]);
    assert!(
        d.json(&["-n", "a1", "link", "show"])
            .to_string()
            .contains("\"mtu\":1400")
    );
    d.ctl_ok(&["vnet", "del", "b1"]);
    assert_eq!(names(&bob.json(&["vnet", "list"])), Vec::<String>::new());
}

#[test]
fn a_child_inherits_restrictions_and_quotas_and_can_only_narrow_them() {
    if !can_run() {
        return;
    }
    let d = Vnetd::start("ten-restrict", "");
    let alice = User { d: &d, uid: ALICE };
    alice.ok(&["vnet", "add", "pa"]);
    // Root restricts Alice's vnet: addresses, links, forwarding, interfaces.
    d.ctl_ok(&[
        "vnet",
        "restrict",
        "pa",
        "--allow-addr",
        "10.5.0.0/24",
        "--links",
        "epair",
        "--no-forward",
        "--max-interfaces",
        "3",
        "--max-vnets",
        "2",
    ]);
    alice.ok(&["vnet", "add", "c", "--parent", "pa"]);
    alice.ok(&[
        "-n", "pa", "link", "add", "e0", "type", "epair", "peer", "e0", "vnet", "c",
    ]);
    alice.ok(&["-n", "c", "link", "set", "e0", "up"]);
    alice.ok(&["-n", "c", "addr", "add", "10.5.0.7/24", "dev", "e0"]);
    alice.refused(
        &["-n", "c", "addr", "add", "10.6.0.1/24", "dev", "e0"],
        "address 10.6.0.1/24 is outside what vnet \"pa\" may use (10.5.0.0/24) (restriction inherited from vnet \"pa\")",
    );
    alice.refused(
        &["-n", "c", "sysctl", "set", "net.inet.ip.forwarding=1"],
        "forwarding is not allowed in vnet \"pa\" (restriction inherited from vnet \"pa\")",
    );
    alice.ok(&["switch", "add", "own"]);
    alice.refused(
        &[
            "-n", "c", "link", "add", "p0", "type", "port", "switch", "own",
        ],
        "links of type port are not allowed in vnet \"pa\"",
    );
    // Nor may a port move in from a vnet where it was allowed.
    alice.ok(&["vnet", "add", "free"]);
    alice.ok(&[
        "-n", "free", "link", "add", "p1", "type", "port", "switch", "own",
    ]);
    alice.refused(
        &["-n", "free", "link", "set", "p1", "vnet", "c"],
        "links of type port are not allowed in vnet \"pa\"",
    );
    alice.ok(&["vnet", "del", "free"]);
    // Alice narrows the child further: it holds (and the parent too).
    alice.ok(&["vnet", "restrict", "c", "--allow-addr", "10.5.0.0/28"]);
    alice.refused(
        &["-n", "c", "addr", "add", "10.5.0.77/24", "dev", "e0"],
        "(restriction of the vnet itself)",
    );
    // She cannot widen what root set, nor lift it.
    alice.refused(
        &["vnet", "restrict", "pa", "--allow-addr", "10.0.0.0/8"],
        "may only narrow restrictions; address prefix 10.0.0.0/8 is outside those allowed",
    );
    alice.refused(
        &["vnet", "restrict", "pa", "--lift", "addrs"],
        "may only narrow",
    );
    alice.refused(
        &["vnet", "restrict", "pa", "--max-interfaces", "10"],
        "may only narrow limits; interfaces would be raised",
    );
    // Narrowing under configured addresses is refused, naming them.
    alice.refused(
        &["vnet", "restrict", "c", "--allow-addr", "10.5.0.0/30"],
        "has address 10.5.0.7/24 on e0",
    );
    // Quotas count the subtree: pa has 2 interfaces (its e0 and c's), a
    // third fits, a fourth is refused by pa's limit, naming it.
    alice.ok(&["vnet", "add", "other"]);
    alice.ok(&[
        "-n", "c", "link", "add", "x0", "type", "epair", "peer", "x1", "vnet", "other",
    ]);
    let v = alice.json(&["vnet", "show", "pa"]);
    assert_eq!(v["quota"]["interfaces"]["used"], 3, "{v}");
    // An epair whose end in c would be the fourth is refused whole.
    alice.refused(
        &[
            "-n", "other", "link", "add", "y1", "type", "epair", "peer", "y0", "vnet", "c",
        ],
        "quota interfaces of vnet \"pa\" reached: 3 in use, 1 more asked, limit 3",
    );
    let links = alice.json(&["-n", "other", "link", "show"]);
    assert!(!links.to_string().contains("\"y1\""), "{links}");
    alice.ok(&["vnet", "add", "c2", "--parent", "pa"]);
    alice.refused(
        &["vnet", "add", "c3", "--parent", "c"],
        "quota vnets of vnet \"pa\" reached",
    );
    // Root lifts its limit; the same request now works.
    d.ctl_ok(&["vnet", "restrict", "pa", "--lift", "vnets,interfaces"]);
    alice.ok(&["vnet", "add", "c3", "--parent", "c"]);
    // The user quota: root sets it, the user sees it, and it refuses.
    d.ctl_ok(&["quota", "set", &ALICE.to_string(), "--vnets", "5"]);
    alice.refused(
        &["vnet", "add", "six"],
        "quota vnets of uid 64101 reached: 5 in use",
    );
    let q = alice.json(&["quota", "show"]);
    assert_eq!(q[0]["vnets"]["used"], 5, "{q}");
    assert_eq!(q[0]["vnets"]["limit"], 5, "{q}");
    alice.refused(
        &["quota", "set", "64101", "--vnets", "50"],
        "setting quotas is root's to do",
    );
    alice.refused(&["quota", "show", "64102"], "may see only its own quota");
}

/// A namespace behind a TAP port of switch `sw` of `d`, with `addr`.
fn namespace_on_switch(d: &Vnetd, sw: &str, tag: &str, addr: &str) -> (Netns, String) {
    let ns = Netns::new(tag);
    let tap = format!("vt{tag}{}", std::process::id() % 100_000);
    d.ctl_ok(&["switch", "port", "add", sw, "tap", &tap]);
    ns.adopt(&tap, &[addr]);
    (ns, tap)
}

/// Counts the UDP datagrams arriving at port 9999 of a namespace, per
/// source address, for `secs` seconds.
const UDP_COUNT: &str = r#"
import socket, sys, time, collections
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999)); s.settimeout(0.2)
n = collections.Counter(); end = time.time() + float(sys.argv[1])
open(sys.argv[2], "w").close()
while time.time() < end:
    try:
        _, a = s.recvfrom(2000); n[a[0]] += 1
    except socket.timeout:
        pass
for k, v in sorted(n.items()):
    print(k, v)
"#;

/// Sends `n` datagrams to the namespace from each source address given.
const UDP_SEND: &str = r#"
import socket, sys, time
dst, n = sys.argv[1], int(sys.argv[2])
for src in sys.argv[3:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    for i in range(n):
        s.sendto(b"x" * 64, (dst, 9999))
        if i % 50 == 49:
            time.sleep(0.01)
print("sent")
"#;

fn counts(out: &str) -> std::collections::HashMap<String, u64> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect()
}

fn policy_drops(d: &Vnetd, reason: &str) -> u64 {
    let v = d.json(&["delegate", "show"]);
    let mut n = 0;
    for del in v.as_array().unwrap() {
        for p in del["ports"].as_array().unwrap() {
            for st in p["policy"].as_array().unwrap() {
                for dr in st["drops"].as_array().unwrap() {
                    if dr["reason"] == reason {
                        n += dr["n"].as_u64().unwrap();
                    }
                }
            }
        }
    }
    n
}

#[test]
fn a_delegated_uplink_carries_only_the_delegated_addresses() {
    if !can_run() {
        return;
    }
    let d = Vnetd::start("ten-deleg", "");
    d.ctl_ok(&["switch", "add", "up"]);
    let (ns, _tap) = namespace_on_switch(&d, "up", "dl", "10.2.0.1/24");
    let alice = User { d: &d, uid: ALICE };
    alice.ok(&["vnet", "add", "ua"]);
    // Without a delegation, root's switch is not hers to plug into.
    alice.refused(
        &[
            "-n", "ua", "link", "add", "eth0", "type", "port", "switch", "up",
        ],
        "may plug only into its own switches or one delegated to it",
    );
    let del = d.json(&[
        "delegate",
        &ALICE.to_string(),
        "uplink",
        "up",
        "--addr",
        "10.2.0.0/28",
    ]);
    assert_eq!(del["target"], "switch up", "{del}");
    alice.ok(&[
        "-n", "ua", "link", "add", "eth0", "type", "port", "switch", "up",
    ]);
    alice.ok(&["-n", "ua", "link", "set", "eth0", "up"]);
    // One address inside the delegation, one outside it that she gives
    // herself anyway (her vnet is hers to number).
    alice.ok(&["-n", "ua", "addr", "add", "10.2.0.2/24", "dev", "eth0"]);
    alice.ok(&["-n", "ua", "addr", "add", "10.2.0.99/24", "dev", "eth0"]);
    // Her own filter lets everything out: root's policy still rules.
    alice.ok(&[
        "-n",
        "ua",
        "filter",
        "add",
        "eth0",
        "out",
        "--name",
        "all",
        "-f",
        "ip or arp or ip6",
    ]);
    alice.refused(
        &["-n", "ua", "filter", "del", "eth0", "out", "policy-d1"],
        "is root's policy for a delegated uplink",
    );
    alice.refused(
        &[
            "-n", "ua", "filter", "add", "eth0", "out", "--name", "policy-x", "-f", "ip",
        ],
        "root's policy",
    );

    // Her vnet reaches the namespace from the delegated address.
    let o = ns
        .exec(&["ping", "-n", "-c", "2", "-W", "3", "10.2.0.2"])
        .output()
        .unwrap();
    ok(o, "the namespace pings her delegated address");
    let srv_ready = d.dir.join("udp.ready");
    let mut c = ns.exec(&["python3", "-c", UDP_COUNT, "4", srv_ready.to_str().unwrap()]);
    c.stdout(Stdio::piped());
    let counter = Bg::spawn(c);
    wait_for("the counter", Duration::from_secs(10), || {
        srv_ready.exists()
    });
    let o = alice
        .python(
            "ua",
            UDP_SEND,
            &["10.2.0.1", "100", "10.2.0.2", "10.2.0.99"],
        )
        .output()
        .unwrap();
    ok(o, "sending from both addresses");
    let got = counts(&counter.stdout());
    assert!(
        got.get("10.2.0.2").copied().unwrap_or(0) >= 90,
        "datagrams from the delegated address arrive: {got:?}"
    );
    assert_eq!(
        got.get("10.2.0.99"),
        None,
        "forged datagrams must not arrive: {got:?}"
    );
    assert!(
        policy_drops(&d, "source IP not allowed") >= 100,
        "root's filter counts the forged datagrams: {}",
        d.json(&["delegate", "show"])
    );
    // The namespace cannot reach her outside the delegation either:
    // replies to 10.2.0.99 are not delivered to her port.
    let o = ns
        .exec(&["ping", "-n", "-c", "1", "-W", "1", "10.2.0.99"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "10.2.0.99 is not hers to receive");
    assert!(policy_drops(&d, "destination not allowed") >= 1);
    // She sees her port on root's switch, not the others or the MAC table.
    let sw = alice.json(&["switch", "show", "up"]);
    assert_eq!(sw[0]["ports"].as_array().unwrap().len(), 1, "{sw}");
    assert_eq!(sw[0]["macs"].as_array().unwrap().len(), 0, "{sw}");
    // Taking the delegation back unplugs her.
    d.ctl_ok(&["delegate", "del", "1"]);
    let links = alice.json(&["-n", "ua", "link", "show"]);
    assert!(!links.to_string().contains("\"eth0\""), "{links}");
    alice.refused(
        &[
            "-n", "ua", "link", "add", "eth1", "type", "port", "switch", "up",
        ],
        "may plug only into its own switches",
    );
}

#[test]
fn a_delegated_rate_limits_what_a_tenant_sends() {
    if !can_run() {
        return;
    }
    let d = Vnetd::start("ten-rate", "");
    d.ctl_ok(&["switch", "add", "up"]);
    let (ns, _tap) = namespace_on_switch(&d, "up", "rt", "10.2.1.1/24");
    d.ctl_ok(&[
        "delegate",
        &CAROL.to_string(),
        "uplink",
        "up",
        "--addr",
        "10.2.1.16/28",
        "--rate",
        "200",
        "--burst",
        "20",
    ]);
    let carol = User { d: &d, uid: CAROL };
    carol.ok(&["vnet", "add", "cv"]);
    carol.ok(&[
        "-n", "cv", "link", "add", "eth0", "type", "port", "switch", "up",
    ]);
    carol.ok(&["-n", "cv", "link", "set", "eth0", "up"]);
    carol.ok(&["-n", "cv", "addr", "add", "10.2.1.17/24", "dev", "eth0"]);
    let ready = d.dir.join("rate.ready");
    let mut c = ns.exec(&["python3", "-c", UDP_COUNT, "4", ready.to_str().unwrap()]);
    c.stdout(Stdio::piped());
    let counter = Bg::spawn(c);
    wait_for("the counter", Duration::from_secs(10), || ready.exists());
    let t0 = Instant::now();
    let o = carol
        .python("cv", UDP_SEND, &["10.2.1.1", "1000", "10.2.1.17"])
        .output()
        .unwrap();
    ok(o, "sending 1000 datagrams");
    let secs = t0.elapsed().as_secs_f64();
    let got = counts(&counter.stdout());
    let n = got.get("10.2.1.17").copied().unwrap_or(0);
    // At most the burst plus 200 a second (and an ARP or two) arrive.
    let most = 20.0 + 200.0 * (secs + 0.5);
    assert!(
        n > 0 && (n as f64) <= most,
        "{n} arrived in {secs:.2} s (at most {most:.0})"
    );
    // Every datagram over the rate was dropped there (and counted).
    assert!(policy_drops(&d, "over the rate limit") >= 1000 - most as u64);
}

#[test]
fn a_delegated_host_interface_is_the_users_to_link() {
    if !can_run() {
        return;
    }
    let d = Vnetd::start("ten-host", "");
    let ns = Netns::new("hi");
    let host = format!("vhi{}", std::process::id() % 100_000);
    kernel::sh(&[
        "ip", "link", "add", &host, "type", "veth", "peer", "name", "vhpeer", "netns", &ns.0,
    ]);
    kernel::sh(&["ip", "link", "set", &host, "up"]);
    kernel::sh(&[
        "ip",
        "-n",
        &ns.0,
        "addr",
        "add",
        "10.7.0.1/24",
        "dev",
        "vhpeer",
    ]);
    kernel::sh(&["ip", "-n", &ns.0, "link", "set", "vhpeer", "up"]);
    let alice = User { d: &d, uid: ALICE };
    alice.ok(&["vnet", "add", "hv"]);
    alice.refused(
        &[
            "-n",
            "hv",
            "link",
            "add",
            "h0",
            "type",
            "af_packet",
            "host",
            &host,
        ],
        &format!("has no delegation of host interface \"{host}\""),
    );
    d.ctl_ok(&[
        "delegate",
        &ALICE.to_string(),
        "uplink",
        &host,
        "--addr",
        "10.7.0.8/29",
    ]);
    alice.ok(&[
        "-n",
        "hv",
        "link",
        "add",
        "h0",
        "type",
        "af_packet",
        "host",
        &host,
    ]);
    alice.ok(&["-n", "hv", "link", "set", "h0", "up"]);
    alice.ok(&["-n", "hv", "addr", "add", "10.7.0.9/24", "dev", "h0"]);
    alice.ok(&["-n", "hv", "addr", "add", "10.7.0.50/24", "dev", "h0"]);
    // Only that interface: another one is still root's.
    alice.refused(
        &[
            "-n",
            "hv",
            "link",
            "add",
            "h1",
            "type",
            "tap",
            "host",
            "vnetnope7",
        ],
        "has no delegation of host interface \"vnetnope7\"",
    );
    let ping = |ip: &str| {
        ns.exec(&["ping", "-n", "-c", "1", "-W", "2", ip])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(ping("10.7.0.9"), "her delegated address answers");
    assert!(
        !ping("10.7.0.50"),
        "an address outside the delegation does not"
    );
    // Her policy is on the link: a filter she cannot remove.
    let f = alice.json(&["-n", "hv", "filter", "show", "h0"]);
    assert!(f.to_string().contains("policy-d1"), "{f}");
    alice.refused(
        &["-n", "hv", "filter", "del", "h0", "in", "policy-d1"],
        "root's policy",
    );
}

#[test]
fn an_unprivileged_vnetd_downloads_through_roots_delegated_port() {
    if !can_run() {
        return;
    }
    let root = Vnetd::start("ten-two", "");
    root.ctl_ok(&["switch", "add", "up"]);
    let (ns, _tap) = namespace_on_switch(&root, "up", "uv", "10.3.0.1/24");
    // A file to serve, and a web server in the namespace.
    let www = root.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let data: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(www.join("file"), &data).unwrap();
    let _http = Bg::spawn({
        let mut c = ns.exec(&[
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "10.3.0.1",
            "-d",
        ]);
        c.arg(&www).stdout(Stdio::null()).stderr(Stdio::null());
        c
    });
    wait_for("the web server", Duration::from_secs(10), || {
        ns.exec(&["curl", "-s", "-o", "/dev/null", "http://10.3.0.1:8080/"])
            .status()
            .unwrap()
            .success()
    });
    root.ctl_ok(&[
        "delegate",
        &ALICE.to_string(),
        "uplink",
        "up",
        "--addr",
        "10.3.0.16/28",
    ]);

    // Alice's own vnetd, with no privileges at all.
    let mine = UserVnetd::start(ALICE, "uv");
    let me = |args: &[&str]| ctl_at(&mine.sock, ALICE, args);
    ok(me(&["vnet", "add", "home"]), "vnet add in her own vnetd");
    // Links to the host need privileges her vnetd does not have.
    refused(
        me(&[
            "-n",
            "home",
            "link",
            "add",
            "t0",
            "type",
            "tap",
            "host",
            "vnetnope9",
        ]),
        "a TAP in an unprivileged vnetd",
        "host interface \"vnetnope9\"",
    );
    let up = ok(
        me(&[
            "-j",
            "-n",
            "home",
            "link",
            "add",
            "up0",
            "type",
            "uplink",
            "switch",
            "up",
            "server",
            root.sock.to_str().unwrap(),
        ]),
        "an uplink through root's delegated port",
    );
    let up: Value = serde_json::from_str(&up).unwrap();
    assert_eq!(up["addrs"][0], "10.3.0.16/28", "{up}");
    ok(me(&["-n", "home", "link", "set", "up0", "up"]), "link up");
    ok(
        me(&["-n", "home", "addr", "add", "10.3.0.20/24", "dev", "up0"]),
        "addr",
    );
    // Root's switch shows the uplink as a port of Alice's.
    let sw = root.json(&["switch", "show", "up"]);
    assert!(sw.to_string().contains(&format!("uid {ALICE}")), "{sw}");

    let out = mine.dir.join("got");
    let o = as_user(ALICE, env!("CARGO_BIN_EXE_vnetctl"))
        .arg("--socket")
        .arg(&mine.sock)
        .env("VNET_PRELOAD", daemon::preload())
        .args([
            "exec",
            "home",
            "--",
            "curl",
            "-sS",
            "--max-time",
            "30",
            "-o",
        ])
        .arg(&out)
        .arg("http://10.3.0.1:8080/file")
        .output()
        .unwrap();
    ok(o, "curl in her vnet");
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == data,
        "the file arrived whole ({} of {} bytes)",
        got.len(),
        data.len()
    );

    // A forged source leaves her vnetd but not root's port.
    ok(
        me(&["-n", "home", "addr", "add", "10.3.0.99/24", "dev", "up0"]),
        "addr",
    );
    let o = as_user(ALICE, env!("CARGO_BIN_EXE_vnetctl"))
        .arg("--socket")
        .arg(&mine.sock)
        .env("VNET_PRELOAD", daemon::preload())
        .args([
            "exec",
            "home",
            "--",
            "/usr/bin/python3",
            "-c",
            UDP_SEND,
            "10.3.0.1",
            "20",
            "10.3.0.99",
        ])
        .output()
        .unwrap();
    ok(o, "forged datagrams");
    wait_for(
        "root's filter to count them",
        Duration::from_secs(5),
        || policy_drops(&root, "source IP not allowed") >= 20,
    );

    // When her vnetd stops, root unplugs the port.
    drop(mine);
    wait_for("the uplink port to go", Duration::from_secs(10), || {
        !root
            .json(&["switch", "show", "up"])
            .to_string()
            .contains(&format!("uid {ALICE}"))
    });
}

/// Receives `n` bytes on port 7100 and prints the rate in MB/s.
const RECEIVE: &str = r#"
import socket, sys, time
l = socket.socket(); l.bind((sys.argv[1], 7100)); l.listen(1)
open(sys.argv[3], "w").close()
c, _ = l.accept(); n = int(sys.argv[2]); got = 0; t0 = time.monotonic()
while got < n:
    d = c.recv(1 << 16)
    if not d: break
    got += len(d)
assert got >= n, got
print(n / (time.monotonic() - t0) / 1e6)
"#;

/// Sends `n` bytes to port 7100.
const SEND: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], 7100), timeout=30)
buf = b"x" * (1 << 16); sent = 0; n = int(sys.argv[2])
while sent < n:
    s.sendall(buf); sent += len(buf)
s.close()
"#;

/// Opens sockets until refused and prints the count and errno; then
/// TCP connects (each with its buffers) until refused; holds them.
const EXHAUST: &str = r#"
import errno, socket, sys, time
held = []
try:
    while True:
        held.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
except OSError as e:
    print("sockets", len(held), errno.errorcode[e.errno], flush=True)
while held:
    held.pop().close()
time.sleep(0.3)
conns = []
try:
    for i in range(1000):
        s = socket.socket(); s.setblocking(False)
        conns.append(s)
        rc = s.connect_ex(("10.41.0.77", 9))  # nobody: stays in SYN-SENT
        if rc not in (0, errno.EINPROGRESS):
            raise OSError(rc, "connect")
except OSError as e:
    print("mem", len(conns) - 1, errno.errorcode.get(e.errno, e.errno), flush=True)
open(sys.argv[1], "w").close()
time.sleep(float(sys.argv[2]))
"#;

#[test]
fn one_user_exhausting_quotas_does_not_slow_another() {
    if !can_run() {
        return;
    }
    let d = Vnetd::start("ten-quota", "");
    let alice = User { d: &d, uid: ALICE };
    let bob = User { d: &d, uid: BOB };
    // Bob: two vnets on an epair, for a transfer.
    bob.pair(("b1", None), ("b2", None), "10.42.0");
    // Alice: a vnet with a peer to connect to, and small quotas.
    d.ctl_ok(&[
        "quota",
        "set",
        &ALICE.to_string(),
        "--sockets",
        "40",
        "--mem",
        "8M",
    ]);
    alice.pair(("a1", None), ("a2", None), "10.41.0");
    // Bob's transfer crosses his epair: b1 sends, b2 receives.
    let rate = |label: &str| -> f64 {
        let ready = shared(&d).join(format!("recv-{}", label.len()));
        let mut c = bob.python(
            "b2",
            RECEIVE,
            &["10.42.0.2", "200000000", ready.to_str().unwrap()],
        );
        c.stdout(Stdio::piped());
        let recv = Bg::spawn(c);
        wait_for("bob's receiver", Duration::from_secs(10), || ready.exists());
        let o = bob
            .python("b1", SEND, &["10.42.0.2", "200000000"])
            .output()
            .unwrap();
        ok(o, label);
        let r: f64 = recv.stdout().trim().parse().expect(label);
        eprintln!("{label}: {r:.0} MB/s");
        r
    };
    let before = rate("bob alone");

    let ready = shared(&d).join("exhausted");
    let mut c = alice.python("a1", EXHAUST, &[ready.to_str().unwrap(), "60"]);
    c.stdout(Stdio::piped());
    let mut hog = Bg::spawn(c);
    wait_for(
        "alice to exhaust her quotas",
        Duration::from_secs(30),
        || ready.exists() || hog.0.try_wait().unwrap().is_some(),
    );
    assert!(ready.exists(), "alice's program ended early");
    // What she was told: the socket quota by EMFILE, the memory quota
    // (8 MiB: 16 connections of 512 KiB) by ENOBUFS.
    let mut lines = String::new();
    {
        use std::io::{BufRead, BufReader};
        let mut r = BufReader::new(hog.0.stdout.take().unwrap());
        for _ in 0..2 {
            r.read_line(&mut lines).unwrap();
        }
    }
    assert!(lines.contains("sockets 40 EMFILE"), "{lines}");
    assert!(lines.contains("mem 16 ENOBUFS"), "{lines}");
    let q = d.json(&["quota", "show", &ALICE.to_string()]);
    assert_eq!(q[0]["mem"]["used"], 16 * 512 * 1024, "{q}");
    // A vnet's own limit holds below the user's: a child of hers allowed
    // 3 sockets gives the fourth EMFILE, while her other vnets' sockets
    // stay hers.
    alice.ok(&[
        "vnet",
        "add",
        "small",
        "--parent",
        "a1",
        "--max-sockets",
        "3",
    ]);
    let o = alice
        .python(
            "small",
            "import socket\nk = []\ntry:\n while True: k.append(socket.socket())\nexcept OSError as e: print(len(k), e.errno)",
            &[],
        )
        .output()
        .unwrap();
    // Alice's user quota has 40 - 16 = 24 sockets of room: the vnet's 3 rule.
    assert_eq!(
        ok(o, "sockets in small").trim(),
        format!("3 {}", libc::EMFILE)
    );
    let during = rate("bob while alice is at her quotas");
    assert!(
        during > before * 0.5,
        "bob's transfer slowed from {before:.0} to {during:.0} MB/s"
    );
    drop(hog);
    // Her sockets are given back when her program ends.
    wait_for("alice's quota to be free", Duration::from_secs(10), || {
        let q = d.json(&["quota", "show", &ALICE.to_string()]);
        q[0]["sockets"]["used"] == 0 && q[0]["mem"]["used"] == 0
    });
}

#[test]
fn topology_files_carry_quotas_restrictions_delegations_and_uplinks() {
    if !can_run() {
        return;
    }
    let root_file = format!(
        r#"
[switch.up]

[quota.{ALICE}]
sockets = 500

[[delegate]]
user = {ALICE}
uplink = "up"
addr = ["10.9.0.16/28"]
rate = 5000

[vnet.lim]
restrict = {{ sockets = 20, addrs = ["10.8.0.0/24"], links = ["port", "epair"], no_forward = true }}
"#
    );
    let root = Vnetd::start("ten-topo", &root_file);
    let d = root.json(&["delegate", "show"]);
    assert_eq!(d[0]["uid"], ALICE, "{d}");
    assert_eq!(d[0]["rate"], 5000, "{d}");
    assert_eq!(
        root.json(&["quota", "show", &ALICE.to_string()])[0]["sockets"]["limit"],
        500
    );
    let lim = root.json(&["vnet", "show", "lim"]);
    assert_eq!(lim["quota"]["sockets"]["limit"], 20, "{lim}");
    assert_eq!(lim["links"], serde_json::json!(["epair", "port"]), "{lim}");
    // A dump applied changes nothing; a file without them takes them away.
    let dump = root.json(&["dump"])["toml"].as_str().unwrap().to_string();
    assert!(
        dump.contains("[[delegate]]") && dump.contains("no_forward = true"),
        "{dump}"
    );
    let f = root.dir.join("dump.toml");
    std::fs::write(&f, &dump).unwrap();
    let changes = root.json(&["apply", f.to_str().unwrap()]);
    assert_eq!(changes, serde_json::json!([]), "{dump}");
    std::fs::write(&f, "[switch.up]\n[vnet.lim]\n").unwrap();
    let changes = root.json(&["apply", f.to_str().unwrap()]);
    let text = changes.to_string();
    assert!(
        text.contains("delegate del 1")
            && text.contains("--reset")
            && text.contains("vnet restrict lim"),
        "{text}"
    );
    assert_eq!(root.json(&["delegate", "show"]), serde_json::json!([]));
    assert_eq!(
        root.json(&["vnet", "show", "lim"])["quota"]["sockets"]["limit"],
        Value::Null
    );
    // Files of users may not carry root's sections.
    let alice = User {
        d: &root,
        uid: ALICE,
    };
    let mine = shared(&root).join("mine.toml");
    std::fs::write(&mine, "[[delegate]]\nuser = 1\nuplink = \"up\"\n").unwrap();
    alice.refused(
        &["apply", mine.to_str().unwrap()],
        "quotas and delegations are root's to set",
    );

    // A user's own vnetd built from a file with an uplink.
    root.ctl_ok(&[
        "delegate",
        &ALICE.to_string(),
        "uplink",
        "up",
        "--addr",
        "10.9.0.16/28",
    ]);
    let user_file = format!(
        r#"
[vnet.home.link.up0]
type = "uplink"
switch = "up"
server = "{}"
up = true
addr = ["10.9.0.17/24"]
"#,
        root.sock.display()
    );
    let mine = UserVnetd::start_with(ALICE, "topo", Some(&user_file));
    let links: Value = serde_json::from_str(&ok(
        ctl_at(&mine.sock, ALICE, &["-j", "-n", "home", "link", "show"]),
        "link show",
    ))
    .unwrap();
    let up0 = links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "up0")
        .cloned()
        .unwrap_or_default();
    assert_eq!(up0["kind"], "uplink", "{links}");
    assert_eq!(up0["running"], true, "{links}");
    assert!(
        root.json(&["switch", "show", "up"])
            .to_string()
            .contains(&format!("uid {ALICE}")),
        "root's switch has her port"
    );
    let dump: Value =
        serde_json::from_str(&ok(ctl_at(&mine.sock, ALICE, &["-j", "dump"]), "dump")).unwrap();
    let dump = dump["toml"].as_str().unwrap().to_string();
    assert!(dump.contains("type = \"uplink\""), "{dump}");
    let f = mine.dir.join("again.toml");
    std::fs::write(&f, &dump).unwrap();
    std::os::unix::fs::chown(&f, Some(ALICE), Some(ALICE)).unwrap();
    let changes: Value = serde_json::from_str(&ok(
        ctl_at(&mine.sock, ALICE, &["-j", "apply", f.to_str().unwrap()]),
        "apply the dump",
    ))
    .unwrap();
    assert_eq!(changes, serde_json::json!([]), "{dump}");
}

#[test]
fn bad_tenancy_requests_are_refused_and_change_nothing() {
    if !can_run() {
        return;
    }
    let mut d = Vnetd::start("ten-bad", "");
    d.ctl_ok(&["switch", "add", "up"]);
    let alice = User { d: &d, uid: ALICE };
    let refused_root = |args: &[&str], why: &str| {
        refused(
            d.ctl().args(args).output().unwrap(),
            &format!("{args:?}"),
            why,
        );
    };
    refused_root(
        &["vnet", "add", "x", "--allow-addr", "10.0.0.0/99"],
        "is not an address or prefix",
    );
    refused_root(
        &["vnet", "add", "x", "--links", "epair,wormhole"],
        "link type \"wormhole\" is unknown",
    );
    refused_root(&["vnet", "add", "x", "--max-mem", "12Q"], "use a number");
    refused_root(
        &["delegate", "64101", "uplink", "nosuch"],
        "is neither a switch nor a host interface",
    );
    refused_root(
        &["delegate", "64101", "uplink", "up"],
        "needs the addresses it may use",
    );
    refused_root(
        &[
            "delegate",
            "64101",
            "uplink",
            "up",
            "--addr",
            "10.1.0.0/28",
            "--rate",
            "0",
        ],
        "passes nothing",
    );
    refused_root(
        &["delegate", "nosuchuser-xyz", "uplink", "up"],
        "no user named",
    );
    refused_root(&["delegate", "del", "7"], "no such delegation");
    refused_root(
        &["vnet", "restrict", "nosuch", "--max-sockets", "1"],
        "no such vnet",
    );
    refused_root(
        &[
            "-n",
            "vnet0",
            "link",
            "add",
            "u0",
            "type",
            "uplink",
            "switch",
            "up",
            "server",
            "/nonexistent/vnetd.sock",
        ],
        "uplink to /nonexistent/vnetd.sock",
    );
    assert_eq!(names(&d.json(&["vnet", "list"])), ["vnet0"]);
    assert_eq!(d.json(&["delegate", "show"]), serde_json::json!([]));
    // Users may not delegate, set quotas, or make this vnetd connect out.
    alice.refused(
        &["delegate", "64101", "uplink", "up", "--addr", "10.1.0.0/28"],
        "delegating an uplink is root's to do",
    );
    alice.refused(
        &["quota", "set", "--default", "--vnets", "1000"],
        "setting quotas is root's to do",
    );
    alice.ok(&["vnet", "add", "mine"]);
    alice.refused(
        &[
            "-n",
            "mine",
            "link",
            "add",
            "u0",
            "type",
            "uplink",
            "switch",
            "up",
            "server",
            "/run/x.sock",
        ],
        "an uplink connects to another vnetd as this one's user",
    );
    // A raw uplink_open from a user with no delegation: refused, no port.
    let o = as_user(ALICE, "/usr/bin/python3")
        .args([
            "-c",
            r#"
import json, socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
b = json.dumps({"v": 1, "id": 5, "op": "uplink_open", "args": {"switch": "up"}}).encode()
s.sendall(struct.pack(">I", len(b)) + b)
n = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))[0]
print(json.loads(s.recv(n, socket.MSG_WAITALL))["error"]["message"])
"#,
        ])
        .arg(&d.sock)
        .output()
        .unwrap();
    assert!(
        ok(o, "raw uplink_open")
            .contains("may plug only into its own switches or one delegated to it"),
    );
    let sw = d.json(&["switch", "show", "up"]);
    assert_eq!(sw[0]["ports"], serde_json::json!([]), "{sw}");
    assert!(d.alive(), "vnetd keeps running");
}
