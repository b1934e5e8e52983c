//! The control plane of vnetd: a versioned request/reply protocol over a
//! Unix socket ([`proto`]), the server that carries requests out with
//! per-user permissions ([`server`]), and the client side used by vnetctl
//! ([`client`]).
//!
//! Permissions: root (and the user vnetd runs as) may do anything. Any
//! other user may create vnets (under `vnet0` or under a vnet of their
//! own), up to their quota, which they then own, and see and change only
//! vnets they own; links to the host and ports on others' switches need a
//! delegation ([`tenancy`]). Every refusal says which rule refused it.

pub mod client;
pub mod l2;
pub mod peercred;
pub mod proto;
pub mod server;
pub mod tenancy;
pub mod topology;

/// Where vnetd listens by default: `/run/vnetd.sock` for root,
/// `$XDG_RUNTIME_DIR/vnetd.sock` for other users; `VNETD_SOCKET` overrides
/// both.
pub fn default_socket_path() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("VNETD_SOCKET") {
        return p.into();
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !root => std::path::Path::new(&d).join("vnetd.sock"),
        _ => "/run/vnetd.sock".into(),
    }
}
