//! Runtime CPU dispatch: hot loops are compiled twice, once for the x86-64 baseline and
//! once with AVX2 and FMA, and the second runs when the CPU has them. The crate itself
//! targets the baseline, so one wheel runs on every x86-64 machine.
//!
//! `simd_fn!` wraps a function (with at most one type parameter): its body goes into an
//! `#[inline(always)]` inner function, inlined both into a plain copy and into an
//! `#[target_feature(enable = "avx2,fma")]` copy.
//! Closures do not inherit the features of the function that calls them, so parallel
//! kernels call a `simd_fn!` function per row or per chunk.
//!
//! Two kernels have a third copy, for AVX-512, whose register tiles double with the
//! registers (see [`has_avx512`]): the batched decode product (`decode::panels`) and
//! attention's tiled products (`kernels::tiled`).

/// Whether this CPU has AVX2 and FMA (the standard library caches the answer).
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU has AVX-512F as well (for the few kernels with an AVX-512 copy).
#[inline]
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && has_avx2_fma()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

macro_rules! simd_fn {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident $(<$g:ident : $bound:path>)? ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name$(<$g: $bound>)?($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp$(<$g: $bound>)?($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn fast$(<$g: $bound>)?($($arg: $ty),*) $(-> $ret)? {
                    imp$(::<$g>)?($($arg),*)
                }
                if $crate::kernels::simd::has_avx2_fma() {
                    // SAFETY: the CPU has the features `fast` was compiled for.
                    return unsafe { fast$(::<$g>)?($($arg),*) };
                }
            }
            imp$(::<$g>)?($($arg),*)
        }
    };
}

pub(crate) use simd_fn;
