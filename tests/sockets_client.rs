//! The Rust client of the socket server against a real vnetd: TCP and UDP
//! between two vnets, the errors a program expects, and a socket that
//! vanishes with its owner.

mod daemon;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use daemon::{TWO_HOSTS, Vnetd};
use vnet::sockets::client::{Net, TcpListener, TcpStream, UdpSocket};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn tcp_between_vnets_both_families() {
    let d = Vnetd::start("client-tcp", TWO_HOSTS);
    let red = Net::open_at(&d.sockets(), "red").unwrap();
    let blue = Net::open_at(&d.sockets(), "blue").unwrap();
    for (listen, dst) in [
        ("0.0.0.0:7000", "10.0.0.2:7000"),
        ("[::]:7001", "[fd00::2]:7001"),
    ] {
        let l = TcpListener::bind(&blue, sa(listen)).unwrap();
        assert_eq!(l.local_addr().unwrap().port(), sa(listen).port());
        let server = std::thread::spawn(move || {
            let (mut s, peer) = l.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(&got).unwrap();
            (peer, got.len())
        });
        let mut c = TcpStream::connect(&red, sa(dst)).unwrap();
        assert_eq!(c.peer_addr().unwrap(), sa(dst));
        let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
        let mut w = c.try_clone().unwrap();
        let data2 = data.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&data2).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        let (peer, n) = server.join().unwrap();
        assert_eq!(n, data.len());
        assert!(back == data, "echoed bytes differ");
        assert_eq!(peer.ip(), c.local_addr().unwrap().ip());
    }
}

#[test]
fn errors_a_program_expects() {
    let d = Vnetd::start("client-err", TWO_HOSTS);
    let red = Net::open_at(&d.sockets(), "red").unwrap();
    let blue = Net::open_at(&d.sockets(), "blue").unwrap();
    // Nothing listens: the peer's stack answers with a reset.
    let e = TcpStream::connect(&red, sa("10.0.0.2:9")).err().unwrap();
    assert_eq!(e.raw_os_error(), Some(libc::ECONNREFUSED), "{e}");
    // No route at all.
    let e = TcpStream::connect(&red, sa("192.0.2.1:80")).err().unwrap();
    assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH), "{e}");
    // One port, one listener per vnet; but each vnet has its own ports.
    let _a = TcpListener::bind(&blue, sa("0.0.0.0:8000")).unwrap();
    let e = TcpListener::bind(&blue, sa("0.0.0.0:8000")).err().unwrap();
    assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{e}");
    let _b = TcpListener::bind(&red, sa("0.0.0.0:8000")).unwrap();
    // Not our address.
    let e = TcpListener::bind(&red, sa("10.0.0.2:8001")).err().unwrap();
    assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{e}");
    // No such vnet.
    let ghost = Net::open_at(&d.sockets(), "ghost").unwrap();
    let e = TcpStream::connect(&ghost, sa("10.0.0.2:80")).err().unwrap();
    assert_eq!(e.raw_os_error(), Some(libc::ENXIO), "{e}");
}

#[test]
fn udp_between_vnets() {
    let d = Vnetd::start("client-udp", TWO_HOSTS);
    let red = Net::open_at(&d.sockets(), "red").unwrap();
    let blue = Net::open_at(&d.sockets(), "blue").unwrap();
    let b = UdpSocket::bind(&blue, sa("0.0.0.0:5353")).unwrap();
    let r = UdpSocket::bind(&red, sa("0.0.0.0:0")).unwrap();
    let me = r.local_addr().unwrap();
    assert_ne!(me.port(), 0);
    for i in 0..20u8 {
        let msg = vec![i; 100 + usize::from(i) * 50];
        r.send_to(&msg, sa("10.0.0.2:5353")).unwrap();
        let mut buf = [0u8; 4096];
        let (n, from) = b.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &msg[..]);
        assert_eq!(
            from,
            SocketAddr::new("10.0.0.1".parse().unwrap(), me.port())
        );
        b.send_to(&buf[..n], from).unwrap();
        let (n2, from2) = r.recv_from(&mut buf).unwrap();
        assert_eq!(n2, n);
        assert_eq!(from2, sa("10.0.0.2:5353"));
    }
}

#[test]
fn a_vanished_client_leaves_nothing_behind() {
    let d = Vnetd::start("client-gone", TWO_HOSTS);
    let red = Net::open_at(&d.sockets(), "red").unwrap();
    let blue = Net::open_at(&d.sockets(), "blue").unwrap();
    let l = TcpListener::bind(&blue, sa("0.0.0.0:7100")).unwrap();
    let c = TcpStream::connect(&red, sa("10.0.0.2:7100")).unwrap();
    let (mut s, _) = l.accept().unwrap();
    drop(c);
    // The server side sees the FIN as end of stream.
    s.set_nonblocking(false).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap(), 0);
    drop(s);
    drop(l);
    // All sockets are gone from vnetd's tables and the stacks.
    let t0 = std::time::Instant::now();
    loop {
        let left: Vec<u64> = ["red", "blue"]
            .iter()
            .flat_map(|v| {
                let out = d.ctl_ok(&["-j", "-n", v, "stats"]);
                let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                [
                    j["sockets"].as_u64().unwrap(),
                    j["sockets_served"].as_u64().unwrap(),
                ]
            })
            .collect();
        if left.iter().all(|n| *n == 0) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "sockets left: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_requests_get_errors_and_change_nothing() {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use vnet::sockets::wire::{self, Kind, Req};
    let d = Vnetd::start("client-bad", TWO_HOSTS);
    let path = d.sockets();
    let s = wire::connect_session(path.as_os_str().as_bytes()).unwrap();
    let raw = |bytes: &[u8]| {
        wire::send_with_fds(s.as_raw_fd(), bytes, &[], 0).unwrap();
        let mut buf = vec![0u8; wire::MAX_MSG];
        let (n, _) = wire::recv_with_fd(s.as_raw_fd(), &mut buf, 0).unwrap();
        serde_json::from_slice::<wire::Reply>(&buf[..n]).unwrap()
    };
    // Not JSON, not a request, too big.
    let r = raw(b"\x00\xffgarbage");
    assert_eq!(r.errno, libc::EINVAL);
    assert!(r.message.unwrap().contains("bad request"));
    assert_eq!(raw(br#"{"op":"teleport"}"#).errno, libc::EINVAL);
    assert_eq!(raw(&vec![b'{'; wire::MAX_MSG + 100]).errno, libc::EINVAL);
    // A request about a socket without one, or with a descriptor that is
    // not one of vnetd's sockets.
    let bind = Req::Bind {
        addr: "0.0.0.0:80".parse().unwrap(),
    };
    assert_eq!(
        wire::call(s.as_raw_fd(), &bind, None).unwrap().0.errno,
        libc::EBADF
    );
    let (pr, _pw) = std::io::pipe().unwrap();
    let pr = OwnedFd::from(pr);
    let r = wire::call(s.as_raw_fd(), &bind, Some(pr.as_raw_fd()))
        .unwrap()
        .0;
    assert_eq!(r.errno, libc::ENOTSOCK);
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let r = wire::call(s.as_raw_fd(), &bind, Some(a.as_raw_fd()))
        .unwrap()
        .0;
    assert_eq!(r.errno, libc::ENOTSOCK);
    // No such vnet.
    let sock = Req::Socket {
        vnet: "ghost".into(),
        v6: false,
        kind: Kind::Tcp,
    };
    let r = wire::call(s.as_raw_fd(), &sock, None).unwrap().0;
    assert_eq!(r.errno, libc::ENXIO);
    // The session still works, and nothing was left behind.
    let red = Net::open_at(&d.sockets(), "red").unwrap();
    let blue = Net::open_at(&d.sockets(), "blue").unwrap();
    let l = TcpListener::bind(&blue, sa("0.0.0.0:7200")).unwrap();
    let _c = TcpStream::connect(&red, sa("10.0.0.2:7200")).unwrap();
    drop(l);
    let out = d.ctl_ok(&["-j", "-n", "red", "stats"]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["sockets_served"], 1, "only the connection made above");
}
