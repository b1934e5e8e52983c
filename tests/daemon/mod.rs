//! A vnetd of the test's own, on a private socket, with a topology given as
//! text; stopped (and its files removed) when dropped.
#![allow(dead_code)]

pub mod host;
pub mod user;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running vnetd.
pub struct Vnetd {
    child: Child,
    pub dir: PathBuf,
    pub sock: PathBuf,
}

/// Two vnets, red (10.0.0.1, fd00::1) and blue (10.0.0.2, fd00::2), on an
/// epair.
pub const TWO_HOSTS: &str = r#"
[vnet.red.link.eth0]
type = "epair"
peer = { vnet = "blue", name = "eth0" }
up = true
addr = ["10.0.0.1/24", "fd00::1/64"]

[vnet.blue.link.eth0]
up = true
addr = ["10.0.0.2/24", "fd00::2/64"]
"#;

impl Vnetd {
    /// Starts vnetd with `topology`; `tag` makes its files unique.
    pub fn start(tag: &str, topology: &str) -> Vnetd {
        let dir = std::env::temp_dir().join(format!("vnetd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let cfg = dir.join("topology.toml");
        std::fs::write(&cfg, topology).unwrap();
        let sock = dir.join("vnetd.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_vnetd"))
            .arg("--socket")
            .arg(&sock)
            .arg("--config")
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start vnetd");
        let t0 = Instant::now();
        while UnixStream::connect(&sock).is_err() || !sockets_path(&sock).exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "vnetd did not come up"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Vnetd { child, dir, sock }
    }

    /// The socket server's path.
    pub fn sockets(&self) -> PathBuf {
        sockets_path(&self.sock)
    }

    /// vnetctl with this server's socket.
    pub fn ctl(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vnetctl"));
        c.arg("--socket").arg(&self.sock);
        c
    }

    /// Runs vnetctl with `args`, expecting success.
    pub fn ctl_ok(&self, args: &[&str]) -> Output {
        let out = self.ctl().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "vnetctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `vnetctl exec VNET -- argv...` as a command to finish setting up.
    pub fn exec(&self, vnet: &str, argv: &[&str]) -> Command {
        let mut c = self.ctl();
        c.env("VNET_PRELOAD", preload())
            .arg("exec")
            .arg(vnet)
            .arg("--")
            .args(argv);
        c
    }

    /// Runs vnetctl with `-j` and `args`, expecting success; its JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["-j"];
        a.extend_from_slice(args);
        serde_json::from_slice(&self.ctl_ok(&a).stdout).unwrap()
    }

    /// Makes vnet `vnet` with interface eth0 on `switch`, up, with `addrs`.
    pub fn on_switch(&self, vnet: &str, switch: &str, addrs: &[&str]) {
        self.ctl_ok(&["vnet", "add", vnet]);
        self.ctl_ok(&[
            "-n", vnet, "link", "add", "eth0", "type", "port", "switch", switch,
        ]);
        self.ctl_ok(&["-n", vnet, "link", "set", "eth0", "up"]);
        for a in addrs {
            self.ctl_ok(&["-n", vnet, "addr", "add", a, "dev", "eth0"]);
        }
    }

    /// Starts `vnetctl capture ARGS -w FILE` and waits until the file has
    /// its header (the capture is in place).
    pub fn capture(&self, args: &[&str], file: &Path) -> host::Bg {
        let mut c = self.ctl();
        c.arg("capture").args(args).arg("-w").arg(file);
        let bg = host::Bg::spawn(c);
        host::wait_for("the capture to start", Duration::from_secs(10), || {
            std::fs::metadata(file).is_ok_and(|m| m.len() >= 24)
        });
        bg
    }

    /// Whether vnetd is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// The preload library, built (once per test binary) with the profile and
/// into the target directory the tests were built with.
pub fn preload() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let bin = Path::new(env!("CARGO_BIN_EXE_vnetctl"));
            let profile_dir = bin.parent().unwrap();
            let target = profile_dir.parent().unwrap();
            let mut c = Command::new(env!("CARGO"));
            c.args(["build", "--quiet", "-p", "vnet-preload", "--target-dir"])
                .arg(target);
            if profile_dir.file_name() == Some(std::ffi::OsStr::new("release")) {
                c.arg("--release");
            }
            let st = c.status().expect("run cargo build -p vnet-preload");
            assert!(st.success(), "building the preload library failed");
            let lib = profile_dir.join("libvnet_preload.so");
            assert!(lib.exists(), "{} missing after the build", lib.display());
            lib
        })
        .clone()
}

fn sockets_path(ctl: &Path) -> PathBuf {
    let mut p = ctl.as_os_str().to_owned();
    p.push(".sockets");
    p.into()
}

impl Drop for Vnetd {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
