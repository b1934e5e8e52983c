//! Topology files: vnetd --config builds one, `vnetctl apply` changes a
//! running server to match another making only the differences, `vnetctl
//! dump` writes the state back, and a dump re-applied changes nothing.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Daemon {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
}

impl Daemon {
    fn start(tag: &str, extra: &[&str]) -> Result<Daemon, Output> {
        let dir = std::env::temp_dir().join(format!("vnet-topo-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_vnetd"))
            .arg("--socket")
            .arg(&sock)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while UnixStream::connect(&sock).is_err() {
            if let Some(_st) = child.try_wait().unwrap() {
                // It refused to start: nothing of it stays behind.
                let _ = std::fs::remove_dir_all(&dir);
                return Err(child.wait_with_output().unwrap());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "vnetd did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Daemon { child, dir, sock })
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_vnetctl"))
            .arg("--socket")
            .arg(&self.sock)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.ctl(args);
        assert!(
            o.status.success(),
            "vnetctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn apply(&self, text: &str) -> Vec<String> {
        let f = self.dir.join("apply.toml");
        std::fs::write(&f, text).unwrap();
        let v: Value =
            serde_json::from_str(&self.ok(&["-j", "apply", f.to_str().unwrap()])).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["-j"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/topologies")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn vnetd_builds_its_config_and_the_default_topology() {
    let d = Daemon::start("cfg", &["--config", &example("router.toml")]).unwrap();
    let names: Vec<String> = d
        .json(&["vnet", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(
        d.json(&["-n", "r", "sysctl", "get", "net.inet.ip.forwarding"])[0]["value"],
        1
    );
    let routes = d.ok(&["-n", "a", "route", "show"]);
    assert!(
        routes.contains("default via 10.1.0.254 dev eth0 proto static"),
        "{routes}"
    );
    drop(d);
    let d = Daemon::start("default", &[]).unwrap();
    let addrs = d.ok(&["-n", "blue", "addr", "show"]);
    assert!(addrs.contains("eth0: inet 10.0.0.2/24"), "{addrs}");
}

#[test]
fn applying_a_changed_file_makes_only_the_difference_and_a_dump_round_trips() {
    let d = Daemon::start("apply", &["--empty"]).unwrap();
    let router = std::fs::read_to_string(example("router.toml")).unwrap();
    let first = d.apply(&router);
    assert!(first.contains(&"vnet add r".to_string()), "{first:?}");
    assert!(
        first.contains(&"-n r link add eth1 type epair peer eth0 vnet b".to_string()),
        "{first:?}"
    );
    assert!(
        d.apply(&router).is_empty(),
        "the same file again changes nothing"
    );

    // Change one address, drop b's IPv6 default route, add a vnet c,
    // and turn IPv6 forwarding off.
    let changed = router
        .replace(r#"addr = ["10.2.0.1/24", "fd02::1/64"]"#, r#"addr = ["10.2.0.7/24", "fd02::1/64"]"#)
        .replace(
            r#"route = [{ dst = "default", via = "10.2.0.254" }, { dst = "default6", via = "fd02::fe" }]"#,
            r#"route = [{ dst = "default", via = "10.2.0.254" }]"#,
        )
        .replace(r#", "net.inet6.ip6.forwarding" = 1"#, "")
        + "\n[vnet.c]\n";
    let mut got = d.apply(&changed);
    got.sort();
    let mut want = vec![
        "-n b addr del 10.2.0.1/24 dev eth0".to_string(),
        "-n b addr add 10.2.0.7/24 dev eth0".to_string(),
        "-n b route del default6".to_string(),
        "-n r sysctl set net.inet6.ip6.forwarding=0".to_string(),
        "vnet add c".to_string(),
    ];
    want.sort();
    assert_eq!(got, want);

    // The dump, applied, changes nothing; and it describes what is there.
    let dump = d.ok(&["dump"]);
    assert!(dump.contains("[vnet.c]"), "{dump}");
    assert!(
        d.apply(&dump).is_empty(),
        "dump re-applied changed something:\n{dump}"
    );

    // Removing a vnet (and the link to it) from the file removes both.
    let mut without_b = String::new();
    for (i, sect) in router.split("\n[").enumerate() {
        if i == 0 {
            without_b += sect;
            without_b += "\n";
        } else if !sect.starts_with("vnet.b") && !sect.starts_with("vnet.r.link.eth1") {
            without_b += &format!("[{sect}\n");
        }
    }
    let mut got = d.apply(&without_b);
    got.sort();
    assert!(got.contains(&"vnet del b".to_string()), "{got:?}");
    assert!(got.contains(&"-n r link del eth1".to_string()), "{got:?}");
    assert!(got.contains(&"vnet del c".to_string()), "{got:?}");
    assert_eq!(d.ctl(&["vnet", "show", "b"]).status.code(), Some(2));
    assert!(d.apply(&without_b).is_empty());
}

#[test]
fn a_file_with_a_type_error_is_refused_with_its_line_and_field_and_changes_nothing() {
    let d = Daemon::start("bad", &["--empty"]).unwrap();
    for (text, needles) in [
        (
            "[vnet.a.link.eth0]\ntype = \"epair\"\nup = \"yes\"\n",
            &["line 3", "up"][..],
        ),
        ("[vnet.a]\nrouet = []\n", &["line 2", "rouet"][..]),
        (
            "[vnet.a.link.eth0]\ntype = \"wormhole\"\n",
            &["wormhole"][..],
        ),
        ("[vnet.a.link.eth0]\nup = true\n", &["no type"][..]),
        (
            "[vnet.a.link.eth0]\ntype = \"epair\"\n",
            &["needs peer"][..],
        ),
    ] {
        let f = d.dir.join("bad.toml");
        std::fs::write(&f, text).unwrap();
        let o = d.ctl(&["apply", f.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&o.stderr);
        for n in needles {
            assert!(err.contains(n), "{text}: {err}");
        }
    }
    // A semantic error stops at the failing change and says so.
    let f = d.dir.join("semantic.toml");
    std::fs::write(&f, "[vnet.a.link.eth0]\ntype = \"epair\"\npeer = { vnet = \"b\", name = \"eth0\" }\nup = true\naddr = [\"10.0.0.300/24\"]\n[vnet.b.link.eth0]\n").unwrap();
    let o = d.ctl(&["apply", f.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "refused by vnetd, not a usage error"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("10.0.0.300/24"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        d.json(&["vnet", "list"]).as_array().unwrap().len(),
        3,
        "the changes before it stay made"
    );

    // vnetd refuses a bad --config before serving.
    let bad = d.dir.join("bad.toml");
    std::fs::write(&bad, "[vnet.a]\nparent = 7\n").unwrap();
    let out = Daemon::start("badcfg", &["--config", bad.to_str().unwrap()])
        .err()
        .expect("refused");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("parent"), "{err}");
}

#[test]
fn sighup_re_reads_the_config_file() {
    let dir = std::env::temp_dir().join(format!("vnet-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("t.toml");
    std::fs::write(&cfg, "[vnet.one]\n").unwrap();
    let d = Daemon::start("hup", &["--config", cfg.to_str().unwrap()]).unwrap();
    std::fs::write(&cfg, "[vnet.one]\n[vnet.two]\n").unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status();
    let t0 = Instant::now();
    while d.ctl(&["vnet", "show", "two"]).status.code() != Some(0) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "SIGHUP did not re-read the file"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn apply_keeps_what_the_file_keeps_across_address_and_link_changes() {
    let d = Daemon::start("keep", &["--empty"]).unwrap();
    let router = std::fs::read_to_string(example("router.toml")).unwrap();
    d.apply(&router);
    // a moves to another address in the same prefix: its default route,
    // through that prefix, must survive.
    let moved = router.replace(
        r#"addr = ["10.1.0.1/24", "fd01::1/64"]"#,
        r#"addr = ["10.1.0.9/24", "fd01::1/64"]"#,
    );
    let got = d.apply(&moved);
    assert_eq!(
        got,
        [
            "-n a addr add 10.1.0.9/24 dev eth0",
            "-n a addr del 10.1.0.1/24 dev eth0"
        ]
    );
    assert!(
        d.ok(&["-n", "a", "route", "show"])
            .contains("default via 10.1.0.254")
    );
    assert!(d.apply(&moved).is_empty());
    // A down interface with addresses, and tunables that move the port
    // range up, survive a dump round trip.
    d.ok(&["-n", "b", "link", "set", "eth0", "down"]);
    d.ok(&[
        "-n",
        "b",
        "sysctl",
        "set",
        "net.inet.ip.portrange.first=1500",
    ]);
    d.ok(&[
        "-n",
        "b",
        "sysctl",
        "set",
        "net.inet.ip.portrange.last=2000",
    ]);
    let dump = d.ok(&["dump"]);
    assert!(d.apply(&dump).is_empty(), "{dump}");
    let got = d.apply(&moved);
    assert_eq!(
        got,
        [
            "-n b link set eth0 up",
            "-n b sysctl set net.inet.ip.portrange.last=65535",
            "-n b sysctl set net.inet.ip.portrange.first=49152",
        ]
    );
    // A file that names an epair from one end only: the far end's vnet is
    // listed without the link; applying twice changes nothing the second time.
    let one_sided =
        "[vnet.x.link.e0]\ntype = \"epair\"\npeer = { vnet = \"y\", name = \"e0\" }\n\n[vnet.y]\n";
    let first = d.apply(one_sided);
    assert!(
        first.contains(&"-n x link add e0 type epair peer e0 vnet y".to_string()),
        "{first:?}"
    );
    assert!(d.apply(one_sided).is_empty());
    // An epair end whose peer is gone is left out of the dump, which
    // still applies.
    d.ok(&["vnet", "del", "x"]);
    let dump = d.ok(&["dump"]);
    assert!(!dump.contains("[vnet.y.link"), "{dump}");
    d.apply(&dump);
}

#[test]
fn a_file_whose_parents_are_missing_or_different_is_refused_before_any_change() {
    let d = Daemon::start("parents", &[]).unwrap();
    let f = d.dir.join("lab.toml");
    std::fs::write(&f, "[vnet.lab]\nparent = \"red\"\n").unwrap();
    let o = d.ctl(&["apply", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains(r#"parent "red" is not in the file"#));
    assert!(
        d.ctl(&["vnet", "show", "red"]).status.success(),
        "nothing was destroyed"
    );
    std::fs::write(&f, "[vnet.p]\n[vnet.red]\nparent = \"p\"\n").unwrap();
    let o = d.ctl(&["apply", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("exists under"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        d.ctl(&["vnet", "show", "p"]).status.code(),
        Some(2),
        "refused before any change"
    );
}
