//! The control protocol: messages and their framing.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! UTF-8 JSON, at most [`MAX_FRAME`] bytes. The client sends [`Request`]s;
//! the server answers each with one [`Reply`] carrying the same `id`, in
//! order. Every request names the protocol version it speaks (`v`); the
//! server refuses others. The control protocol is separate from the socket
//! data path, which will not go through it.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// Largest request frame the server accepts, in bytes.
pub const MAX_FRAME: usize = 1 << 20;

/// Largest reply frame, in bytes (a listing of many vnets is large).
pub const MAX_REPLY: usize = 64 << 20;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Protocol version (must be [`VERSION`]).
    pub v: u32,
    /// Chosen by the client, echoed in the reply.
    pub id: u64,
    /// What to do.
    #[serde(flatten)]
    pub op: Op,
}

/// The operations. Fields named `vnet` say which vnet the operation acts in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "op",
    content = "args",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Op {
    /// Create a vnet.
    VnetAdd {
        /// Its name.
        name: String,
        /// Its parent (default `vnet0`).
        parent: Option<String>,
        /// Its limits and restrictions (on it and everything under it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        restrict: Option<Restriction>,
    },
    /// Narrow a vnet's limits and restrictions (root may also widen, and
    /// `lift` them).
    VnetRestrict {
        /// The vnet.
        name: String,
        /// What to set; fields not given stay.
        #[serde(default)]
        restrict: Restriction,
        /// Limits or restrictions to remove (`vnets`, `interfaces`,
        /// `sockets`, `mem`, `addrs`, `links`, `forward`): root only.
        #[serde(default)]
        lift: Vec<String>,
    },
    /// Users' quotas and what they use (root: every user's; others:
    /// their own).
    QuotaShow {
        /// One user.
        #[serde(default)]
        user: Option<u32>,
    },
    /// Set a user's quota (or, without `user`, the default of users who
    /// have none of their own); root only.
    QuotaSet {
        /// The user; none for the default.
        #[serde(default)]
        user: Option<u32>,
        /// The limits (those not given: none).
        #[serde(default)]
        limits: Restriction,
        /// Go back to the default.
        #[serde(default)]
        reset: bool,
    },
    /// Give user `user` an uplink: ports on switch `target` (or links to
    /// host interface `target`) whose traffic root's side filters to
    /// `addrs` and limits to `rate`; root only.
    DelegateAdd {
        /// The user.
        user: u32,
        /// A switch, or a host interface.
        target: String,
        /// Prefixes the user's stacks may send from and receive for;
        /// empty: any (only meaningful for a whole interface).
        #[serde(default)]
        addrs: Vec<String>,
        /// Frames per second each way, per port.
        #[serde(default)]
        rate: Option<u64>,
        /// Burst, in frames (default: a tenth of a second's worth, at
        /// least 32).
        #[serde(default)]
        burst: Option<u64>,
    },
    /// Take a delegation back: its ports are unplugged.
    DelegateDel {
        /// Its number.
        id: u64,
    },
    /// The delegations (root: all; others: their own) with their ports.
    DelegateShow,
    /// Open a delegated uplink for another vnetd: the reply carries, as
    /// `SCM_RIGHTS`, one end of a `SOCK_SEQPACKET` pair that is a port of
    /// switch `switch` (one Ethernet frame per message); the port lives
    /// until that descriptor and this connection are closed.
    UplinkOpen {
        /// The switch.
        switch: String,
    },
    /// Create interface `name` in `vnet` as an uplink to a switch of
    /// another vnetd (`server`, default root's), through a delegated port.
    LinkAddUplink {
        /// The vnet.
        vnet: String,
        /// The interface's name.
        name: String,
        /// The switch, in the other vnetd.
        switch: String,
        /// The other vnetd's control socket (default `/run/vnetd.sock`).
        #[serde(default)]
        server: Option<String>,
    },
    /// Destroy a vnet.
    VnetDel {
        /// Its name.
        name: String,
        /// Destroy its children too.
        #[serde(default)]
        recursive: bool,
    },
    /// List vnets.
    VnetList,
    /// Describe one vnet.
    VnetShow {
        /// Its name.
        name: String,
    },
    /// Create an epair: `name` in `vnet`, `peer` in `peer_vnet`.
    LinkAddEpair {
        /// Vnet of the first end.
        vnet: String,
        /// Name of the first end.
        name: String,
        /// Name of the second end.
        peer: String,
        /// Vnet of the second end (default: the same vnet).
        peer_vnet: Option<String>,
    },
    /// Create interface `name` in `vnet`, joined to the Linux TAP device
    /// `host` (created if absent).
    LinkAddTap {
        /// The vnet.
        vnet: String,
        /// The interface's name in the vnet.
        name: String,
        /// The TAP device's name on the host.
        host: String,
    },
    /// Create interface `name` in `vnet`, attached through `AF_PACKET` to
    /// the existing host interface `host`.
    LinkAddAfPacket {
        /// The vnet.
        vnet: String,
        /// The interface's name in the vnet.
        name: String,
        /// The host interface.
        host: String,
    },
    /// Change an interface: up/down, MTU, or move it to another vnet.
    LinkSet {
        /// Its vnet.
        vnet: String,
        /// Its name.
        name: String,
        /// Set up (`true`) or down.
        up: Option<bool>,
        /// New MTU.
        mtu: Option<usize>,
        /// Move it to this vnet.
        to_vnet: Option<String>,
    },
    /// Destroy an interface.
    LinkDel {
        /// Its vnet.
        vnet: String,
        /// Its name.
        name: String,
    },
    /// List a vnet's interfaces.
    LinkShow {
        /// The vnet.
        vnet: String,
    },
    /// Add an address (`10.0.0.1/24`, `fd00::1/64`) to an interface.
    AddrAdd {
        /// The vnet.
        vnet: String,
        /// The interface.
        dev: String,
        /// Address and prefix length.
        addr: String,
    },
    /// Remove an address.
    AddrDel {
        /// The vnet.
        vnet: String,
        /// The interface.
        dev: String,
        /// Address and prefix length.
        addr: String,
    },
    /// List a vnet's addresses.
    AddrShow {
        /// The vnet.
        vnet: String,
    },
    /// Add a route (`dst` a prefix or `default`/`default6`).
    RouteAdd {
        /// The vnet.
        vnet: String,
        /// Destination prefix.
        dst: String,
        /// Gateway.
        via: Option<String>,
        /// Outgoing interface.
        dev: Option<String>,
    },
    /// Remove a route.
    RouteDel {
        /// The vnet.
        vnet: String,
        /// Destination prefix.
        dst: String,
    },
    /// List a vnet's routes.
    RouteShow {
        /// The vnet.
        vnet: String,
    },
    /// Read one tunable, or all of them.
    SysctlGet {
        /// The vnet.
        vnet: String,
        /// Its name; all when absent.
        key: Option<String>,
    },
    /// Set a tunable.
    SysctlSet {
        /// The vnet.
        vnet: String,
        /// Its name.
        key: String,
        /// The new value, as text.
        value: String,
    },
    /// A vnet's resolver configuration: hosts entries, name servers,
    /// search domains.
    DnsShow {
        /// The vnet.
        vnet: String,
    },
    /// Add addresses to a host name of a vnet.
    HostAdd {
        /// The vnet.
        vnet: String,
        /// The host name.
        name: String,
        /// Its addresses.
        addrs: Vec<String>,
    },
    /// Remove a host name of a vnet.
    HostDel {
        /// The vnet.
        vnet: String,
        /// The host name.
        name: String,
    },
    /// Set a vnet's name servers or search domains (each list replaced
    /// when given).
    DnsSet {
        /// The vnet.
        vnet: String,
        /// Name servers.
        #[serde(default)]
        nameservers: Option<Vec<String>>,
        /// Search domains.
        #[serde(default)]
        search: Option<Vec<String>>,
    },
    /// A vnet's sockets (`netstat`/`ss`).
    SocketShow {
        /// The vnet.
        vnet: String,
    },
    /// Add a firewall rule, given in its text form
    /// (`[NUM] ACTION [in|out|fwd] [recv|xmit|via IF] [proto P] [from ..] [to ..] ...`);
    /// replies with its number and canonical text.
    FwAdd {
        /// The vnet.
        vnet: String,
        /// The rule.
        rule: String,
    },
    /// Remove a firewall rule.
    FwDel {
        /// The vnet.
        vnet: String,
        /// The rule's number.
        number: u32,
    },
    /// A vnet's firewall: rules with their counters, the policies with
    /// theirs, the number of tracked connections.
    FwShow {
        /// The vnet.
        vnet: String,
    },
    /// Remove every firewall rule of a vnet (the policies stay).
    FwFlush {
        /// The vnet.
        vnet: String,
    },
    /// Set the default policy of a firewall hook.
    FwPolicy {
        /// The vnet.
        vnet: String,
        /// `in`, `out` or `fwd`.
        hook: String,
        /// `allow`, `drop`, `reject` or `reject admin`.
        action: String,
    },
    /// A vnet's protocol counters.
    Stats {
        /// The vnet.
        vnet: String,
    },
    /// Create a switch (the multiplexer that vnets and host devices plug
    /// into).
    SwitchAdd {
        /// Its name.
        name: String,
        /// `hub` or `learning` (default).
        #[serde(default)]
        mode: Option<crate::ifnet::SwitchMode>,
        /// MAC table aging in seconds (default 300).
        #[serde(default)]
        aging: Option<u64>,
        /// Bound on the MAC table (default 4096).
        #[serde(default)]
        max_macs: Option<usize>,
    },
    /// Change a switch's mode, aging or MAC table bound.
    SwitchSet {
        /// Its name.
        name: String,
        /// New mode.
        #[serde(default)]
        mode: Option<crate::ifnet::SwitchMode>,
        /// New aging in seconds.
        #[serde(default)]
        aging: Option<u64>,
        /// New MAC table bound.
        #[serde(default)]
        max_macs: Option<usize>,
    },
    /// Destroy a switch: its host ports close, vnet interfaces on it see
    /// their link down.
    SwitchDel {
        /// Its name.
        name: String,
    },
    /// Switches with their ports, counters and MAC tables (one, or all).
    SwitchShow {
        /// One switch, or all.
        #[serde(default)]
        name: Option<String>,
    },
    /// Plug a host device into a switch: a TAP (created if absent) or an
    /// existing interface through `AF_PACKET`.
    SwitchPortAdd {
        /// The switch.
        switch: String,
        /// `tap` or `af_packet`.
        kind: String,
        /// The host device.
        host: String,
    },
    /// Unplug a host port (vnet ports go with their interface: `link del`).
    SwitchPortDel {
        /// The switch.
        switch: String,
        /// The port's number.
        port: u32,
    },
    /// Create interface `name` in `vnet` on a new port of `switch`.
    LinkAddPort {
        /// The vnet.
        vnet: String,
        /// The interface's name.
        name: String,
        /// The switch.
        switch: String,
    },
    /// Add a filter to an interface or switch port, in one direction.
    FilterAdd {
        /// Where.
        at: Target,
        /// `in` (what the client receives) or `out` (what it sends).
        dir: String,
        /// Its name (default `f1`, `f2`, ...).
        #[serde(default)]
        name: Option<String>,
        /// A tcpdump expression, compiled by libpcap.
        #[serde(default)]
        expr: Option<String>,
        /// A classic BPF program in `tcpdump -ddd` form.
        #[serde(default)]
        bpf: Option<String>,
        /// Source prefixes the client may send from.
        #[serde(default)]
        allow_src: Vec<String>,
        /// Destination prefixes the client may receive.
        #[serde(default)]
        allow_dst: Vec<String>,
        /// Source MAC addresses the client may send from.
        #[serde(default)]
        allow_mac: Vec<String>,
    },
    /// Remove a filter.
    FilterDel {
        /// Where.
        at: Target,
        /// `in` or `out`.
        dir: String,
        /// Its name.
        name: String,
    },
    /// The filters of an interface or port (or of every interface of a
    /// vnet, or every port of a switch) with their counters.
    FilterShow {
        /// Where.
        at: Target,
    },
    /// Capture frames as pcap: the reply is followed on the same
    /// connection by the capture file's bytes, until the client closes it,
    /// `count` frames were written, or the interface goes away.
    Capture {
        /// What to capture: an interface (both directions), a switch port,
        /// or a whole switch (every frame entering it).
        at: Target,
        /// A tcpdump expression frames must match.
        #[serde(default)]
        filter: Option<String>,
        /// Stop after this many frames.
        #[serde(default)]
        count: Option<u64>,
        /// Bytes kept per frame (default 65535).
        #[serde(default)]
        snaplen: Option<u32>,
        /// Write pcapng rather than pcap.
        #[serde(default)]
        pcapng: bool,
    },
    /// Make the running state match a topology file (its text).
    Apply {
        /// The file's TOML text.
        toml: String,
    },
    /// The running state as a topology file.
    Dump,
    /// Several requests in order, in one round trip (`vnetctl -batch`).
    /// The reply lists one outcome per request, `{"ok": ..}` or
    /// `{"error": ..}`, up to the first failure unless `keep_going`.
    Batch {
        /// The requests (no batches inside).
        ops: Vec<Op>,
        /// Carry on after a failure.
        #[serde(default)]
        keep_going: bool,
    },
}

impl Op {
    /// Whether the operation changes anything.
    pub fn mutates(&self) -> bool {
        !matches!(
            self,
            Op::VnetList
                | Op::VnetShow { .. }
                | Op::QuotaShow { .. }
                | Op::DelegateShow
                | Op::LinkShow { .. }
                | Op::AddrShow { .. }
                | Op::RouteShow { .. }
                | Op::SysctlGet { .. }
                | Op::Stats { .. }
                | Op::DnsShow { .. }
                | Op::SocketShow { .. }
                | Op::SwitchShow { .. }
                | Op::FilterShow { .. }
                | Op::Capture { .. }
                | Op::FwShow { .. }
                | Op::Dump
        ) && !matches!(self, Op::Batch { ops, .. } if ops.iter().all(|o| !o.mutates()))
    }
}

/// An interface of a vnet, a port of a switch, or a switch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The vnet of the interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnet: Option<String>,
    /// The interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// The switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<String>,
    /// The switch's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

/// Limits and restrictions of a vnet (or, for the limits only, of a user).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restriction {
    /// Most vnets (under it, or owned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vnets: Option<u64>,
    /// Most interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<u64>,
    /// Most sockets served to programs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u64>,
    /// Most bytes of socket buffers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<u64>,
    /// Prefixes its addresses must lie in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addrs: Option<Vec<String>>,
    /// Kinds of links it may make (`epair`, `port`, `uplink`, `tap`,
    /// `af_packet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<String>>,
    /// Forbid forwarding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_forward: bool,
}

/// What kind of failure a reply reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request could not be read: bad framing, JSON, version or op.
    BadRequest,
    /// A named object does not exist.
    NotFound,
    /// A named object already exists.
    Exists,
    /// An argument is not acceptable.
    Invalid,
    /// The caller may not do this.
    PermissionDenied,
    /// The object is in use.
    Busy,
    /// A quota is reached.
    Quota,
}

/// A failure, with a message naming the object and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Its kind.
    pub kind: ErrorKind,
    /// For a person.
    pub message: String,
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// Protocol version of the server.
    pub v: u32,
    /// The request's id (0 when the request could not be read).
    pub id: u64,
    /// The outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Success with data, or an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It worked; what it returns (`null` for nothing).
    Ok(serde_json::Value),
    /// It failed.
    Error(ErrorBody),
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// The length prefix is over the limit.
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// Reading failed (including a connection closed mid-frame).
    #[error("reading a frame: {0}")]
    Io(#[from] io::Error),
}

/// Reads one frame's bytes.
///
/// # Errors
/// [`FrameError`]; after `TooLarge` or `Io` the stream is out of step and
/// must be closed.
pub fn read_frame(r: &mut impl Read) -> Result<Vec<u8>, FrameError> {
    read_frame_max(r, MAX_FRAME)
}

/// Reads one frame of at most `max` bytes (clients read replies with
/// [`MAX_REPLY`]).
///
/// # Errors
/// As [`read_frame`].
pub fn read_frame_max(r: &mut impl Read, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Err(FrameError::TooLarge(n));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Writes one frame.
///
/// # Errors
/// I/O errors, or a message over the limit.
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> io::Result<()> {
    if body.len() > MAX_REPLY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "frame too large",
        ));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    w.write_all(&out)
}

/// Decodes a request from a frame's bytes; a failure is already the reply
/// to send back.
///
/// # Errors
/// A `bad_request` reply saying what is wrong.
pub fn decode_request(frame: &[u8]) -> Result<Request, Reply> {
    let bad = |id: u64, message: String| Reply {
        v: VERSION,
        id,
        outcome: Outcome::Error(ErrorBody {
            kind: ErrorKind::BadRequest,
            message,
        }),
    };
    // The id and version first, so that even a request we cannot run gets
    // an answer the client can match.
    let loose: serde_json::Value =
        serde_json::from_slice(frame).map_err(|e| bad(0, format!("request is not JSON: {e}")))?;
    let id = loose
        .get("id")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    // `op` is flattened into the request, where serde cannot refuse
    // unknown fields: check the top level by hand.
    if let Some(obj) = loose.as_object()
        && let Some(k) = obj
            .keys()
            .find(|k| !["v", "id", "op", "args"].contains(&k.as_str()))
    {
        return Err(bad(id, format!("malformed request: unknown field {k:?}")));
    }
    match loose.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => {
            return Err(bad(
                id,
                format!("protocol version {v} is not supported (this server speaks {VERSION})"),
            ));
        }
        None => return Err(bad(id, "request has no protocol version \"v\"".into())),
    }
    serde_json::from_value(loose).map_err(|e| bad(id, format!("malformed request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_frames() {
        let req = Request {
            v: VERSION,
            id: 9,
            op: Op::AddrAdd {
                vnet: "red".into(),
                dev: "eth0".into(),
                addr: "10.0.0.1/24".into(),
            },
        };
        let mut wire = Vec::new();
        write_frame(&mut wire, &serde_json::to_vec(&req).unwrap()).unwrap();
        let frame = read_frame(&mut &wire[..]).unwrap();
        assert_eq!(decode_request(&frame).unwrap(), req);
    }

    #[test]
    fn bad_requests_get_a_bad_request_reply_with_their_id() {
        for (body, id, needle) in [
            (&b"\xff\xfe"[..], 0, "not JSON"),
            (br#"{"id":4,"op":"vnet_list"}"#, 4, "no protocol version"),
            (br#"{"v":99,"id":5,"op":"vnet_list"}"#, 5, "version 99"),
            (br#"{"v":1,"id":6,"op":"launch_missiles"}"#, 6, "malformed"),
            (
                br#"{"v":1,"id":7,"op":"vnet_add","args":{"name":3}}"#,
                7,
                "malformed",
            ),
        ] {
            let r = decode_request(body).unwrap_err();
            assert_eq!(r.id, id);
            match r.outcome {
                Outcome::Error(e) => {
                    assert_eq!(e.kind, ErrorKind::BadRequest);
                    assert!(e.message.contains(needle), "{}", e.message);
                }
                Outcome::Ok(_) => panic!("accepted {body:?}"),
            }
        }
    }

    /// The same property the fuzz target checks, on a fixed corpus of
    /// mutated requests, so that CI (on stable Rust) checks it too.
    #[test]
    fn mutated_requests_never_panic_and_decoded_ones_round_trip() {
        use rand_chacha::ChaCha8Rng;
        use rand_core::{RngCore, SeedableRng};
        let seeds: Vec<Vec<u8>> = [
            r#"{"v":1,"id":1,"op":"vnet_add","args":{"name":"red","parent":null}}"#,
            r#"{"v":1,"id":2,"op":"link_add_epair","args":{"vnet":"a","name":"e0","peer":"e1","peer_vnet":"b"}}"#,
            r#"{"v":1,"id":3,"op":"route_add","args":{"vnet":"a","dst":"default","via":"10.0.0.1","dev":null}}"#,
            r#"{"v":1,"id":4,"op":"apply","args":{"toml":"[vnet.a]\n"}}"#,
            r#"{"v":1,"id":5,"op":"vnet_list"}"#,
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for i in 0..20_000 {
            let mut m = seeds[i % seeds.len()].clone();
            for _ in 0..(rng.next_u32() % 4 + 1) {
                let at = rng.next_u32() as usize % (m.len() + 1);
                match rng.next_u32() % 3 {
                    0 if at < m.len() => m[at] = rng.next_u32() as u8,
                    1 if at < m.len() => {
                        m.remove(at);
                    }
                    _ => m.insert(at, rng.next_u32() as u8),
                }
            }
            if let Ok(req) = decode_request(&m) {
                let again = serde_json::to_vec(&req).unwrap();
                assert_eq!(decode_request(&again).ok(), Some(req));
            }
            let mut framed = (m.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&m);
            let _ = read_frame(&mut &framed[..m.len() / 2]);
        }
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut big = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        big.extend_from_slice(b"{}");
        assert!(matches!(
            read_frame(&mut &big[..]),
            Err(FrameError::TooLarge(_))
        ));
        let short = [0u8, 0, 0, 10, b'{'];
        assert!(matches!(
            read_frame(&mut &short[..]),
            Err(FrameError::Io(_))
        ));
        assert!(matches!(read_frame(&mut &[][..]), Err(FrameError::Closed)));
    }
}
