//! The only module that touches BPF programs and maps.
//!
//! Maps are pinned under one bpffs directory per agent instance (the lab runs
//! several agents on one kernel); a restarted agent reuses them as they are.
//! Program attachments are TCX links, pinned beside the maps, so traffic keeps
//! flowing while no agent runs; a restarted or upgraded agent swaps its own
//! programs into them atomically.
mod apply;
mod codec;
mod conntrack;
#[cfg(test)]
mod fake;
mod held;
mod maps;
mod pins;
mod plan;
#[cfg(test)]
mod plan_tests;
mod readback;
mod sys;
mod tables;

use std::{
    fs, io,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData},
    programs::{
        CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
    },
};
pub use codec::NodeSettings;
pub use conntrack::{Census, Conntrack, coarse_now_ns};
pub use plan::{ApplyReport, Desired};
pub use readback::{DropCounter, FrontendState};
use svc_common::names;
pub use tables::Tables;

/// The compiled kernel programs (built by build.rs).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/svc-ebpf"));

/// The TC program on the host side of pod veths.
pub const FROM_POD_PROGRAM: &str = "svc_from_pod";
/// The XDP program on the node's NICs.
pub const FROM_WORLD_PROGRAM: &str = "svc_from_world";
/// The TC program behind it on the same NICs (next hops to resolve).
pub const FROM_WORLD_TC_PROGRAM: &str = "svc_from_world_tc";
/// The socket hooks for the node's own processes (cgroup sock_addr).
pub const SOCKET_PROGRAMS: [&str; 4] = [
    "svc_sock_connect4",
    "svc_sock_sendmsg4",
    "svc_sock_recvmsg4",
    "svc_sock_getpeername4",
];
/// An XDP program that passes everything (benchmark baseline).
pub const XDP_PASS_PROGRAM: &str = "svc_xdp_pass";

/// bpffs magic number (statfs f_type).
const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "{path} is not on a bpffs mount: mount one (`mount -t bpf bpf /sys/fs/bpf`) or choose \
         another --pin-path"
    )]
    NotBpffs { path: PathBuf },
    #[error("cannot create pin directory {path}")]
    PinDir { path: PathBuf, source: io::Error },
    #[error("loading the eBPF object failed (is this kernel >= 6.6 with BTF?)")]
    Load(#[from] Box<aya::EbpfError>),
    #[error("program {name}")]
    Program {
        name: &'static str,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching {program} to interface {interface} failed")]
    Attach {
        program: &'static str,
        interface: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("map {name}")]
    Map {
        name: &'static str,
        source: Box<aya::maps::MapError>,
    },
    #[error("no map {name} at {path}: is an agent's datapath loaded there?")]
    NotPinned {
        name: &'static str,
        path: PathBuf,
        source: Box<aya::maps::MapError>,
    },
    #[error(
        "pinned map {name} at {path} has {pinned}; this build expects {expected}. A map whose \
         layout changed gets a new name, so these pins come from a build that does not match \
         this one: run that build, or remove the pins (`svc-agent cleanup`, which also forgets \
         every tracked connection)"
    )]
    PinnedLayout {
        name: &'static str,
        path: PathBuf,
        pinned: pins::Layout,
        expected: pins::Layout,
    },
    #[error(
        "another agent holds pin path {path}: two agents on one pin path would undo each \
         other's tables; stop it, or give this one another --pin-path"
    )]
    PinPathBusy { path: PathBuf },
    #[error("migrating pinned map {name} to this build's size failed")]
    Migrate {
        name: &'static str,
        source: io::Error,
    },
    #[error("{service}: loadBalancerSourceRanges entry {range:?} is not an IPv4 CIDR")]
    BadSourceRange { service: String, range: String },
    #[error("the {map} map is full: {service} did not fit ({entries} entries)")]
    Full {
        map: &'static str,
        service: String,
        entries: u32,
    },
}

impl DataplaneError {
    /// The Service an error is about, when it is about one Service only
    /// (it did not fit, or holds something the maps cannot take): that
    /// Service can be left out and every other one programmed.
    pub fn service(&self) -> Option<&str> {
        match self {
            DataplaneError::Full { service, .. }
            | DataplaneError::BadSourceRange { service, .. } => Some(service),
            _ => None,
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Loaded programs plus the maps they use.
pub struct Datapath {
    /// Attachments made without a pin directory: they last as long as this.
    links: Vec<FdLink>,
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    tables: Tables,
    /// Pinned maps being resized (see pins.rs), until
    /// [`Datapath::finish_migrations`].
    migrations: Vec<pins::Migration>,
    /// This agent's hold on `pin_dir`.
    _lock: Option<pins::PinLock>,
}

impl Datapath {
    /// Loads the programs. With `pin_dir`, maps are created there (or the
    /// ones already pinned there are adopted, entries and all: see
    /// pins.rs), and the directory is held until this value is dropped, so
    /// a second agent on it is refused; without, maps live as long as this
    /// value (packet tests, benchmarks).
    pub fn load(pin_dir: Option<&Path>) -> Result<Self, DataplaneError> {
        let lock = match pin_dir {
            Some(dir) => {
                ensure_pin_dir(dir)?;
                Some(pins::lock(dir)?)
            }
            None => None,
        };
        let mut migrations = match pin_dir {
            Some(dir) => pins::prepare(dir)?,
            None => Vec::new(),
        };
        let loaded = Self::load_programs(pin_dir);
        let mut datapath = match loaded {
            Ok(datapath) => datapath,
            Err(error) => {
                pins::undo(&migrations);
                return Err(error);
            }
        };
        for migration in &mut migrations {
            migration.copy(false)?;
        }
        datapath.migrations = migrations;
        datapath._lock = lock;
        Ok(datapath)
    }

    /// Ends the migrations of resized pinned maps (see pins.rs), once this
    /// agent's programs are attached: entries the old programs made since
    /// the load are copied over, and the old maps let go.
    pub fn finish_migrations(&mut self) -> Result<(), DataplaneError> {
        for mut migration in std::mem::take(&mut self.migrations) {
            migration.copy(true)?;
            migration.finish()?;
        }
        Ok(())
    }

    fn load_programs(pin_dir: Option<&Path>) -> Result<Self, DataplaneError> {
        let mut loader = EbpfLoader::new();
        let map_paths: Vec<(&'static str, PathBuf)> = match pin_dir {
            Some(dir) => names::ALL
                .iter()
                .map(|name| (*name, dir.join(name)))
                .collect(),
            None => Vec::new(),
        };
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        if let Some(dir) = pin_dir {
            // Programs still using one keep it until they are swapped out.
            for name in names::RETIRED {
                match fs::remove_file(dir.join(name)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(DataplaneError::PinDir {
                            path: dir.join(name),
                            source: e,
                        });
                    }
                    _ => {}
                }
            }
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(Box::new)?;
        let load_error = |name: &'static str| {
            move |source| DataplaneError::Program {
                name,
                source: Box::new(source),
            }
        };
        for name in [FROM_POD_PROGRAM, FROM_WORLD_TC_PROGRAM] {
            program_mut::<SchedClassifier>(&mut ebpf, name)?
                .load()
                .map_err(load_error(name))?;
        }
        for name in SOCKET_PROGRAMS {
            program_mut::<CgroupSockAddr>(&mut ebpf, name)?
                .load()
                .map_err(load_error(name))?;
        }
        for name in [FROM_WORLD_PROGRAM, XDP_PASS_PROGRAM] {
            program_mut::<Xdp>(&mut ebpf, name)?
                .load()
                .map_err(load_error(name))?;
        }
        let tables = Tables::from_maps(|name| {
            ebpf.take_map(name).ok_or(DataplaneError::Map {
                name,
                source: Box::new(aya::maps::MapError::InvalidName {
                    name: name.to_owned(),
                }),
            })
        })?;
        Ok(Self {
            links: Vec::new(),
            ebpf,
            pin_dir: pin_dir.map(Path::to_path_buf),
            tables,
            migrations: Vec::new(),
            _lock: None,
        })
    }

    pub fn tables(&mut self) -> &mut Tables {
        &mut self.tables
    }

    /// The TC program, e.g. to run it on crafted packets.
    pub fn from_pod_program(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        program_mut(&mut self.ebpf, FROM_POD_PROGRAM)
    }

    /// The XDP program of node NICs.
    pub fn from_world_program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        program_mut(&mut self.ebpf, FROM_WORLD_PROGRAM)
    }

    /// The XDP program that passes everything.
    pub fn xdp_pass_program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        program_mut(&mut self.ebpf, XDP_PASS_PROGRAM)
    }

    /// Attaches the NIC programs to a node interface that Service traffic
    /// arrives on from the network: XDP (native where the driver has it),
    /// and TC ingress behind it for packets whose next hop XDP cannot
    /// resolve. Pinned like [`Self::attach_pod_interface`].
    pub fn attach_node_interface(&mut self, interface: &str) -> Result<(), DataplaneError> {
        self.attach_tc(FROM_WORLD_TC_PROGRAM, "from_world_tc", interface)?;
        let link_pin = self.link_pin("from_world", interface);
        self.attach_xdp(FROM_WORLD_PROGRAM, interface, link_pin)
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
        self.attach_tc(FROM_POD_PROGRAM, "from_pod", interface)
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

impl Tables {
    /// Opens the maps an agent pinned in `pin_dir`, without loading programs
    /// (for `dump`, which must show the kernel's truth even with no agent).
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, DataplaneError> {
        Self::from_maps(|name| open_pinned_map(pin_dir, name))
    }
}

/// The map an agent pinned as `name` under `pin_dir`.
fn open_pinned_map(pin_dir: &Path, name: &'static str) -> Result<Map, DataplaneError> {
    let path = pin_dir.join(name);
    MapData::from_pin(&path)
        .and_then(Map::from_map_data)
        .map_err(|source| DataplaneError::NotPinned {
            name,
            path,
            source: Box::new(source),
        })
}

/// Removes everything an agent pinned under `pin_dir`: links (which detaches
/// the programs) and maps. Missing entries are not an error.
pub fn remove_pins(pin_dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(pin_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DataplaneError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(DataplaneError::Program {
        name,
        source: Box::new(aya::programs::ProgramError::InvalidName {
            name: name.to_owned(),
        }),
    })?;
    program
        .try_into()
        .map_err(|source| DataplaneError::Program {
            name,
            source: Box::new(source),
        })
}

fn ensure_pin_dir(dir: &Path) -> Result<(), DataplaneError> {
    fs::create_dir_all(dir).map_err(|source| DataplaneError::PinDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| {
        DataplaneError::NotBpffs {
            path: dir.to_path_buf(),
        }
    })?;
    // SAFETY: statfs fills the zeroed struct; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 || stat.f_type != BPF_FS_MAGIC {
        return Err(DataplaneError::NotBpffs {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}
