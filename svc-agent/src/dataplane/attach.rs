//! Attaching the programs: to node NICs (XDP, TC behind it), pod veths
//! (TCX) and cgroups (socket hooks). Links are pinned beside the maps, so
//! traffic keeps flowing while no agent runs; a restarted or upgraded agent
//! swaps its own programs into the links it finds.
use std::{fs, os::fd::AsFd as _, path::Path, path::PathBuf};

use aya::{
    Ebpf,
    maps::HashMap,
    programs::{
        CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
    },
};

use super::{
    BoxError, Datapath, DataplaneError, FROM_POD_PROGRAM, FROM_WORLD_PROGRAM,
    FROM_WORLD_TC_PROGRAM, SOCKET_PROGRAMS, XDP_PASS_PROGRAM, maps::map_error, program_mut, sys,
    xdp_targets,
};
use svc_common::{XDP_TARGETS_KNOWN, names};

impl Datapath {
    /// Attaches the NIC programs to a node interface that Service traffic
    /// arrives on from the network: XDP (native where the driver has it),
    /// and TC ingress behind it for packets whose next hop XDP cannot
    /// resolve. Pinned like [`Self::attach_pod_interface`].
    pub fn attach_node_interface(&mut self, interface: &str) -> Result<(), DataplaneError> {
        self.attach_tc(FROM_WORLD_TC_PROGRAM, "from_world_tc", interface)?;
        let link_pin = self.link_pin("from_world", interface);
        self.attach_xdp(FROM_WORLD_PROGRAM, interface, link_pin)?;
        // Many drivers transmit XDP frames only once an XDP program is
        // attached to them: read the list after.
        self.refresh_xdp_targets().map(|_| ())
    }

    /// Writes XDP_TARGETS_V1 afresh: the interfaces the kernel says
    /// transmit XDP frames now (see xdp_targets.rs). Returns how many.
    pub fn refresh_xdp_targets(&mut self) -> Result<usize, DataplaneError> {
        let mut wanted =
            xdp_targets::transmitters().map_err(|source| DataplaneError::XdpTargets { source })?;
        let count = wanted.len();
        wanted.insert(XDP_TARGETS_KNOWN, 0);
        let map = self.ebpf.map_mut(names::XDP_TARGETS).ok_or_else(|| {
            map_error(names::XDP_TARGETS)(aya::maps::MapError::InvalidName {
                name: names::XDP_TARGETS.to_owned(),
            })
        })?;
        let mut targets =
            HashMap::<_, u32, u64>::try_from(map).map_err(map_error(names::XDP_TARGETS))?;
        let stale: Vec<u32> = targets
            .keys()
            .filter_map(Result::ok)
            .filter(|ifindex| !wanted.contains_key(ifindex))
            .collect();
        for ifindex in stale {
            targets
                .remove(&ifindex)
                .map_err(map_error(names::XDP_TARGETS))?;
        }
        for (ifindex, features) in &wanted {
            if targets.get(ifindex, 0).ok() != Some(*features) {
                targets
                    .insert(ifindex, features, 0)
                    .map_err(map_error(names::XDP_TARGETS))?;
            }
        }
        Ok(count)
    }

    /// Whether an earlier agent's NIC program link on `interface` is
    /// pinned here (then [`Self::attach_node_interface`] swaps this
    /// agent's program into it).
    pub fn node_interface_pinned(&self, interface: &str) -> bool {
        self.link_pin("from_world", interface)
            .is_some_and(|path| path.exists())
    }

    /// Attaches the socket hooks to a cgroup (v2) directory: every process
    /// in it and below gets socket-level load balancing for connect(),
    /// sendmsg(), recvmsg() and getpeername(). Links are pinned as
    /// `links/sock-<program>-<cgroup dir name>`; already pinned ones are kept.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<(), DataplaneError> {
        let label = cgroup
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        for name in SOCKET_PROGRAMS {
            let link_pin = self.link_pin(&format!("sock-{name}"), &label);
            self.attach_once(name, &cgroup.display().to_string(), link_pin, |ebpf| {
                let file = fs::File::open(cgroup)?;
                let program = program_mut::<CgroupSockAddr>(ebpf, name)?;
                // bpf_link_create takes no attach flags: links always
                // coexist with other programs on the cgroup.
                let id = program.attach(&file, CgroupAttachMode::Single)?;
                Ok(program.take_link(id)?)
            })?;
        }
        Ok(())
    }

    /// Attaches the pass-everything XDP program to `interface`, for as long
    /// as this value lives. A veth only takes frames its peer sends with
    /// XDP_TX or XDP_REDIRECT when an XDP program runs on it.
    pub fn attach_xdp_pass(&mut self, interface: &str) -> Result<(), DataplaneError> {
        self.attach_xdp(XDP_PASS_PROGRAM, interface, None)
    }

    /// Where a link of `program` on `interface` is pinned, with a pin dir.
    fn link_pin(&self, program: &str, interface: &str) -> Option<PathBuf> {
        // bpffs refuses names with dots (they are kept for its own files).
        let name = format!("{program}-{}", interface.replace('.', "_"));
        self.pin_dir
            .as_ref()
            .map(|dir| dir.join("links").join(name))
    }

    /// Attaches the pod-side program (TCX ingress) to the host side of a pod
    /// veth. The calling thread's network namespace decides which interface
    /// `interface` names. With a pin directory the link is pinned, so it
    /// outlives this process; an interface whose link is already pinned is
    /// left as it is.
    pub fn attach_pod_interface(&mut self, interface: &str) -> Result<(), DataplaneError> {
        self.attach_tc(FROM_POD_PROGRAM, "from_pod", interface)?;
        self.note_pod_interface(interface)
    }

    /// Lists `interface` in POD_IFACES_V1: the NIC's TC program sends
    /// packets routed into it straight into its pod (bpf_redirect_peer).
    /// Only a veth (or netkit) takes that; any other kind is left out.
    fn note_pod_interface(&mut self, interface: &str) -> Result<(), DataplaneError> {
        let driver = sys::driver(interface);
        if !matches!(driver.as_deref(), Some("veth" | "netkit")) {
            return Ok(());
        }
        let Some(ifindex) = sys::ifindex(interface) else {
            return Ok(());
        };
        let map = self.ebpf.map_mut(names::POD_IFACES).ok_or_else(|| {
            map_error(names::POD_IFACES)(aya::maps::MapError::InvalidName {
                name: names::POD_IFACES.to_owned(),
            })
        })?;
        HashMap::<_, u32, u32>::try_from(map)
            .and_then(|mut pods| pods.insert(ifindex, 0, 0))
            .map_err(map_error(names::POD_IFACES))
    }

    /// Forgets the pinned link of a pod interface that is gone, so a veth
    /// created again under the same name gets attached again (the kernel
    /// detached the old link with its device).
    pub fn forget_pod_interface(&mut self, interface: &str) {
        if let Some(path) = self.link_pin("from_pod", interface) {
            let _ = fs::remove_file(path);
        }
    }

    fn attach_tc(
        &mut self,
        program_name: &'static str,
        pin_name: &str,
        interface: &str,
    ) -> Result<(), DataplaneError> {
        let link_pin = self.link_pin(pin_name, interface);
        self.attach_once(program_name, interface, link_pin, |ebpf| {
            let program = program_mut::<SchedClassifier>(ebpf, program_name)?;
            let id = program.attach(interface, TcAttachType::Ingress)?;
            Ok(program.take_link(id)?)
        })
    }

    /// XDP in the best mode the driver has (native, else generic).
    fn attach_xdp(
        &mut self,
        program_name: &'static str,
        interface: &str,
        link_pin: Option<PathBuf>,
    ) -> Result<(), DataplaneError> {
        self.attach_once(program_name, interface, link_pin, |ebpf| {
            let program = program_mut::<Xdp>(ebpf, program_name)?;
            let id = program.attach(interface, XdpMode::Default)?;
            Ok(program.take_link(id)?)
        })
    }

    /// The one way programs get attached. A link an earlier agent pinned
    /// at `link_pin` is kept, with this agent's program swapped in (see
    /// [`sys::swap_program`]): an upgraded agent's programs take over, and the
    /// hook is never empty. Otherwise `attach` attaches and hands over a
    /// new link: pinned at `link_pin`, so it outlives this process, or
    /// without one kept as long as this value.
    fn attach_once<L>(
        &mut self,
        program: &'static str,
        target: &str,
        link_pin: Option<PathBuf>,
        attach: impl FnOnce(&mut Ebpf) -> Result<L, BoxError>,
    ) -> Result<(), DataplaneError>
    where
        FdLink: TryFrom<L>,
        <FdLink as TryFrom<L>>::Error: std::error::Error + Send + Sync + 'static,
    {
        let attach_and_keep = || -> Result<(), BoxError> {
            if let Some(path) = &link_pin
                && PinnedLink::from_pin(path).is_ok()
            {
                let new = self
                    .ebpf
                    .program(program)
                    .ok_or("program not in the object")?
                    .fd()?;
                match sys::swap_program(path, new.as_fd()) {
                    Ok(()) => return Ok(()),
                    // The link outlived its device (a pod veth gone and
                    // made again): attach afresh.
                    Err(e) if e.raw_os_error() == Some(libc::ENOLINK) => fs::remove_file(path)?,
                    Err(e) => return Err(e.into()),
                }
            }
            let link = FdLink::try_from(attach(&mut self.ebpf)?)?;
            match link_pin {
                Some(path) => pin_link(link, &path)?,
                None => self.links.push(link),
            }
            Ok(())
        };
        attach_and_keep().map_err(|source| DataplaneError::Attach {
            program,
            interface: target.to_owned(),
            source,
        })
    }
}

fn pin_link(link: FdLink, path: &Path) -> Result<(), BoxError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    link.pin(path)?;
    Ok(())
}
