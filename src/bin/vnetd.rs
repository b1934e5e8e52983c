//! vnetd: hosts vnets and serves their control socket.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use vnet::ctl::{self, peercred, server::Server};
use vnet::driver::realtime::Realtime;
use vnet::sockets::server::SocketServer;
use vnet::vnet::Registry;

/// Hosts any number of vnets (isolated TCP/IP stacks) and serves the control
/// socket that vnetctl talks to.
#[derive(Parser)]
#[command(name = "vnetd", version)]
struct Args {
    /// Control socket [default: /run/vnetd.sock for root,
    /// $XDG_RUNTIME_DIR/vnetd.sock for other users]
    #[arg(long, env = "VNETD_SOCKET")]
    socket: Option<PathBuf>,
    /// Worker threads that run the stacks [default: half the cores]
    #[arg(long)]
    workers: Option<usize>,
    /// Topology file to build at start and re-read on SIGHUP [default: the
    /// shipped two-hosts example]
    #[arg(long, short = 'c', value_name = "FILE", conflicts_with = "empty")]
    config: Option<PathBuf>,
    /// Start with no vnets but vnet0 (no default topology)
    #[arg(long)]
    empty: bool,
    /// What each user other than root (and vnetd's own) may use, unless
    /// root set theirs (`vnetctl quota set`); `none` lifts one
    #[arg(
        long,
        value_name = "LIMITS",
        default_value = "vnets=64,interfaces=256,sockets=4096,mem=1G"
    )]
    user_quota: vnet::vnet::limits::Limits,
}

/// The topology used when no --config is given.
const DEFAULT_TOPOLOGY: &str = include_str!("../../examples/topologies/two-hosts.toml");

fn config_name(args: &Args) -> String {
    args.config
        .as_ref()
        .map_or("the default topology".into(), |f| f.display().to_string())
}

/// Raises the soft limit on open descriptors to the hard one: every socket
/// served to a program holds one descriptor in vnetd.
fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct owned here.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                log::warn!("could not raise the descriptor limit");
            }
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    raise_fd_limit();
    let args = Args::parse();
    let path = args.socket.clone().unwrap_or_else(ctl::default_socket_path);
    match run(&path, &args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(1)
        }
    }
}

fn read_config(args: &Args) -> Result<Option<String>, String> {
    match &args.config {
        Some(f) => std::fs::read_to_string(f)
            .map(Some)
            .map_err(|e| format!("{}: {e}", f.display())),
        None if args.empty => Ok(None),
        None => Ok(Some(DEFAULT_TOPOLOGY.to_string())),
    }
}

fn run(path: &PathBuf, args: &Args) -> Result<(), String> {
    let workers = args.workers;
    let topology = read_config(args)?;
    if let Some(t) = &topology {
        // Refuse a bad file before touching the socket.
        vnet::ctl::topology::parse(t).map_err(|e| format!("{}: {e}", config_name(args)))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!("another vnetd is serving {}", path.display()));
        }
        // A socket left by a server that died: take its place.
        std::fs::remove_file(path)
            .map_err(|e| format!("removing stale {}: {e}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("binding {}: {e}", path.display()))?;
    let sk_path = vnet::sockets::wire::sockets_path(path);
    let _ = std::fs::remove_file(&sk_path);
    let sk_listener = vnet::sockets::server::listen(&sk_path)
        .map_err(|e| format!("binding {}: {e}", sk_path.display()))?;
    // Any local user may connect; each request is authorised by uid.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|e| format!("signals: {e}"))?;
    // Half the cores: the programs using the vnets' sockets need the rest
    // (on two cores, one worker moves more data, with less latency, than
    // two that compete with the programs for the CPU).
    let workers = workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    });
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let reg = Registry::new(seed);
    reg.set_default_user_limits(args.user_quota);
    let server = Arc::new(Server::new(reg, Realtime::start(workers)));
    if let Some(t) = &topology {
        let done = server
            .apply(t, server.admin())
            .map_err(|e| format!("{}: {}", config_name(args), e.message))?;
        log::info!("{}: {} change(s) made", config_name(args), done.len());
    }
    let sockets = server
        .with_driver(|rt| SocketServer::new(Arc::clone(server.registry()), rt, server.admin()));
    let sk_waker = sk_listener
        .try_clone()
        .map_err(|e| format!("{}: {e}", sk_path.display()))?;
    let sk = Arc::clone(&sockets);
    let sk_accept = std::thread::Builder::new()
        .name("vnetd-sockets-accept".into())
        .spawn(move || sk.serve(sk_listener))
        .map_err(|e| format!("starting the socket server: {e}"))?;
    let waker = listener
        .try_clone()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let srv = Arc::clone(&server);
    let accept = std::thread::Builder::new()
        .name("vnetd-accept".into())
        .spawn(move || srv.serve(listener, peercred::peer_uid))
        .map_err(|e| format!("starting the accept thread: {e}"))?;
    log::info!(
        "vnetd serving {} (sockets: {}) with {workers} worker thread(s)",
        path.display(),
        sk_path.display()
    );
    for sig in signals.forever() {
        match sig {
            SIGHUP => match &args.config {
                None => log::info!("SIGHUP: no --config file to re-read"),
                Some(_) => match read_config(args)
                    .map(|t| t.map(|t| server.apply(&t, server.admin())))
                {
                    Ok(Some(Ok(done))) => log::info!(
                        "SIGHUP: {} re-read, {} change(s)",
                        config_name(args),
                        done.len()
                    ),
                    Ok(Some(Err(e))) => log::error!("SIGHUP: {}: {}", config_name(args), e.message),
                    Ok(None) => {}
                    Err(e) => log::error!("SIGHUP: {e}"),
                },
            },
            _ => {
                log::info!("signal {sig}: shutting down");
                break;
            }
        }
    }
    server.stop();
    // Wake the accept loop so it sees the stop (even if someone removed
    // the socket file): a shut-down listening socket fails accept.
    // SAFETY: shutdown(2) on a descriptor `waker` owns for the call.
    unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(&waker), libc::SHUT_RDWR) };
    let _ = accept.join();
    sockets.stop();
    // SAFETY: shutdown(2) on a descriptor `sk_waker` owns for the call.
    unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(&sk_waker), libc::SHUT_RDWR) };
    let _ = sk_accept.join();
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(&sk_path);
    let n = server.shutdown();
    log::info!("stopped: {n} vnet(s) torn down, {} removed", path.display());
    Ok(())
}
