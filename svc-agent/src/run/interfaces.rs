//! Which pod interfaces exist in this network namespace, and when that
//! changes.
//!
//! The run loop lists interfaces ([`with_prefix`]) whenever the kernel
//! reports a link change ([`LinkEvents`], rtnetlink's RTMGRP_LINK group:
//! a veth made, renamed, moved, set up or deleted), and attaches to the
//! ones it has not seen, by index: a veth deleted and made again under the
//! same name (a pod replaced) has a new index, so it is attached again,
//! however quickly that happened. The notification only wakes the loop; the
//! full list is read every time, so a lost notification (the socket's
//! buffer overrun under a burst) costs nothing but a wait for the next one
//! or for the slow [`RESCAN`], which also retries failed attachments.
//! `if_nameindex` asks the kernel over netlink, so it lists the interfaces
//! of the calling thread's network namespace, as the notification socket
//! hears that namespace's links; /sys/class/net would show the namespace
//! sysfs was mounted in (the root namespace when the agent is started with
//! setns, as the lab does).
use std::{
    ffi::CStr,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

use tokio::io::{Interest, unix::AsyncFd};

/// A full listing this often even without notifications: the safety net,
/// and the retry of attachments that failed.
pub const RESCAN: Duration = Duration::from_secs(2);

/// rtnetlink link notifications of this network namespace.
pub struct LinkEvents {
    socket: AsyncFd<OwnedFd>,
}

impl LinkEvents {
    pub fn subscribe() -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor, owned from here on.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zero is a valid start.
        let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        address.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: `address` is a valid sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                std::ptr::from_ref(&address).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor is the OwnedFd's own, which stays open and
        // the same for as long as the AsyncFd holds it.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { socket })
    }

    /// Waits for the next link notification, and reads every one queued
    /// (what they say does not matter: the caller lists the links again).
    pub async fn changed(&mut self) -> io::Result<()> {
        loop {
            let mut ready = self.socket.readable().await?;
            match ready.try_io(|socket| drain(socket.get_ref())) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// Reads until nothing is left; Err(WouldBlock) when nothing was there.
fn drain(socket: &OwnedFd) -> io::Result<()> {
    let mut buffer = [0u8; 8192];
    let mut read_any = false;
    loop {
        // SAFETY: reads into a buffer of the length given.
        let read = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if read >= 0 {
            read_any = true;
            continue;
        }
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::EAGAIN) if read_any => Ok(()),
            Some(libc::EAGAIN) => Err(io::ErrorKind::WouldBlock.into()),
            // Notifications were lost: the listing that follows sees
            // everything anyway.
            Some(libc::ENOBUFS) => Ok(()),
            Some(libc::EINTR) => continue,
            _ => Err(error),
        };
    }
}

/// Every interface in this network namespace: (name, index).
pub fn names() -> std::io::Result<Vec<(String, u32)>> {
    // SAFETY: if_nameindex returns a heap array ended by a zeroed entry, or
    // NULL on error; it is freed with if_freenameindex below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    let mut names = Vec::new();
    let mut entry = list;
    // SAFETY: entries up to the zeroed terminator are valid, and each name
    // is a NUL-terminated string owned by the list.
    unsafe {
        while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
            names.push((
                CStr::from_ptr((*entry).if_name)
                    .to_string_lossy()
                    .into_owned(),
                (*entry).if_index,
            ));
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
    }
    Ok(names)
}

/// The interfaces whose names start with `prefix`: (name, index).
pub fn with_prefix(prefix: &str) -> std::io::Result<Vec<(String, u32)>> {
    Ok(names()?
        .into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed() {
        assert!(names().unwrap().iter().any(|(name, _)| name == "lo"));
        assert_eq!(with_prefix("lo").unwrap(), vec![("lo".to_owned(), 1)]);
    }
}
