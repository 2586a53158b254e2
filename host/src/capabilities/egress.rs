//! Which addresses outbound HTTP may reach once a grant has allowed the URL.
//!
//! A grant names a host; what that name resolves to is up to DNS, which the
//! grant's author may not control. So a host name that resolves to the
//! machine itself (loopback, `0.0.0.0`), to link-local addresses (cloud
//! metadata services live at 169.254.169.254), or to the engine's own
//! listener is refused, unless the grant says `allowInternal: true`. A grant
//! that names an IP literal names its address itself and needs no opt-in.
//!
//! The check happens twice: before the request, with the URL's port (which
//! catches the engine's own listener), and again in the HTTP client's
//! resolver (port-agnostic), so a name that changes its answer between the
//! two lookups still cannot reach loopback or link-local addresses.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Whether an address is the machine itself or link-local.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Whether `ip` is an address of this machine (binding to it succeeds).
fn is_local(ip: IpAddr) -> bool {
    is_internal(ip) || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Whether `addr` is the engine's own listener.
pub fn is_own_listener(addr: SocketAddr, listen: Option<SocketAddr>) -> bool {
    let Some(listen) = listen else {
        return false;
    };
    addr.port() == listen.port()
        && (addr.ip() == listen.ip() || (listen.ip().is_unspecified() && is_local(addr.ip())))
}

/// Resolves `host:port` and refuses if any answer is internal or the
/// engine's own listener; the reason names what was found, not the address.
pub async fn check_host(host: &str, port: u16, listen: Option<SocketAddr>) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.iter().any(|a| is_own_listener(*a, listen)) {
        return Err(format!(
            "{host}:{port} is this engine's own listener; grant it by IP with allowInternal to call it"
        ));
    }
    if addrs.iter().any(|a| is_internal(a.ip())) {
        return Err(format!(
            "{host} resolves to a loopback or link-local address; add `allowInternal: true` to the grant, or grant the IP literal, to reach it"
        ));
    }
    Ok(())
}

/// The HTTP client's resolver for grants without `allowInternal`: drops
/// internal answers, and fails when nothing else is left.
pub struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{host} resolves only to loopback or link-local addresses, which its grant does not allow"
                )
                .into());
            }
            Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The guarded resolver, shared.
pub fn guarded() -> Arc<GuardedResolver> {
    Arc::new(GuardedResolver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for internal in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "169.254.169.254",
            "::1",
            "::",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for external in ["10.0.0.1", "192.168.1.1", "8.8.8.8", "2001:db8::1"] {
            assert!(!is_internal(external.parse().unwrap()), "{external}");
        }
    }

    #[test]
    fn own_listener_on_any_address_covers_local_ones() {
        let any: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        assert!(is_own_listener(
            "127.0.0.1:7070".parse().unwrap(),
            Some(any)
        ));
        assert!(!is_own_listener(
            "127.0.0.1:7071".parse().unwrap(),
            Some(any)
        ));
        let one: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        assert!(is_own_listener(one, Some(one)));
        assert!(!is_own_listener("8.8.8.8:7070".parse().unwrap(), Some(any)));
    }

    #[tokio::test]
    async fn localhost_is_refused_and_named_addresses_are_not_checked_here() {
        let e = check_host("localhost", 8080, None).await.unwrap_err();
        assert!(e.contains("allowInternal"), "{e}");
    }
}
