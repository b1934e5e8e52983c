//! Programs a test starts in the background (killed by their own pid if
//! the test ends first), and waiting for a condition. Namespaces and
//! privileges are in `tests/kernel/`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// The `fields` of the frames in capture `file` that match display filter
/// `filter`, as tshark prints them (tab-separated, a line per frame).
pub fn tshark(file: &std::path::Path, fields: &[&str], filter: Option<&str>) -> Vec<String> {
    let mut c = Command::new("tshark");
    c.arg("-n").arg("-r").arg(file).args(["-T", "fields"]);
    for f in fields {
        c.args(["-e", f]);
    }
    if let Some(f) = filter {
        c.args(["-Y", f]);
    }
    let o = c.output().expect("tshark");
    assert!(
        o.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
