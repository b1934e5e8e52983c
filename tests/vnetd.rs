//! vnetd and vnetctl as a user meets them: a server on a private socket,
//! topologies built from the command line and from batch files, JSON
//! output, bad input of every kind, other users, and a clean stop.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
    sock: PathBuf,
}

impl Daemon {
    fn start(tag: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("vnetd-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Other users in the tests must reach the socket inside.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let sock = dir.join("vnetd.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_vnetd"))
            .arg("--socket")
            .arg(&sock)
            .arg("--workers")
            .arg("2")
            .arg("--empty")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start vnetd");
        let t0 = Instant::now();
        while UnixStream::connect(&sock).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "vnetd did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child: Some(child),
            dir,
            sock,
        }
    }

    fn ctl(&self, args: &str) -> Output {
        self.ctl_as(None, args)
    }

    fn ctl_as(&self, uid: Option<u32>, args: &str) -> Output {
        let bin = env!("CARGO_BIN_EXE_vnetctl");
        let mut cmd = match uid {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.args([
                    format!("--reuid={u}"),
                    format!("--regid={u}"),
                    "--clear-groups".into(),
                    bin.into(),
                ]);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("--socket")
            .arg(&self.sock)
            .args(args.split_whitespace());
        cmd.output().expect("run vnetctl")
    }

    fn ok(&self, args: &str) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "vnetctl {args}: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, args: &str) -> Value {
        serde_json::from_str(&self.ok(&format!("-j {args}"))).unwrap()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM and waits; returns the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let t0 = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "vnetd did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn build_pair(d: &Daemon) {
    for cmd in [
        "vnet add red",
        "vnet add blue",
        "-n red link add eth0 type epair peer eth0 vnet blue",
        "-n red link set eth0 up",
        "-n blue link set eth0 up",
        "-n red link set eth0 mtu 9000",
        "-n red addr add 10.0.0.1/24 dev eth0",
        "-n red addr add fd00::1/64 dev eth0",
        "-n blue addr add 10.0.0.2/24 dev eth0",
        "-n red route add 10.9.0.0/16 via 10.0.0.2",
        "-n red route add default via 10.0.0.2 dev eth0",
        "-n red sysctl set net.inet.ip.forwarding=1",
    ] {
        d.ok(cmd);
    }
}

#[test]
fn a_topology_built_with_vnetctl_shows_in_json() {
    let d = Daemon::start("json");
    build_pair(&d);
    let vnets = d.json("vnet list");
    let names: Vec<&str> = vnets
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["vnet0", "red", "blue"]);
    assert_eq!(d.json("vnet show red")["parent"], "vnet0");
    let links = d.json("-n red link show");
    let eth0 = links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "eth0")
        .unwrap();
    assert_eq!(
        (
            eth0["mtu"].as_u64(),
            eth0["up"].as_bool(),
            eth0["kind"].as_str()
        ),
        (Some(9000), Some(true), Some("epair"))
    );
    assert_eq!(eth0["mac"].as_str().unwrap().len(), 17);
    let addrs = d.json("-n red addr show");
    let mut got: Vec<String> = addrs
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{} {}", a["dev"], a["addr"]))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            r#""eth0" "10.0.0.1/24""#,
            r#""eth0" "fd00::1/64""#,
            r#""lo0" "127.0.0.1/8""#,
            r#""lo0" "::1/128""#
        ]
    );
    let routes = d.json("-n red route show");
    let r: Vec<String> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {} {} {}", r["dst"], r["via"], r["dev"], r["proto"]))
        .collect();
    assert!(
        r.contains(&r#""default" "10.0.0.2" "eth0" "static""#.to_string()),
        "{r:?}"
    );
    assert!(
        r.contains(&r#""10.9.0.0/16" "10.0.0.2" "eth0" "static""#.to_string()),
        "{r:?}"
    );
    assert!(
        r.contains(&r#""10.0.0.0/24" null "eth0" "kernel""#.to_string()),
        "{r:?}"
    );
    assert_eq!(
        d.json("-n red sysctl get net.inet.ip.forwarding")[0]["value"],
        1
    );
    assert_eq!(
        d.json("-n blue sysctl get net.inet.ip.forwarding")[0]["value"],
        0
    );
    assert!(d.json("-n red stats")["arp_requests_out"].is_u64());
    // Text output looks like iproute2's.
    let text = d.ok("-n red route show");
    assert!(
        text.contains("default via 10.0.0.2 dev eth0 proto static"),
        "{text}"
    );
    // Moving an interface and deleting things.
    d.ok("vnet add green");
    d.ok("-n blue link set eth0 vnet green");
    assert!(
        d.json("-n green link show")
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "eth0")
    );
    d.ok("-n red route del 10.9.0.0/16");
    d.ok("-n red addr del fd00::1/64 dev eth0");
    d.ok("-n red link del eth0");
    d.ok("vnet del green");
    assert_eq!(d.json("vnet list").as_array().unwrap().len(), 3);
}

#[test]
fn a_batch_file_builds_a_large_topology_and_stops_at_the_first_error() {
    let d = Daemon::start("batch");
    let mut lines = String::from("# a star of 100 vnets around vnet0\n");
    for i in 0..100 {
        lines.push_str(&format!(
            "vnet add leaf{i}\n-n leaf{i} link add eth0 type epair peer l{i} vnet vnet0\n"
        ));
        lines.push_str(&format!(
            "-n leaf{i} link set eth0 up\n-n leaf{i} addr add 10.1.{i}.2/24 dev eth0\n\n"
        ));
    }
    let file = d.dir.join("star.batch");
    std::fs::write(&file, &lines).unwrap();
    let t0 = Instant::now();
    d.ok(&format!("-batch {}", file.display()));
    eprintln!("400 commands in {:?}", t0.elapsed());
    assert_eq!(d.json("vnet list").as_array().unwrap().len(), 101);
    assert_eq!(d.json("-n vnet0 link show").as_array().unwrap().len(), 101);

    let bad = d.dir.join("bad.batch");
    std::fs::write(&bad, "vnet add x1\nvnet add x1\nvnet add x2\n").unwrap();
    let o = d.ctl(&format!("-batch {}", bad.display()));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("line 2"), "{}", stderr(&o));
    assert!(d.json("vnet show x1").is_object());
    assert_eq!(
        d.ctl("vnet show x2").status.code(),
        Some(2),
        "stopped at the failing line"
    );
    let o = d.ctl(&format!("-batch {} --force", bad.display()));
    assert_eq!(o.status.code(), Some(2));
    assert!(d.json("vnet show x2").is_object(), "--force carried on");
}

#[test]
fn errors_name_the_object_and_the_reason_with_iproute2_exit_codes() {
    let d = Daemon::start("errors");
    build_pair(&d);
    for (args, code, needle) in [
        ("-n nope link show", 2, r#"vnet "nope": no such vnet"#),
        ("vnet add red", 2, r#"vnet "red" already exists"#),
        (
            "-n red link add eth0 type epair peer x",
            2,
            r#"interface "eth0" already exists"#,
        ),
        (
            "-n red addr add 10.0.0.300/24 dev eth0",
            2,
            "not an address",
        ),
        (
            "-n red addr add 10.0.5.1/24 dev eth9",
            2,
            r#"interface "eth9": no such interface"#,
        ),
        (
            "-n red route add default6 via 192.0.2.1",
            2,
            "different families",
        ),
        (
            "-n red route add 10.7.0.0/16 via 192.0.2.1",
            2,
            "gateway 192.0.2.1 is unreachable",
        ),
        ("-n red sysctl set net.inet.ip.ttl=0", 2, "bad value"),
        ("-n red link set eth0 mtu 100", 2, "MTU 100 is out of range"),
        ("vnet del vnet0", 2, "vnet0 is the base vnet"),
        ("link add", 1, "Usage: vnetctl link add"),
        ("frobnicate", 1, "unrecognized subcommand"),
        ("-n red sysctl set novalue", 1, "KEY=VALUE"),
    ] {
        let o = d.ctl(args);
        assert_eq!(
            o.status.code(),
            Some(code),
            "vnetctl {args}: {}",
            stderr(&o)
        );
        assert!(
            stderr(&o).contains(needle),
            "vnetctl {args}: {}",
            stderr(&o)
        );
    }
    assert!(d.ok("--help").contains("vnet"));
    let gone = Daemon {
        child: None,
        dir: d.dir.join("none"),
        sock: d.dir.join("none.sock"),
    };
    let o = gone.ctl("vnet list");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot reach vnetd"), "{}", stderr(&o));
}

fn raw_exchange(sock: &Path, bytes: &[u8]) -> Option<Value> {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

#[test]
fn garbage_truncated_oversized_and_unknown_requests_get_errors_and_the_server_carries_on() {
    let d = Daemon::start("garbage");
    d.ok("vnet add keep");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (frame(b"\x00\x01\x02 not json"), "not JSON"),
        (frame(br#"{"v":1,"id":3,"op":"vnet_explode"}"#), "malformed"),
        (frame(br#"{"v":2,"id":3,"op":"vnet_list"}"#), "version 2"),
        (
            frame(br#"{"v":1,"id":3,"op":"vnet_add","args":{}}"#),
            "malformed",
        ),
        (
            frame(br#"{"v":1,"id":3,"op":"vnet_list","sneaky":true}"#),
            "unknown field",
        ),
        (((64u32 << 20).to_be_bytes()).to_vec(), "exceeds the limit"),
    ];
    for (bytes, needle) in cases {
        let r = raw_exchange(&d.sock, &bytes).expect("an error reply");
        assert_eq!(r["error"]["kind"], "bad_request", "{r}");
        assert!(
            r["error"]["message"].as_str().unwrap().contains(needle),
            "{r}"
        );
    }
    // A client that vanishes inside the length gets nothing; one that
    // vanishes inside the body is told why. Neither harms anyone.
    for bytes in [&[0u8, 0][..], &[][..]] {
        assert!(raw_exchange(&d.sock, bytes).is_none());
    }
    let r = raw_exchange(&d.sock, &[0, 0, 0, 50, b'{', b'"']).expect("an error reply");
    assert_eq!(r["error"]["kind"], "bad_request", "{r}");
    // Many requests on one connection, good and bad mixed, answered in order.
    let mut s = UnixStream::connect(&d.sock).unwrap();
    for i in 0..50u64 {
        let body = if i % 2 == 0 {
            format!(r#"{{"v":1,"id":{i},"op":"vnet_show","args":{{"name":"keep"}}}}"#)
        } else {
            format!(r#"{{"v":1,"id":{i},"op":"vnet_show","args":{{"name":"missing"}}}}"#)
        };
        s.write_all(&frame(body.as_bytes())).unwrap();
    }
    for i in 0..50u64 {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).unwrap();
        let r: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(r["id"], i);
        assert_eq!(r.get("ok").is_some(), i % 2 == 0, "{r}");
    }
    assert_eq!(d.json("vnet show keep")["name"], "keep");
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

fn privileged() -> bool {
    if is_root() && Command::new("setpriv").arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("VNET_REQUIRE_PRIV").is_none(),
        "VNET_REQUIRE_PRIV is set but this test cannot run as another user (needs root and setpriv)"
    );
    eprintln!("skipped: needs root and setpriv to act as another user");
    false
}

#[test]
fn another_user_owns_their_vnets_and_cannot_touch_anyone_elses() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("users");
    build_pair(&d);
    let nobody = Some(65534);
    let o = d.ctl_as(nobody, "vnet add mine");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(d.json("vnet show mine")["owner"], 65534);
    let o = d.ctl_as(nobody, "-n mine link add e0 type epair peer e1");
    assert!(o.status.success(), "{}", stderr(&o));
    for args in [
        "-n red link set eth0 down",
        "-n red addr add 10.0.3.1/24 dev eth0",
        "-n red sysctl set net.inet.ip.ttl=1",
        "vnet del red",
        "vnet add sub --parent red",
        "-n mine link add x0 type epair peer x1 vnet red",
    ] {
        let o = d.ctl_as(nobody, args);
        assert_eq!(o.status.code(), Some(2), "{args}");
        assert!(
            stderr(&o).contains("belongs to root"),
            "{args}: {}",
            stderr(&o)
        );
    }
    // Nor see them; root can change the user's vnet.
    let o = d.ctl_as(nobody, "-n red link show");
    assert!(
        stderr(&o).contains("may see only its own vnets"),
        "{}",
        stderr(&o)
    );
    d.ok("-n mine link set e0 up");
    let o = d.ctl_as(Some(65533), "vnet del mine");
    assert!(
        stderr(&o).contains("belongs to uid 65534"),
        "{}",
        stderr(&o)
    );
    // Root's vnet under the user's: the user cannot take it along.
    d.ok("vnet add rootsvc --parent mine");
    let o = d.ctl_as(nobody, "vnet del mine -r");
    assert!(
        stderr(&o).contains(r#"vnet "rootsvc" belongs to root"#),
        "{}",
        stderr(&o)
    );
    assert!(d.json("vnet show rootsvc").is_object());
    // A refused move changes nothing.
    let o = d.ctl_as(nobody, "-n mine link set e0 vnet red");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        d.json("-n mine link show")
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "e0")
    );
    // A user's apply and dump see only the user's vnets.
    let f = d.dir.join("user.toml");
    std::fs::write(&f, "[vnet.mine]\n[vnet.extra]\n").unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let o = d.ctl_as(nobody, &format!("apply {}", f.display()));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        d.json("vnet show red").is_object(),
        "root's vnets untouched"
    );
    let dump = String::from_utf8(d.ctl_as(nobody, "dump").stdout).unwrap();
    assert!(
        dump.contains("[vnet.extra]") && !dump.contains("vnet.red"),
        "{dump}"
    );
    d.ok("vnet del mine -r");
}

#[test]
fn one_user_holding_many_connections_cannot_lock_out_root() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("flood");
    let script = format!(
        "import socket, time\nss = [socket.socket(socket.AF_UNIX) for _ in range(40)]\n[s.connect('{}') for s in ss]\nprint('held', flush=True)\ntime.sleep(10)\n",
        d.sock.display()
    );
    let mut flood = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        // Debian's python, which any user may run (a per-user install may not be).
        .arg(if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        })
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = [0u8; 4];
    flood
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut line)
        .unwrap();
    assert_eq!(&line, b"held");
    // The server accepts the 40 in its own time: wait until it refuses.
    let t0 = std::time::Instant::now();
    let refused = loop {
        let o = d.ctl_as(Some(65534), "vnet list");
        if o.status.code() == Some(2) && stderr(&o).contains("too many connections") {
            break true;
        }
        if t0.elapsed() > Duration::from_secs(5) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(refused, "the 41st connection of one user is refused");
    assert!(
        d.ctl_as(Some(65533), "vnet list").status.success(),
        "another user is still served"
    );
    d.ok("vnet list");
    let _ = flood.kill();
    let _ = flood.wait();
}

#[test]
fn a_clean_stop_removes_the_socket_and_leaves_no_process() {
    let mut d = Daemon::start("stop");
    build_pair(&d);
    let pid = d.pid();
    assert!(Path::new(&format!("/proc/{pid}/task")).exists());
    // Even with its socket file removed by someone, it stops.
    std::fs::remove_file(&d.sock).unwrap();
    let st = d.stop();
    assert!(st.success(), "{st}");
    assert!(!d.sock.exists(), "socket removed");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "process gone");
    // A new server starts on the same path afterwards.
    let mut again = Daemon::start_at(&d.sock);
    assert_eq!(
        again.json("vnet list").as_array().unwrap().len(),
        1,
        "a fresh world"
    );
    assert!(again.stop().success());
}

#[test]
fn a_second_server_on_the_same_socket_is_refused_and_a_stale_socket_is_replaced() {
    let d = Daemon::start("twice");
    let o = Command::new(env!("CARGO_BIN_EXE_vnetd"))
        .arg("--socket")
        .arg(&d.sock)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("another vnetd"), "{}", stderr(&o));
    d.ok("vnet list");
    // A leftover socket file with nobody behind it.
    let stale = d.dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let mut d2 = Daemon::start_at(&stale);
    d2.ok("vnet list");
    assert!(d2.stop().success());
}

impl Daemon {
    fn start_at(sock: &Path) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_vnetd"))
            .arg("--socket")
            .arg(sock)
            .arg("--empty")
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while UnixStream::connect(sock).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child: Some(child),
            dir: sock.parent().unwrap().join("unused"),
            sock: sock.to_path_buf(),
        }
    }
}

#[test]
fn a_tap_link_made_with_vnetctl_reaches_the_kernel_and_goes_away_with_vnetd() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start("tap");
    let ns = format!("vnet-test-{}-ctl", std::process::id());
    let host = format!("vc{}", std::process::id() % 100_000);
    let ip = |args: &[&str]| {
        let o = Command::new("ip").args(args).output().unwrap();
        assert!(o.status.success(), "ip {args:?}: {}", stderr(&o));
    };
    struct NsGuard(String);
    impl Drop for NsGuard {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    ip(&["netns", "add", &ns]);
    let _guard = NsGuard(ns.clone());
    d.ok("vnet add edge");
    d.ok(&format!("-n edge link add eth0 type tap host {host}"));
    d.ok("-n edge link set eth0 up");
    d.ok("-n edge addr add 10.60.0.2/24 dev eth0");
    ip(&["link", "set", &host, "netns", &ns]);
    ip(&["-n", &ns, "addr", "add", "10.60.0.1/24", "dev", &host]);
    ip(&["-n", &ns, "link", "set", &host, "up"]);
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            "10.60.0.2",
        ])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let links = d.json("-n edge link show");
    let eth0 = links
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "eth0")
        .unwrap();
    assert_eq!(
        (eth0["kind"].as_str(), eth0["host"].as_str()),
        (Some("tap"), Some(host.as_str()))
    );
    assert!(eth0["stats"]["rx_packets"].as_u64().unwrap() >= 2);
    // Only root links vnets to the host.
    let o = d.ctl_as(Some(65534), "vnet add theirs");
    assert!(o.status.success());
    let o = d.ctl_as(Some(65534), "-n theirs link add t0 type tap host vnetnope0");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("has no delegation of host interface \"vnetnope0\""),
        "{}",
        stderr(&o)
    );
    assert!(d.stop().success());
    let gone = Command::new("ip")
        .args(["-n", &ns, "link", "show", &host])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the TAP outlived vnetd");
}

#[test]
fn a_user_running_their_own_vnetd_administers_it() {
    if !privileged() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vnetd-test-{}-own", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let sock = dir.join("vnetd.sock");
    let child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_vnetd"),
            "--socket",
        ])
        .arg(&sock)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while UnixStream::connect(&sock).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "vnetd did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let d = Daemon {
        child: Some(child),
        dir,
        sock,
    };
    // The default topology is the running user's, to change as they like.
    assert_eq!(d.json("vnet show red")["owner"], 65534);
    let o = d.ctl_as(Some(65534), "-n red link set eth0 down");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = d.ctl_as(Some(65533), "-n red link set eth0 up");
    assert!(
        stderr(&o).contains("belongs to uid 65534"),
        "{}",
        stderr(&o)
    );
    d.ok("-n red link set eth0 up");
}
