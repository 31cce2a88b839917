//! The systemd readiness message (`Type=notify`): `systemctl --user start`
//! returns once the port is open, so a `go` run right after it never races the
//! bind. Without `NOTIFY_SOCKET` (not under systemd) it does nothing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// Tells the service manager the forwarder is ready, with `status` shown by
/// `systemctl status`. A failure is logged: the forwarder works regardless.
pub fn ready(status: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("READY=1\nSTATUS={status}\n");
    if let Err(error) = send(&socket, message.as_bytes()) {
        tracing::warn!(%error, "telling systemd the forwarder is ready (NOTIFY_SOCKET)");
    }
}

fn send(socket: &OsStr, message: &[u8]) -> std::io::Result<()> {
    let datagram = UnixDatagram::unbound()?;
    match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => send_abstract(&datagram, name, message),
        None => datagram.send_to(message, socket).map(drop),
    }
}

/// systemd may name a socket in the abstract namespace (`@name`).
#[cfg(target_os = "linux")]
fn send_abstract(datagram: &UnixDatagram, name: &[u8], message: &[u8]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    datagram.send_to_addr(message, &addr).map(drop)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "abstract socket names exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), b"READY=1\n").unwrap();
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_message_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("mirror-forward-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&addr).unwrap();
        send(OsStr::new(&format!("@{name}")), b"READY=1\n").unwrap();
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"READY=1\n");
    }
}
