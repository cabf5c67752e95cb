//! Fallible allocation of the big buffers (parameters, activations, caches), so that a size
//! the machine cannot hold is an [`Error::OutOfMemory`] naming what it was for, never an
//! abort of the whole process.

use crate::error::{Error, Result};

/// `len` zeros, or an error saying how many bytes `what` needed.
pub fn zeros(len: usize, what: &str) -> Result<Vec<f32>> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(len)
        .map_err(|_| out_of_memory(len as u128 * 4, what))?;
    buf.resize(len, 0.0);
    Ok(buf)
}

/// Grows or shrinks `buf` to `len` values, new ones zero, or an error naming `what`.
pub fn resize_zeroed(buf: &mut Vec<f32>, len: usize, what: &str) -> Result<()> {
    if len > buf.len() {
        buf.try_reserve_exact(len - buf.len())
            .map_err(|_| out_of_memory(len as u128 * 4, what))?;
    }
    buf.resize(len, 0.0);
    Ok(())
}

/// Appends `value` to `buf`, growing it fallibly (doubling), or an error naming `what`:
/// for a list that grows without a bound known in advance, such as generated ids.
pub fn push<T>(buf: &mut Vec<T>, value: T, what: &str) -> Result<()> {
    if buf.len() == buf.capacity() {
        let more = buf.len().max(16);
        let bytes = (buf.len() + more) as u128 * std::mem::size_of::<T>() as u128;
        buf.try_reserve_exact(more)
            .map_err(|_| out_of_memory(bytes, what))?;
    }
    buf.push(value);
    Ok(())
}

/// Checks that `bytes` can be allocated right now, for a structure built from many
/// smaller buffers (the allocation is made and given back at once).
pub fn check_available(bytes: u128, what: &str) -> Result<()> {
    let len = usize::try_from(bytes).map_err(|_| out_of_memory(bytes, what))?;
    let mut probe: Vec<u8> = Vec::new();
    probe
        .try_reserve_exact(len)
        .map_err(|_| out_of_memory(bytes, what))
}

pub fn out_of_memory(bytes: u128, what: &str) -> Error {
    Error::OutOfMemory {
        bytes,
        what: what.to_string(),
    }
}
