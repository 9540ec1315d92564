//! Reduction operations on typed slices.
//!
//! [`Op`] names MPI's predefined operations; [`Reducible`] implements them
//! for every integer and float type. Bitwise and logical operations on floats
//! are errors. User-defined operations are closures (see
//! [`Communicator::all_reduce_with`](crate::Communicator::all_reduce_with)).

use crate::error::{Error, Result};

/// A predefined reduction operation (`MPI_SUM`, `MPI_MAX`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Sum (wrapping for integers).
    Sum,
    /// Product (wrapping for integers).
    Prod,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Bitwise and (integers only).
    BitAnd,
    /// Bitwise or (integers only).
    BitOr,
    /// Bitwise xor (integers only).
    BitXor,
    /// Logical and: non-zero is true, the result is 0 or 1 (integers only).
    LogicalAnd,
    /// Logical or (integers only).
    LogicalOr,
    /// Logical xor (integers only).
    LogicalXor,
    /// Minimum value with the index that holds it; ties keep the lower
    /// index (`MPI_MINLOC`; on [`LocF64`]-style pairs only).
    MinLoc,
    /// Maximum value with its index; ties keep the lower index (`MPI_MAXLOC`).
    MaxLoc,
}

/// A (value, index) pair for [`Op::MinLoc`] and [`Op::MaxLoc`], like MPI's
/// `MPI_DOUBLE_INT`: [`LocF64`], [`LocF32`], [`LocI64`], [`LocI32`] (the index
/// has the value's width, so the pair has no padding).
macro_rules! loc_type {
    ($($name:ident($v:ty, $i:ty)),*) => {$(
        #[doc = concat!("A (", stringify!($v), " value, ", stringify!($i), " index) pair for min-loc/max-loc.")]
        #[repr(C)]
        #[derive(Debug, Clone, Copy, PartialEq, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            /// The value compared.
            pub value: $v,
            /// Where it came from (typically a rank or an element index).
            pub index: $i,
        }
    )*};
}

loc_type!(
    LocF64(f64, i64),
    LocF32(f32, i32),
    LocI64(i64, i64),
    LocI32(i32, i32)
);

macro_rules! loc_reducible {
    ($($name:ident),*) => {$(
        impl Reducible for $name {
            fn reduce_into(op: Op, acc: &mut [Self], x: &[Self]) -> Result<()> {
                // `acc` holds lower ranks' operands: on ties the lower index wins
                // because the comparison keeps `a` unless `b` is strictly better
                // or equal with a smaller index.
                match op {
                    Op::MinLoc => zip_apply!(acc, x, |a, b| {
                        if b.value < a.value || (b.value == a.value && b.index < a.index) { b } else { a }
                    }),
                    Op::MaxLoc => zip_apply!(acc, x, |a, b| {
                        if b.value > a.value || (b.value == a.value && b.index < a.index) { b } else { a }
                    }),
                    other => return Err(unsupported(other, stringify!($name))),
                }
                Ok(())
            }
        }
    )*};
}

/// Element types the predefined operations apply to.
pub trait Reducible: bytemuck::Pod + Send + Sync {
    /// `acc[i] = acc[i] op x[i]` for every `i` (`acc` holds the operand from
    /// lower ranks, `x` the one from higher ranks).
    fn reduce_into(op: Op, acc: &mut [Self], x: &[Self]) -> Result<()>;
}

/// `acc[i] = acc[i] op x[i]`, split into `threads` parts run on rayon's
/// pool when `threads` ≥ 2 (see `coll::combine_threads`). Element-wise, so
/// the result has the same bits however it is split.
///
/// Not split on a thread of rayon's pool: the program already keeps the
/// cores busy, and a worker waiting for the parts could run one of the
/// program's own tasks meanwhile, inside this collective (a task that
/// calls a collective on the same communicator would then nest in it).
/// A thread outside the pool just waits for the parts.
pub(crate) fn combine<T: Reducible>(op: Op, acc: &mut [T], x: &[T], threads: usize) -> Result<()> {
    if threads < 2 || acc.len() < 2 || rayon::current_thread_index().is_some() {
        return T::reduce_into(op, acc, x);
    }
    use rayon::prelude::*;
    let part = acc.len().div_ceil(threads);
    acc.par_chunks_mut(part)
        .zip(x.par_chunks(part))
        .try_for_each(|(a, b)| T::reduce_into(op, a, b))
}

fn unsupported(op: Op, ty: &str) -> Error {
    Error::InvalidArgument(format!("{op:?} is not defined for {ty}"))
}

/// Applies `$f` element-wise: one loop per operation, so each is inlined
/// and vectorized (a function pointer per element would cost ~10×).
macro_rules! zip_apply {
    ($acc:expr, $x:expr, |$a:ident, $b:ident| $body:expr) => {
        for (slot, &$b) in $acc.iter_mut().zip($x) {
            let $a = *slot;
            *slot = $body;
        }
    };
}

macro_rules! int_reducible {
    ($($t:ty),*) => {$(
        impl Reducible for $t {
            fn reduce_into(op: Op, acc: &mut [Self], x: &[Self]) -> Result<()> {
                match op {
                    Op::Sum => zip_apply!(acc, x, |a, b| a.wrapping_add(b)),
                    Op::Prod => zip_apply!(acc, x, |a, b| a.wrapping_mul(b)),
                    Op::Min => zip_apply!(acc, x, |a, b| a.min(b)),
                    Op::Max => zip_apply!(acc, x, |a, b| a.max(b)),
                    Op::BitAnd => zip_apply!(acc, x, |a, b| a & b),
                    Op::BitOr => zip_apply!(acc, x, |a, b| a | b),
                    Op::BitXor => zip_apply!(acc, x, |a, b| a ^ b),
                    Op::LogicalAnd => zip_apply!(acc, x, |a, b| <$t>::from((a != 0) && (b != 0))),
                    Op::LogicalOr => zip_apply!(acc, x, |a, b| <$t>::from((a != 0) || (b != 0))),
                    Op::LogicalXor => zip_apply!(acc, x, |a, b| <$t>::from((a != 0) != (b != 0))),
                    Op::MinLoc | Op::MaxLoc => return Err(unsupported(op, concat!(stringify!($t), " (use Loc pairs)"))),
                }
                Ok(())
            }
        }
    )*};
}

int_reducible!(u8, u16, u32, u64, i8, i16, i32, i64, usize, isize);

macro_rules! float_reducible {
    ($($t:ty),*) => {$(
        impl Reducible for $t {
            fn reduce_into(op: Op, acc: &mut [Self], x: &[Self]) -> Result<()> {
                match op {
                    Op::Sum => zip_apply!(acc, x, |a, b| a + b),
                    Op::Prod => zip_apply!(acc, x, |a, b| a * b),
                    Op::Min => zip_apply!(acc, x, |a, b| a.min(b)),
                    Op::Max => zip_apply!(acc, x, |a, b| a.max(b)),
                    other => return Err(unsupported(other, stringify!($t))),
                }
                Ok(())
            }
        }
    )*};
}

float_reducible!(f32, f64);

loc_reducible!(LocF64, LocF32, LocI64, LocI32);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_and_float_ops() {
        let mut a = [1i32, -5, 7];
        i32::reduce_into(Op::Sum, &mut a, &[2, 5, i32::MAX]).unwrap();
        assert_eq!(a, [3, 0, 7i32.wrapping_add(i32::MAX)]);
        let mut a = [6u8, 0b1010, 3];
        u8::reduce_into(Op::BitXor, &mut a, &[6, 0b0110, 0]).unwrap();
        assert_eq!(a, [0, 0b1100, 3]);
        let mut a = [0u16, 2, 0];
        u16::reduce_into(Op::LogicalOr, &mut a, &[0, 0, 9]).unwrap();
        assert_eq!(a, [0, 1, 1]);
        let mut a = [1.5f64, -2.0];
        f64::reduce_into(Op::Max, &mut a, &[1.0, 3.0]).unwrap();
        assert_eq!(a, [1.5, 3.0]);
        assert!(f32::reduce_into(Op::BitAnd, &mut [1.0], &[2.0]).is_err());
        assert!(i32::reduce_into(Op::MinLoc, &mut [1], &[2]).is_err());
        let l = |value, index| LocF64 { value, index };
        let mut a = [l(1.0, 0), l(5.0, 0), l(2.0, 3)];
        LocF64::reduce_into(Op::MinLoc, &mut a, &[l(0.5, 1), l(5.0, 1), l(2.0, 1)]).unwrap();
        assert_eq!(a, [l(0.5, 1), l(5.0, 0), l(2.0, 1)]);
        let m = |value, index| LocI32 { value, index };
        let mut a = [m(1, 4)];
        LocI32::reduce_into(Op::MaxLoc, &mut a, &[m(1, 2)]).unwrap();
        // Split over threads: the same bits as in one piece.
        let x: Vec<f64> = (0..100_003).map(|i| (i as f64).sin() * 1e3).collect();
        let mut one: Vec<f64> = (0..100_003).map(|i| (i as f64).cos()).collect();
        let mut split = one.clone();
        combine(Op::Sum, &mut one, &x, 1).unwrap();
        combine(Op::Sum, &mut split, &x, 3).unwrap();
        assert!(one
            .iter()
            .zip(&split)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(combine(Op::BitAnd, &mut [1.0f32; 8], &[2.0; 8], 4).is_err());
        assert_eq!(a, [m(1, 2)], "ties keep the lower index");
        assert!(
            LocF32::reduce_into(Op::Sum, &mut [LocF32::default()], &[LocF32::default()]).is_err()
        );
    }
}
