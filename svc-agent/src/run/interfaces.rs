//! Which pod interfaces exist in this network namespace.
//!
//! The run loop polls [`with_prefix`] every [`POLL`] and attaches to
//! interfaces it has not seen, by index: a veth deleted and made again
//! under the same name between two polls (a pod replaced) has a new index,
//! so it is attached again. Polling `if_nameindex(3)` rather than subscribing to
//! rtnetlink: it needs no netlink dependency, a missed event cannot leave a
//! veth unattached (every poll sees the full list), and 200 ms is well
//! inside the time a CNI takes to set a pod up. `if_nameindex` asks the
//! kernel over netlink, so it lists the interfaces of the calling thread's
//! network namespace; /sys/class/net would show the namespace sysfs was
//! mounted in (the root namespace when the agent is started with setns,
//! as the lab does).
use std::{ffi::CStr, time::Duration};

pub const POLL: Duration = Duration::from_millis(200);

/// Every interface in this network namespace: (name, index).
pub fn names() -> std::io::Result<Vec<(String, u32)>> {
    // SAFETY: if_nameindex returns a heap array ended by a zeroed entry, or
    // NULL on error; it is freed with if_freenameindex below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    let mut names = Vec::new();
    let mut entry = list;
    // SAFETY: entries up to the zeroed terminator are valid, and each name
    // is a NUL-terminated string owned by the list.
    unsafe {
        while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
            names.push((
                CStr::from_ptr((*entry).if_name)
                    .to_string_lossy()
                    .into_owned(),
                (*entry).if_index,
            ));
            entry = entry.add(1);
        }
        libc::if_freenameindex(list);
    }
    Ok(names)
}

/// The interfaces whose names start with `prefix`: (name, index).
pub fn with_prefix(prefix: &str) -> std::io::Result<Vec<(String, u32)>> {
    Ok(names()?
        .into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed() {
        assert!(names().unwrap().iter().any(|(name, _)| name == "lo"));
        assert_eq!(with_prefix("lo").unwrap(), vec![("lo".to_owned(), 1)]);
    }
}
