//! Adopting the maps an earlier agent pinned, and keeping a second agent
//! off them.
//!
//! A pinned map is used as it is only when its layout (type, key and value
//! size, max entries, flags) is the one this build's programs were
//! compiled for. A map whose contract changed (key, value, type, flags)
//! gets a new versioned name in svc-common, and the old one is retired, so
//! a pinned map under this build's name with another such layout is
//! refused, never used: its entries would be read with the wrong meaning.
//! A map that differs only in max entries (a build that resized it) is
//! migrated without losing its entries, conntrack included:
//! 1. before loading, its pin is moved aside to `NAME_RESIZED` (bpffs
//!    allows no dot in a name);
//! 2. loading creates the map anew under `NAME`, with BTF, and the old
//!    one's entries are copied into it;
//! 3. once this agent's programs are attached (swapped into the links the
//!    old programs ran in), entries the old programs made meanwhile are
//!    copied too, and `NAME_RESIZED` is removed.
//!
//! An agent stopped between 1 and 3 leaves `NAME_RESIZED`; the next one
//! carries on from it.
//!
//! A map whose value layout changed is carried over the same way when its
//! entries must survive an upgrade (svc-common's `names::CONVERTED`: the
//! conntrack tables, whose loss would break every established
//! connection): the old map keeps its own name, each entry is converted
//! into the new map's layout, and the old map is unpinned at step 3.
//! Every other old map is retired: unpinned when an agent loads.
use std::{
    collections::HashMap,
    fmt, fs, io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::maps::{MapData, MapInfo};
use svc_common::{Flow, FlowKey, FlowV1, names};

use super::{DataplaneError, EBPF_OBJECT, sys};

/// What a map is, as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

// enum bpf_map_type (include/uapi/linux/bpf.h), the ones that matter here.
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_LRU_PERCPU_HASH: u32 = 10;

impl Layout {
    fn of_pinned(info: &MapInfo) -> Self {
        Layout {
            map_type: info_type(info),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        }
    }

    fn of_object(map: &aya_obj::Map) -> Self {
        Layout {
            map_type: map.map_type(),
            key_size: map.key_size(),
            value_size: map.value_size(),
            max_entries: map.max_entries(),
            flags: map.map_flags(),
        }
    }

    /// The same but for max entries: what a migration can bridge.
    fn same_contract(&self, other: &Layout) -> bool {
        Layout {
            max_entries: other.max_entries,
            ..*self
        } == *other
    }

    fn is_array(&self) -> bool {
        matches!(
            self.map_type,
            BPF_MAP_TYPE_ARRAY | BPF_MAP_TYPE_PERCPU_ARRAY
        )
    }

    /// Bytes of one value as bpf(2) hands it over: per-CPU maps give every
    /// possible CPU's value, each rounded up to 8 bytes.
    fn value_bytes(&self) -> io::Result<usize> {
        let size = self.value_size as usize;
        if matches!(
            self.map_type,
            BPF_MAP_TYPE_PERCPU_HASH | BPF_MAP_TYPE_PERCPU_ARRAY | BPF_MAP_TYPE_LRU_PERCPU_HASH
        ) {
            let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
            Ok(size.next_multiple_of(8) * cpus)
        } else {
            Ok(size)
        }
    }
}

/// The map type number, which aya's MapInfo hands out only as its enum.
fn info_type(info: &MapInfo) -> u32 {
    info.map_type().map_or(u32::MAX, |t| t as u32)
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "type {}, key {} B, value {} B, {} entries, flags {:#x}",
            self.map_type, self.key_size, self.value_size, self.max_entries, self.flags
        )
    }
}

/// This build's layout of every map it pins.
fn expected_layouts() -> Result<HashMap<String, Layout>, DataplaneError> {
    let object = aya_obj::Object::parse(EBPF_OBJECT)
        .map_err(|e| DataplaneError::Load(Box::new(aya::EbpfError::ParseError(e))))?;
    Ok(object
        .maps
        .iter()
        .map(|(name, map)| (name.clone(), Layout::of_object(map)))
        .collect())
}

/// Turns an old map's value into this build's.
type Convert = fn(&[u8]) -> Vec<u8>;

/// A pinned map being moved into one of this build's size or layout.
pub struct Migration {
    name: &'static str,
    /// Where this agent's map is pinned.
    path: PathBuf,
    /// Where the old one is: moved aside, or under its old name.
    aside: PathBuf,
    old: MapData,
    old_layout: Layout,
    /// For a map of another value layout, how each value is carried over.
    convert: Option<Convert>,
    /// Entries copied so far, and entries that did not fit.
    pub copied: usize,
    pub left: usize,
}

/// Holds a pin directory for one agent: an exclusive flock on the
/// directory, released when the process ends however it ends.
pub struct PinLock(#[expect(dead_code, reason = "held for its lock")] OwnedFd);

pub fn lock(dir: &Path) -> Result<PinLock, DataplaneError> {
    let io_error = |source| DataplaneError::PinDir {
        path: dir.to_path_buf(),
        source,
    };
    let file = fs::File::open(dir).map_err(io_error)?;
    // SAFETY: flock on a descriptor this function owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let error = io::Error::last_os_error();
        return Err(if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            DataplaneError::PinPathBusy {
                path: dir.to_path_buf(),
            }
        } else {
            io_error(error)
        });
    }
    Ok(PinLock(file.into()))
}

/// Step 1 (see the module docs), before the programs are loaded: checks
/// every pinned map's layout, refuses a map whose contract differs, and
/// moves aside each one whose size differs.
pub fn prepare(dir: &Path) -> Result<Vec<Migration>, DataplaneError> {
    let expected = expected_layouts()?;
    let mut migrations = Vec::new();
    for name in names::ALL {
        let Some(want) = expected.get(name) else {
            continue;
        };
        let path = dir.join(name);
        let aside = dir.join(format!("{name}_RESIZED"));
        let interrupted = aside.exists();
        if path.exists() {
            let pinned = Layout::of_pinned(&pinned_info(name, &path)?);
            if pinned == *want {
                if interrupted {
                    migrations.push(open_aside(name, path, aside)?);
                }
                continue;
            }
            if !pinned.same_contract(want) || interrupted {
                return Err(DataplaneError::PinnedLayout {
                    name,
                    path,
                    pinned,
                    expected: *want,
                });
            }
            fs::rename(&path, &aside).map_err(|source| DataplaneError::Migrate { name, source })?;
            tracing::info!(
                map = name,
                from = pinned.max_entries,
                to = want.max_entries,
                "pinned map resized by this build: migrating its entries"
            );
        } else if !interrupted {
            continue;
        }
        migrations.push(open_aside(name, path, aside)?);
    }
    for (old_name, name) in names::CONVERTED {
        let aside = dir.join(old_name);
        if !aside.exists() {
            continue;
        }
        let pinned = Layout::of_pinned(&pinned_info(name, &aside)?);
        let (key_size, value_size) = (size_of::<FlowKey>() as u32, size_of::<FlowV1>() as u32);
        if (pinned.key_size, pinned.value_size) != (key_size, value_size) {
            return Err(DataplaneError::PinnedLayout {
                name: old_name,
                path: aside,
                pinned,
                expected: Layout {
                    key_size,
                    value_size,
                    ..pinned
                },
            });
        }
        tracing::info!(
            from = old_name,
            to = name,
            "conntrack pinned by an earlier version: carrying its entries over"
        );
        let mut migration = open_aside(name, dir.join(name), aside)?;
        migration.convert = Some(flow_from_v1);
        migrations.push(migration);
    }
    Ok(migrations)
}

/// A CT_V1 value as a CT_V2 one.
fn flow_from_v1(old: &[u8]) -> Vec<u8> {
    let mut v1 = FlowV1::default();
    // SAFETY: FlowV1 is plain old data; the bytes copied are at most its
    // size (the map's value size was checked to be exactly that).
    unsafe {
        std::ptr::copy_nonoverlapping(
            old.as_ptr(),
            std::ptr::from_mut(&mut v1).cast::<u8>(),
            old.len().min(size_of::<FlowV1>()),
        );
    }
    let flow = Flow::from(v1);
    sys::bytes_of(&flow).to_vec()
}

fn pinned_info(name: &'static str, path: &Path) -> Result<MapInfo, DataplaneError> {
    MapInfo::from_pin(path).map_err(|source| DataplaneError::NotPinned {
        name,
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

fn open_aside(
    name: &'static str,
    path: PathBuf,
    aside: PathBuf,
) -> Result<Migration, DataplaneError> {
    let info = pinned_info(name, &aside)?;
    let old = MapData::from_pin(&aside).map_err(|source| DataplaneError::NotPinned {
        name,
        path: aside.clone(),
        source: Box::new(source),
    })?;
    Ok(Migration {
        name,
        path,
        aside,
        old,
        old_layout: Layout::of_pinned(&info),
        convert: None,
        copied: 0,
        left: 0,
    })
}

/// Puts every map moved aside back where it was: loading failed, and the
/// programs still running use the old maps.
pub fn undo(migrations: &[Migration]) {
    // A converted map never moved: it keeps its old name.
    for migration in migrations.iter().filter(|m| m.convert.is_none()) {
        if let Err(error) = fs::rename(&migration.aside, &migration.path) {
            tracing::error!(map = migration.name, %error, "cannot put the pinned map back");
        }
    }
}

impl Migration {
    /// Steps 2 and 3: copies the old map's entries into this agent's.
    /// `catch_up` is step 3, which adds only keys the new map lacks (its
    /// own entries are newer) and leaves arrays, whose keys all exist,
    /// alone.
    pub fn copy(&mut self, catch_up: bool) -> Result<(), DataplaneError> {
        if catch_up && self.old_layout.is_array() {
            return Ok(());
        }
        let error = |source| DataplaneError::Migrate {
            name: self.name,
            source,
        };
        let new = MapData::from_pin(&self.path).map_err(|e| error(io::Error::other(e)))?;
        let flags = if self.old_layout.is_array() {
            sys::ANY
        } else {
            sys::NOEXIST
        };
        let (copied, left) = copy_entries(
            self.old.fd().as_fd(),
            new.fd().as_fd(),
            &self.old_layout,
            flags,
            self.convert,
        )
        .map_err(error)?;
        self.copied += copied;
        self.left += left;
        Ok(())
    }

    /// Step 3's end: the old map is unpinned (it goes once no program
    /// uses it).
    pub fn finish(self) -> Result<(), DataplaneError> {
        tracing::info!(
            map = self.name,
            copied = self.copied,
            did_not_fit = self.left,
            "pinned map migrated"
        );
        fs::remove_file(&self.aside).map_err(|source| DataplaneError::Migrate {
            name: self.name,
            source,
        })
    }
}

/// Copies every entry of `from` into `to` with update `flags`. Returns the
/// entries written and those `to` refused (full, or the key out of its
/// range). Programs may change `from` meanwhile; a hash map's key
/// iteration starts over when its current key goes, so the walk is
/// bounded.
fn copy_entries(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    layout: &Layout,
    flags: u64,
    convert: Option<Convert>,
) -> io::Result<(usize, usize)> {
    let mut key = vec![0u8; layout.key_size as usize];
    let mut next = key.clone();
    let mut value = vec![0u8; layout.value_bytes()?];
    let (mut copied, mut left) = (0, 0);
    let mut first = true;
    for _ in 0..layout.max_entries.saturating_mul(2) {
        if !sys::next_key(from, (!first).then_some(key.as_slice()), &mut next)? {
            break;
        }
        first = false;
        std::mem::swap(&mut key, &mut next);
        if !sys::lookup(from, &key, &mut value)? {
            continue;
        }
        let converted = convert.map(|convert| convert(&value));
        match sys::update(to, &key, converted.as_deref().unwrap_or(&value), flags) {
            Ok(()) => copied += 1,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM)
                ) =>
            {
                left += 1
            }
            Err(e) => return Err(e),
        }
    }
    Ok((copied, left))
}
