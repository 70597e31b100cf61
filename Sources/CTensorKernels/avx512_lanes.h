// Lane masks and a register transpose shared by the AVX-512 kernels (private to this target; include only where
// <immintrin.h> is available).
#ifndef AVX512_LANES_H
#define AVX512_LANES_H

#include <immintrin.h>
#include <stddef.h>

// The first `count` of a vector's 16 lanes: all for count ≥ 16, none for count ≤ 0.
static inline __attribute__((always_inline)) __mmask16 lane_mask(ptrdiff_t count) {
  return count >= 16 ? (__mmask16)0xFFFF : count <= 0 ? 0 : (__mmask16)((1u << count) - 1);
}

// Transposes 16 rows of 16 floats in place: rows[i][j] becomes rows[j][i].
static inline __attribute__((always_inline, target("avx512f"))) void transpose16(__m512 rows[16]) {
  __m512 pairs[16], quads[16];
  for (int i = 0; i < 16; i += 2) {  // per 128-bit lane: (r, r+1) interleaved
    pairs[i] = _mm512_unpacklo_ps(rows[i], rows[i + 1]);
    pairs[i + 1] = _mm512_unpackhi_ps(rows[i], rows[i + 1]);
  }
  for (int b = 0; b < 16; b += 4) {  // quads[b + c], lane L: column 4L + c of rows b ..< b + 4
    quads[b + 0] = _mm512_shuffle_ps(pairs[b], pairs[b + 2], 0x44);
    quads[b + 1] = _mm512_shuffle_ps(pairs[b], pairs[b + 2], 0xEE);
    quads[b + 2] = _mm512_shuffle_ps(pairs[b + 1], pairs[b + 3], 0x44);
    quads[b + 3] = _mm512_shuffle_ps(pairs[b + 1], pairs[b + 3], 0xEE);
  }
  for (int c = 0; c < 4; c++) {  // a 4 × 4 transpose of 128-bit lanes
    const __m512 low01 = _mm512_shuffle_f32x4(quads[c], quads[4 + c], 0x44);
    const __m512 high01 = _mm512_shuffle_f32x4(quads[c], quads[4 + c], 0xEE);
    const __m512 low23 = _mm512_shuffle_f32x4(quads[8 + c], quads[12 + c], 0x44);
    const __m512 high23 = _mm512_shuffle_f32x4(quads[8 + c], quads[12 + c], 0xEE);
    rows[c] = _mm512_shuffle_f32x4(low01, low23, 0x88);
    rows[4 + c] = _mm512_shuffle_f32x4(low01, low23, 0xDD);
    rows[8 + c] = _mm512_shuffle_f32x4(high01, high23, 0x88);
    rows[12 + c] = _mm512_shuffle_f32x4(high01, high23, 0xDD);
  }
}

#endif
