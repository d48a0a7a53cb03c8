//! Whether a port can be bound right now, on the address families that
//! exist on this machine.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

/// The address families a server could listen on here.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Families {
    v4: bool,
    v6: bool,
}

impl Families {
    /// Finds out which families work by binding an OS-chosen port on each
    /// wildcard address. A machine with IPv6 disabled (or IPv4 absent)
    /// simply skips that family instead of reporting every port busy.
    pub(crate) fn detect() -> Self {
        let v4 = works(Ipv4Addr::UNSPECIFIED.into());
        let v6 = works(Ipv6Addr::UNSPECIFIED.into());
        tracing::debug!(ipv4 = v4, ipv6 = v6, "detected address families");
        Self { v4, v6 }
    }

    /// Whether `port` is free on every family that exists: a TCP listener
    /// can be bound on the wildcard address. "Address in use" and
    /// "permission denied" both mean busy; so does anything unexpected.
    pub(crate) fn is_free(&self, port: u16) -> bool {
        (!self.v4 || bindable(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))))
            && (!self.v6 || bindable(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))))
    }
}

fn works(ip: std::net::IpAddr) -> bool {
    match TcpListener::bind(SocketAddr::new(ip, 0)) {
        Ok(_) => true,
        Err(error) => {
            tracing::debug!(%ip, %error, "address family unavailable");
            false
        }
    }
}

fn bindable(address: SocketAddr) -> bool {
    match TcpListener::bind(address) {
        Ok(_) => true,
        Err(error) => {
            match error.kind() {
                ErrorKind::AddrInUse | ErrorKind::PermissionDenied => {}
                _ => {
                    tracing::debug!(%address, %error, "unexpected bind error; treating the port as busy")
                }
            }
            false
        }
    }
}
