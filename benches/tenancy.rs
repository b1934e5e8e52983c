//! Delegated uplinks (issue 6): what root's policy, its token bucket and
//! the hop between two vnetds cost one TCP stream, beside a plain port in
//! the same run.
//!
//! A Linux namespace of the run sits behind a TAP port of switch `up` in
//! root's vnetd, running `iperf3 -s`. The client is `iperf3 -c` under
//! `vnetctl exec` (through the preload library) in a vnet that reaches the
//! switch in one of four ways:
//!
//! 1. *plain port*: a vnet of root's in root's vnetd, `eth0` a port of the
//!    switch, no delegation;
//! 2. *delegated port*: a vnet of an ordinary user (uid 64201) in root's
//!    vnetd, plugged in through a delegation (`--addr 10.60.0.16/28`), so
//!    root's policy filters are on both of its wires;
//! 3. *delegated port, rate limit*: the same for uid 64202, whose
//!    delegation also has `--rate 1000000` (a million frames a second
//!    each way: high enough never to drop here), so a token bucket runs too;
//! 4. *uplink from the user's own vnetd*: uid 64201's unprivileged vnetd
//!    (`--empty`, its own `XDG_RUNTIME_DIR`), whose vnet `home` has `up0`,
//!    `link add up0 type uplink switch up server ROOT_SOCKET`: frames cross
//!    a `SOCK_SEQPACKET` pair between the two vnetds, with delegation 1's
//!    policy on root's side.
//!
//! Both directions (`iperf3 -R` for namespace → vnet), rounds interleaved
//! (each round runs every setup once, each direction), medians with
//! [min – max]. Beside the rates: the CPU time of each vnetd's threads over
//! the round (worker, pumps, the rest: mostly the socket server serving
//! iperf3), as % of one core, from `/proc/PID/task/*/stat`.
//!
//! Run: `cargo bench --bench tenancy` as root, with iproute2, iperf3 and
//! setpriv (util-linux). `--quick` for 3 rounds of 3 s. The uids have no
//! other use on a benchmark machine: nothing is created for them but the
//! vnets and a private runtime directory removed at the end.

#[path = "../tests/daemon/mod.rs"]
mod daemon;
#[path = "../tests/kernel/mod.rs"]
mod os;
#[allow(dead_code)]
#[path = "support/report.rs"]
mod report;

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon::Vnetd;
use daemon::user::{UserVnetd, as_user};
use os::{Netns, Proc};
use report::summary;

/// The user of setups 2 and 4, and the one of setup 3.
const USER: u32 = 64201;
const RATED: u32 = 64202;
/// The namespace's address (the iperf3 server).
const SERVER: &str = "10.60.0.1";

/// vnetctl on `sock`, as `uid` (or as root).
fn ctl(sock: &Path, uid: Option<u32>) -> Command {
    let bin = env!("CARGO_BIN_EXE_vnetctl");
    let mut c = match uid {
        Some(u) => as_user(u, bin),
        None => Command::new(bin),
    };
    c.arg("--socket").arg(sock).stdin(Stdio::null());
    c.env("VNET_PRELOAD", daemon::preload());
    c
}

fn ctl_ok(sock: &Path, uid: Option<u32>, args: &[&str]) -> String {
    let o = ctl(sock, uid).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "uid {uid:?} vnetctl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A vnet with interface `dev` on switch `up` (a port, or with `uplink`
/// an uplink to root's vnetd at that path), up, with `addr`.
fn plug(sock: &Path, uid: Option<u32>, vnet: &str, dev: &str, uplink: Option<&Path>, addr: &str) {
    ctl_ok(sock, uid, &["vnet", "add", vnet]);
    let mut args = vec!["-n", vnet, "link", "add", dev, "type"];
    let server;
    match uplink {
        Some(root) => {
            server = root.to_str().unwrap().to_string();
            args.extend(["uplink", "switch", "up", "server", &server]);
        }
        None => args.extend(["port", "switch", "up"]),
    }
    ctl_ok(sock, uid, &args);
    ctl_ok(sock, uid, &["-n", vnet, "link", "set", dev, "up"]);
    ctl_ok(sock, uid, &["-n", vnet, "addr", "add", addr, "dev", dev]);
}

/// The pid of the process serving Unix socket `sock`.
fn server_pid(sock: &Path) -> i32 {
    let s = UnixStream::connect(sock).unwrap();
    vnet::ctl::peercred::peer_pid(&s).expect("SO_PEERCRED") as i32
}

// ---------------------------------------------------------------------------
// CPU time per thread group.

/// The thread groups whose CPU is reported, per vnetd.
const GROUPS: [&str; 4] = ["worker", "TAP pump", "uplink pump", "other"];

fn group(comm: &str) -> &'static str {
    if comm.starts_with("vnet-worker") {
        "worker"
    } else if comm.starts_with("host-vtb") {
        "TAP pump"
    } else if comm.starts_with("host-") {
        "uplink pump"
    } else {
        "other"
    }
}

/// (comm, utime + stime in ticks) of a /proc stat line.
fn stat_ticks(line: &str) -> (String, u64) {
    let open = line.find('(').unwrap();
    let close = line.rfind(')').unwrap();
    let comm = line[open + 1..close].to_string();
    let f: Vec<&str> = line[close + 1..].split_whitespace().collect();
    // Fields 14 and 15 of stat(5); f[0] is field 3.
    (
        comm,
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap(),
    )
}

/// Ticks of the whole process (threads that ended included) and of each
/// live thread by id.
struct Sample {
    total: u64,
    threads: HashMap<String, (String, u64)>,
}

fn sample(pid: i32) -> Sample {
    let total = stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap()).1;
    let mut threads = HashMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let e = e.unwrap();
        if let Ok(s) = std::fs::read_to_string(e.path().join("stat")) {
            threads.insert(e.file_name().to_string_lossy().into_owned(), stat_ticks(&s));
        }
    }
    Sample { total, threads }
}

/// CPU per group between two samples, as % of one core over `secs`: the
/// named groups from threads alive in both, "other" the rest of the
/// process's time (socket-server sessions that ended with the round, the
/// control plane).
fn cpu(a: &Sample, b: &Sample, secs: f64) -> HashMap<&'static str, f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut m: HashMap<&'static str, f64> = GROUPS.iter().map(|g| (*g, 0.0)).collect();
    let mut named = 0;
    for (tid, (comm, t1)) in &b.threads {
        let g = group(comm);
        if g == "other" {
            continue;
        }
        let t0 = a.threads.get(tid).map_or(0, |x| x.1);
        named += t1 - t0;
        *m.get_mut(g).unwrap() += (t1 - t0) as f64;
    }
    *m.get_mut("other").unwrap() = (b.total - a.total).saturating_sub(named) as f64;
    for v in m.values_mut() {
        *v = *v / hz / secs * 100.0;
    }
    m
}

// ---------------------------------------------------------------------------
// One iperf3 round.

/// A setup: its label, the socket of its vnetd (root's or the user's), the
/// user its programs run as (root when `None`), and its vnet.
struct Setup {
    label: &'static str,
    sock: PathBuf,
    uid: Option<u32>,
    vnet: &'static str,
}

/// The CPU columns, % of one core over a round.
const CPU_COLS: [&str; 8] = [
    "root's vnetd: worker",
    "root's: TAP pump",
    "root's: uplink pump",
    "user's vnetd: worker",
    "user's: uplink pump",
    "both vnetds: other threads",
    "iperf3 in the vnet",
    "iperf3 in the namespace",
];

struct Round {
    gbps: f64,
    retransmits: f64,
    /// As `CPU_COLS`.
    cpu: [f64; 8],
}

/// One `iperf3` stream of `secs` between the namespace and `s`'s vnet:
/// vnet → namespace, or with `reverse` the other way.
fn round(
    ns: &Netns,
    s: &Setup,
    port: u16,
    secs: u32,
    reverse: bool,
    pids: (i32, Option<i32>),
) -> Round {
    let port = port.to_string();
    let _srv = Proc(
        ns.exec(&["iperf3", "-s", "-1", "-p", &port])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while !ns
        .exec(&["ss", "-Hltn", &format!("sport = :{port}")])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "iperf3 -s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = ctl(&s.sock, s.uid);
    c.args(["exec", s.vnet, "--", "iperf3", "-c", SERVER, "-p", &port])
        .args(["-t", &secs.to_string(), "-J", "--connect-timeout", "5000"]);
    if reverse {
        c.arg("-R");
    }
    let (r0, u0) = (sample(pids.0), pids.1.map(sample));
    let t0 = Instant::now();
    // vnetctl (and setpriv) exec iperf3: the child is iperf3 itself.
    let child = Proc(
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let o = wait_output(child, Duration::from_secs(u64::from(secs) + 30), s.label);
    let el = t0.elapsed().as_secs_f64();
    let (r1, u1) = (sample(pids.0), pids.1.map(sample));
    assert!(
        o.status.success(),
        "{}: iperf3 failed: {}{}",
        s.label,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("iperf3 JSON");
    let end = &j["end"];
    let root = cpu(&r0, &r1, el);
    let user = u0.zip(u1).map(|(a, b)| cpu(&a, &b, el));
    let u = |g: &str| user.as_ref().map_or(0.0, |m| m[g]);
    let iperf = |k: &str| end["cpu_utilization_percent"][k].as_f64().unwrap_or(0.0);
    Round {
        gbps: end["sum_received"]["bits_per_second"].as_f64().unwrap() / 1e9,
        retransmits: end["sum_sent"]["retransmits"].as_f64().unwrap_or(0.0),
        cpu: [
            root["worker"],
            root["TAP pump"],
            root["uplink pump"],
            u("worker"),
            u("uplink pump"),
            root["other"] + u("other"),
            iperf("host_total"),
            iperf("remote_total"),
        ],
    }
}

/// Waits for `p` at most `limit` (then kills it by its pid and fails).
fn wait_output(mut p: Proc, limit: Duration, what: &str) -> std::process::Output {
    let t0 = Instant::now();
    while p.0.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < limit, "{what}: iperf3 did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = std::process::Output {
        status: p.0.wait().unwrap(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    use std::io::Read;
    if let Some(mut o) = p.0.stdout.take() {
        o.read_to_end(&mut out.stdout).unwrap();
    }
    if let Some(mut e) = p.0.stderr.take() {
        e.read_to_end(&mut out.stderr).unwrap();
    }
    out
}

/// Drops counted by root's policy stages, by reason.
fn policy_drops(root: &Vnetd) -> HashMap<String, u64> {
    let mut n = HashMap::new();
    for del in root.json(&["delegate", "show"]).as_array().unwrap() {
        for p in del["ports"].as_array().unwrap() {
            for st in p["policy"].as_array().unwrap() {
                for dr in st["drops"].as_array().unwrap() {
                    *n.entry(dr["reason"].as_str().unwrap().to_string())
                        .or_insert(0) += dr["n"].as_u64().unwrap();
                }
            }
        }
    }
    n
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root_user = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root_user || !Path::new("/dev/net/tun").exists() {
        println!("The tenancy benchmark needs root and /dev/net/tun (TAP, namespaces); skipped.");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (rounds, secs) = if quick { (3, 3) } else { (5, 5) };

    // Root's vnetd, its switch, and the namespace behind a TAP port.
    let root = Vnetd::start("tenancy-bench", "");
    root.ctl_ok(&["switch", "add", "up"]);
    let ns = Netns::new("tenancy");
    let tap = format!("vtb{}", std::process::id() % 100_000);
    root.ctl_ok(&["switch", "port", "add", "up", "tap", &tap]);
    ns.adopt(&tap, &[&format!("{SERVER}/24")]);

    // 1. Root's own vnet, a plain port.
    plug(&root.sock, None, "plain", "eth0", None, "10.60.0.2/24");
    // 2. A user's vnet in root's vnetd, through a delegation.
    let (user, rated) = (USER.to_string(), RATED.to_string());
    root.ctl_ok(&["delegate", &user, "uplink", "up", "--addr", "10.60.0.16/28"]);
    plug(&root.sock, Some(USER), "dlg", "eth0", None, "10.60.0.17/24");
    // 3. The same with a rate limit that never bites.
    root.ctl_ok(&[
        "delegate",
        &rated,
        "uplink",
        "up",
        "--addr",
        "10.60.0.32/28",
        "--rate",
        "1000000",
    ]);
    plug(
        &root.sock,
        Some(RATED),
        "rated",
        "eth0",
        None,
        "10.60.0.33/24",
    );
    // 4. The user's own vnetd, an uplink to root's switch.
    let mine = UserVnetd::start(USER, "bench");
    plug(
        &mine.sock,
        Some(USER),
        "home",
        "up0",
        Some(&root.sock),
        "10.60.0.20/24",
    );

    let setups = [
        Setup {
            label: "1. plain port (root's vnet in root's vnetd)",
            sock: root.sock.clone(),
            uid: None,
            vnet: "plain",
        },
        Setup {
            label: "2. delegated port (user's vnet in root's vnetd, policy filters)",
            sock: root.sock.clone(),
            uid: Some(USER),
            vnet: "dlg",
        },
        Setup {
            label: "3. delegated port, policy filters + rate limit 1,000,000 frames/s",
            sock: root.sock.clone(),
            uid: Some(RATED),
            vnet: "rated",
        },
        Setup {
            label: "4. uplink from the user's own vnetd (SOCK_SEQPACKET pair, policy filters)",
            sock: mine.sock.clone(),
            uid: Some(USER),
            vnet: "home",
        },
    ];
    let root_pid = server_pid(&root.sock);
    let user_pid = mine.pid() as i32;
    let pids = |s: &Setup| (root_pid, (s.sock == mine.sock).then_some(user_pid));

    // Warm-up: every path carries a short stream (neighbors resolved,
    // MAC tables learned) before anything is counted.
    let mut port = 5300u16;
    for s in &setups {
        round(&ns, s, port, 1, false, pids(s));
        port += 1;
    }
    let before = policy_drops(&root);

    let dirs = [(false, "vnet → namespace"), (true, "namespace → vnet")];
    let mut res: Vec<Vec<Vec<Round>>> = (0..2)
        .map(|_| (0..setups.len()).map(|_| Vec::new()).collect())
        .collect();
    for r in 0..rounds {
        for (d, (reverse, _)) in dirs.iter().enumerate() {
            for (i, s) in setups.iter().enumerate() {
                let x = round(&ns, s, port, secs, *reverse, pids(s));
                port += 1;
                eprintln!("round {r} {} {}: {:.2} Gbit/s", dirs[d].1, s.label, x.gbps);
                res[d][i].push(x);
            }
        }
    }
    let after = policy_drops(&root);

    let cell = |v: Vec<f64>| {
        let (med, lo, hi) = summary(v);
        (med, format!("{med:.2} Gbit/s ({lo:.2} – {hi:.2})"))
    };
    println!("\n### iperf3, one TCP stream, MTU 1500, {secs} s per round, {rounds} rounds\n");
    println!(
        "| setup | vnet → namespace | vs. 1 | namespace → vnet | vs. 1 |\n|---|---|---|---|---|"
    );
    let base: Vec<f64> = (0..2)
        .map(|d| summary(res[d][0].iter().map(|x| x.gbps).collect()).0)
        .collect();
    for (i, s) in setups.iter().enumerate() {
        let mut line = format!("| {} |", s.label);
        for d in 0..2 {
            let (med, text) = cell(res[d][i].iter().map(|x| x.gbps).collect());
            let vs = if i == 0 {
                "–".to_string()
            } else {
                format!("{:+.0} %", (med / base[d] - 1.0) * 100.0)
            };
            line += &format!(" {text} | {vs} |");
        }
        println!("{line}");
    }

    println!("\n### CPU during the rounds, % of one core (medians over the rounds)\n");
    let mut head = "| setup | direction |".to_string();
    for c in CPU_COLS {
        head += &format!(" {c} |");
    }
    println!("{head} total | total per Gbit/s | TCP retransmits |");
    println!("|---|---|{}---|---|---|", "---|".repeat(CPU_COLS.len()));
    let med = |v: Vec<f64>| summary(v).0;
    for (d, (_, dir)) in dirs.iter().enumerate() {
        for (i, s) in setups.iter().enumerate() {
            let rs = &res[d][i];
            let mut line = format!("| {} | {dir} |", &s.label[..2]);
            for c in 0..CPU_COLS.len() {
                // The user's vnetd takes part in setup 4 only.
                if (c == 3 || c == 4) && s.sock != mine.sock {
                    line += " – |";
                } else {
                    line += &format!(" {:.0} |", med(rs.iter().map(|x| x.cpu[c]).collect()));
                }
            }
            let total = |x: &Round| x.cpu.iter().sum::<f64>();
            line += &format!(
                " {:.0} | {:.0} | {:.0} |",
                med(rs.iter().map(total).collect()),
                med(rs.iter().map(|x| total(x) / x.gbps).collect()),
                med(rs.iter().map(|x| x.retransmits).collect())
            );
            println!("{line}");
        }
    }
    let over = |m: &HashMap<String, u64>| m.get("over the rate limit").copied().unwrap_or(0);
    println!(
        "\nFrames root's policy dropped during the rounds: {} over the rate limit, {} in all.",
        over(&after) - over(&before),
        after.values().sum::<u64>() - before.values().sum::<u64>()
    );

    drop(mine);
    drop(root);
    drop(ns);
}
