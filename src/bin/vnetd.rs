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
    /// Worker threads that run the stacks [default: one per core]
    #[arg(long)]
    workers: Option<usize>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let path = args.socket.unwrap_or_else(ctl::default_socket_path);
    match run(&path, args.workers) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(1)
        }
    }
}

fn run(path: &PathBuf, workers: Option<usize>) -> Result<(), String> {
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
    // Any local user may connect; each request is authorised by uid.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|e| format!("signals: {e}"))?;
    let workers =
        workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let server = Arc::new(Server::new(Registry::new(seed), Realtime::start(workers)));
    let srv = Arc::clone(&server);
    let accept = std::thread::Builder::new()
        .name("vnetd-accept".into())
        .spawn(move || srv.serve(listener, peercred::peer_uid))
        .map_err(|e| format!("starting the accept thread: {e}"))?;
    log::info!(
        "vnetd serving {} with {workers} worker thread(s)",
        path.display()
    );
    for sig in signals.forever() {
        match sig {
            SIGHUP => log::info!("SIGHUP: no topology file to re-read"),
            _ => {
                log::info!("signal {sig}: shutting down");
                break;
            }
        }
    }
    server.stop();
    // Wake the accept loop so it sees the stop.
    let _ = UnixStream::connect(path);
    let _ = accept.join();
    let _ = std::fs::remove_file(path);
    let n = server.shutdown();
    log::info!("stopped: {n} vnet(s) torn down, {} removed", path.display());
    Ok(())
}
