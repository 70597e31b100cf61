// Lane masks shared by the AVX-512 kernels (private to this target; include only where
// <immintrin.h> is available).
#ifndef AVX512_LANES_H
#define AVX512_LANES_H

#include <immintrin.h>
#include <stddef.h>

// The first `count` of a vector's 16 lanes: all for count ≥ 16, none for count ≤ 0.
static inline __attribute__((always_inline)) __mmask16 lane_mask(ptrdiff_t count) {
  return count >= 16 ? (__mmask16)0xFFFF : count <= 0 ? 0 : (__mmask16)((1u << count) - 1);
}

#endif
