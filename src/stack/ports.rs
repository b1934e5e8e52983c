//! Per-vnet TCP and UDP port tables: binding, collision checks
//! (`EADDRINUSE`), `SO_REUSEADDR`, and ephemeral port allocation.
//!
//! smoltcp lets any number of sockets claim one port; the first one that
//! matches gets the packet. The table makes binding behave as on a BSD or
//! Linux host: a port may be shared only when the addresses do not overlap,
//! or when every socket on it asked for `SO_REUSEADDR` and (for TCP) none of
//! them is listening on an overlapping address.

use std::collections::HashMap;

use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;
use smoltcp::wire::IpAddress;

use super::socket::SocketId;

/// Transport protocol of a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

#[derive(Debug, Clone)]
struct Binding {
    owner: SocketId,
    addr: Option<IpAddress>,
    reuse: bool,
    listening: bool,
}

/// Why a port could not be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// Someone holds an overlapping binding.
    #[error("address already in use")]
    InUse,
    /// Every ephemeral port is taken.
    #[error("no ephemeral ports left")]
    Exhausted,
}

/// The port tables of one vnet.
#[derive(Debug, Default)]
pub struct PortTable {
    map: HashMap<(Proto, u16), Vec<Binding>>,
}

fn overlap(a: Option<IpAddress>, b: Option<IpAddress>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

impl PortTable {
    /// Whether binding `addr:port` would clash with a binding there.
    pub(super) fn conflicts(
        &self,
        proto: Proto,
        port: u16,
        addr: Option<IpAddress>,
        reuse: bool,
    ) -> bool {
        self.map.get(&(proto, port)).is_some_and(|bs| {
            bs.iter().any(|b| {
                overlap(b.addr, addr)
                    && !(reuse && b.reuse && !(proto == Proto::Tcp && b.listening))
            })
        })
    }

    /// Binds `owner` to `addr:port` (`addr` `None` for every address).
    /// Port 0 picks an ephemeral port in `first..=last`, starting at a
    /// random point (RFC 6056 style).
    ///
    /// # Errors
    /// [`BindError::InUse`] or [`BindError::Exhausted`]; nothing changes.
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &mut self,
        proto: Proto,
        addr: Option<IpAddress>,
        port: u16,
        reuse: bool,
        owner: SocketId,
        range: (u16, u16),
        rng: &mut ChaCha8Rng,
    ) -> Result<u16, BindError> {
        let port = if port == 0 {
            let (first, last) = range;
            let n = u32::from(last - first) + 1;
            let start = rng.next_u32() % n;
            (0..n)
                .map(|i| first + ((start + i) % n) as u16)
                .find(|p| !self.map.contains_key(&(proto, *p)))
                .ok_or(BindError::Exhausted)?
        } else {
            if self.conflicts(proto, port, addr, reuse) {
                return Err(BindError::InUse);
            }
            port
        };
        self.map.entry((proto, port)).or_default().push(Binding {
            owner,
            addr,
            reuse,
            listening: false,
        });
        Ok(port)
    }

    /// Marks `owner`'s TCP binding on `port` as listening.
    ///
    /// # Errors
    /// [`BindError::InUse`] if another socket listens on an overlapping
    /// address of the same port.
    pub fn listen(&mut self, port: u16, owner: SocketId) -> Result<(), BindError> {
        let bs = self
            .map
            .get_mut(&(Proto::Tcp, port))
            .ok_or(BindError::InUse)?;
        let me = bs
            .iter()
            .find(|b| b.owner == owner)
            .map(|b| b.addr)
            .ok_or(BindError::InUse)?;
        if bs
            .iter()
            .any(|b| b.owner != owner && b.listening && overlap(b.addr, me))
        {
            return Err(BindError::InUse);
        }
        for b in bs.iter_mut().filter(|b| b.owner == owner) {
            b.listening = true;
        }
        Ok(())
    }

    /// Releases `owner`'s binding on `port`.
    pub fn release(&mut self, proto: Proto, port: u16, owner: SocketId) {
        if let Some(bs) = self.map.get_mut(&(proto, port)) {
            bs.retain(|b| b.owner != owner);
            if bs.is_empty() {
                self.map.remove(&(proto, port));
            }
        }
    }

    /// The socket listening on TCP `port` that accepts `dst`, if any.
    pub fn listener(&self, port: u16, dst: IpAddress) -> Option<SocketId> {
        let bs = self.map.get(&(Proto::Tcp, port))?;
        bs.iter()
            .filter(|b| b.listening)
            .find(|b| b.addr == Some(dst))
            .or_else(|| bs.iter().find(|b| b.listening && b.addr.is_none()))
            .map(|b| b.owner)
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.map.values().map(Vec::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(1)
    }

    #[test]
    fn second_bind_on_same_port_is_addr_in_use() {
        let mut t = PortTable::default();
        let r = (49152, 65535);
        t.bind(Proto::Tcp, None, 80, false, SocketId(1), r, &mut rng())
            .unwrap();
        assert_eq!(
            t.bind(Proto::Tcp, None, 80, false, SocketId(2), r, &mut rng()),
            Err(BindError::InUse)
        );
        // UDP has its own table.
        t.bind(Proto::Udp, None, 80, false, SocketId(3), r, &mut rng())
            .unwrap();
    }

    #[test]
    fn distinct_addresses_share_a_port() {
        let mut t = PortTable::default();
        let r = (49152, 65535);
        let a = Some("10.0.0.1".parse().unwrap());
        let b = Some("10.0.0.2".parse().unwrap());
        t.bind(Proto::Tcp, a, 80, false, SocketId(1), r, &mut rng())
            .unwrap();
        t.bind(Proto::Tcp, b, 80, false, SocketId(2), r, &mut rng())
            .unwrap();
        assert_eq!(
            t.bind(Proto::Tcp, None, 80, false, SocketId(3), r, &mut rng()),
            Err(BindError::InUse)
        );
    }

    #[test]
    fn reuseaddr_shares_unless_someone_listens() {
        let mut t = PortTable::default();
        let r = (49152, 65535);
        t.bind(Proto::Tcp, None, 80, true, SocketId(1), r, &mut rng())
            .unwrap();
        t.bind(Proto::Tcp, None, 80, true, SocketId(2), r, &mut rng())
            .unwrap();
        t.listen(80, SocketId(1)).unwrap();
        assert_eq!(t.listen(80, SocketId(2)), Err(BindError::InUse));
        assert_eq!(
            t.bind(Proto::Tcp, None, 80, true, SocketId(3), r, &mut rng()),
            Err(BindError::InUse)
        );
    }

    #[test]
    fn ephemeral_ports_stay_in_range_run_out_and_come_back() {
        let mut t = PortTable::default();
        let r = (60000, 60009);
        let mut got = Vec::new();
        for i in 0..10 {
            let p = t
                .bind(Proto::Udp, None, 0, false, SocketId(i), r, &mut rng())
                .unwrap();
            assert!((60000..=60009).contains(&p));
            got.push(p);
        }
        let mut uniq = got.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 10);
        assert_eq!(
            t.bind(Proto::Udp, None, 0, false, SocketId(99), r, &mut rng()),
            Err(BindError::Exhausted)
        );
        t.release(Proto::Udp, got[3], SocketId(3));
        assert_eq!(
            t.bind(Proto::Udp, None, 0, false, SocketId(99), r, &mut rng()),
            Ok(got[3])
        );
    }
}
