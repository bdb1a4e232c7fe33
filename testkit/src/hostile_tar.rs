//! Tar archives as an attacker writes them, for the tests of every unpacker (hand-offs,
//! caches): the `tar` crate's own setters refuse `..`, absolute paths and odd link
//! targets, which is exactly what a hostile archive holds, so headers are written byte by
//! byte here.
//!
//! Invariant: an entry is one 512-byte header and its data padded to 512 bytes; nothing
//! is checked, and [`raw_entry`] panics on a path or link longer than the old header holds.

/// Appends one entry to `out`: `path` of type `kind` (with link target `link`, empty for
/// none), mode 0644, holding `data`.
pub fn raw_entry(out: &mut Vec<u8>, path: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}
