//! Which interfaces the NIC's XDP program may send packets out of
//! (XDP_TARGETS_V1). A frame XDP redirects to an interface whose driver
//! cannot transmit XDP frames (no `ndo_xdp_xmit`: a VLAN, a VXLAN, most
//! bonds, a veth whose peer runs no XDP program) is dropped by the kernel
//! after the program has returned, where no counter of ours sees it. So
//! the program sends only to interfaces listed here, and leaves every
//! other packet untouched to the TC program behind it, whose skbs go out
//! of any interface.
//!
//! Whether a driver transmits XDP frames can change while it runs (many
//! set it only while an XDP program is attached to them, a veth only
//! while its peer has one), so the list is read from the kernel (the
//! `netdev` generic netlink family's `xdp-features`, Linux 6.3 and later)
//! at every node interface attachment and every rescan. On a kernel
//! without that family the list stays empty: correct, only slower.
use std::{
    collections::BTreeMap,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

/// include/uapi/linux/genetlink.h
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// include/uapi/linux/netdev.h
const NETDEV_FAMILY: &[u8] = b"netdev\0";
const NETDEV_CMD_DEV_GET: u8 = 1;
const NETDEV_A_DEV_IFINDEX: u16 = 1;
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
/// The driver takes frames other interfaces' XDP programs redirect to it.
pub const NETDEV_XDP_ACT_NDO_XMIT: u64 = 1 << 2;

const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;
/// Attribute types carry two flag bits above these.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// The interfaces of the calling thread's network namespace whose driver
/// transmits XDP frames, each with its XDP feature bits.
pub fn transmitters() -> io::Result<BTreeMap<u32, u64>> {
    let socket = GenericNetlink::open()?;
    let family = match socket.netdev_family() {
        Ok(family) => family,
        // No netdev family (Linux before 6.3): nothing is known to take
        // XDP frames.
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => return Ok(BTreeMap::new()),
        Err(error) => return Err(error),
    };
    let mut found = BTreeMap::new();
    socket.send(&request(
        family,
        libc::NLM_F_DUMP as u16,
        NETDEV_CMD_DEV_GET,
        &[],
    ))?;
    socket.receive(|payload| {
        let attributes = attributes(payload);
        let ifindex = attributes
            .get(&NETDEV_A_DEV_IFINDEX)
            .and_then(|value| Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?)));
        let features = attributes
            .get(&NETDEV_A_DEV_XDP_FEATURES)
            .and_then(|value| Some(u64::from_ne_bytes(value.get(..8)?.try_into().ok()?)));
        if let (Some(ifindex), Some(features)) = (ifindex, features)
            && features & NETDEV_XDP_ACT_NDO_XMIT != 0
        {
            found.insert(ifindex, features);
        }
    })?;
    Ok(found)
}

/// A generic netlink message: header, command, attributes.
fn request(family: u16, flags: u16, command: u8, attributes: &[(u16, &[u8])]) -> Vec<u8> {
    let mut message = vec![0; NLMSG_HDRLEN];
    message.extend_from_slice(&[command, 1, 0, 0]);
    for (kind, value) in attributes {
        let length = (NLA_HDRLEN + value.len()) as u16;
        message.extend_from_slice(&length.to_ne_bytes());
        message.extend_from_slice(&kind.to_ne_bytes());
        message.extend_from_slice(value);
        message.resize(message.len().next_multiple_of(4), 0);
    }
    let length = message.len() as u32;
    message[..4].copy_from_slice(&length.to_ne_bytes());
    message[4..6].copy_from_slice(&family.to_ne_bytes());
    let flags = flags | libc::NLM_F_REQUEST as u16;
    message[6..8].copy_from_slice(&flags.to_ne_bytes());
    message
}

/// A generic netlink payload's attributes (after its command header), by
/// type; a malformed tail ends the list.
fn attributes(payload: &[u8]) -> BTreeMap<u16, &[u8]> {
    let mut found = BTreeMap::new();
    let mut rest = payload.get(GENL_HDRLEN..).unwrap_or_default();
    while let Some(header) = rest.get(..NLA_HDRLEN) {
        let length = usize::from(u16::from_ne_bytes([header[0], header[1]]));
        let kind = u16::from_ne_bytes([header[2], header[3]]) & NLA_TYPE_MASK;
        let Some(value) = rest.get(NLA_HDRLEN..length) else {
            break;
        };
        found.insert(kind, value);
        rest = rest.get(length.next_multiple_of(4)..).unwrap_or_default();
    }
    found
}

struct GenericNetlink {
    socket: OwnedFd,
}

impl GenericNetlink {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor, owned from here on.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: a valid timeval of the size given. A kernel that never
        // answers must not hang the agent's loop.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { socket })
    }

    /// The netdev family's id (ENOENT without it).
    fn netdev_family(&self) -> io::Result<u16> {
        self.send(&request(
            GENL_ID_CTRL,
            0,
            CTRL_CMD_GETFAMILY,
            &[(CTRL_ATTR_FAMILY_NAME, NETDEV_FAMILY)],
        ))?;
        let mut family = None;
        self.receive(|payload| {
            family = attributes(payload)
                .get(&CTRL_ATTR_FAMILY_ID)
                .and_then(|value| Some(u16::from_ne_bytes(value.get(..2)?.try_into().ok()?)));
        })?;
        family.ok_or_else(|| io::Error::other("the netdev family's answer has no id"))
    }

    fn send(&self, message: &[u8]) -> io::Result<()> {
        // SAFETY: the buffer outlives the call; the kernel is the peer.
        let sent = unsafe {
            libc::send(
                self.socket.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Hands each answer's payload to `each` until the answer ends: a
    /// dump's NLMSG_DONE, an error, or a single message's end.
    fn receive(&self, mut each: impl FnMut(&[u8])) -> io::Result<()> {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: the buffer outlives the call, its length as given.
            let received = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            let received = usize::try_from(received).map_err(|_| io::Error::last_os_error())?;
            let mut rest = &buffer[..received];
            let mut multipart = false;
            while let Some(header) = rest.get(..NLMSG_HDRLEN) {
                let length = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]);
                let length = (length as usize).max(NLMSG_HDRLEN);
                let kind = u16::from_ne_bytes([header[4], header[5]]);
                let flags = u16::from_ne_bytes([header[6], header[7]]);
                let payload = rest.get(NLMSG_HDRLEN..length).unwrap_or_default();
                match kind {
                    k if k == libc::NLMSG_DONE as u16 => return Ok(()),
                    k if k == libc::NLMSG_ERROR as u16 => {
                        let errno = payload
                            .get(..4)
                            .map_or(0, |e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]));
                        return match errno {
                            0 => Ok(()),
                            errno => Err(io::Error::from_raw_os_error(-errno)),
                        };
                    }
                    _ => each(payload),
                }
                multipart |= flags & libc::NLM_F_MULTI as u16 != 0;
                rest = rest.get(length.next_multiple_of(4)..).unwrap_or_default();
            }
            if !multipart {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_read_by_type_up_to_a_malformed_tail() {
        let message = request(
            20,
            0,
            NETDEV_CMD_DEV_GET,
            &[
                (NETDEV_A_DEV_IFINDEX, &7u32.to_ne_bytes()),
                (NETDEV_A_DEV_XDP_FEATURES | 0x8000, &0x2fu64.to_ne_bytes()),
                (9, b"abc"),
            ],
        );
        assert_eq!(message.len() % 4, 0);
        let mut payload = message[NLMSG_HDRLEN..].to_vec();
        // A last attribute claiming more bytes than there are.
        payload.extend_from_slice(&[200, 0, 5, 0, 1, 2]);
        let found = attributes(&payload);
        assert_eq!(found[&NETDEV_A_DEV_IFINDEX], 7u32.to_ne_bytes());
        assert_eq!(found[&NETDEV_A_DEV_XDP_FEATURES], 0x2fu64.to_ne_bytes());
        assert_eq!(found[&9], b"abc");
        assert!(!found.contains_key(&5));
    }
}
