//! The port probe: does anything listen on the owner's recorded port?
//! It connects only (never sends, never binds) and a timeout is "cannot tell".

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;

/// The default bound of one probe, as in the TypeScript version.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

const LOOPBACKS: [IpAddr; 2] = [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
  /// A connection on some loopback address was accepted.
  Listening,
  /// Every loopback address refused (or does not exist on this host).
  Free,
  /// A connect timed out or failed in a way that proves nothing.
  CannotTell,
}

impl PortState {
  pub fn as_str(self) -> &'static str {
    match self {
      PortState::Listening => "listening",
      PortState::Free => "free",
      PortState::CannotTell => "cannot-tell",
    }
  }
}

/// Probes every loopback address at once, each within `bound`.
pub async fn probe(port: u16, bound: Duration) -> PortState {
  let attempts = LOOPBACKS.map(|ip| connect(SocketAddr::new(ip, port), bound));
  let [v4, v6] = attempts;
  let (v4, v6) = tokio::join!(v4, v6);
  match (v4, v6) {
    (PortState::Listening, _) | (_, PortState::Listening) => PortState::Listening,
    (PortState::Free, PortState::Free) => PortState::Free,
    _ => PortState::CannotTell,
  }
}

async fn connect(addr: SocketAddr, bound: Duration) -> PortState {
  match timeout(bound, TcpStream::connect(addr)).await {
    Ok(Ok(_stream)) => PortState::Listening,
    Ok(Err(err)) if refused(&err) => PortState::Free,
    Ok(Err(_)) | Err(_) => PortState::CannotTell,
  }
}

/// Refused, or an address family this host does not have: nobody listens there.
fn refused(err: &std::io::Error) -> bool {
  matches!(
    err.kind(),
    ErrorKind::ConnectionRefused | ErrorKind::AddrNotAvailable | ErrorKind::NetworkUnreachable
  ) || err.raw_os_error() == Some(libc_eafnosupport())
}

#[cfg(unix)]
fn libc_eafnosupport() -> i32 {
  libc::EAFNOSUPPORT
}

#[cfg(windows)]
fn libc_eafnosupport() -> i32 {
  10047
}
