//! Uplinks between two vnetds: a `SOCK_SEQPACKET` socket pair carries one
//! Ethernet frame per message between a port of one vnetd's switch and an
//! interface of a vnet in another (an unprivileged user's vnetd reaching
//! the outside through a port root delegated). Each end is driven by the
//! same pump as a TAP ([`super::tap`]); this is the device it drives.
//!
//! An OS edge: it reads and writes a descriptor.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::tap::{HostDev, HostIo, TapHandle, start_pump};
use super::wire::Wire;

/// One end of the pair.
struct SeqDev(OwnedFd);

impl HostDev for SeqDev {
    fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: receives into a live buffer of the given length from a
        // socket we own; MSG_DONTWAIT keeps the pump from blocking.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n > buf.len() {
            // Larger than any frame we take: dropped, the next one is read.
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "oversized frame",
            ));
        }
        if n == 0 {
            // The other side closed (an empty message is not a frame we
            // send): the pump stops polling us.
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        Ok(n)
    }

    fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sends from a live buffer on a socket we own; a full
        // socket drops the frame (as a full queue does) instead of
        // blocking the pump, and a closed peer raises no SIGPIPE.
        let n = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Starts a pump between `sock` and the two wires: `out` (read by the
/// pump, written to the socket) and `inb` (what the socket brings).
///
/// # Errors
/// Starting the thread, or a socket that is not a `SOCK_SEQPACKET` one.
pub(super) fn start(
    sock: OwnedFd,
    name: String,
    out: Arc<Wire>,
    inb: Arc<Wire>,
    io: HostIo,
) -> io::Result<TapHandle> {
    let mut ty: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: reads one int option into a live int of the given size.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut ty).cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if ty != libc::SOCK_SEQPACKET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an uplink needs a SOCK_SEQPACKET socket",
        ));
    }
    // Room for bursts: a frame of 64 KiB at most, many queued.
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        let v: libc::c_int = 4 << 20;
        // SAFETY: sets one int option from a live int.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&raw const v).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    start_pump(Box::new(SeqDev(sock)), name, out, inb, io)
}
