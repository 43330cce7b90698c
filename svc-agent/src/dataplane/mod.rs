//! The only module that touches BPF programs and maps.
//!
//! Maps are pinned under one bpffs directory per agent instance (the lab runs
//! several agents on one kernel); a restarted agent reuses them as they are
//! (pins.rs). Programs are attached through pinned links (attach.rs).
//!
//! The Service tables are written by a plan (plan.rs, pure: what the maps
//! hold and the frontends wanted in, ordered map operations out) that
//! apply.rs runs over the maps' trait (maps.rs: the kernel's, or the tests'
//! fake.rs), all or none; held.rs is the agent's memory of what the maps
//! hold, readback.rs reads them for dump, codec.rs converts between the
//! model and the map layouts of svc-common.
mod apply;
mod attach;
mod codec;
mod conntrack;
mod entries;
#[cfg(test)]
mod fake;
mod held;
mod lookup;
mod maglev;
mod maps;
mod pins;
mod plan;
#[cfg(test)]
mod plan_tests;
mod readback;
mod sys;
mod tables;
mod xdp_targets;

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData},
    programs::{CgroupSockAddr, SchedClassifier, Xdp, links::FdLink},
};
pub use codec::NodeSettings;
pub use conntrack::{Census, Conntrack, coarse_now_ns};
pub use lookup::{Lookup, Mode, Via};
pub use maglev::{Table as MaglevTable, valid_size as valid_maglev_table_size};
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
/// The socket hooks for the node's own processes (cgroup sock_addr), of
/// both families.
pub const SOCKET_PROGRAMS: [&str; 8] = [
    "svc_sock_connect4",
    "svc_sock_sendmsg4",
    "svc_sock_recvmsg4",
    "svc_sock_getpeername4",
    "svc_sock_connect6",
    "svc_sock_sendmsg6",
    "svc_sock_recvmsg6",
    "svc_sock_getpeername6",
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
    #[error(
        "a change cannot be applied before the maps' contents are known: apply them whole first"
    )]
    NothingHeld,
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
    #[error(
        "reading which interfaces transmit XDP frames (netdev generic netlink) failed: {source}"
    )]
    XdpTargets { source: io::Error },
    #[error("reading this network namespace's cookie (SO_NETNS_COOKIE, Linux >= 5.14) failed")]
    NetnsCookie { source: io::Error },
    #[error(
        "{count} service CIDRs given; the datapath holds at most {max}: give the cluster's \
         service CIDRs only",
        max = svc_common::MAX_SERVICE_CIDRS
    )]
    TooManyServiceCidrs { count: usize },
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

    /// The tables alone, the programs unloaded (benchmarks of the control
    /// plane): the maps live as long as the tables.
    pub fn into_tables(self) -> Tables {
        self.tables
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

    /// The three packet programs side by side, to run each on crafted
    /// packets in turn (the fuzzer).
    pub fn packet_programs(&self) -> Result<PacketPrograms<'_>, DataplaneError> {
        Ok(PacketPrograms {
            from_world: program(&self.ebpf, FROM_WORLD_PROGRAM)?,
            from_world_tc: program(&self.ebpf, FROM_WORLD_TC_PROGRAM)?,
            from_pod: program(&self.ebpf, FROM_POD_PROGRAM)?,
        })
    }
}

/// The packet programs of a [`Datapath`], borrowed together.
pub struct PacketPrograms<'a> {
    /// XDP on node NICs.
    pub from_world: &'a Xdp,
    /// TC ingress on node NICs, behind the XDP program.
    pub from_world_tc: &'a SchedClassifier,
    /// TC ingress on the host side of pod veths.
    pub from_pod: &'a SchedClassifier,
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

/// [`program_mut`], shared.
fn program<'a, T>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a T, DataplaneError>
where
    &'a T: TryFrom<&'a aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let invalid = || aya::programs::ProgramError::InvalidName {
        name: name.to_owned(),
    };
    let program = ebpf.program(name).ok_or_else(invalid);
    program
        .and_then(TryInto::try_into)
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
