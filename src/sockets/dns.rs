//! Per-vnet name resolution: each vnet carries its own hosts entries and
//! resolver configuration (what `/etc/hosts` and `/etc/resolv.conf` are to
//! a host), used by programs that run in the vnet through the preload
//! library instead of the host's files.

use std::net::IpAddr;

use crate::vnet::{InitCx, PerVnet, SysInitOrder};

/// A vnet's resolver configuration.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resolv {
    /// Host name to addresses, in the order given.
    pub hosts: Vec<(String, Vec<IpAddr>)>,
    /// Name servers (reached through the vnet's own stack).
    pub nameservers: Vec<IpAddr>,
    /// Search domains.
    pub search: Vec<String>,
}

impl PerVnet for Resolv {
    const NAME: &'static str = "resolv";
    const ORDER: SysInitOrder = SysInitOrder::LATE;
    fn init(_cx: &mut InitCx<'_>) -> Self {
        Resolv::default()
    }
}

/// The longest host name accepted (RFC 1035).
pub const MAX_NAME: usize = 253;

/// Checks a host name: dot-separated labels of letters, digits, `-` and
/// `_`, each 1 to 63 bytes.
///
/// # Errors
/// Says what is wrong.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("host name {name:?}: 1 to {MAX_NAME} bytes"));
    }
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "host name {name:?}: labels are 1 to 63 letters, digits, '-' or '_'"
            ));
        }
    }
    Ok(())
}

impl Resolv {
    /// Adds `addrs` to `name`'s entry (creating it).
    pub fn add_host(&mut self, name: &str, addrs: &[IpAddr]) {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        match self.hosts.iter_mut().find(|(n, _)| *n == key) {
            Some((_, a)) => {
                for x in addrs {
                    if !a.contains(x) {
                        a.push(*x);
                    }
                }
            }
            None => self.hosts.push((key, addrs.to_vec())),
        }
    }

    /// Removes `name`'s entry; whether there was one.
    pub fn del_host(&mut self, name: &str) -> bool {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        let before = self.hosts.len();
        self.hosts.retain(|(n, _)| *n != key);
        self.hosts.len() != before
    }

    /// The addresses of `name` from the hosts entries: the name as given,
    /// then with each search domain; `localhost` always resolves.
    pub fn lookup(&self, name: &str) -> Vec<IpAddr> {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        let find = |k: &str| {
            self.hosts
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, a)| a.clone())
        };
        if let Some(a) = find(&key) {
            return a;
        }
        if !name.ends_with('.') {
            for d in &self.search {
                if let Some(a) = find(&format!("{key}.{}", d.to_ascii_lowercase())) {
                    return a;
                }
            }
        }
        if key == "localhost" || key.ends_with(".localhost") {
            return vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ];
        }
        Vec::new()
    }

    /// The configuration as `resolv.conf` text.
    pub fn resolv_conf(&self) -> String {
        let mut s = String::new();
        for n in &self.nameservers {
            s.push_str(&format!("nameserver {n}\n"));
        }
        if !self.search.is_empty() {
            s.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_search() {
        let mut r = Resolv::default();
        r.add_host("Web.Example", &["10.0.0.2".parse().unwrap()]);
        r.search.push("example".into());
        assert_eq!(
            r.lookup("web.example"),
            vec!["10.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(r.lookup("web"), vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
        assert!(r.lookup("web.").is_empty());
        assert!(r.lookup("nope").is_empty());
        assert_eq!(r.lookup("localhost").len(), 2);
        assert!(r.del_host("web.example"));
        assert!(check_name("a-b.c_d").is_ok());
        assert!(check_name("bad name").is_err());
        assert!(check_name("").is_err());
    }
}
