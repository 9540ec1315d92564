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
}

/// Element types the predefined operations apply to.
pub trait Reducible: bytemuck::Pod {
    /// `acc[i] = acc[i] op x[i]` for every `i` (`acc` holds the operand from
    /// lower ranks, `x` the one from higher ranks).
    fn reduce_into(op: Op, acc: &mut [Self], x: &[Self]) -> Result<()>;
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
    }
}
