//! Socket-level load balancing (cgroup sock_addr hooks). A process that
//! connects to (or sends to) a frontend is pointed at a backend once, in
//! the syscall: no per-packet NAT, and no route to Service addresses is
//! needed in the node's namespace. Replies and getpeername() show the
//! frontend, as the process dialled it.
//!
//! Attached to a cgroup that holds the node's processes and its pods (in a
//! real node: the root cgroup; in the lab: one cgroup per node). The
//! node's own sockets (in HOST_NETNS_V1's namespace) are all balanced
//! here. A pod's TCP connect() is too, so its connection goes to the
//! backend as if dialled directly; the rest of a pod's traffic keeps the
//! per-packet path of its veth, which sees what a socket hook cannot:
//! - UDP: a connected UDP socket balanced here would keep a backend that
//!   went away (nothing here can reach into the socket to move it), where
//!   per-packet conntrack picks another;
//! - frontends with sessionAffinity or loadBalancerSourceRanges: both key
//!   on the client's address, which a socket does not have before
//!   connect(). The node's own sockets count as 0.0.0.0 there.
//!
//! Both families, one way (`translate` and `reverse`, generic over
//! [`SockFamily`]). IPv6 has no per-packet path yet, so a pod's IPv6 UDP
//! is balanced here too. An IPv4-mapped address on an IPv6 socket
//! (::ffff:a.b.c.d, a dual-stack socket dialling IPv4) is looked up as
//! the IPv4 address it is and written back mapped.
use aya_ebpf::{
    bindings::{BPF_ANY, bpf_sock_addr},
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval},
    programs::SockAddrContext,
};
use svc_common::{
    Backend, Backend6, DropReason, Ipv6Be, RevNat, RevNat6, SockKey, SockKey6, frontend_flags,
    proto,
};

use crate::{
    lb::{self, Family, Ipv4, Ipv6, Selection},
    maps::{HOST_NETNS_V1, SOCK_RNAT_V1, SOCK_RNAT6_V1, SVC_CIDRS6_V1},
    stats,
};

/// What the syscall does: go ahead (with the address as the program left
/// it), or fail. Not a packet's verdict (action.rs): there is no packet.
pub enum Syscall {
    Allow,
    /// Fail the syscall with "connection refused".
    Refuse,
}

const ECONNREFUSED: i32 = 111;
const SOCK_ALLOW: i32 = 1;
const SOCK_DENY: i32 = 0;

impl Syscall {
    #[inline(always)]
    pub fn code(self) -> i32 {
        match self {
            Syscall::Allow => SOCK_ALLOW,
            Syscall::Refuse => {
                // SAFETY: plain helper call; makes the syscall return
                // -ECONNREFUSED instead of the default -EPERM of a deny.
                unsafe { bpf_set_retval(-ECONNREFUSED) };
                SOCK_DENY
            }
        }
    }
}

/// What the socket hooks need of a family beyond lb.rs's: the socket
/// table of frontends, the service CIDRs, and whether a per-packet path
/// stands behind the hooks.
pub trait SockFamily: Family {
    /// The node's sockets' source before connect(): the unspecified
    /// address.
    const UNSPECIFIED: Self::Addr;
    /// The pods' veths translate this family packet by packet: what a
    /// pod's socket hook leaves alone is still balanced there.
    const PER_PACKET: bool;

    fn backend_address(backend: &Self::Backend) -> (Self::Addr, u16);
    fn in_service_cidrs(addr: Self::Addr) -> bool;
    /// Remembers that socket `cookie`, pointed at `backend`, dialled
    /// `frontend`.
    fn remember_socket(
        cookie: u64,
        backend: (Self::Addr, u16),
        frontend: (Self::Addr, u16),
    ) -> Result<(), DropReason>;
    /// The frontend socket `cookie` dialled, if `peer` is the backend it
    /// was pointed at.
    fn frontend_of_socket(cookie: u64, peer: (Self::Addr, u16)) -> Option<(Self::Addr, u16)>;
}

impl SockFamily for Ipv4 {
    const UNSPECIFIED: u32 = 0;
    const PER_PACKET: bool = true;

    #[inline(always)]
    fn backend_address(backend: &Backend) -> (u32, u16) {
        (backend.addr_be, backend.port_be)
    }

    #[inline(always)]
    fn in_service_cidrs(addr: u32) -> bool {
        lb::in_service_cidrs(addr)
    }

    #[inline(always)]
    fn remember_socket(
        cookie: u64,
        (backend_addr_be, backend_port_be): (u32, u16),
        (addr_be, port_be): (u32, u16),
    ) -> Result<(), DropReason> {
        let key = SockKey {
            cookie,
            backend_addr_be,
            backend_port_be,
            _pad: 0,
        };
        let frontend = RevNat {
            addr_be,
            port_be,
            flags: 0,
        };
        SOCK_RNAT_V1
            .insert(key, frontend, u64::from(BPF_ANY))
            .map_err(|_| DropReason::FlowInsertFailed)
    }

    #[inline(always)]
    fn frontend_of_socket(
        cookie: u64,
        (backend_addr_be, backend_port_be): (u32, u16),
    ) -> Option<(u32, u16)> {
        let key = SockKey {
            cookie,
            backend_addr_be,
            backend_port_be,
            _pad: 0,
        };
        // SAFETY: copied out at once.
        let frontend = unsafe { SOCK_RNAT_V1.get(key) }.copied()?;
        Some((frontend.addr_be, frontend.port_be))
    }
}

impl SockFamily for Ipv6 {
    const UNSPECIFIED: Ipv6Be = [0; 16];
    const PER_PACKET: bool = false;

    #[inline(always)]
    fn backend_address(backend: &Backend6) -> (Ipv6Be, u16) {
        (backend.addr, backend.port_be)
    }

    #[inline(always)]
    fn in_service_cidrs(addr: Ipv6Be) -> bool {
        // SAFETY: a map value, read in place (136 bytes).
        SVC_CIDRS6_V1
            .get_ptr(0)
            .is_some_and(|cidrs| unsafe { (*cidrs).contain(&addr) })
    }

    #[inline(always)]
    fn remember_socket(
        cookie: u64,
        (backend_addr, backend_port_be): (Ipv6Be, u16),
        (addr, port_be): (Ipv6Be, u16),
    ) -> Result<(), DropReason> {
        let key = SockKey6 {
            cookie,
            backend_addr,
            backend_port_be,
            _pad: [0; 6],
        };
        let frontend = RevNat6 {
            addr,
            port_be,
            flags: 0,
        };
        SOCK_RNAT6_V1
            .insert(key, frontend, u64::from(BPF_ANY))
            .map_err(|_| DropReason::FlowInsertFailed)
    }

    #[inline(always)]
    fn frontend_of_socket(
        cookie: u64,
        (backend_addr, backend_port_be): (Ipv6Be, u16),
    ) -> Option<(Ipv6Be, u16)> {
        let key = SockKey6 {
            cookie,
            backend_addr,
            backend_port_be,
            _pad: [0; 6],
        };
        // SAFETY: copied out at once.
        let frontend = unsafe { SOCK_RNAT6_V1.get(key) }.copied()?;
        Some((frontend.addr, frontend.port_be))
    }
}

/// Where a connect() or sendmsg() goes.
pub enum Destination<A> {
    /// As the process asked.
    Unchanged,
    /// To this backend address and port (network order).
    Backend(A, u16),
    Refused,
}

impl<A> Destination<A> {
    /// The same destination with the backend address in another form.
    #[inline(always)]
    fn map<B>(self, convert: impl FnOnce(A) -> B) -> Destination<B> {
        match self {
            Destination::Unchanged => Destination::Unchanged,
            Destination::Backend(addr, port_be) => Destination::Backend(convert(addr), port_be),
            Destination::Refused => Destination::Refused,
        }
    }

    /// What the syscall does; `write` puts a backend's address into the
    /// context (the port is written here).
    #[inline(always)]
    fn into_syscall(self, ctx: &SockAddrContext, write: impl FnOnce(A)) -> Syscall {
        match self {
            Destination::Unchanged => Syscall::Allow,
            Destination::Refused => Syscall::Refuse,
            Destination::Backend(addr, port_be) => {
                write(addr);
                set_user_port(ctx, port_be);
                Syscall::Allow
            }
        }
    }
}

#[inline(always)]
fn sock_addr(ctx: &SockAddrContext) -> *mut bpf_sock_addr {
    ctx.sock_addr
}

/// Whether the socket lives in a pod's network namespace, not the node's.
#[inline(always)]
fn in_pod(ctx: &SockAddrContext) -> bool {
    let host = HOST_NETNS_V1.get(0).map_or(0, |host| host.cookie);
    // SAFETY: the context the kernel handed us is the helper's argument.
    host != 0 && unsafe { bpf_get_netns_cookie(sock_addr(ctx).cast()) } != host
}

#[inline(always)]
fn socket_cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: the context the kernel handed us is the helper's argument.
    unsafe { bpf_get_socket_cookie(sock_addr(ctx).cast()) }
}

#[inline(always)]
fn socket_protocol(ctx: &SockAddrContext) -> u8 {
    // SAFETY: the context the kernel handed us; `protocol` is readable in
    // every sock_addr hook.
    unsafe { (*sock_addr(ctx)).protocol as u8 }
}

/// The port of the context's address (network order, in the low half).
#[inline(always)]
fn user_port(ctx: &SockAddrContext) -> u16 {
    // SAFETY: the context the kernel handed us.
    unsafe { (*sock_addr(ctx)).user_port as u16 }
}

#[inline(always)]
fn set_user_port(ctx: &SockAddrContext, port_be: u16) {
    // SAFETY: the context the kernel handed us; writable in the hooks
    // that call this.
    unsafe { (*sock_addr(ctx)).user_port = u32::from(port_be) }
}

/// The context's IPv6 address. Read a word at a time (volatile, so the
/// compiler keeps the 4-byte loads the verifier allows on it).
#[inline(always)]
fn user_ip6(ctx: &SockAddrContext) -> Ipv6Be {
    let sa = sock_addr(ctx);
    let mut addr = [0u8; 16];
    for (word, bytes) in addr.chunks_exact_mut(4).enumerate() {
        // SAFETY: the context the kernel handed us; `word` < 4.
        let value = unsafe { core::ptr::read_volatile(&raw const (*sa).user_ip6[word]) };
        bytes.copy_from_slice(&value.to_ne_bytes());
    }
    addr
}

#[inline(always)]
fn set_user_ip6(ctx: &SockAddrContext, addr: Ipv6Be) {
    let sa = sock_addr(ctx);
    for (word, bytes) in addr.chunks_exact(4).enumerate() {
        let value = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        // SAFETY: as in `user_ip6`; writable in connect6 and sendmsg6.
        unsafe { core::ptr::write_volatile(&raw mut (*sa).user_ip6[word], value) };
    }
}

/// The IPv4 address an IPv4-mapped IPv6 address (::ffff:a.b.c.d) holds.
#[inline(always)]
fn mapped_ipv4(addr: &Ipv6Be) -> Option<u32> {
    let prefix = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    (addr[..12] == prefix).then(|| u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]))
}

#[inline(always)]
fn mapped(addr_be: u32) -> Ipv6Be {
    let mut addr = [0u8; 16];
    addr[10] = 0xff;
    addr[11] = 0xff;
    addr[12..].copy_from_slice(&addr_be.to_ne_bytes());
    addr
}

/// connect() and sendmsg() of an IPv4 socket: a frontend destination
/// becomes a backend.
#[inline(always)]
pub fn try_translate4(ctx: &SockAddrContext) -> Result<Syscall, DropReason> {
    // SAFETY: the context the kernel handed us; readable in connect4 and
    // sendmsg4.
    let daddr_be = unsafe { (*sock_addr(ctx)).user_ip4 };
    let destination = translate::<Ipv4>(ctx, daddr_be, user_port(ctx))?;
    Ok(destination.into_syscall(ctx, |addr_be| {
        // SAFETY: as above; writable there.
        unsafe { (*sock_addr(ctx)).user_ip4 = addr_be };
    }))
}

/// connect() and sendmsg() of an IPv6 socket, IPv4-mapped destinations
/// included.
#[inline(always)]
pub fn try_translate6(ctx: &SockAddrContext) -> Result<Syscall, DropReason> {
    let daddr = user_ip6(ctx);
    let dport_be = user_port(ctx);
    let destination = match mapped_ipv4(&daddr) {
        Some(daddr_be) => translate::<Ipv4>(ctx, daddr_be, dport_be)?.map(mapped),
        None => translate::<Ipv6>(ctx, daddr, dport_be)?,
    };
    Ok(destination.into_syscall(ctx, |addr| set_user_ip6(ctx, addr)))
}

/// Where a socket's connect() or sendmsg() to `daddr`:`dport_be` goes.
#[inline(always)]
fn translate<F: SockFamily>(
    ctx: &SockAddrContext,
    daddr: F::Addr,
    dport_be: u16,
) -> Result<Destination<F::Addr>, DropReason> {
    let protocol = socket_protocol(ctx);
    if protocol != proto::TCP && protocol != proto::UDP {
        return Ok(Destination::Unchanged);
    }
    let pod = in_pod(ctx);
    if pod && protocol != proto::TCP && F::PER_PACKET {
        return Ok(Destination::Unchanged);
    }
    let Some((key, header)) = lb::frontend_header_of::<F>(daddr, dport_be, protocol) else {
        return Ok(if F::in_service_cidrs(daddr) {
            Destination::Refused
        } else {
            Destination::Unchanged
        });
    };
    if pod && (header.affinity_timeout_s > 0 || header.flags & frontend_flags::SOURCE_RANGES != 0) {
        return Ok(Destination::Unchanged);
    }
    // The node's socket has no source address before connect() or
    // sendmsg(): source ranges and affinity see it as unspecified.
    match lb::select_from::<F>(key, &header, F::UNSPECIFIED, None)? {
        Selection::NotAFrontend => Ok(Destination::Unchanged),
        // The per-packet path drops these (kube-proxy's way for external
        // traffic with eTP Local); a pod's packets go there as before.
        Selection::Empty { drop: true } if pod => Ok(Destination::Unchanged),
        Selection::Empty { .. } => Ok(Destination::Refused),
        Selection::Backend(selected) => {
            let backend = F::backend_address(&selected.backend);
            F::remember_socket(socket_cookie(ctx), backend, (daddr, dport_be))?;
            stats::count_frontend(selected.rev_nat_id, 0);
            Ok(Destination::Backend(backend.0, backend.1))
        }
    }
}

/// recvmsg() and getpeername() of an IPv4 socket: a backend source
/// becomes the frontend the socket was pointed at.
#[inline(always)]
pub fn try_reverse4(ctx: &SockAddrContext) -> Result<Syscall, DropReason> {
    // SAFETY: the context the kernel handed us.
    let addr_be = unsafe { (*sock_addr(ctx)).user_ip4 };
    if let Some((addr_be, port_be)) =
        Ipv4::frontend_of_socket(socket_cookie(ctx), (addr_be, user_port(ctx)))
    {
        // SAFETY: as above; writable in recvmsg4 and getpeername4.
        unsafe { (*sock_addr(ctx)).user_ip4 = addr_be };
        set_user_port(ctx, port_be);
    }
    Ok(Syscall::Allow)
}

/// recvmsg() and getpeername() of an IPv6 socket, IPv4-mapped peers
/// included.
#[inline(always)]
pub fn try_reverse6(ctx: &SockAddrContext) -> Result<Syscall, DropReason> {
    let addr = user_ip6(ctx);
    let port_be = user_port(ctx);
    let cookie = socket_cookie(ctx);
    let frontend = match mapped_ipv4(&addr) {
        Some(addr_be) => Ipv4::frontend_of_socket(cookie, (addr_be, port_be))
            .map(|(addr_be, port_be)| (mapped(addr_be), port_be)),
        None => Ipv6::frontend_of_socket(cookie, (addr, port_be)),
    };
    if let Some((addr, port_be)) = frontend {
        set_user_ip6(ctx, addr);
        set_user_port(ctx, port_be);
    }
    Ok(Syscall::Allow)
}
