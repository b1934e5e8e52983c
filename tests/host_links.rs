//! A vnet joined to the Linux kernel through a TAP device moved into a
//! network namespace made by the test: the kernel pings the vnet, `curl` in
//! the namespace downloads 16 MiB from a TCP server in the vnet, and a vnet
//! client downloads 16 MiB from `python3 -m http.server` in the namespace.
//! The same through an `af_packet` link on a veth end.
//!
//! Needs root and /dev/net/tun; skips without them unless VNET_REQUIRE_PRIV
//! is set, in which case it fails.

mod kernel;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use vnet::driver::realtime::{AppCtl, Realtime};
use vnet::stack::socket::{self, SockError, SocketId};
use vnet::vnet::{Registry, Vnet};
use vnet::{ifnet, stack};

use kernel::{Netns, Proc, privileged, sh};

struct World {
    _reg: Arc<Registry>,
    v: Arc<Vnet>,
    rt: Realtime,
    ns: Netns,
}

/// A vnet `v` (10.50.0.2/24, fd50::2/64) whose `eth0` is a TAP moved into
/// namespace `ns` (10.50.0.1/24, fd50::1/64).
fn world(tag: &str) -> World {
    let ns = Netns::new(tag);
    let host = format!("vt{}{tag}", std::process::id() % 100_000);
    let reg = Registry::new(5);
    let v = reg.create("v", None, 0).unwrap();
    let mut rt = Realtime::start(2);
    rt.adopt(&v);
    let got = ifnet::tap(&v, "eth0", &host, rt.host_io()).expect("TAP");
    assert_eq!(got, host);
    sh(&["ip", "link", "set", &host, "netns", &ns.0]);
    sh(&[
        "ip",
        "-n",
        &ns.0,
        "addr",
        "add",
        "10.50.0.1/24",
        "dev",
        &host,
    ]);
    sh(&[
        "ip",
        "-n",
        &ns.0,
        "addr",
        "add",
        "fd50::1/64",
        "dev",
        &host,
        "nodad",
    ]);
    sh(&["ip", "-n", &ns.0, "link", "set", &host, "up"]);
    v.enter(|| {
        ifnet::set_up("eth0", true).unwrap();
        stack::addr_add("eth0", "10.50.0.2/24".parse().unwrap()).unwrap();
        stack::addr_add("eth0", "fd50::2/64".parse().unwrap()).unwrap();
    });
    rt.kick(&v);
    World {
        _reg: reg,
        v,
        rt,
        ns,
    }
}

/// Downloads `url` with curl inside `ns`; returns the bytes received.
fn curl_size(ns: &Netns, url: &str) -> usize {
    let o = ns
        .exec(&[
            "curl",
            "-sS",
            "--max-time",
            "120",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            url,
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).parse().unwrap()
}

fn body(len: usize) -> Arc<Vec<u8>> {
    let mut x = 0x9e3779b97f4a7c15u64;
    Arc::new(
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect(),
    )
}

#[test]
fn the_kernel_pings_the_vnet_over_ipv4_and_ipv6() {
    if !privileged() {
        return;
    }
    let w = world("p");
    for (flag, dst) in [("-4", "10.50.0.2"), ("-6", "fd50::2")] {
        let o =
            w.ns.exec(&["ping", flag, "-c", "3", "-i", "0.2", "-W", "2", dst])
                .output()
                .unwrap();
        assert!(
            o.status.success(),
            "ping {dst}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let st = w.v.enter(stack::stats).unwrap();
    assert!(st.arp_replies_out >= 1 && st.nd_adverts_out >= 1, "{st:?}");
}

/// An HTTP/1.0 server on our socket API: every request gets `file`.
fn http_server(lst: SocketId, file: Arc<Vec<u8>>) -> impl FnMut(vnet::Instant) -> AppCtl + Send {
    struct Conn {
        id: SocketId,
        req: Vec<u8>,
        out: Vec<u8>,
        sent: usize,
    }
    let mut conns: Vec<Conn> = Vec::new();
    move |_| {
        while let Ok((id, _)) = socket::tcp_accept(lst) {
            conns.push(Conn {
                id,
                req: Vec::new(),
                out: Vec::new(),
                sent: 0,
            });
        }
        conns.retain_mut(|c| {
            let mut buf = [0u8; 2048];
            while c.out.is_empty() {
                match socket::recv(c.id, &mut buf) {
                    Ok(0) => return false,
                    Ok(n) => c.req.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
                if c.req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let head = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                        file.len()
                    );
                    c.out = head.into_bytes();
                    c.out.extend_from_slice(&file);
                }
            }
            while c.sent < c.out.len() {
                match socket::send(c.id, &c.out[c.sent..]) {
                    Ok(n) => c.sent += n,
                    Err(SockError::WouldBlock) => return true,
                    Err(_) => return false,
                }
            }
            if !c.out.is_empty() {
                let _ = socket::close(c.id);
                return false;
            }
            true
        });
        AppCtl::Continue
    }
}

#[test]
fn curl_in_the_namespace_downloads_16_mib_from_a_server_in_the_vnet() {
    if !privileged() {
        return;
    }
    let w = world("c");
    let file = body(16 << 20);
    let lst =
        w.v.enter(|| socket::tcp_listen("0.0.0.0:8080".parse().unwrap(), 16, false))
            .unwrap();
    w.rt.add_app(&w.v, Box::new(http_server(lst, Arc::clone(&file))));
    let out = std::env::temp_dir().join(format!("vnet-curl-{}.bin", std::process::id()));
    let o =
        w.ns.exec(&[
            "curl",
            "-sS",
            "--max-time",
            "120",
            "-o",
            out.to_str().unwrap(),
            "http://10.50.0.2:8080/file",
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let got = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    assert_eq!(got.len(), file.len());
    assert_eq!(Sha256::digest(&got), Sha256::digest(&*file));
    // Our TCP sent large segments that the TAP had the kernel cut up (TSO):
    // far fewer frames than a 1500-byte MTU would take.
    let eth0 =
        w.v.enter(ifnet::list)
            .unwrap()
            .into_iter()
            .find(|l| l.name == "eth0")
            .unwrap();
    assert!(
        eth0.stats.obytes / eth0.stats.opackets.max(1) > 3000,
        "frames to the kernel average {} bytes",
        eth0.stats.obytes / eth0.stats.opackets.max(1)
    );
    // And over IPv6.
    assert_eq!(curl_size(&w.ns, "http://[fd50::2]:8080/file"), 16 << 20);
}

#[test]
fn a_vnet_client_downloads_16_mib_from_python_http_server_in_the_namespace() {
    if !privileged() {
        return;
    }
    let w = world("s");
    let dir = std::env::temp_dir().join(format!("vnet-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = body(16 << 20);
    std::fs::write(dir.join("file"), &*file).unwrap();
    let _server = Proc(
        w.ns.exec(&[
            "python3",
            "-m",
            "http.server",
            "8000",
            "--bind",
            "10.50.0.1",
            "--directory",
            dir.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let t0 = Instant::now();
    while !w
        .ns
        .exec(&[
            "python3",
            "-c",
            "import socket; socket.create_connection(('10.50.0.1', 8000), 1)",
        ])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "python http.server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let server: SocketAddr = "10.50.0.1:8000".parse().unwrap();
    type Download = Option<Result<Vec<u8>, String>>;
    let result: Arc<Mutex<Download>> = Arc::new(Mutex::new(None));
    let r2 = Arc::clone(&result);
    let c = w.v.enter(|| socket::tcp_connect(server, None)).unwrap();
    let mut sent_req = false;
    let mut resp = Vec::new();
    w.rt.add_app(
        &w.v,
        Box::new(move |_| {
            if !sent_req {
                match socket::send(c, b"GET /file HTTP/1.0\r\nHost: 10.50.0.1\r\n\r\n") {
                    Ok(_) => sent_req = true,
                    Err(SockError::WouldBlock) => return AppCtl::Continue,
                    Err(e) => {
                        *r2.lock().unwrap() = Some(Err(e.to_string()));
                        return AppCtl::Done;
                    }
                }
            }
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match socket::recv(c, &mut buf) {
                    Ok(0) => {
                        let _ = socket::close(c);
                        *r2.lock().unwrap() = Some(Ok(std::mem::take(&mut resp)));
                        return AppCtl::Done;
                    }
                    Ok(n) => resp.extend_from_slice(&buf[..n]),
                    Err(SockError::WouldBlock) => return AppCtl::Continue,
                    Err(e) => {
                        *r2.lock().unwrap() = Some(Err(e.to_string()));
                        return AppCtl::Done;
                    }
                }
            }
        }),
    );
    let t0 = Instant::now();
    while result.lock().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "download did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let resp = result.lock().unwrap().take().unwrap().expect("download");
    let _ = std::fs::remove_dir_all(&dir);
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP header")
        + 4;
    assert!(
        resp.starts_with(b"HTTP/1.0 200"),
        "{}",
        String::from_utf8_lossy(&resp[..split])
    );
    assert_eq!(resp.len() - split, file.len());
    assert_eq!(Sha256::digest(&resp[split..]), Sha256::digest(&*file));
    // The TAP's offloads let the kernel hand over TCP in large (TSO)
    // frames with the checksum left to us: far fewer frames than the
    // 11,000-odd a 1500-byte MTU would take.
    let eth0 =
        w.v.enter(ifnet::list)
            .unwrap()
            .into_iter()
            .find(|l| l.name == "eth0")
            .unwrap();
    assert!(
        eth0.stats.ibytes / eth0.stats.ipackets.max(1) > 3000,
        "frames from the kernel average {} bytes",
        eth0.stats.ibytes / eth0.stats.ipackets.max(1)
    );
}

#[test]
fn destroying_the_vnet_removes_the_tap_device() {
    if !privileged() {
        return;
    }
    let w = world("d");
    let host = format!("vt{}d", std::process::id() % 100_000);
    let ok = |ns: &Netns| {
        Command::new("ip")
            .args(["-n", &ns.0, "link", "show", &host])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(ok(&w.ns));
    let r = w._reg.destroy(w.v.id(), false).unwrap();
    assert_eq!(r.interfaces_destroyed, 2);
    assert!(!ok(&w.ns), "the TAP went away with its vnet");
}

#[test]
fn an_af_packet_link_on_a_veth_end_carries_ping_and_curl_both_ways() {
    if !privileged() {
        return;
    }
    let ns = Netns::new("a");
    let tag = std::process::id() % 100_000;
    let (va, vb) = (format!("vp{tag}a"), format!("vp{tag}b"));
    sh(&[
        "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
    ]);
    // Deleting the namespace deletes vb, and with it va.
    sh(&["ip", "link", "set", &vb, "netns", &ns.0]);
    sh(&["ip", "link", "set", &va, "up"]);
    sh(&["ip", "-n", &ns.0, "addr", "add", "10.70.0.1/24", "dev", &vb]);
    sh(&["ip", "-n", &ns.0, "link", "set", &vb, "up"]);
    let reg = Registry::new(6);
    let v = reg.create("v", None, 0).unwrap();
    let mut rt = Realtime::start(2);
    rt.adopt(&v);
    ifnet::af_packet(&v, "eth0", &va, rt.host_io()).expect("af_packet");
    v.enter(|| {
        ifnet::set_up("eth0", true).unwrap();
        stack::addr_add("eth0", "10.70.0.2/24".parse().unwrap()).unwrap();
    });
    rt.kick(&v);
    let o = ns
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.70.0.2"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    // The kernel leaves TCP checksums to the (virtual) NIC: the link
    // completes them, or every segment would be refused.
    let file = body(4 << 20);
    let lst = v
        .enter(|| socket::tcp_listen("0.0.0.0:8080".parse().unwrap(), 16, false))
        .unwrap();
    rt.add_app(&v, Box::new(http_server(lst, Arc::clone(&file))));
    assert_eq!(curl_size(&ns, "http://10.70.0.2:8080/"), 4 << 20);
    let links = v.enter(ifnet::list).unwrap();
    let eth0 = links.iter().find(|l| l.name == "eth0").unwrap();
    assert_eq!(
        (eth0.kind, eth0.host.as_deref()),
        ("af_packet", Some(va.as_str()))
    );
    rt.stop();
}
