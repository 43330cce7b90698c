//! Which interfaces exist in this network namespace, and when that
//! changes; which of them hold given addresses or the IPv4 default route.
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
//! setns, as the lab does). `getifaddrs` asks over netlink too, and
//! /proc/net/route shows the reading process's namespace.
use std::{
    ffi::CStr,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
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

/// The interfaces holding one of `addresses` (of either family), loopback
/// left out.
pub fn holding(addresses: &[IpAddr]) -> io::Result<Vec<String>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list, freed with
    // freeifaddrs below, or fails and leaves it alone.
    if unsafe { libc::getifaddrs(&raw mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found: Vec<String> = Vec::new();
    let mut entry = list;
    // SAFETY: every entry up to the NULL `ifa_next` is valid; `ifa_addr`
    // may be NULL, and is a sockaddr_in when its family is AF_INET, a
    // sockaddr_in6 when AF_INET6;
    // `ifa_name` is a NUL-terminated string; all owned by the list.
    unsafe {
        while let Some(current) = entry.as_ref() {
            entry = current.ifa_next;
            let Some(address) = current.ifa_addr.as_ref() else {
                continue;
            };
            if current.ifa_flags & libc::IFF_LOOPBACK as u32 != 0 {
                continue;
            }
            let address: IpAddr = match i32::from(address.sa_family) {
                libc::AF_INET => {
                    let address = &*current.ifa_addr.cast::<libc::sockaddr_in>();
                    Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr)).into()
                }
                libc::AF_INET6 => {
                    let address = &*current.ifa_addr.cast::<libc::sockaddr_in6>();
                    Ipv6Addr::from(address.sin6_addr.s6_addr).into()
                }
                _ => continue,
            };
            if !addresses.contains(&address) {
                continue;
            }
            let name = CStr::from_ptr(current.ifa_name)
                .to_string_lossy()
                .into_owned();
            if !found.contains(&name) {
                found.push(name);
            }
        }
        libc::freeifaddrs(list);
    }
    Ok(found)
}

/// The interfaces of this network namespace's IPv4 default routes (the
/// main table, as /proc/net/route shows it).
pub fn default_route() -> io::Result<Vec<String>> {
    Ok(default_route_interfaces(&std::fs::read_to_string(
        "/proc/net/route",
    )?))
}

/// The interfaces of the routes that are up with destination and mask
/// 0.0.0.0 in /proc/net/route's text (`Iface Destination Gateway Flags
/// RefCnt Use Metric Mask ...`, addresses and flags in hex).
fn default_route_interfaces(table: &str) -> Vec<String> {
    const RTF_UP: u32 = 0x1;
    let mut found: Vec<String> = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [
            name,
            destination,
            _gateway,
            flags,
            _refcnt,
            _use,
            _metric,
            mask,
            ..,
        ] = fields[..]
        else {
            continue;
        };
        let up = u32::from_str_radix(flags, 16).is_ok_and(|flags| flags & RTF_UP != 0);
        if up
            && destination == "00000000"
            && mask == "00000000"
            && !found.iter().any(|known| known == name)
        {
            found.push(name.to_owned());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_are_those_up_to_anywhere() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010012AC\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t000012AC\t00000000\t0001\t0\t0\t100\t0000FFFF\t0\t0\t0
wg0\t00000000\t00000000\t0000\t0\t0\t50\t00000000\t0\t0\t0
eth1\t00000000\t010013AC\t0003\t0\t0\t200\t00000000\t0\t0\t0
eth1\t00000000\t010013AC\t0003\t0\t0\t300\t00000000\t0\t0\t0
lxc0\t0A0012C6\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0
";
        // wg0's route is not up (no RTF_UP); lxc0's is a host route.
        assert_eq!(default_route_interfaces(table), ["eth0", "eth1"]);
        assert!(default_route_interfaces("Iface\tDestination\n").is_empty());
    }

    #[test]
    fn loopback_never_holds_an_address() {
        assert_eq!(
            holding(&[Ipv4Addr::LOCALHOST.into()]).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn loopback_is_listed() {
        assert!(names().unwrap().iter().any(|(name, _)| name == "lo"));
        assert_eq!(with_prefix("lo").unwrap(), vec![("lo".to_owned(), 1)]);
    }
}
