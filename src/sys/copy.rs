//! Memory copies that keep clear of a slow case of the C library's
//! `memcpy` on x86.
//!
//! glibc's `memcpy` (what `copy_from_slice` and `ptr::copy_nonoverlapping`
//! call for sizes not known at compile time) moves more than about 2 KiB
//! with `rep movsb` on CPUs that announce fast string moves. On AMD Zen
//! that instruction slows down 15–40× when the destination lies a few
//! bytes *past* the source modulo the 4 KiB page: measured on this
//! project's AMD EPYC VM (glibc 2.36), 16 KiB, one core, 80–90 GB/s at
//! any other distance against 1.5–3 GB/s when `(dst - src) % 4096` is
//! 1–31, and about 18–25 GB/s at 32–63 (the same holds for the kernel's
//! copies in cross-memory attach: 6.5 against 1.3 GB/s at 8–24). The
//! distance is common in real programs: two buffers of equal size
//! allocated one after the other lie 16 bytes more than their size
//! apart, so copying a block of one into the other at the same offset —
//! a collective's own block, from the send buffer into the receive
//! buffer — hits it every time.
//!
//! Copies here move such a pair in pieces of [`CHUNK`] bytes, which
//! `memcpy` moves with vector registers (below its `rep movsb` threshold)
//! at the full rate (84–91 GB/s at 4–16 KiB, 39–42 GB/s beyond the caches,
//! the same as the good distances). Every other copy is the plain
//! `memcpy`, after one subtraction and compare.

/// Pieces in which a copy at a slow distance moves: at or below glibc's
/// smallest `rep movsb` threshold (2048 bytes with SSE2, more with wider
/// vectors), so each piece takes the vector loop.
pub(crate) const CHUNK: usize = 2048;

/// Whether copying from `src` to `dst` in one `memcpy` of more than
/// [`CHUNK`] bytes may take the slow `rep movsb` case: the destination
/// lies 1–63 bytes past the source, modulo the page.
#[inline]
pub(crate) fn slow_distance(dst: usize, src: usize) -> bool {
    let d = dst.wrapping_sub(src) & 4095;
    d != 0 && d < 64
}

/// Copies `src` into `dst` (equal lengths; panics otherwise, as
/// `copy_from_slice` does), in [`CHUNK`]-byte pieces when one `memcpy`
/// would be slow (see the module's documentation).
#[inline]
pub(crate) fn copy<T: Copy>(dst: &mut [T], src: &[T]) {
    let bytes = std::mem::size_of_val(src);
    if bytes <= CHUNK
        || dst.len() != src.len()
        || !slow_distance(dst.as_ptr() as usize, src.as_ptr() as usize)
    {
        dst.copy_from_slice(src);
        return;
    }
    copy_in_pieces(dst, src);
}

/// Elements of `T` in one piece of at most [`CHUNK`] bytes (at least one).
fn per_piece<T>() -> usize {
    (CHUNK / std::mem::size_of::<T>().max(1)).max(1)
}

#[cold]
#[inline(never)]
fn copy_in_pieces<T: Copy>(dst: &mut [T], src: &[T]) {
    let per = per_piece::<T>();
    for (d, s) in dst.chunks_mut(per).zip(src.chunks(per)) {
        d.copy_from_slice(s);
    }
}

/// `src.to_vec()`, in [`CHUNK`]-byte pieces when the new vector's
/// memory lies at a slow distance from `src` (a vector allocated just
/// after one of equal size often does: see the module's documentation).
#[inline]
pub(crate) fn to_vec<T: Copy>(src: &[T]) -> Vec<T> {
    let mut v = Vec::with_capacity(src.len());
    extend(&mut v, src);
    v
}

/// `v.extend_from_slice(src)`, in pieces when the destination lies at a
/// slow distance from `src` (see the module's documentation).
#[inline]
pub(crate) fn extend<T: Copy>(v: &mut Vec<T>, src: &[T]) {
    v.reserve(src.len());
    let end = v.as_ptr().wrapping_add(v.len());
    if std::mem::size_of_val(src) <= CHUNK || !slow_distance(end as usize, src.as_ptr() as usize) {
        v.extend_from_slice(src);
        return;
    }
    for piece in src.chunks(per_piece::<T>()) {
        v.extend_from_slice(piece);
    }
}

/// [`std::ptr::copy_nonoverlapping`] of `len` bytes, in [`CHUNK`]-byte
/// pieces when one `memcpy` would be slow (see the module's
/// documentation).
///
/// # Safety
/// As for [`std::ptr::copy_nonoverlapping`]: `src` is valid for reads and
/// `dst` for writes of `len` bytes, and the two ranges do not overlap.
#[inline]
pub(crate) unsafe fn copy_nonoverlapping(src: *const u8, dst: *mut u8, len: usize) {
    if len <= CHUNK || !slow_distance(dst as usize, src as usize) {
        // SAFETY: the caller's contract is this call's.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        return;
    }
    let mut off = 0;
    while off < len {
        let n = CHUNK.min(len - off);
        // SAFETY: `off + n <= len`, so each piece lies inside the ranges
        // the caller vouched for.
        unsafe { std::ptr::copy_nonoverlapping(src.add(off), dst.add(off), n) };
        off += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slow_distances_are_one_to_sixty_three_bytes_forward_modulo_the_page() {
        assert!(!slow_distance(4096, 0));
        assert!(slow_distance(4096 + 16, 0));
        assert!(slow_distance(16, 0));
        assert!(slow_distance(63, 0));
        assert!(!slow_distance(64, 0));
        // Behind the source: not slow.
        assert!(!slow_distance(0, 16));
        assert!(slow_distance(5 * 4096 + 1, 3 * 4096));
        // Wrapping addresses.
        assert!(slow_distance(8, usize::MAX - 7));
    }

    #[test]
    fn copies_at_every_distance_and_length_match_copy_from_slice() {
        let src: Vec<u32> = (0..20_000u32)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        let mut big = vec![0u32; 20_000 + 1024];
        // One shift puts the destination 16 bytes past the source modulo
        // the page (the pieces' path), the others wherever they fall.
        let slow = ((src.as_ptr() as usize + 16).wrapping_sub(big.as_ptr() as usize) & 4095) / 4;
        for shift in [0usize, 1, 4, 7, 15, 16, 17, 40, slow] {
            for len in [0usize, 1, 511, 512, 513, 1000, 4096, 5000, 20_000] {
                big.fill(0);
                let dst = &mut big[shift..shift + len];
                if shift == slow {
                    assert!(slow_distance(dst.as_ptr() as usize, src.as_ptr() as usize));
                }
                copy(dst, &src[..len]);
                assert_eq!(dst, &src[..len], "shift {shift} len {len}");
                assert!(big[shift + len..].iter().all(|&x| x == 0));
                assert!(big[..shift].iter().all(|&x| x == 0));
            }
        }
    }

    #[test]
    fn raw_copies_in_pieces_cover_every_byte() {
        let src: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut dst = vec![0u8; 70_000 + 4096 + 64];
        // A slow distance on purpose: the destination 16 bytes past the
        // source modulo the page.
        let want = (src.as_ptr() as usize + 16).wrapping_sub(dst.as_ptr() as usize) & 4095;
        for len in [2049usize, 4096, 6000, 70_000] {
            dst.fill(0);
            let d = &mut dst[want..want + len];
            assert!(slow_distance(d.as_ptr() as usize, src.as_ptr() as usize));
            // SAFETY: both ranges lie inside their vectors and are distinct
            // allocations.
            unsafe { copy_nonoverlapping(src.as_ptr(), d.as_mut_ptr(), len) };
            assert_eq!(d, &src[..len]);
            assert!(dst[want + len..].iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn vectors_built_at_every_distance_hold_the_source() {
        let src: Vec<u64> = (0..9000u64).map(|i| i * 3 + 1).collect();
        for len in [0usize, 1, 256, 257, 4000, 9000] {
            assert_eq!(to_vec(&src[..len]), &src[..len]);
            // Appending after a prefix whose end lies 16 bytes past the
            // source modulo the page (the pieces' path).
            let mut v: Vec<u64> = Vec::with_capacity(len + 1024);
            let gap = (src.as_ptr() as usize + 16).wrapping_sub(v.as_ptr() as usize) & 4095;
            v.resize(gap / 8, 7);
            let end = v.as_ptr().wrapping_add(v.len()) as usize;
            assert!(slow_distance(end, src.as_ptr() as usize));
            extend(&mut v, &src[..len]);
            assert!(v[..gap / 8].iter().all(|&x| x == 7));
            assert_eq!(&v[gap / 8..], &src[..len]);
        }
    }

    #[test]
    #[should_panic]
    fn unequal_lengths_panic_as_copy_from_slice_does() {
        let mut dst = [0u8; 5000];
        copy(&mut dst, &[1u8; 4999]);
    }
}
