//! The Linux kernel as a peer: whether the tests may make network
//! namespaces and TAP devices, a namespace of the test's own, and child
//! processes that do not outlive the test. The benchmarks use it too.
#![allow(dead_code)]

use std::process::{Child, Command};

/// Whether this process may make namespaces and TAP devices (root and
/// /dev/net/tun). When not, a test skips, unless `VNET_REQUIRE_PRIV` is
/// set, in which case it fails.
pub fn privileged() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let tun = std::path::Path::new("/dev/net/tun").exists();
    if root && tun {
        return true;
    }
    assert!(
        std::env::var_os("VNET_REQUIRE_PRIV").is_none(),
        "VNET_REQUIRE_PRIV is set but TAP tests cannot run (root: {root}, /dev/net/tun: {tun})"
    );
    eprintln!("skipped: needs root and /dev/net/tun");
    false
}

/// Runs a command, failing the test with its stderr if it fails.
pub fn sh(args: &[&str]) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect(args[0]);
    assert!(
        o.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A network namespace of this test's own (its name holds the test
/// process's pid and a tag), deleted on drop.
pub struct Netns(pub String);

impl Netns {
    /// Makes `vnet-test-<pid>-<tag>` with its loopback up.
    pub fn new(tag: &str) -> Netns {
        let name = format!("vnet-test-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }

    /// A shell command line run inside the namespace.
    pub fn cmd(&self, shell: &str) -> Command {
        self.exec(&["sh", "-c", shell])
    }

    /// A command run inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    /// Moves host interface `dev` in and gives it these addresses, up.
    pub fn adopt(&self, dev: &str, addrs: &[&str]) {
        sh(&["ip", "link", "set", dev, "netns", &self.0]);
        for a in addrs {
            let mut args = vec!["ip", "-n", &self.0, "addr", "add", a, "dev", dev];
            if a.contains(':') {
                args.push("nodad");
            }
            sh(&args);
        }
        sh(&["ip", "-n", &self.0, "link", "set", dev, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A child process killed (by its own pid) on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
