//! Who is on the other end of a Unix socket (`SO_PEERCRED`).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// The uid of the process that connected `s`, as the kernel recorded it.
pub fn peer_uid(s: &UnixStream) -> Option<u32> {
    peer_uid_fd(s.as_raw_fd())
}

/// The pid of the process that connected `s`.
pub fn peer_pid(s: &UnixStream) -> Option<u32> {
    peer_cred(s.as_raw_fd()).map(|c| c.pid as u32)
}

/// The uid of the process that connected the Unix socket `fd`.
pub fn peer_uid_fd(fd: std::os::fd::RawFd) -> Option<u32> {
    peer_cred(fd).map(|c| c.uid)
}

fn peer_cred(fd: std::os::fd::RawFd) -> Option<libc::ucred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes passed, and
    // the caller keeps the descriptor open for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<libc::ucred>()).then_some(cred)
}
