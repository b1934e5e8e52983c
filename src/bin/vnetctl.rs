//! vnetctl: the command line of vnetd, in iproute2's habits.
//!
//! Exit status as iproute2: 0 on success, 1 for a command line that does
//! not parse, 2 when vnetd refuses or cannot be reached.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::Value;
use vnet::ctl::client::Client;
use vnet::ctl::proto::{Op, Target};
use vnet::ctl::{self};

/// Controls vnetd: vnets, links, addresses, routes, tunables.
#[derive(Parser, Debug)]
#[command(name = "vnetctl", version, disable_help_subcommand = true)]
struct Cli {
    /// vnetd's control socket [env: VNETD_SOCKET]
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Print JSON
    #[arg(short = 'j', long, global = true)]
    json: bool,
    /// The vnet to act in (as `ip -n NETNS`) [default: vnet0]
    #[arg(short = 'n', long = "vnet", global = true)]
    vnet: Option<String>,
    /// Run the commands in FILE, one per line (as `ip -batch`); `-` reads stdin
    #[arg(short = 'b', long = "batch", value_name = "FILE")]
    batch: Option<PathBuf>,
    /// With --batch: carry on after a failing line
    #[arg(long)]
    force: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Vnets: add, del, list, show
    #[command(subcommand)]
    Vnet(VnetCmd),
    /// Interfaces: add, set, del, show
    #[command(subcommand)]
    Link(LinkCmd),
    /// Addresses: add, del, show
    #[command(subcommand, alias = "address")]
    Addr(AddrCmd),
    /// Routes: add, del, show
    #[command(subcommand)]
    Route(RouteCmd),
    /// Tunables: get, set
    #[command(subcommand)]
    Sysctl(SysctlCmd),
    /// Name resolution in the vnet: hosts entries, name servers
    #[command(subcommand)]
    Dns(DnsCmd),
    /// The vnet's sockets (as `ss -tuan`)
    #[command(alias = "ss")]
    Sockets,
    /// The vnet's firewall: add, del, show, flush, policy
    #[command(subcommand)]
    Fw(FwCmd),
    /// The vnet's protocol counters
    Stats,
    /// Make the running state match a topology file
    Apply {
        /// The TOML file (`-` for stdin)
        file: PathBuf,
    },
    /// Write the running state as a topology file
    Dump,
    /// Switches (the multiplexer vnets and host devices plug into): add,
    /// set, del, show, port add|del
    #[command(subcommand)]
    Switch(SwitchCmd),
    /// Packet filters on an interface or switch port: add, del, show
    #[command(subcommand)]
    Filter(FilterCmd),
    /// Capture frames of an interface (`IF`, in the vnet of -n), a switch
    /// port (`SWITCH:PORT`) or a whole switch (`--switch SWITCH`) as pcap
    Capture {
        /// The interface, or SWITCH:PORT
        target: Option<String>,
        /// Capture every frame entering this switch
        #[arg(long, conflicts_with = "target")]
        switch: Option<String>,
        /// A tcpdump expression the frames must match
        #[arg(short = 'f', long)]
        filter: Option<String>,
        /// Where to write (`-` for stdout)
        #[arg(short = 'w', long, default_value = "-")]
        write: PathBuf,
        /// Stop after this many frames
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Bytes kept per frame
        #[arg(short = 's', long)]
        snaplen: Option<u32>,
        /// Write pcapng instead of pcap
        #[arg(long)]
        pcapng: bool,
    },
    /// Users' quotas: show, set (root)
    #[command(subcommand)]
    Quota(QuotaCmd),
    /// Give a user an uplink (root): `delegate USER uplink SWITCH|IF
    /// --addr PREFIX [--rate PPS]`; `delegate show`; `delegate del ID`
    #[command(subcommand)]
    Delegate(DelegateCmd),
    /// Run a program with its sockets in VNET (as `ip netns exec`); exits
    /// with the program's status
    Exec {
        /// The vnet
        vnet: String,
        /// The program and its arguments (after `--`)
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        argv: Vec<String>,
    },
}

/// Limits and restrictions of a vnet (on it and everything under it).
#[derive(clap::Args, Debug, Default)]
struct RestrictOpts {
    /// Most vnets under it
    #[arg(long)]
    max_vnets: Option<u64>,
    /// Most interfaces in it and under it
    #[arg(long)]
    max_interfaces: Option<u64>,
    /// Most sockets served to programs in it and under it
    #[arg(long)]
    max_sockets: Option<u64>,
    /// Most socket buffer memory in it and under it (bytes; k, M, G)
    #[arg(long, value_parser = parse_size)]
    max_mem: Option<u64>,
    /// A prefix its addresses must lie in (repeatable)
    #[arg(long = "allow-addr", value_name = "PREFIX")]
    allow_addr: Vec<String>,
    /// The kinds of links it may make (epair,port,uplink,tap,af_packet)
    #[arg(long, value_delimiter = ',')]
    links: Option<Vec<String>>,
    /// Forbid forwarding
    #[arg(long)]
    no_forward: bool,
}

impl RestrictOpts {
    fn to_proto(&self) -> vnet::ctl::proto::Restriction {
        vnet::ctl::proto::Restriction {
            vnets: self.max_vnets,
            interfaces: self.max_interfaces,
            sockets: self.max_sockets,
            mem: self.max_mem,
            addrs: (!self.allow_addr.is_empty()).then(|| self.allow_addr.clone()),
            links: self.links.clone(),
            no_forward: self.no_forward,
        }
    }
}

use vnet::vnet::limits::parse_size;

/// A user name or number, as the system knows it.
fn parse_user(t: &str) -> Result<u32, String> {
    vnet::ctl::tenancy::resolve_user(t)
}

#[derive(Subcommand, Debug)]
enum QuotaCmd {
    /// Quotas and usage (root: every user that has used vnetd; others: their own)
    Show {
        /// One user (name or uid)
        #[arg(value_parser = parse_user)]
        user: Option<u32>,
    },
    /// Set a user's quota, or with --default that of users with none of
    /// their own (root)
    Set {
        /// The user (name or uid)
        #[arg(value_parser = parse_user, required_unless_present = "default")]
        user: Option<u32>,
        /// Set the default instead
        #[arg(long, conflicts_with = "user")]
        default: bool,
        /// Most vnets
        #[arg(long)]
        vnets: Option<u64>,
        /// Most interfaces
        #[arg(long)]
        interfaces: Option<u64>,
        /// Most sockets
        #[arg(long)]
        sockets: Option<u64>,
        /// Most socket buffer memory (bytes; k, M, G)
        #[arg(long, value_parser = parse_size)]
        mem: Option<u64>,
        /// Back to the default
        #[arg(long, conflicts_with_all = ["vnets", "interfaces", "sockets", "mem", "default"])]
        reset: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DelegateCmd {
    /// The delegations (root: all; others: their own), with their ports'
    /// policy counters
    Show,
    /// Take delegation ID back (its ports are unplugged)
    Del {
        /// Its number
        id: u64,
    },
    #[command(external_subcommand)]
    Grant(Vec<String>),
}

/// `delegate USER uplink TARGET ...`
#[derive(Parser, Debug)]
#[command(name = "vnetctl delegate", no_binary_name = true)]
struct GrantArgs {
    /// The user (name or uid)
    #[arg(value_parser = parse_user)]
    user: u32,
    #[command(subcommand)]
    what: GrantWhat,
}

#[derive(Subcommand, Debug)]
enum GrantWhat {
    /// Ports on switch TARGET (or links to host interface TARGET)
    Uplink {
        /// A switch, or a host interface
        target: String,
        /// A prefix the user's stacks may send from and receive for
        /// (repeatable; required for a switch)
        #[arg(long = "addr", value_name = "PREFIX")]
        addrs: Vec<String>,
        /// Frames per second each way, per port
        #[arg(long)]
        rate: Option<u64>,
        /// Burst in frames [default: rate/10, at least 32]
        #[arg(long, requires = "rate")]
        burst: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum VnetCmd {
    /// Create a vnet
    Add {
        /// Its name
        name: String,
        /// Its parent [default: vnet0]
        #[arg(long)]
        parent: Option<String>,
        #[command(flatten)]
        restrict: RestrictOpts,
    },
    /// Narrow a vnet's limits and restrictions (root may also widen them
    /// and lift them)
    Restrict {
        /// Its name
        name: String,
        #[command(flatten)]
        restrict: RestrictOpts,
        /// Remove a limit or restriction (root): vnets, interfaces,
        /// sockets, mem, addrs, links, forward
        #[arg(long, value_delimiter = ',')]
        lift: Vec<String>,
    },
    /// Destroy a vnet
    #[command(alias = "delete")]
    Del {
        /// Its name
        name: String,
        /// Destroy its children too
        #[arg(long, short)]
        recursive: bool,
    },
    /// List vnets
    #[command(alias = "ls")]
    List,
    /// Describe a vnet
    Show {
        /// Its name
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum LinkCmd {
    /// Create an interface: `link add NAME type epair peer PEER [vnet OTHER]`
    /// or `link add NAME type tap|af_packet host HOSTIF`
    Add {
        /// Its name
        name: String,
        #[command(subcommand)]
        kind: TypeKw,
    },
    /// Change an interface: `link set NAME up|down|mtu N|vnet OTHER`
    Set {
        /// Its name
        name: String,
        #[command(subcommand)]
        action: LinkSet,
    },
    /// Destroy an interface
    #[command(alias = "delete")]
    Del {
        /// Its name
        name: String,
    },
    /// List interfaces
    #[command(alias = "ls", alias = "list")]
    Show,
}

#[derive(Subcommand, Debug)]
enum TypeKw {
    /// The kind of interface
    Type {
        #[command(subcommand)]
        kind: LinkKind,
    },
}

#[derive(Subcommand, Debug)]
enum LinkKind {
    /// Two Ethernet ends back to back
    Epair {
        #[command(subcommand)]
        peer: PeerKw,
    },
    /// A Linux TAP device on the host (created if absent)
    Tap {
        #[command(subcommand)]
        host: HostKw,
    },
    /// An existing host interface, through AF_PACKET in promiscuous mode
    #[command(name = "af_packet")]
    AfPacket {
        #[command(subcommand)]
        host: HostKw,
    },
    /// A new port of a switch
    Port {
        #[command(subcommand)]
        switch: SwitchKw,
    },
    /// An uplink to a switch of another vnetd (root's), through a port
    /// it delegated: `type uplink switch SW [server PATH]`
    Uplink {
        #[command(subcommand)]
        switch: UplinkKw,
    },
}

#[derive(Subcommand, Debug)]
enum UplinkKw {
    /// The other vnetd's switch
    Switch {
        /// Its name
        name: String,
        /// The other vnetd's control socket [default: /run/vnetd.sock]
        #[command(subcommand)]
        server: Option<ServerKw>,
    },
}

#[derive(Subcommand, Debug)]
enum ServerKw {
    /// The other vnetd's control socket
    Server {
        /// Its path
        path: String,
    },
}

#[derive(Subcommand, Debug)]
enum SwitchKw {
    /// The switch to plug into
    Switch {
        /// Its name
        name: String,
    },
}

#[derive(clap::Args, Debug)]
struct SwitchOpts {
    /// hub (every frame to every port) or learning (a MAC table)
    #[arg(long, value_parser = |m: &str| m.parse::<vnet::ifnet::SwitchMode>())]
    mode: Option<vnet::ifnet::SwitchMode>,
    /// Seconds a learned MAC address is kept unseen
    #[arg(long)]
    aging: Option<u64>,
    /// Bound on the MAC table
    #[arg(long)]
    max_macs: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum SwitchCmd {
    /// Create a switch [default mode: learning]
    Add {
        /// Its name
        name: String,
        #[command(flatten)]
        opts: SwitchOpts,
    },
    /// Change a switch
    Set {
        /// Its name
        name: String,
        #[command(flatten)]
        opts: SwitchOpts,
    },
    /// Destroy a switch
    #[command(alias = "delete")]
    Del {
        /// Its name
        name: String,
    },
    /// Show switches: ports, counters, MAC table
    #[command(alias = "ls", alias = "list")]
    Show {
        /// One switch [default: all]
        name: Option<String>,
    },
    /// Host ports: `switch port add SW tap|af_packet HOSTIF`, `switch port del SW N`
    #[command(subcommand)]
    Port(PortCmd),
}

#[derive(Subcommand, Debug)]
enum PortCmd {
    /// Plug a host device into a switch
    Add {
        /// The switch
        switch: String,
        /// tap (created if absent) or af_packet (an existing interface)
        kind: String,
        /// The host device
        host: String,
    },
    /// Unplug a host port
    #[command(alias = "delete")]
    Del {
        /// The switch
        switch: String,
        /// The port's number
        port: u32,
    },
}

#[derive(Subcommand, Debug)]
enum FilterCmd {
    /// Add a filter: `filter add IF|SWITCH:PORT in|out [--name N] [-f EXPR | --bpf PROG] [--allow-src P]... [--allow-dst P]... [--allow-mac M]...`
    Add {
        /// The interface (in the vnet of -n), or SWITCH:PORT
        target: String,
        /// in (what the interface receives) or out (what it sends)
        dir: String,
        /// The filter's name [default: f1, f2, ...]
        #[arg(long)]
        name: Option<String>,
        /// A tcpdump expression (compiled by libpcap) frames must match
        #[arg(short = 'f', long)]
        expr: Option<String>,
        /// A classic BPF program as `tcpdump -ddd` prints it
        #[arg(long)]
        bpf: Option<String>,
        /// Source prefixes allowed (anti-spoofing; ARP sender too)
        #[arg(long)]
        allow_src: Vec<String>,
        /// Destination prefixes allowed (what the client may receive)
        #[arg(long)]
        allow_dst: Vec<String>,
        /// Source MAC addresses allowed
        #[arg(long)]
        allow_mac: Vec<String>,
    },
    /// Remove a filter
    #[command(alias = "delete")]
    Del {
        /// The interface, or SWITCH:PORT
        target: String,
        /// in or out
        dir: String,
        /// The filter's name
        name: String,
    },
    /// Show filters and their counters: of one interface or port, of every
    /// interface of the vnet, or (SWITCH:) of every port of a switch
    #[command(alias = "ls", alias = "list")]
    Show {
        /// The interface, SWITCH:PORT or SWITCH: [default: every interface]
        target: Option<String>,
    },
}

/// An interface of `vnet` (`IF`), a switch port (`SW:N`) or every port of
/// a switch (`SW:`).
fn target(vnet: &str, t: Option<&str>) -> Target {
    match t.and_then(|t| t.split_once(':')) {
        Some((sw, port)) => Target {
            switch: Some(sw.to_string()),
            port: port.parse().ok(),
            ..Target::default()
        },
        None => Target {
            vnet: Some(vnet.to_string()),
            dev: t.map(str::to_string),
            ..Target::default()
        },
    }
}

#[derive(Subcommand, Debug)]
enum HostKw {
    /// The host-side interface
    Host {
        /// Its name on the host
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum PeerKw {
    /// The other end's name
    Peer {
        /// Name of the other end
        name: String,
        #[command(subcommand)]
        vnet: Option<VnetKw>,
    },
}

#[derive(Subcommand, Debug)]
enum VnetKw {
    /// The other end's vnet [default: the same vnet]
    Vnet {
        /// The vnet
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum LinkSet {
    /// Bring it up
    Up,
    /// Take it down
    Down,
    /// Set its MTU
    Mtu {
        /// Bytes of IP per frame
        mtu: usize,
    },
    /// Move it to another vnet
    Vnet {
        /// The vnet
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum AddrCmd {
    /// Add an address: `addr add ADDR/PREFIX dev NAME`
    Add {
        /// Address with prefix length
        addr: String,
        #[command(subcommand)]
        dev: DevKw,
    },
    /// Remove an address: `addr del ADDR/PREFIX dev NAME`
    #[command(alias = "delete")]
    Del {
        /// Address with prefix length
        addr: String,
        #[command(subcommand)]
        dev: DevKw,
    },
    /// List addresses
    #[command(alias = "ls", alias = "list")]
    Show,
}

#[derive(Subcommand, Debug)]
enum DevKw {
    /// The interface
    Dev {
        /// Its name
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum RouteCmd {
    /// Add a route: `route add PREFIX|default via GW [dev NAME]` or `route add PREFIX dev NAME`
    Add {
        /// Destination prefix, or `default` / `default6`
        dst: String,
        #[command(subcommand)]
        nexthop: NextHop,
    },
    /// Remove a route
    #[command(alias = "delete")]
    Del {
        /// Destination prefix, or `default` / `default6`
        dst: String,
    },
    /// List routes
    #[command(alias = "ls", alias = "list")]
    Show,
}

#[derive(Subcommand, Debug)]
enum NextHop {
    /// Through a gateway
    Via {
        /// The gateway's address
        gateway: String,
        #[command(subcommand)]
        dev: Option<DevKw>,
    },
    /// Directly out of an interface
    Dev {
        /// Its name
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum SysctlCmd {
    /// Read one tunable, or all
    Get {
        /// Its name, such as net.inet.ip.forwarding
        key: Option<String>,
    },
    /// Set a tunable: `sysctl set KEY=VALUE`
    Set {
        /// KEY=VALUE
        #[arg(value_parser = parse_kv)]
        kv: (String, String),
    },
}

#[derive(Subcommand, Debug)]
enum DnsCmd {
    /// Show hosts entries, name servers and search domains
    Show,
    /// Hosts entries: `dns host add NAME ADDR...`, `dns host del NAME`
    #[command(subcommand)]
    Host(HostCmd),
    /// Set the name servers (none clears them)
    Nameserver {
        /// Their addresses
        addrs: Vec<String>,
    },
    /// Set the search domains (none clears them)
    Search {
        /// The domains
        domains: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum HostCmd {
    /// Add addresses to a name
    Add {
        /// The host name
        name: String,
        /// Its addresses
        #[arg(required = true)]
        addrs: Vec<String>,
    },
    /// Remove a name
    #[command(alias = "delete")]
    Del {
        /// The host name
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum FwCmd {
    /// Add a rule: `fw add [NUM] ACTION [in|out|fwd] [recv|xmit|via [not] IF]
    /// [proto tcp|udp|icmp|icmp6|N] [from [not] PREFIX|any [port [not] A[-B]]]
    /// [to ...] [icmp-type T [code C]] [state [not] new,established,related,invalid]`;
    /// ACTION is allow, drop, reject or reject admin
    Add {
        /// The rule's words
        #[arg(required = true, trailing_var_arg = true)]
        rule: Vec<String>,
    },
    /// Remove a rule
    #[command(alias = "delete")]
    Del {
        /// Its number
        number: u32,
    },
    /// The rules with their counters, the policies, the tracked connections
    #[command(alias = "ls", alias = "list")]
    Show,
    /// Remove every rule (the policies stay)
    Flush,
    /// Set a hook's default policy: `fw policy in|out|fwd allow|drop|reject [admin]`
    Policy {
        /// in, out or fwd
        hook: String,
        /// allow, drop, reject or reject admin
        #[arg(required = true, num_args = 1..)]
        action: Vec<String>,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn switch_request(c: SwitchCmd) -> (Op, Printer) {
    match c {
        SwitchCmd::Add { name, opts } => (
            Op::SwitchAdd {
                name,
                mode: opts.mode,
                aging: opts.aging,
                max_macs: opts.max_macs,
            },
            Printer::Nothing,
        ),
        SwitchCmd::Set { name, opts } => (
            Op::SwitchSet {
                name,
                mode: opts.mode,
                aging: opts.aging,
                max_macs: opts.max_macs,
            },
            Printer::Nothing,
        ),
        SwitchCmd::Del { name } => (Op::SwitchDel { name }, Printer::Nothing),
        SwitchCmd::Show { name } => (Op::SwitchShow { name }, Printer::Switches),
        SwitchCmd::Port(PortCmd::Add { switch, kind, host }) => {
            (Op::SwitchPortAdd { switch, kind, host }, Printer::Port)
        }
        SwitchCmd::Port(PortCmd::Del { switch, port }) => {
            (Op::SwitchPortDel { switch, port }, Printer::Nothing)
        }
    }
}

/// The request a command makes, and how to print its answer.
fn request(cmd: Cmd, vnet: &str) -> (Op, Printer) {
    let vnet = vnet.to_string();
    match cmd {
        Cmd::Vnet(VnetCmd::Add {
            name,
            parent,
            restrict,
        }) => {
            let r = restrict.to_proto();
            let restrict = (r != vnet::ctl::proto::Restriction::default()).then_some(r);
            (
                Op::VnetAdd {
                    name,
                    parent,
                    restrict,
                },
                Printer::Nothing,
            )
        }
        Cmd::Vnet(VnetCmd::Restrict {
            name,
            restrict,
            lift,
        }) => (
            Op::VnetRestrict {
                name,
                restrict: restrict.to_proto(),
                lift,
            },
            Printer::Nothing,
        ),
        Cmd::Quota(QuotaCmd::Show { user }) => (Op::QuotaShow { user }, Printer::Quota),
        Cmd::Quota(QuotaCmd::Set {
            user,
            default: _,
            vnets,
            interfaces,
            sockets,
            mem,
            reset,
        }) => (
            Op::QuotaSet {
                user,
                limits: vnet::ctl::proto::Restriction {
                    vnets,
                    interfaces,
                    sockets,
                    mem,
                    ..Default::default()
                },
                reset,
            },
            Printer::Quota,
        ),
        Cmd::Delegate(DelegateCmd::Show) => (Op::DelegateShow, Printer::Delegations),
        Cmd::Delegate(DelegateCmd::Del { id }) => (Op::DelegateDel { id }, Printer::Nothing),
        Cmd::Delegate(DelegateCmd::Grant(args)) => match GrantArgs::try_parse_from(&args) {
            Ok(GrantArgs {
                user,
                what:
                    GrantWhat::Uplink {
                        target,
                        addrs,
                        rate,
                        burst,
                    },
            }) => (
                Op::DelegateAdd {
                    user,
                    target,
                    addrs,
                    rate,
                    burst,
                },
                Printer::Delegations,
            ),
            Err(e) => e.exit(),
        },
        Cmd::Link(LinkCmd::Add {
            name,
            kind:
                TypeKw::Type {
                    kind:
                        LinkKind::Uplink {
                            switch:
                                UplinkKw::Switch {
                                    name: switch,
                                    server,
                                },
                        },
                },
        }) => (
            Op::LinkAddUplink {
                vnet,
                name,
                switch,
                server: server.map(|ServerKw::Server { path }| path),
            },
            Printer::Uplink,
        ),
        Cmd::Vnet(VnetCmd::Del { name, recursive }) => {
            (Op::VnetDel { name, recursive }, Printer::Nothing)
        }
        Cmd::Vnet(VnetCmd::List) => (Op::VnetList, Printer::Vnets),
        Cmd::Vnet(VnetCmd::Show { name }) => (Op::VnetShow { name }, Printer::Vnet),
        Cmd::Link(LinkCmd::Add {
            name,
            kind:
                TypeKw::Type {
                    kind:
                        LinkKind::Epair {
                            peer:
                                PeerKw::Peer {
                                    name: peer,
                                    vnet: other,
                                },
                        },
                },
        }) => (
            Op::LinkAddEpair {
                vnet,
                name,
                peer,
                peer_vnet: other.map(|VnetKw::Vnet { name }| name),
            },
            Printer::Nothing,
        ),
        Cmd::Link(LinkCmd::Add {
            name,
            kind:
                TypeKw::Type {
                    kind:
                        LinkKind::Tap {
                            host: HostKw::Host { name: host },
                        },
                },
        }) => (Op::LinkAddTap { vnet, name, host }, Printer::Nothing),
        Cmd::Link(LinkCmd::Add {
            name,
            kind:
                TypeKw::Type {
                    kind:
                        LinkKind::AfPacket {
                            host: HostKw::Host { name: host },
                        },
                },
        }) => (Op::LinkAddAfPacket { vnet, name, host }, Printer::Nothing),
        Cmd::Link(LinkCmd::Add {
            name,
            kind:
                TypeKw::Type {
                    kind:
                        LinkKind::Port {
                            switch: SwitchKw::Switch { name: switch },
                        },
                },
        }) => (Op::LinkAddPort { vnet, name, switch }, Printer::Nothing),
        Cmd::Switch(c) => switch_request(c),
        Cmd::Filter(FilterCmd::Add {
            target: t,
            dir,
            name,
            expr,
            bpf,
            allow_src,
            allow_dst,
            allow_mac,
        }) => (
            Op::FilterAdd {
                at: target(&vnet, Some(&t)),
                dir,
                name,
                expr,
                bpf,
                allow_src,
                allow_dst,
                allow_mac,
            },
            Printer::Nothing,
        ),
        Cmd::Filter(FilterCmd::Del {
            target: t,
            dir,
            name,
        }) => (
            Op::FilterDel {
                at: target(&vnet, Some(&t)),
                dir,
                name,
            },
            Printer::Nothing,
        ),
        Cmd::Filter(FilterCmd::Show { target: t }) => (
            Op::FilterShow {
                at: target(&vnet, t.as_deref()),
            },
            Printer::Filters,
        ),
        Cmd::Capture { .. } => unreachable!("run by `main` on a connection of its own"),
        Cmd::Link(LinkCmd::Set { name, action }) => {
            let (up, mtu, to_vnet) = match action {
                LinkSet::Up => (Some(true), None, None),
                LinkSet::Down => (Some(false), None, None),
                LinkSet::Mtu { mtu } => (None, Some(mtu), None),
                LinkSet::Vnet { name } => (None, None, Some(name)),
            };
            (
                Op::LinkSet {
                    vnet,
                    name,
                    up,
                    mtu,
                    to_vnet,
                },
                Printer::Nothing,
            )
        }
        Cmd::Link(LinkCmd::Del { name }) => (Op::LinkDel { vnet, name }, Printer::Nothing),
        Cmd::Link(LinkCmd::Show) => (Op::LinkShow { vnet }, Printer::Links),
        Cmd::Addr(AddrCmd::Add {
            addr,
            dev: DevKw::Dev { name },
        }) => (
            Op::AddrAdd {
                vnet,
                dev: name,
                addr,
            },
            Printer::Nothing,
        ),
        Cmd::Addr(AddrCmd::Del {
            addr,
            dev: DevKw::Dev { name },
        }) => (
            Op::AddrDel {
                vnet,
                dev: name,
                addr,
            },
            Printer::Nothing,
        ),
        Cmd::Addr(AddrCmd::Show) => (Op::AddrShow { vnet }, Printer::Addrs),
        Cmd::Route(RouteCmd::Add { dst, nexthop }) => {
            let (via, dev) = match nexthop {
                NextHop::Via { gateway, dev } => {
                    (Some(gateway), dev.map(|DevKw::Dev { name }| name))
                }
                NextHop::Dev { name } => (None, Some(name)),
            };
            (
                Op::RouteAdd {
                    vnet,
                    dst,
                    via,
                    dev,
                },
                Printer::Nothing,
            )
        }
        Cmd::Route(RouteCmd::Del { dst }) => (Op::RouteDel { vnet, dst }, Printer::Nothing),
        Cmd::Route(RouteCmd::Show) => (Op::RouteShow { vnet }, Printer::Routes),
        Cmd::Sysctl(SysctlCmd::Get { key }) => (Op::SysctlGet { vnet, key }, Printer::Sysctl),
        Cmd::Sysctl(SysctlCmd::Set { kv: (key, value) }) => {
            (Op::SysctlSet { vnet, key, value }, Printer::Nothing)
        }
        Cmd::Dns(DnsCmd::Show) => (Op::DnsShow { vnet }, Printer::Dns),
        Cmd::Sockets => (Op::SocketShow { vnet }, Printer::Sockets),
        Cmd::Dns(DnsCmd::Host(HostCmd::Add { name, addrs })) => {
            (Op::HostAdd { vnet, name, addrs }, Printer::Nothing)
        }
        Cmd::Dns(DnsCmd::Host(HostCmd::Del { name })) => {
            (Op::HostDel { vnet, name }, Printer::Nothing)
        }
        Cmd::Dns(DnsCmd::Nameserver { addrs }) => (
            Op::DnsSet {
                vnet,
                nameservers: Some(addrs),
                search: None,
            },
            Printer::Nothing,
        ),
        Cmd::Dns(DnsCmd::Search { domains }) => (
            Op::DnsSet {
                vnet,
                nameservers: None,
                search: Some(domains),
            },
            Printer::Nothing,
        ),
        Cmd::Fw(FwCmd::Add { rule }) => (
            Op::FwAdd {
                vnet,
                rule: rule.join(" "),
            },
            Printer::FwAdded,
        ),
        Cmd::Fw(FwCmd::Del { number }) => (Op::FwDel { vnet, number }, Printer::Nothing),
        Cmd::Fw(FwCmd::Show) => (Op::FwShow { vnet }, Printer::Fw),
        Cmd::Fw(FwCmd::Flush) => (Op::FwFlush { vnet }, Printer::Nothing),
        Cmd::Fw(FwCmd::Policy { hook, action }) => (
            Op::FwPolicy {
                vnet,
                hook,
                action: action.join(" "),
            },
            Printer::Nothing,
        ),
        Cmd::Stats => (Op::Stats { vnet }, Printer::Stats),
        Cmd::Apply { .. } => unreachable!("read by `one` before the request is made"),
        Cmd::Dump => (Op::Dump, Printer::Dump),
        Cmd::Exec { .. } => unreachable!("run by `main` without a request"),
    }
}

enum Printer {
    Nothing,
    Vnets,
    Vnet,
    Links,
    Addrs,
    Routes,
    Sysctl,
    Stats,
    Dns,
    Sockets,
    Fw,
    FwAdded,
    Changes,
    Dump,
    Switches,
    Port,
    Filters,
    Quota,
    Delegations,
    Uplink,
}

fn s(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(x) => x.clone(),
        Value::Null => "-".into(),
        x => x.to_string(),
    }
}

fn print(p: &Printer, v: &Value, json: bool) {
    if json {
        if !matches!(p, Printer::Nothing) {
            println!("{v}");
        }
        return;
    }
    let rows = || v.as_array().cloned().unwrap_or_default();
    match p {
        Printer::Nothing => {}
        Printer::Vnets => {
            for x in rows() {
                println!(
                    "{}: {} parent {} owner {}",
                    s(&x, "id"),
                    s(&x, "name"),
                    s(&x, "parent"),
                    s(&x, "owner")
                );
            }
        }
        Printer::Vnet => {
            println!(
                "{}: {} parent {} owner {} children {}",
                s(v, "id"),
                s(v, "name"),
                s(v, "parent"),
                s(v, "owner"),
                s(v, "children")
            );
            if let Some(q) = v["quota"].as_object() {
                let line: Vec<String> = q
                    .iter()
                    .map(|(k, x)| {
                        let room = match &x["room"] {
                            Value::Null => String::new(),
                            r => format!(" (room {} by {})", s(r, "n"), s(r, "by")),
                        };
                        format!("{k} {}/{}{room}", s(x, "used"), s(x, "limit"))
                    })
                    .collect();
                println!("    quota: {}", line.join("  "));
                let list = |k: &str| match v[k].as_array() {
                    Some(a) => a
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                    None => "any".into(),
                };
                println!(
                    "    restrict: addrs {} links {} forward {}",
                    list("addrs"),
                    list("links"),
                    if v["no_forward"] == true { "no" } else { "yes" }
                );
            }
        }
        Printer::Uplink => {
            let addrs: Vec<&str> = v["addrs"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!(
                "port {} of switch {}, mac {}, addresses {}",
                s(v, "port"),
                s(v, "switch"),
                s(v, "mac"),
                if addrs.is_empty() {
                    "any".into()
                } else {
                    addrs.join(",")
                }
            );
        }
        Printer::Quota => {
            for x in rows() {
                let line: Vec<String> = ["vnets", "interfaces", "sockets", "mem"]
                    .iter()
                    .map(|k| format!("{k} {}/{}", s(&x[*k], "used"), s(&x[*k], "limit")))
                    .collect();
                println!("uid {}: {}", s(&x, "uid"), line.join("  "));
            }
        }
        Printer::Delegations => {
            let one = |x: &Value| {
                let addrs: Vec<String> = x["addrs"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|y| y.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                println!(
                    "{}: uid {} {} addrs {} rate {}",
                    s(x, "id"),
                    s(x, "uid"),
                    s(x, "target"),
                    if addrs.is_empty() {
                        "any".into()
                    } else {
                        addrs.join(",")
                    },
                    s(x, "rate")
                );
                for p in x["ports"].as_array().cloned().unwrap_or_default() {
                    for st in p["policy"].as_array().cloned().unwrap_or_default() {
                        let drops: Vec<String> = st["drops"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .map(|d| format!("{}: {}", s(d, "reason"), s(d, "n")))
                                    .collect()
                            })
                            .unwrap_or_default();
                        println!(
                            "    port {} {} {}: passed {}  dropped {}",
                            s(&p, "port"),
                            s(&st, "dir"),
                            s(&st, "stage"),
                            s(&st, "passed"),
                            drops.join(", ")
                        );
                    }
                }
            };
            match v {
                Value::Array(a) => a.iter().for_each(one),
                Value::Null => {}
                x => one(x),
            }
        }
        Printer::Links => {
            for x in rows() {
                let mut flags = vec![if x["kind"] == "loopback" {
                    "LOOPBACK"
                } else {
                    "BROADCAST"
                }];
                if x["up"] == true {
                    flags.push("UP");
                }
                if x["running"] == true {
                    flags.push("LOWER_UP");
                }
                println!(
                    "{}: {}: <{}> mtu {}",
                    s(&x, "index"),
                    s(&x, "name"),
                    flags.join(","),
                    s(&x, "mtu")
                );
                let st = &x["stats"];
                println!(
                    "    link/{} {}  rx {} pkts {} bytes {} dropped  tx {} pkts {} bytes {} errors",
                    if x["kind"] == "loopback" {
                        "loopback"
                    } else {
                        "ether"
                    },
                    s(&x, "mac"),
                    s(st, "rx_packets"),
                    s(st, "rx_bytes"),
                    s(st, "rx_dropped"),
                    s(st, "tx_packets"),
                    s(st, "tx_bytes"),
                    s(st, "tx_errors")
                );
            }
        }
        Printer::Addrs => {
            for x in rows() {
                println!("{}: {} {}", s(&x, "dev"), s(&x, "family"), s(&x, "addr"));
            }
        }
        Printer::Routes => {
            for x in rows() {
                let via = if x["via"].is_null() {
                    String::new()
                } else {
                    format!(" via {}", s(&x, "via"))
                };
                println!(
                    "{}{via} dev {} proto {}",
                    s(&x, "dst"),
                    s(&x, "dev"),
                    s(&x, "proto")
                );
            }
        }
        Printer::Sysctl => {
            for x in rows() {
                println!("{} = {}", s(&x, "key"), s(&x, "value"));
            }
        }
        Printer::Stats => {
            if let Some(m) = v.as_object() {
                for (k, n) in m {
                    println!("{k}: {n}");
                }
            }
        }
        Printer::Changes => {
            let rows = rows();
            if rows.is_empty() {
                println!("no changes");
            }
            for x in rows {
                println!("{}", x.as_str().unwrap_or_default());
            }
        }
        Printer::Sockets => {
            println!("{:<5} {:<12} {:<40} peer", "proto", "state", "local");
            for x in v.as_array().into_iter().flatten() {
                println!(
                    "{:<5} {:<12} {:<40} {}",
                    s(x, "proto"),
                    x["state"].as_str().filter(|t| !t.is_empty()).unwrap_or("-"),
                    s(x, "local"),
                    s(x, "peer")
                );
            }
        }
        Printer::Dns => {
            for h in v["hosts"].as_array().into_iter().flatten() {
                let addrs: Vec<&str> = h["addrs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                println!("{}\t{}", addrs.join(" "), s(h, "name"));
            }
            for n in v["nameservers"].as_array().into_iter().flatten() {
                println!("nameserver {}", n.as_str().unwrap_or_default());
            }
            let search: Vec<&str> = v["search"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !search.is_empty() {
                println!("search {}", search.join(" "));
            }
        }
        Printer::Fw => {
            // The rule column is what `fw add` takes back.
            println!("{:>10} {:>12}  rule", "packets", "bytes");
            for r in v["rules"].as_array().into_iter().flatten() {
                println!(
                    "{:>10} {:>12}  {}",
                    s(r, "packets"),
                    s(r, "bytes"),
                    s(r, "rule")
                );
            }
            for p in v["policy"].as_array().into_iter().flatten() {
                println!(
                    "{:>10} {:>12}  policy {} {}",
                    s(p, "packets"),
                    s(p, "bytes"),
                    s(p, "hook"),
                    s(p, "action")
                );
            }
            println!("states {} (max {})", s(v, "states"), s(v, "states_max"));
        }
        Printer::FwAdded => println!("{}", s(v, "rule")),
        Printer::Dump => print!("{}", v["toml"].as_str().unwrap_or_default()),
        Printer::Port => println!("port {} {}", s(v, "port"), s(v, "host")),
        Printer::Switches => {
            for x in rows() {
                let st = &x["stats"];
                println!(
                    "{}: {} aging {}s max_macs {} owner {}  frames {} unicast {} flooded {} same_port {} table_full {}",
                    s(&x, "name"),
                    s(&x, "mode"),
                    s(&x, "aging"),
                    s(&x, "max_macs"),
                    s(&x, "owner"),
                    s(st, "frames"),
                    s(st, "unicast"),
                    s(st, "flooded"),
                    s(st, "same_port"),
                    s(st, "table_full")
                );
                for p in x["ports"].as_array().into_iter().flatten() {
                    let st = &p["stats"];
                    let vnet = if p["vnet"].is_null() {
                        String::new()
                    } else {
                        format!(" vnet {}", s(p, "vnet"))
                    };
                    println!(
                        "    port {}: {} {}{vnet}  rx {} pkts {} bytes  tx {} pkts {} bytes {} dropped",
                        s(p, "port"),
                        s(p, "kind"),
                        s(p, "name"),
                        s(st, "rx_frames"),
                        s(st, "rx_bytes"),
                        s(st, "tx_frames"),
                        s(st, "tx_bytes"),
                        s(st, "tx_drops")
                    );
                }
                for m in x["macs"].as_array().into_iter().flatten() {
                    println!(
                        "    mac {} port {} age {}.{:03}s",
                        s(m, "mac"),
                        s(m, "port"),
                        m["age_ms"].as_u64().unwrap_or(0) / 1000,
                        m["age_ms"].as_u64().unwrap_or(0) % 1000
                    );
                }
            }
        }
        Printer::Filters => {
            for x in rows() {
                let mut total = 0;
                let drops: Vec<String> = x["drops"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|d| d["n"].as_u64().unwrap_or(0) > 0)
                    .map(|d| {
                        total += d["n"].as_u64().unwrap_or(0);
                        format!("{} {}", s(d, "n"), s(d, "reason"))
                    })
                    .collect();
                println!(
                    "{} {} {}: {}  passed {} dropped {total}{}",
                    s(&x, "at"),
                    s(&x, "dir"),
                    s(&x, "name"),
                    s(&x, "description"),
                    s(&x, "passed"),
                    if drops.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", drops.join(", "))
                    }
                );
            }
        }
    }
}

/// The request a parsed command line makes, reading a topology file for
/// `apply`; an error is already reported and is the exit status.
fn make(cli: Cli) -> Result<(Op, Printer, bool), u8> {
    let Some(cmd) = cli.cmd else {
        eprintln!("vnetctl: no command (try --help)");
        return Err(1);
    };
    let (op, printer) = match cmd {
        Cmd::Apply { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
            } else {
                std::fs::read_to_string(&file)
            };
            match text {
                Ok(toml) => (Op::Apply { toml }, Printer::Changes),
                Err(e) => {
                    eprintln!("vnetctl: {}: {e}", file.display());
                    return Err(1);
                }
            }
        }
        cmd => request(cmd, cli.vnet.as_deref().unwrap_or("vnet0")),
    };
    Ok((op, printer, cli.json))
}

/// Reports a refusal; returns the exit status.
fn refused(e: &vnet::ctl::proto::ErrorBody, printer: &Printer) -> u8 {
    eprintln!("vnetctl: {}", e.message);
    // A topology file that does not parse is a usage error, as a command
    // line that does not parse is.
    if e.kind == vnet::ctl::proto::ErrorKind::BadRequest && matches!(printer, Printer::Changes) {
        1
    } else {
        2
    }
}

/// Carries out one command line; returns the exit status.
fn one(client: &mut Client, cli: Cli) -> u8 {
    let (op, printer, json) = match make(cli) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match client.call(op) {
        Ok(Ok(v)) => {
            print(&printer, &v, json);
            0
        }
        Ok(Err(e)) => refused(&e, &printer),
        Err(e) => {
            eprintln!("vnetctl: {e}");
            2
        }
    }
}

fn connect(socket: &Option<PathBuf>) -> Result<Client, u8> {
    let path = socket.clone().unwrap_or_else(ctl::default_socket_path);
    Client::connect(&path).map_err(|e| {
        eprintln!("vnetctl: cannot reach vnetd at {}: {e}", path.display());
        2
    })
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Cli, u8> {
    parse_with(&mut Cli::command(), args)
}

/// Parses with a command tree built once (a batch reuses it for every line).
fn parse_with(cmd: &mut clap::Command, args: impl IntoIterator<Item = String>) -> Result<Cli, u8> {
    // iproute2 spells it `-batch`.
    let args = args.into_iter().map(|a| {
        if a == "-batch" {
            "--batch".to_string()
        } else {
            a
        }
    });
    cmd.try_get_matches_from_mut(args)
        .and_then(|m| Cli::from_arg_matches(&m))
        .map_err(|e| {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => 1,
            };
            let _ = e.print();
            code
        })
}

/// Commands of a batch waiting to go, with their line numbers.
struct Pending {
    lines: Vec<(usize, String, Printer, bool)>,
    ops: Vec<Op>,
}

/// Sends the pending commands in one request and reports each; returns the
/// worst exit status, and whether to stop.
fn flush(client: &mut Client, p: &mut Pending, file: &std::path::Path, force: bool) -> (u8, bool) {
    if p.ops.is_empty() {
        return (0, false);
    }
    let ops = std::mem::take(&mut p.ops);
    let lines = std::mem::take(&mut p.lines);
    let results = match client.call(Op::Batch {
        ops,
        keep_going: force,
    }) {
        Ok(Ok(Value::Array(r))) => r,
        Ok(Ok(_)) => return (2, true),
        Ok(Err(e)) => {
            eprintln!("vnetctl: {}", e.message);
            return (2, true);
        }
        Err(e) => {
            eprintln!("vnetctl: {e}");
            return (2, true);
        }
    };
    let mut status = 0;
    for ((n, line, printer, json), r) in lines.iter().zip(results) {
        if let Some(v) = r.get("ok") {
            print(printer, v, *json);
            continue;
        }
        let e: vnet::ctl::proto::ErrorBody =
            serde_json::from_value(r["error"].clone()).unwrap_or(vnet::ctl::proto::ErrorBody {
                kind: vnet::ctl::proto::ErrorKind::BadRequest,
                message: "unreadable reply".into(),
            });
        status = status.max(refused(&e, printer));
        eprintln!("vnetctl: {}: line {n} failed: {line}", file.display());
        if !force {
            return (status, true);
        }
    }
    (status, false)
}

/// Runs a batch file: commands go to vnetd in groups of up to 500 per
/// round trip, each group stopping at its first failure (the file stops
/// there too, unless --force).
fn batch(cli: &Cli, file: &PathBuf) -> u8 {
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(file) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("vnetctl: {}: {e}", file.display());
                return 1;
            }
        }
    };
    let mut client = match connect(&cli.socket) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut status = 0;
    let mut parser = Cli::command();
    let mut pending = Pending {
        lines: Vec::new(),
        ops: Vec::new(),
    };
    for (n, line) in reader.lines().enumerate() {
        let Ok(line) = line else {
            eprintln!("vnetctl: {}: unreadable line {}", file.display(), n + 1);
            return 1;
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut args = vec!["vnetctl".to_string()];
        args.extend(line.split_whitespace().map(str::to_string));
        let made = match parse_with(&mut parser, args) {
            Ok(c) if c.batch.is_some() => {
                eprintln!("vnetctl: line {}: batches do not nest", n + 1);
                Err(1)
            }
            Ok(mut c) => {
                // The batch's own options apply where a line sets none.
                c.json |= cli.json;
                c.vnet = c.vnet.or_else(|| cli.vnet.clone());
                make(c)
            }
            Err(code) => Err(code),
        };
        match made {
            Ok((op, printer, json)) => {
                pending.ops.push(op);
                pending.lines.push((n + 1, line.to_string(), printer, json));
                if pending.ops.len() >= 500 {
                    let (code, stop) = flush(&mut client, &mut pending, file, cli.force);
                    status = status.max(code);
                    if stop {
                        return status;
                    }
                }
            }
            Err(code) => {
                // What came before this line runs first, as it would have.
                let (c2, stop) = flush(&mut client, &mut pending, file, cli.force);
                status = status.max(c2);
                if stop {
                    return status;
                }
                eprintln!("vnetctl: {}: line {} failed: {line}", file.display(), n + 1);
                status = status.max(code);
                if !cli.force {
                    return status;
                }
            }
        }
    }
    let (code, _) = flush(&mut client, &mut pending, file, cli.force);
    status.max(code)
}

/// Where the preload library is: `VNET_PRELOAD`, else beside this binary
/// (as cargo and `make install` both lay them out).
fn preload_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VNET_PRELOAD") {
        return Some(p.into());
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [
        dir.join("libvnet_preload.so"),
        dir.join("../lib/vnet/libvnet_preload.so"),
    ]
    .into_iter()
    .find(|p| p.exists())
}

/// `vnetctl exec VNET -- CMD ARGS...`: checks the vnet, then becomes the
/// program with the preload library and the vnet in its environment.
fn exec(socket: &Option<PathBuf>, vnet: &str, argv: &[String]) -> u8 {
    use std::os::unix::process::CommandExt;
    let mut client = match connect(socket) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.call(Op::VnetShow {
        name: vnet.to_string(),
    }) {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            eprintln!("vnetctl: {}", e.message);
            return 2;
        }
        Err(e) => {
            eprintln!("vnetctl: {e}");
            return 2;
        }
    }
    let Some(lib) = preload_path() else {
        eprintln!(
            "vnetctl: libvnet_preload.so not found beside vnetctl (`cargo build --release` builds it there; or set VNET_PRELOAD)"
        );
        return 2;
    };
    let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
    // The dynamic loader only warns about a library it cannot load, and the
    // program would then run on the host's network: refuse instead.
    if std::fs::File::open(&lib).is_err() {
        eprintln!(
            "vnetctl: {} cannot be read by this user: refusing to run {} outside the vnet",
            lib.display(),
            argv[0]
        );
        return 2;
    }
    // The loader ignores LD_PRELOAD in a program that gains privileges
    // (set-user-ID, set-group-ID, file capabilities, as ping has) when run
    // by an ordinary user: it would use the host's network. Refuse.
    if let Some(why) = gains_privileges(&argv[0]) {
        eprintln!(
            "vnetctl: {} {why}: the loader ignores LD_PRELOAD for it, so it would run on the host's network, not in vnet {vnet:?}; refusing",
            argv[0]
        );
        return 2;
    }
    let ctl_path = socket.clone().unwrap_or_else(ctl::default_socket_path);
    let preload = match std::env::var_os("LD_PRELOAD") {
        Some(old) if !old.is_empty() => {
            let mut p = lib.into_os_string();
            p.push(" ");
            p.push(old);
            p
        }
        _ => lib.into_os_string(),
    };
    let err = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env("LD_PRELOAD", preload)
        .env(vnet::sockets::wire::ENV_VNET, vnet)
        .env(
            vnet::sockets::wire::ENV_SOCKETS,
            vnet::sockets::wire::sockets_path(&ctl_path),
        )
        .exec();
    eprintln!("vnetctl: {}: {err}", argv[0]);
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// Why running `program` (found on `PATH` as `execvp` would) as this user
/// is a secure execution, in which the loader drops `LD_PRELOAD`; `None`
/// when it is not (or for root, who gains nothing).
fn gains_privileges(program: &str) -> Option<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if nix::unistd::geteuid().is_root() {
        return None;
    }
    let path = if program.contains('/') {
        PathBuf::from(program)
    } else {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join(program))
            .find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })?
    };
    let m = std::fs::metadata(&path).ok()?;
    if m.mode() & 0o4000 != 0 {
        return Some("is set-user-ID".into());
    }
    if m.mode() & 0o2000 != 0 {
        return Some("is set-group-ID".into());
    }
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    let name = c"security.capability";
    // SAFETY: getxattr with a null buffer and size 0 only reports the
    // attribute's size; both strings are NUL-terminated and live.
    let n = unsafe { libc::getxattr(c.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    (n > 0).then(|| "has file capabilities".into())
}

/// `vnetctl capture`: asks for the capture and copies the file vnetd
/// streams back to the output until either side ends it.
fn capture(cli: Cli) -> u8 {
    let Some(Cmd::Capture {
        target: t,
        switch,
        filter,
        write,
        count,
        snaplen,
        pcapng,
    }) = cli.cmd
    else {
        return 1;
    };
    let at = match (&t, switch) {
        (_, Some(sw)) => Target {
            switch: Some(sw),
            ..Target::default()
        },
        (Some(t), None) => target(cli.vnet.as_deref().unwrap_or("vnet0"), Some(t)),
        (None, None) => {
            eprintln!("vnetctl: capture what? name an interface, SWITCH:PORT or --switch SWITCH");
            return 1;
        }
    };
    let client = match connect(&cli.socket) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let op = Op::Capture {
        at,
        filter,
        count,
        snaplen,
        pcapng,
    };
    match client.call_then_stream(op) {
        Ok(Ok(mut stream)) => {
            // The file is made once vnetd has accepted the capture.
            let mut out: Box<dyn std::io::Write> = if write.as_os_str() == "-" {
                Box::new(std::io::stdout())
            } else {
                match std::fs::File::create(&write) {
                    Ok(f) => Box::new(f),
                    Err(e) => {
                        eprintln!("vnetctl: {}: {e}", write.display());
                        return 1;
                    }
                }
            };
            // Written through as it comes, so that `-w - | tcpdump -r -`
            // shows frames live.
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match std::io::Read::read(&mut stream, &mut buf) {
                    Ok(0) => return 0,
                    Ok(n) => {
                        if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                            return 0;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!("vnetctl: capture: {e}");
                        return 2;
                    }
                }
            }
        }
        Ok(Err(e)) => {
            eprintln!("vnetctl: {}", e.message);
            2
        }
        Err(e) => {
            eprintln!("vnetctl: {e}");
            2
        }
    }
}

fn main() -> ExitCode {
    // A closed pipe (`vnetctl ... | head`) ends the program quietly, as it
    // does iproute2.
    // SAFETY: restores the default disposition of SIGPIPE before any thread
    // or I/O exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = match parse(std::env::args()) {
        Ok(c) => c,
        Err(code) => return ExitCode::from(code),
    };
    if let Some(Cmd::Exec { vnet, argv }) = &cli.cmd {
        return ExitCode::from(exec(&cli.socket, vnet, argv));
    }
    if let Some(Cmd::Capture { .. }) = &cli.cmd {
        return ExitCode::from(capture(cli));
    }
    if let Some(file) = cli.batch.clone() {
        return ExitCode::from(batch(&cli, &file));
    }
    let mut client = match connect(&cli.socket) {
        Ok(c) => c,
        Err(code) => return ExitCode::from(code),
    };
    ExitCode::from(one(&mut client, cli))
}
