// Half-precision conversions for the Transforms codecs: F16C + AVX2 on x86-64 CPUs that have them
// (chosen at run time: the Swift code is built for the x86-64 baseline, which has no F16C),
// portable C elsewhere. Results are bit-identical to FloatCodec.half / Float(Float16): round to
// nearest even, NaNs quieted with their payload's top bits (FloatCodecTests checks every half).
#ifndef CODEC_KERNELS_H
#define CODEC_KERNELS_H

#include <stddef.h>

/// 1 when the F16C paths are in use, else 0.
int ck_uses_f16c(void);

/// `count` little-endian halves at `halves` (any alignment) → floats.
void ck_halves_to_floats(const void *halves, float *floats, size_t count);

/// `count` floats → little-endian halves at `halves` (any alignment). Finite values that round to
/// infinity are counted in `*overflowed` and, when `clamp`, written as ±65504; NaNs are counted in
/// `*nans`, ±infinities in `*infinities`. The counters are added to, not reset. `stream` writes
/// with non-temporal stores (F16C path): for output that is not read again soon, e.g. a buffer
/// handed to the disk, twice as fast as stores that first read each line into the cache.
void ck_floats_to_halves(const float *floats, void *halves, size_t count, int clamp, size_t *overflowed,
                         size_t *nans, size_t *infinities, int stream);

/// ggml's `make_qkx2_quants` (`make_qkx3_quants` with weights) for eight sub-blocks of `n` ≤ 32
/// values at once (sub-block k at `x + k·n`, its weights at `weights + k·n`): levels in [0, nmax]
/// into `levels + k·n`, the scale into `scales[k]` and `-min` into `mins[k]`; bit-identical to ggml's
/// scalar search without FMA contraction (kquant_kernels.c).
void ck_qkx_search8(int n, int nmax, const float *x, const float *weights, unsigned char *levels, float *scales,
                    float *mins, float rmin, float rdelta, int nstep, int use_mad);

/// ggml's `make_qx_quants` (the weighted variant: `weights`, or x² when NULL) for eight sub-blocks of
/// `n` ≤ 32 values: signed levels in [-nmax, nmax-1] stored as level + nmax into `levels + k·n`,
/// the scale into `scales[k]`.
void ck_qx_search8(int n, int nmax, const float *x, const float *weights, signed char *levels, float *scales);

/// ggml's `make_q3_quants(…, do_rmse = true)` for eight sub-blocks of `n` ≤ 32 values: levels + nmax
/// into `levels + k·n` (0 for an all-zero sub-block), the scale into `scales[k]`.
void ck_q3_search8(int n, int nmax, const float *x, signed char *levels, float *scales);

/// Tests only: 1 makes the K-quant kernels above take their portable (non-AVX2) build, 0 restores
/// the run-time choice. Not thread-safe.
void ck_kquant_force_portable(int on);

#endif
