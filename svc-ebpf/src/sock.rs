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
use aya_ebpf::{
    bindings::{BPF_ANY, bpf_sock_addr},
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval},
    programs::SockAddrContext,
};
use svc_common::{DropReason, RevNat, SockKey, frontend_flags, proto};

use crate::{
    lb::{self, Selection},
    maps::{HOST_NETNS_V1, SOCK_RNAT_V1},
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

/// connect() and sendmsg(): a frontend destination becomes a backend.
#[inline(always)]
pub fn try_translate(ctx: &SockAddrContext) -> Result<Syscall, DropReason> {
    let sa = sock_addr(ctx);
    // SAFETY: the context the kernel handed us; these fields are readable
    // and writable for connect4/sendmsg4.
    let (daddr_be, dport_be, protocol) =
        unsafe { ((*sa).user_ip4, (*sa).user_port as u16, (*sa).protocol as u8) };
    if protocol != proto::TCP && protocol != proto::UDP {
        return Ok(Syscall::Allow);
    }
    let pod = in_pod(ctx);
    if pod && protocol != proto::TCP {
        return Ok(Syscall::Allow);
    }
    let Some((key, header)) = lb::frontend_header(daddr_be, dport_be, protocol) else {
        return Ok(if lb::in_service_cidrs(daddr_be) {
            Syscall::Refuse
        } else {
            Syscall::Allow
        });
    };
    if pod && (header.affinity_timeout_s > 0 || header.flags & frontend_flags::SOURCE_RANGES != 0) {
        return Ok(Syscall::Allow);
    }
    // The node's socket has no source address before connect() or
    // sendmsg(): source ranges and affinity see it as 0.0.0.0.
    match lb::select_from(key, &header, 0, None)? {
        Selection::NotAFrontend => Ok(Syscall::Allow),
        // The per-packet path drops these (kube-proxy's way for external
        // traffic with eTP Local); a pod's packets go there as before.
        Selection::Empty { drop: true } if pod => Ok(Syscall::Allow),
        Selection::Empty { .. } => Ok(Syscall::Refuse),
        Selection::Backend(selected) => {
            let backend = selected.backend;
            // SAFETY: as above.
            let cookie = unsafe { bpf_get_socket_cookie(sa.cast()) };
            let key = SockKey {
                cookie,
                backend_addr_be: backend.addr_be,
                backend_port_be: backend.port_be,
                _pad: 0,
            };
            let frontend = RevNat {
                addr_be: daddr_be,
                port_be: dport_be,
                flags: 0,
            };
            SOCK_RNAT_V1
                .insert(key, frontend, u64::from(BPF_ANY))
                .map_err(|_| DropReason::FlowInsertFailed)?;
            stats::count_frontend(selected.rev_nat_id, 0);
            // SAFETY: as above.
            unsafe {
                (*sa).user_ip4 = backend.addr_be;
                (*sa).user_port = u32::from(backend.port_be);
            }
            Ok(Syscall::Allow)
        }
    }
}

/// recvmsg() and getpeername(): a backend source becomes the frontend the
/// socket was pointed at.
#[inline(always)]
pub fn try_reverse(ctx: &SockAddrContext) -> Result<Syscall, DropReason> {
    let sa = sock_addr(ctx);
    // SAFETY: the context the kernel handed us.
    let (addr_be, port_be, cookie) = unsafe {
        (
            (*sa).user_ip4,
            (*sa).user_port as u16,
            bpf_get_socket_cookie(sa.cast()),
        )
    };
    let key = SockKey {
        cookie,
        backend_addr_be: addr_be,
        backend_port_be: port_be,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    if let Some(frontend) = unsafe { SOCK_RNAT_V1.get(key) }.copied() {
        // SAFETY: as above.
        unsafe {
            (*sa).user_ip4 = frontend.addr_be;
            (*sa).user_port = u32::from(frontend.port_be);
        }
    }
    Ok(Syscall::Allow)
}
