//! Processes and network namespaces for the benchmarks: each named after
//! the benchmark's pid, removed by exactly that name when dropped.
#![allow(dead_code)]

use std::process::{Child, Command};

/// Runs a command, failing with its error output if it fails.
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

/// A network namespace of this benchmark run.
pub struct Netns(pub String);

impl Netns {
    /// Creates `vnetbench-PID-TAG` with its loopback up.
    pub fn new(tag: &str) -> Netns {
        let name = format!("vnetbench-{}-{tag}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }
    /// A shell command line run inside.
    pub fn cmd(&self, shell: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, "sh", "-c", shell]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A child process, killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
