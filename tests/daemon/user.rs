//! Acting as an ordinary user: commands run under another uid (`setpriv`),
//! and a vnetd of that user's own, unprivileged, its socket in a private
//! runtime directory. Used by the tests and the benchmarks of tenancy.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::host::wait_for;

/// `program` run as `uid` (no groups, no stdin).
pub fn as_user(uid: u32, program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".into(),
        "--".into(),
        program.into(),
    ]);
    c.env("HOME", "/").stdin(Stdio::null());
    c
}

/// A directory for `uid` only (0700), as `XDG_RUNTIME_DIR` is; `tag` and
/// the test's pid make it unique.
pub fn private_dir(uid: u32, tag: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("vnet-user-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// A vnetd run by an ordinary user; stopped (by its pid: setpriv execs
/// vnetd) and its directory removed when dropped.
pub struct UserVnetd {
    child: Child,
    /// Its runtime directory.
    pub dir: PathBuf,
    /// Its control socket.
    pub sock: PathBuf,
}

impl UserVnetd {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// With no vnets but vnet0.
    pub fn start(uid: u32, tag: &str) -> UserVnetd {
        Self::start_with(uid, tag, None)
    }

    /// Built from a topology file, when given.
    pub fn start_with(uid: u32, tag: &str, topology: Option<&str>) -> UserVnetd {
        let dir = private_dir(uid, tag);
        let mut c = as_user(uid, env!("CARGO_BIN_EXE_vnetd"));
        match topology {
            Some(t) => {
                let f = dir.join("net.toml");
                std::fs::write(&f, t).unwrap();
                std::os::unix::fs::chown(&f, Some(uid), Some(uid)).unwrap();
                c.arg("--config").arg(f);
            }
            None => {
                c.arg("--empty");
            }
        }
        let child = c
            .env("XDG_RUNTIME_DIR", &dir)
            .env_remove("VNETD_SOCKET")
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let sock = dir.join("vnetd.sock");
        wait_for("the user's vnetd", Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&sock).is_ok()
        });
        UserVnetd { child, dir, sock }
    }
}

impl Drop for UserVnetd {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
