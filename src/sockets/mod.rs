//! The socket server: sockets of any vnet for local processes.
//!
//! vnetd serves TCP and UDP sockets of its vnets to other processes, the
//! way the Hurd's pfinet served them through a patched glibc. A program's
//! socket is a real descriptor, one end of a Unix socket pair; vnetd holds
//! the other end and its worker moves bytes between that end and the vnet's
//! stack. So the program's own `read`, `write`, `poll`, `select` and
//! `epoll` work on it natively, and only calls that are about the network
//! (`connect`, `bind`, `listen`, `getsockname`, ...) become requests.
//!
//! - [`wire`]: the protocol, the data-channel formats and descriptor passing.
//! - [`server`]: sessions and requests (in vnetd).
//! - [`table`]: the per-vnet socket records and the data pump.
//! - [`client`]: the Rust client (`TcpStream`, `TcpListener`, `UdpSocket`
//!   in any vnet, as real descriptors).
//! - [`dns`]: per-vnet hosts entries and resolver configuration.
//! - [`resolve`]: name lookups through a vnet (hosts entries, then the
//!   vnet's name servers over the vnet's own UDP).
//!
//! Unmodified programs reach it through the preload library (`preload/`).

pub mod client;
pub mod dns;
pub mod resolve;
pub mod server;
pub mod table;
pub mod wire;
