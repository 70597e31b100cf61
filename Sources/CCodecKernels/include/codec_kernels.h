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
/// `*nans`. Both counters are added to, not reset.
void ck_floats_to_halves(const float *floats, void *halves, size_t count, int clamp, size_t *overflowed,
                         size_t *nans);

#endif
