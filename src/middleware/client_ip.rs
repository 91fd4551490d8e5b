//! Who the client is: the socket peer, or what trusted proxies say it is.

use std::{net::IpAddr, sync::Arc};

use actix_web::dev::ServiceRequest;
use ipnet::IpNet;

/// The client's address: the socket peer, unless the peer is a trusted proxy, in which case
/// the nearest address in `X-Forwarded-For` that is not itself a trusted proxy.
#[derive(Clone, Debug)]
pub struct ClientIp {
    trusted_proxies: Arc<[IpNet]>,
}

impl ClientIp {
    pub fn new(trusted_proxies: &[IpNet]) -> Self {
        Self {
            trusted_proxies: trusted_proxies.into(),
        }
    }

    fn is_trusted(&self, ip: &IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(ip))
    }

    /// Walks `X-Forwarded-For` from the right (the hop nearest to us): every trusted proxy
    /// appends what it saw, so the first untrusted address is the one nobody could forge.
    pub fn resolve(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.is_trusted(&peer) {
            return peer;
        }
        let mut client = peer;
        for hop in forwarded_for.unwrap_or_default().rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.is_trusted(&ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }

    /// The client of `req`; `None` only when the connection has no peer address.
    pub fn of(&self, req: &ServiceRequest) -> Option<IpAddr> {
        let peer = req.peer_addr()?.ip();
        // Proxies may split the list over several header lines; together they are one list.
        let forwarded: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .collect();
        Some(self.resolve(peer, Some(&forwarded.join(","))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_are_the_client() {
        let client_ip = ClientIp::new(&[]);
        assert_eq!(
            client_ip.resolve(ip("1.2.3.4"), Some("9.9.9.9")),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn trusted_proxies_pass_on_the_nearest_untrusted_hop() {
        let client_ip = ClientIp::new(&["10.0.0.0/8".parse().unwrap()]);
        // The client forged the first entry; 10.0.0.2 is another proxy of ours.
        let header = "6.6.6.6, 1.2.3.4, 10.0.0.2";
        assert_eq!(
            client_ip.resolve(ip("10.0.0.1"), Some(header)),
            ip("1.2.3.4")
        );
        assert_eq!(client_ip.resolve(ip("10.0.0.1"), None), ip("10.0.0.1"));
        assert_eq!(
            client_ip.resolve(ip("10.0.0.1"), Some("garbage")),
            ip("10.0.0.1")
        );
    }
}
