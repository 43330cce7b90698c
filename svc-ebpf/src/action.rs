//! What the packet programs decide for a packet they do not drop: the
//! [`Action`] their `try_*` functions return, and the [`Verdict`] each
//! entry point turns into its program type's return code.
use svc_common::DropReason;

/// What to do with a packet that was not dropped, as [`Verdict`] says, in
/// one word. Not the enum itself: where LLVM merges the many return paths
/// of `flow::process`, it copies each variant's data register, also on paths
/// whose variant (`Pass`) has no data and left the register unset, and the
/// verifier rejects reading it. Every constructor here sets every bit.
#[derive(Clone, Copy)]
pub struct Action(u64);

/// An [`Action`], decoded.
pub enum Verdict {
    /// Hand it (rewritten or not) to the stack.
    Pass,
    /// It was turned into an answer to its sender (a reset, an ICMP error):
    /// send it back out where it came from. Counted under the reason
    /// (its DROPS_V2 index).
    Bounce(u32),
    /// Routed by the program (see route.rs): send it out of this interface.
    Redirect(u32),
    /// The same, with the next hop's MAC address still to be resolved.
    RedirectNeigh(u32),
    /// TC at a NIC's ingress: into the pod behind this veth (its peer),
    /// past the node's IP stack (bpf_redirect_peer).
    RedirectPeer(u32),
}

impl Action {
    const BOUNCE: u64 = 1 << 32;
    const REDIRECT: u64 = 2 << 32;
    const REDIRECT_NEIGH: u64 = 3 << 32;
    const REDIRECT_PEER: u64 = 4 << 32;

    pub const PASS: Action = Action(0);

    #[inline(always)]
    pub const fn bounce(reason: DropReason) -> Self {
        Action(Self::BOUNCE | reason as u64)
    }

    #[inline(always)]
    pub const fn redirect(ifindex: u32) -> Self {
        Action(Self::REDIRECT | ifindex as u64)
    }

    #[inline(always)]
    pub const fn redirect_neigh(ifindex: u32) -> Self {
        Action(Self::REDIRECT_NEIGH | ifindex as u64)
    }

    #[inline(always)]
    pub const fn redirect_peer(ifindex: u32) -> Self {
        Action(Self::REDIRECT_PEER | ifindex as u64)
    }

    #[inline(always)]
    pub fn verdict(self) -> Verdict {
        let data = self.0 as u32;
        match self.0 & !u64::from(u32::MAX) {
            Self::BOUNCE => Verdict::Bounce(data),
            Self::REDIRECT => Verdict::Redirect(data),
            Self::REDIRECT_NEIGH => Verdict::RedirectNeigh(data),
            Self::REDIRECT_PEER => Verdict::RedirectPeer(data),
            _ => Verdict::Pass,
        }
    }
}
