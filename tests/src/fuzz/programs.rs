//! The three packet programs under test, and one frame's run through one.
use aya::programs::{TestRun as _, TestRunOptions};
use svc_agent::dataplane::PacketPrograms;

use crate::{TC_ACT_OK, TC_ACT_SHOT, XDP_DROP, XDP_PASS};

/// Where a frame entered the node, as the programs tell it apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// Sent by a pod of this node (its veth's TC program).
    Pod,
    /// From the network (the NIC's XDP program, or its TC program behind).
    World,
}

/// One of the packet programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Program {
    /// `svc_from_world`: XDP on the NIC.
    NicXdp,
    /// `svc_from_world_tc`: TC ingress on the NIC, behind XDP.
    NicTc,
    /// `svc_from_pod`: TC ingress on pod veths.
    PodTc,
}

impl Program {
    pub(super) fn name(self) -> &'static str {
        match self {
            Program::NicXdp => "svc_from_world",
            Program::NicTc => "svc_from_world_tc",
            Program::PodTc => "svc_from_pod",
        }
    }

    pub(super) fn origin(self) -> Origin {
        match self {
            Program::PodTc => Origin::Pod,
            Program::NicXdp | Program::NicTc => Origin::World,
        }
    }

    /// The verdict for a frame handed on to the stack.
    pub(super) fn pass(self) -> u32 {
        match self {
            Program::NicXdp => XDP_PASS,
            Program::NicTc | Program::PodTc => TC_ACT_OK,
        }
    }

    pub(super) fn drop(self) -> u32 {
        match self {
            Program::NicXdp => XDP_DROP,
            Program::NicTc | Program::PodTc => TC_ACT_SHOT,
        }
    }

    /// Whether the kernel's test run takes `frame` for this program: it
    /// refuses an skb whose IPv4 or IPv6 header (by the EtherType) is cut
    /// short, which the NIC's XDP program still sees.
    pub(super) fn takes(self, frame: &[u8]) -> bool {
        let network = frame.len().saturating_sub(14);
        match (self, frame.get(12..14)) {
            (Program::NicXdp, _) => true,
            (_, Some([0x08, 0x00])) => network >= 20,
            (_, Some([0x86, 0xdd])) => network >= 40,
            _ => true,
        }
    }

    /// Runs `frame` through this program once: (verdict, bytes out). TC
    /// programs see it as come in on the loopback of the calling thread's
    /// namespace, where their route lookups then happen (XDP test runs
    /// are there already).
    pub(super) fn run(
        self,
        programs: &PacketPrograms<'_>,
        frame: &[u8],
    ) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
        if self == Program::NicXdp {
            let (_, verdict, out) = crate::run_xdp_repeated(programs.from_world, frame, 1);
            return Ok((verdict, out));
        }
        let mut out = vec![0u8; frame.len() + 256];
        let skb = crate::skb_from_loopback();
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&skb[..]),
            ..TestRunOptions::default()
        };
        let answer = match self {
            Program::NicTc => programs.from_world_tc.test_run(opts),
            _ => programs.from_pod.test_run(opts),
        }?;
        out.truncate(answer.data_size_out as usize);
        Ok((answer.return_value, out))
    }
}
