// Vectorised element-wise kernels for the Tensors module: AVX2+FMA on x86-64 CPUs that have
// it (chosen at run time), portable C elsewhere. Every function takes `count` floats; source
// and destination may be the same buffer.
#ifndef TENSOR_KERNELS_H
#define TENSOR_KERNELS_H

#include <stddef.h>

/// 1 when the AVX2+FMA paths are in use, else 0.
int tk_uses_avx2(void);

/// Largest value of `source` (-INFINITY when count is 0).
float tk_max(const float *source, size_t count);

/// destination = exp(source - shift); returns the sum of the results.
float tk_exp_shifted_sum(const float *source, float *destination, size_t count, float shift);

/// destination = source * factor.
void tk_scale(const float *source, float *destination, size_t count, float factor);

/// destination = silu(source * scale + shift) when `silu`, else source * scale + shift.
void tk_affine(const float *source, float *destination, size_t count, float scale, float shift,
               int silu);

/// destination = x * sigmoid(x).
void tk_silu(const float *source, float *destination, size_t count);

/// destination = x * sigmoid(1.702 x).
void tk_quick_gelu(const float *source, float *destination, size_t count);

/// destination = 0.5 x (1 + erf(x / sqrt 2)).
void tk_gelu(const float *source, float *destination, size_t count);

/// destination = value * gelu(gate).
void tk_geglu(const float *value, const float *gate, float *destination, size_t count);

#endif
