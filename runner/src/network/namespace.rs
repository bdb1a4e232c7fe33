//! A fresh network namespace with only loopback up, made on a thread of its own so the
//! runner's threads never leave the host's.
//!
//! The thread `unshare(CLONE_NEWNET)`s (it needs `CAP_SYS_ADMIN`: a root runner), brings
//! `lo` up, opens `/proc/thread-self/ns/net` — the descriptor a step's leader `setns`es
//! into (`launch`) and which keeps the namespace alive — and, for an allow-list, binds the
//! proxy's listener on `127.0.0.1` there: a socket stays in the namespace it was made in,
//! so the runner accepts on it from its own while only the step's processes can connect —
//! and the DNS stub's UDP socket on `127.0.0.1:53`.
//! Then the thread ends; nothing of the runner stays in the namespace but these two
//! descriptors.
#![allow(unsafe_code)]

use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The proxy's listener and the DNS stub's socket, bound in the step's namespace.
pub(super) type Bound = (TcpListener, UdpSocket);

/// A new namespace's descriptor, and the proxy's and DNS stub's sockets bound in it when
/// `listeners`.
pub(super) fn create(listeners: bool) -> io::Result<(OwnedFd, Option<Bound>)> {
    std::thread::Builder::new()
        .name("plue-netns".into())
        .spawn(move || {
            // SAFETY: `unshare` moves only this thread, which ends below, into a new
            // network namespace; no memory is involved.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            loopback_up()?;
            let ns = std::fs::File::open("/proc/thread-self/ns/net")?;
            let listener = if listeners {
                Some((
                    TcpListener::bind(("127.0.0.1", 0))?,
                    UdpSocket::bind(("127.0.0.1", 53))?,
                ))
            } else {
                None
            };
            Ok((OwnedFd::from(ns), listener))
        })?
        .join()
        .map_err(|_| io::Error::other("the network namespace thread panicked"))?
}

/// Sets `IFF_UP` on `lo` in the calling thread's network namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a fresh socket whose descriptor we own at once.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `socket` is a descriptor we just opened and nobody else holds.
    let socket = unsafe { OwnedFd::from_raw_fd(socket) };
    // SAFETY: `ifreq` is plain data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *to = *from as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the `ifreq` we pass, which lives
    // across both calls.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) != 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
