//! The few bpf(2) commands aya does not offer for what this crate needs:
//! byte-level map access (a map whose layout is not this build's),
//! BPF_LINK_UPDATE on a pinned link, and an mmapable array's memory mapped
//! into this process.
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// Insert only where the key is absent (BPF_NOEXIST).
pub const NOEXIST: u64 = 1;
/// Insert or replace (BPF_ANY).
pub const ANY: u64 = 0;

/// Runs one bpf(2) command. `attr` is the leading part of union bpf_attr
/// (include/uapi/linux/bpf.h) that `command` reads; the kernel zero-fills
/// the rest.
fn bpf<T>(command: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is valid for size_of::<T>() bytes and only read by the
    // kernel; the pointers inside it are the caller's to keep valid.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_ref(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The map element commands' part of bpf_attr.
#[repr(C)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    /// `value`, or `next_key` for BPF_MAP_GET_NEXT_KEY.
    value: u64,
    flags: u64,
}

fn elem(map: BorrowedFd<'_>, key: Option<&[u8]>, value: *const u8, flags: u64) -> MapElem {
    MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key.map_or(0, |key| key.as_ptr() as u64),
        value: value as u64,
        flags,
    }
}

/// A command's result as found (true) or, for ENOENT, not found (false).
fn found(result: io::Result<libc::c_long>) -> io::Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A map key's or value's bytes, as the byte-level commands take them.
pub fn bytes_of<T: aya::Pod>(value: &T) -> &[u8] {
    // SAFETY: Pod types are repr(C) without padding (svc-common asserts
    // each size), so every byte is initialized.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>()) }
}

/// [`bytes_of`], to be written: any bytes make a valid Pod value.
pub fn bytes_of_mut<T: aya::Pod>(value: &mut T) -> &mut [u8] {
    // SAFETY: as above, and a Pod type is valid for any bit pattern.
    unsafe {
        std::slice::from_raw_parts_mut(std::ptr::from_mut(value).cast::<u8>(), size_of::<T>())
    }
}

/// The key after `key` (the first one for None) into `next`; false at
/// the end of the map.
pub fn next_key(map: BorrowedFd<'_>, key: Option<&[u8]>, next: &mut [u8]) -> io::Result<bool> {
    found(bpf(
        BPF_MAP_GET_NEXT_KEY,
        &elem(map, key, next.as_mut_ptr(), 0),
    ))
}

/// The value of `key` into `value` (sized for every CPU of a per-CPU map);
/// false when the key is absent.
pub fn lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    found(bpf(
        BPF_MAP_LOOKUP_ELEM,
        &elem(map, Some(key), value.as_mut_ptr(), 0),
    ))
}

/// Removes `key`, its value into `value`, in one step: nobody can change
/// the entry between the read and the removal. False when the key is
/// absent.
pub fn take(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    found(bpf(
        BPF_MAP_LOOKUP_AND_DELETE_ELEM,
        &elem(map, Some(key), value.as_mut_ptr(), 0),
    ))
}

/// Writes `value` at `key`, with [`ANY`] or [`NOEXIST`].
pub fn update(map: BorrowedFd<'_>, key: &[u8], value: &[u8], flags: u64) -> io::Result<()> {
    bpf(
        BPF_MAP_UPDATE_ELEM,
        &elem(map, Some(key), value.as_ptr(), flags),
    )
    .map(|_| ())
}

/// Puts `program` into the link pinned at `link_pin` in place of the one it
/// runs (BPF_LINK_UPDATE, which aya offers for some link types only): one
/// atomic swap, so every packet meets either the old program or the new.
pub fn swap_program(link_pin: &Path, program: BorrowedFd<'_>) -> io::Result<()> {
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    #[repr(C)]
    struct LinkUpdate {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }

    let path = CString::new(link_pin.as_os_str().as_bytes())?;
    let fd = bpf(
        BPF_OBJ_GET,
        &ObjGet {
            pathname: path.as_ptr() as u64,
            bpf_fd: 0,
            file_flags: 0,
        },
    )?;
    // SAFETY: a new file descriptor the kernel just returned; owned here.
    let link = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    bpf(
        BPF_LINK_UPDATE,
        &LinkUpdate {
            link_fd: link.as_raw_fd() as u32,
            new_prog_fd: program.as_raw_fd() as u32,
            flags: 0,
            old_prog_fd: 0,
        },
    )?;
    Ok(())
}

/// The values of a BPF_F_MMAPABLE array, mapped into this process: stores
/// here are what the programs read, without a syscall each. The kernel
/// lays the values out from offset 0, each in a multiple of 8 bytes.
pub struct MappedArray {
    base: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping belongs to this value alone; writes go through
// `&mut self`.
unsafe impl Send for MappedArray {}

impl MappedArray {
    /// Maps the first `len` bytes of the array `map`'s values.
    pub fn map(map: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of the map's fd; the kernel
        // checks the length against the array and the map's flags.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = std::ptr::NonNull::new(base.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null address"))?;
        Ok(Self { base, len })
    }

    /// Writes `bytes` at byte `offset` of the values.
    pub fn write(&mut self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        if offset
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.len)
        {
            return Err(io::Error::from_raw_os_error(libc::E2BIG));
        }
        // SAFETY: in bounds of the mapping (checked above), which lives as
        // long as `self`; u8 has no alignment.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.as_ptr().add(offset),
                bytes.len(),
            );
        }
        Ok(())
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A UDP socket in the calling thread's network namespace, for the
/// socket options and ioctls that ask about the namespace or its devices.
fn udp_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just opened and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// SO_NETNS_COOKIE (include/uapi/asm-generic/socket.h; Linux 5.14).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the calling thread's network namespace: what
/// bpf_get_netns_cookie returns for a socket in it.
pub fn netns_cookie() -> io::Result<u64> {
    let socket = udp_socket()?;
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` and `len` are valid for the kernel to write.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            std::ptr::from_mut(&mut cookie).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// The index of interface `name` in the calling thread's network
/// namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: a NUL-terminated string, only read.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// SIOCETHTOOL's ETHTOOL_GDRVINFO command and answer
/// (include/uapi/linux/ethtool.h).
const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;

#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// struct ifreq with the ethtool request's pointer in its union.
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut EthtoolDrvinfo,
    _pad: [u8; 16],
}

/// The driver of interface `name` as ethtool names it ("veth", "netkit",
/// a NIC's driver), in the calling thread's network namespace.
pub fn driver(name: &str) -> Option<String> {
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    let socket = udp_socket().ok()?;
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut request = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: &mut info,
        _pad: [0; 16],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `request` and the `info` it points at live across the call,
    // which writes `info` only.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL, &mut request) };
    if rc < 0 {
        return None;
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}
