// Fused attention for head dimension 64 in AVX-512F (see attention_kernels.h).
//
// Per head the keys are packed once into panels of 16 keys ([key/16][d][16]), so one 512-bit
// load holds one dimension of 16 keys, and the values into contiguous 64-float rows. A block of
// query rows then walks the keys a tile at a time:
//   1. scores: register tiles of up to 6 rows × 64 keys (24 accumulators), the row maxima kept
//      as vectors on the side, so no separate pass looks for them;
//   2. softmax step: p = exp(s − m) in place over the tile (still in L1/L2), the running sums and
//      the output rows rescaled when the maximum moves (flash attention's recurrence);
//   3. values: register tiles of up to 6 rows × 64 output columns, accumulated across tiles;
//      the first tile starts them from zero and the last divides them by the row sums and
//      writes the output rows, so no pass clears or scales them (with 77 keys, one tile, a
//      memset and the final pass were a fifth of a cross-attention).
// The exponential is the Cephes polynomial of kernels.c (PyTorch's), 16 lanes wide.
#include "attention_kernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

enum { HEAD = 64, LANES = 16, HEAD_VECTORS = HEAD / LANES, MAX_ROWS = 6, MAX_BLOCKS = 4 };

static size_t round_up(size_t value, size_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

size_t tk_attention_workspace_floats(size_t key_count, size_t block_rows, size_t tile_keys) {
  return round_up(key_count, LANES) * HEAD  // packed keys
         + key_count * HEAD                 // packed values
         + block_rows * tile_keys           // scores, then probabilities
         + block_rows * HEAD                // output accumulators
         + block_rows * LANES               // row maxima of the tile, as vectors
         + 2 * block_rows                   // running maxima and sums
         + 8 * LANES;                       // alignment of each part to 64 bytes
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>

#define TA_AVX512 __attribute__((target("avx512f,fma")))
#define TA_INLINE static inline __attribute__((always_inline))

// exp(x) for x ≤ 0 (scores minus their running maximum): the Cephes polynomial of kernels.c on
// r = x − n·ln2, scaled by 2ⁿ with vscalefps instead of exponent arithmetic. Below −87.3 (where
// kernels.c also gives 0) the zero-masking returns 0 exactly: an underflowing scalef would take
// a slow microcode assist per lane, and −∞ (hidden keys) would turn r into NaN. NaN stays NaN
// (max(low, x) returns x when x is NaN, and the unordered compare keeps the lane).
TA_AVX512 TA_INLINE __m512 exp16(__m512 input) {
  const __m512 low = _mm512_set1_ps(-87.3f);
  __mmask16 kept = _mm512_cmp_ps_mask(input, low, _CMP_NLT_UQ);
  __m512 x = _mm512_max_ps(low, input);
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 r2 = _mm512_mul_ps(r, r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(kept, y, n);
}

// Scores of `rows` query rows against `blocks` panels of 16 keys: s = scale · q·k, lanes past
// `last_lanes` of the last panel set to −∞; `maxima` (rows × 16) keeps each row's lane-wise max.
TA_AVX512 TA_INLINE void score_tile(const int rows, const int blocks, const float *queries,
                                    size_t query_stride, const float *panels, float scale,
                                    int last_lanes, float *scores, size_t score_stride,
                                    float *maxima) {
  __m512 sum[MAX_ROWS][MAX_BLOCKS];
  for (int r = 0; r < rows; r++)
    for (int b = 0; b < blocks; b++) sum[r][b] = _mm512_setzero_ps();
  for (int d = 0; d < HEAD; d++) {
    __m512 key[MAX_BLOCKS];
    for (int b = 0; b < blocks; b++) key[b] = _mm512_load_ps(panels + (b * HEAD + d) * LANES);
    for (int r = 0; r < rows; r++) {
      __m512 query = _mm512_set1_ps(queries[r * query_stride + d]);
      for (int b = 0; b < blocks; b++) sum[r][b] = _mm512_fmadd_ps(query, key[b], sum[r][b]);
    }
  }
  const __m512 factor = _mm512_set1_ps(scale), hidden = _mm512_set1_ps(-INFINITY);
  const __mmask16 visible = (__mmask16)(last_lanes >= LANES ? 0xFFFF : (1u << last_lanes) - 1);
  for (int r = 0; r < rows; r++) {
    __m512 maximum = _mm512_load_ps(maxima + r * LANES);
    for (int b = 0; b < blocks; b++) {
      __m512 value = _mm512_mul_ps(sum[r][b], factor);
      if (b == blocks - 1) value = _mm512_mask_blend_ps(visible, hidden, value);
      _mm512_store_ps(scores + r * score_stride + b * LANES, value);
      maximum = _mm512_max_ps(maximum, value);
    }
    _mm512_store_ps(maxima + r * LANES, maximum);
  }
}

// accumulators[rows][64] += p[rows][keys] · values[keys][64], from zero when `first`. On the last
// tile (`inverses` not NULL) the rows are divided by their sums (times 1/sum) and stored straight
// to `output` instead: no separate pass over the accumulators.
TA_AVX512 TA_INLINE void value_tile(const int rows, const float *probabilities,
                                    size_t probability_stride, const float *values,
                                    size_t key_count, float *accumulators, int first,
                                    const float *inverses, float *output, size_t output_stride) {
  __m512 sum[MAX_ROWS][HEAD_VECTORS];
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < HEAD_VECTORS; c++)
      sum[r][c] = first ? _mm512_setzero_ps() : _mm512_load_ps(accumulators + r * HEAD + c * LANES);
  for (size_t j = 0; j < key_count; j++) {
    __m512 value[HEAD_VECTORS];
    for (int c = 0; c < HEAD_VECTORS; c++) value[c] = _mm512_load_ps(values + j * HEAD + c * LANES);
    for (int r = 0; r < rows; r++) {
      __m512 p = _mm512_set1_ps(probabilities[r * probability_stride + j]);
      for (int c = 0; c < HEAD_VECTORS; c++) sum[r][c] = _mm512_fmadd_ps(p, value[c], sum[r][c]);
    }
  }
  if (inverses) {
    for (int r = 0; r < rows; r++) {
      const __m512 inverse = _mm512_set1_ps(inverses[r]);
      for (int c = 0; c < HEAD_VECTORS; c++)
        _mm512_storeu_ps(output + r * output_stride + c * LANES, _mm512_mul_ps(sum[r][c], inverse));
    }
    return;
  }
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < HEAD_VECTORS; c++) _mm512_store_ps(accumulators + r * HEAD + c * LANES, sum[r][c]);
}

// The register tiles above with their sizes as constants, so the accumulators stay in registers.
#define TA_SCORE(R, B)                                                                         \
  case (R)*8 + (B):                                                                            \
    score_tile(R, B, queries, query_stride, panels, scale, last_lanes, scores, score_stride, \
               maxima);                                                                        \
    return;
#define TA_SCORE_ROW(R) TA_SCORE(R, 1) TA_SCORE(R, 2) TA_SCORE(R, 3) TA_SCORE(R, 4)

// Not inlined into the driver: one call per register tile is cheap, and `perf` then shows where
// the time goes.
#define TA_KERNEL TA_AVX512 __attribute__((noinline)) static

TA_KERNEL void score_tiles(int rows, int blocks, const float *queries, size_t query_stride,
                           const float *panels, float scale, int last_lanes, float *scores,
                           size_t score_stride, float *maxima) {
  switch (rows * 8 + blocks) {
    TA_SCORE_ROW(1) TA_SCORE_ROW(2) TA_SCORE_ROW(3) TA_SCORE_ROW(4) TA_SCORE_ROW(5) TA_SCORE_ROW(6)
  }
}

TA_KERNEL void value_tiles(int rows, const float *probabilities, size_t probability_stride,
                           const float *values, size_t key_count, float *accumulators, int first,
                           const float *inverses, float *output, size_t output_stride) {
  switch (rows) {
#define TA_VALUE(R)                                                                              \
  case R:                                                                                        \
    value_tile(R, probabilities, probability_stride, values, key_count, accumulators, first,     \
               inverses, output, output_stride);                                                 \
    return;
    TA_VALUE(1) TA_VALUE(2) TA_VALUE(3) TA_VALUE(4) TA_VALUE(5) TA_VALUE(6)
#undef TA_VALUE
  }
}

// The online softmax step for one tile: p = exp(s − m_new) in place, sums and output rows
// rescaled by exp(m_old − m_new) when the running maximum moved.
TA_KERNEL void softmax_step(size_t rows, float *scores, size_t score_stride, size_t blocks,
                            const float *tile_maxima, float *running_maxima, float *sums,
                            float *output, int first_tile) {
  for (size_t r = 0; r < rows; r++) {
    float tile_maximum = _mm512_reduce_max_ps(_mm512_load_ps(tile_maxima + r * LANES));
    float maximum = first_tile ? tile_maximum : fmaxf(running_maxima[r], tile_maximum);
    __m512 shift = _mm512_set1_ps(maximum), total = _mm512_setzero_ps();
    float *line = scores + r * score_stride;
    for (size_t b = 0; b < blocks; b++) {
      __m512 p = exp16(_mm512_sub_ps(_mm512_load_ps(line + b * LANES), shift));
      _mm512_store_ps(line + b * LANES, p);
      total = _mm512_add_ps(total, p);
    }
    float tile_sum = _mm512_reduce_add_ps(total);
    if (first_tile) {
      sums[r] = tile_sum;
    } else {
      float correction = expf(running_maxima[r] - maximum);
      sums[r] = sums[r] * correction + tile_sum;
      if (correction != 1) {
        __m512 factor = _mm512_set1_ps(correction);
        float *row = output + r * HEAD;
        for (int c = 0; c < HEAD_VECTORS; c++)
          _mm512_store_ps(row + c * LANES, _mm512_mul_ps(_mm512_load_ps(row + c * LANES), factor));
      }
    }
    running_maxima[r] = maximum;
  }
}

// Carves the next `count` floats, 64-byte aligned, from *cursor.
static float *take(float **cursor, size_t count) {
  float *start = (float *)(((uintptr_t)*cursor + 63) & ~(uintptr_t)63);
  *cursor = start + count;
  return start;
}

TA_AVX512 void tk_attention_head64(const float *queries, size_t query_stride, size_t query_count,
                                   const float *keys, size_t key_stride, const float *values,
                                   size_t value_stride, size_t key_count, float scale,
                                   size_t block_rows, size_t tile_keys, float *workspace,
                                   float *output, size_t output_stride) {
  float *cursor = workspace;
  float *panels = take(&cursor, round_up(key_count, LANES) * HEAD);
  float *packed_values = take(&cursor, key_count * HEAD);
  float *scores = take(&cursor, block_rows * tile_keys);
  float *accumulators = take(&cursor, block_rows * HEAD);
  float *tile_maxima = take(&cursor, block_rows * LANES);
  float *running_maxima = take(&cursor, block_rows);
  float *sums = take(&cursor, block_rows);

  for (size_t key = 0; key < round_up(key_count, LANES); key++) {
    float *panel = panels + key / LANES * HEAD * LANES + key % LANES;
    const float *row = keys + key * key_stride;
    for (int d = 0; d < HEAD; d++) panel[d * LANES] = key < key_count ? row[d] : 0;
  }
  for (size_t key = 0; key < key_count; key++)
    memcpy(packed_values + key * HEAD, values + key * value_stride, HEAD * sizeof(float));

  for (size_t first_row = 0; first_row < query_count; first_row += block_rows) {
    size_t rows = query_count - first_row < block_rows ? query_count - first_row : block_rows;
    const float *block_queries = queries + first_row * query_stride;
    for (size_t first_key = 0; first_key < key_count; first_key += tile_keys) {
      size_t tile = key_count - first_key < tile_keys ? key_count - first_key : tile_keys;
      size_t blocks = round_up(tile, LANES) / LANES;
      int last_lanes = (int)(tile - (blocks - 1) * LANES);
      for (size_t i = 0; i < rows * LANES; i++) tile_maxima[i] = -INFINITY;
      // Panels of 4 outer, row groups inner: 64 keys (16 KB) stay in L1 across the block's rows.
      for (size_t block = 0; block < blocks; block += MAX_BLOCKS) {
        int count = blocks - block < MAX_BLOCKS ? (int)(blocks - block) : MAX_BLOCKS;
        int lanes = block + count == blocks ? last_lanes : LANES;
        const float *tile_panels = panels + (first_key / LANES + block) * HEAD * LANES;
        for (size_t row = 0; row < rows; row += MAX_ROWS) {
          int group = rows - row < MAX_ROWS ? (int)(rows - row) : MAX_ROWS;
          score_tiles(group, count, block_queries + row * query_stride, query_stride, tile_panels,
                      scale, lanes, scores + row * tile_keys + block * LANES, tile_keys,
                      tile_maxima + row * LANES);
        }
      }
      softmax_step(rows, scores, tile_keys, blocks, tile_maxima, running_maxima, sums,
                   accumulators, first_key == 0);
      // The last tile divides by the row sums (as 1/sum) and writes the output rows.
      const int last = first_key + tile >= key_count;
      if (last)
        for (size_t row = 0; row < rows; row++) sums[row] = 1 / sums[row];
      for (size_t row = 0; row < rows; row += MAX_ROWS) {
        int group = rows - row < MAX_ROWS ? (int)(rows - row) : MAX_ROWS;
        value_tiles(group, scores + row * tile_keys, tile_keys, packed_values + first_key * HEAD,
                    tile, accumulators + row * HEAD, first_key == 0, last ? sums + row : NULL,
                    output + (first_row + row) * output_stride, output_stride);
      }
    }
  }
}

int tk_attention_available(void) {
  static int state = -1;  // a benign race: every thread computes the same answer
  if (state < 0) {
    __builtin_cpu_init();
    state = __builtin_cpu_supports("avx512f") ? 1 : 0;
  }
  return state;
}

#else

int tk_attention_available(void) { return 0; }

void tk_attention_head64(const float *queries, size_t query_stride, size_t query_count,
                         const float *keys, size_t key_stride, const float *values,
                         size_t value_stride, size_t key_count, float scale, size_t block_rows,
                         size_t tile_keys, float *workspace, float *output, size_t output_stride) {
  (void)queries, (void)query_stride, (void)query_count, (void)keys, (void)key_stride;
  (void)values, (void)value_stride, (void)key_count, (void)scale, (void)block_rows;
  (void)tile_keys, (void)workspace, (void)output, (void)output_stride;
}

#endif
