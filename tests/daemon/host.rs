//! The host side of a test: privilege, network namespaces and processes of
//! the test's own, each removed (by name or pid) when dropped.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether TAP devices and namespaces can be made (root and /dev/net/tun);
/// with `VNET_REQUIRE_PRIV` set, lacking them fails the test.
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
        "VNET_REQUIRE_PRIV is set but this test cannot run (root: {root}, /dev/net/tun: {tun})"
    );
    eprintln!("skipped: needs root and /dev/net/tun");
    false
}

/// Runs a command, failing the test with its stderr if it fails.
pub fn sh(args: &[&str]) -> String {
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
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A network namespace of this test's own, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    /// `vnet-test-PID-TAG`, with its loopback up.
    pub fn new(tag: &str) -> Netns {
        let name = format!("vnet-test-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }

    /// A command run inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    /// Moves host interface `dev` in and gives it `addrs`, up.
    pub fn take(&self, dev: &str, addrs: &[&str]) {
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

/// A program started in the background, killed (by its own pid) if the
/// test ends first.
pub struct Bg(pub Child);

impl Bg {
    /// Starts `c` with no stdin.
    pub fn spawn(mut c: Command) -> Bg {
        Bg(c.stdin(Stdio::null()).spawn().expect("spawn"))
    }

    /// Reads the program's piped stdout to its end, then reaps it.
    pub fn stdout(mut self) -> String {
        let mut s = String::new();
        if let Some(mut o) = self.0.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut o, &mut s);
        }
        let _ = self.0.wait();
        s
    }

    /// Waits for the program, failing the test after `limit`.
    pub fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st;
            }
            assert!(t0.elapsed() < limit, "program did not finish");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `cond` holds, failing the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
