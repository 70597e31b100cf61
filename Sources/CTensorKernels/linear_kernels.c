// The linear layer in AVX-512F (see linear_kernels.h).
//
// With the weight kept as stored (fp16 in the file's map), sgemm needs a widened fp32 copy of it
// first, which it then packs again: two memory passes over every weight per evaluation (3 % and
// 4.5 % of a 64² SDXL UNet forward). Here the weight is read once, as stored, and widened straight
// into the packed form, GotoBLAS-style:
//   - features are taken a chunk of 64-feature panels at a time, and the reduction in passes of
//     five blocks of 128 (640 values); per pass, each panel of the chunk is packed per block as
//     [k][64] fp32 (32 KB, in L1), sixteen rows × sixteen k at a time through a register
//     transpose, as many panels as keep the pass's packed weights within CHUNK_BYTES (1 MB, in
//     L2: six panels for a reduction of 640 or more, up to twelve for shorter ones), while the
//     next pass's weight lines are prefetched a few per register tile;
//   - rows of x are taken 192 at a time, and for each such row block every reduction block of the
//     pass and every panel of the chunk passes over them (x read in place, one value broadcast per
//     row and k), so the row block's partial sums stay in L2 from one block to the next and go
//     through memory once per pass, not once per block. (With one block per pass, a level-1
//     GEGLU at a 128² latent, 8192 rows, ran at 66 % of the peak in a forward, against 86 % at
//     level 2 with a quarter of the rows.)
//   - products: register tiles of 6 rows × 64 features (24 accumulators), the output holding the
//     partial sums between reduction blocks (prefetched one tile ahead).
// Each output is one chain of fused multiply-adds in k order whatever the split, so a result
// never depends on the batch or the thread it was computed in.
#include "linear_kernels.h"
#include "linear_tiles.h"

#include <stdint.h>
#include <string.h>

enum {
  LANES = 16,
  TILE_VECTORS = 4,
  PANEL = LANES * TILE_VECTORS,  // output features of one panel and one register tile
  TILE_ROWS = 6,                 // rows of x of one register tile
  BLOCK_K = 128,                 // reduction values per packed block (a panel: 32 KB, in L1)
  BLOCK_ROWS = 192,              // rows of x per pass over the chunk
  PASS_BLOCKS = 5,               // reduction blocks per pass over the rows (640 values)
  MAX_CHUNK_PANELS = 12,         // panels per chunk at most
  CHUNK_BYTES = 1 << 20,         // packed weights of a chunk for one pass (in L2)
};

size_t tk_linear_panel_features(void) { return PANEL; }

// Reduction blocks per pass for a reduction of `in_features`.
static size_t pass_blocks(size_t in_features) {
  const size_t blocks = (in_features + BLOCK_K - 1) / BLOCK_K;
  return blocks < PASS_BLOCKS ? blocks : PASS_BLOCKS;
}

// Panels per chunk: as many as keep one pass's packed panels within CHUNK_BYTES.
static size_t chunk_panels(size_t in_features) {
  const size_t fit = CHUNK_BYTES / (pass_blocks(in_features) * BLOCK_K * PANEL * sizeof(float));
  return fit > MAX_CHUNK_PANELS ? MAX_CHUNK_PANELS : fit;
}

size_t tk_linear_workspace_floats(size_t features, size_t in_features) {
  const size_t panels = (features + PANEL - 1) / PANEL, chunk = chunk_panels(in_features);
  return (panels < chunk ? panels : chunk) * pass_blocks(in_features) * PANEL * BLOCK_K;
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>

#include "avx512_lanes.h"

#define TL_AVX512 __attribute__((target("avx512f,fma,f16c")))
#define TL_INLINE static inline __attribute__((always_inline))

TL_AVX512 TL_INLINE float widen(const void *weight, int format, size_t index) {
  if (format == TK_WEIGHT_F16) return _cvtsh_ss(((const uint16_t *)weight)[index]);
  return ((const float *)weight)[index];
}

// Sixteen values of row `row` from column `column`, widened.
TL_AVX512 TL_INLINE __m512 load_row(const void *weight, int format, size_t row_stride, size_t row, size_t column) {
  if (format == TK_WEIGHT_F16)
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)weight + row * row_stride + column)));
  return _mm512_loadu_ps((const float *)weight + row * row_stride + column);
}

// The panel of features `feature ..< feature + count` (count ≤ 64) over k = `k0 ..< k0 + depth`
// as [k][64] fp32, zero past `count`.
TL_AVX512 static void pack_panel(const void *weight, int format, size_t in_features, size_t feature,
                                 size_t count, size_t k0, size_t depth, float *panel) {
  for (size_t group = 0; group < PANEL; group += LANES) {
    const size_t first = feature + group;
    if (group + LANES <= count) {  // sixteen whole rows: transpose 16 × 16 blocks
      size_t k = 0;
      for (; k + LANES <= depth; k += LANES) {
        __m512 rows[16];
        for (int i = 0; i < 16; i++) rows[i] = load_row(weight, format, in_features, first + (size_t)i, k0 + k);
        transpose16(rows);
        for (int i = 0; i < 16; i++) _mm512_store_ps(panel + (k + (size_t)i) * PANEL + group, rows[i]);
      }
      for (; k < depth; k++)
        for (size_t i = 0; i < LANES; i++) panel[k * PANEL + group + i] = widen(weight, format, (first + i) * in_features + k0 + k);
    } else {  // the last, partial group: zero past the last feature
      for (size_t k = 0; k < depth; k++)
        for (size_t i = 0; i < LANES; i++)
          panel[k * PANEL + group + i] = group + i < count ? widen(weight, format, (first + i) * in_features + k0 + k) : 0.0f;
    }
  }
}

// A rows × 64 register tile over `depth` values of the reduction: it starts from the output
// (`load`) or zero, plus `bias` when not NULL (64 values), and ends in the output's first `count`
// features.
TL_AVX512 TL_INLINE void product_tile(const int rows, const float *x, size_t x_stride, const float *panel,
                                      size_t depth, int load, const float *bias, float *output,
                                      size_t output_stride, ptrdiff_t count) {
  __m512 sum[TILE_ROWS][TILE_VECTORS];
  for (int v = 0; v < TILE_VECTORS; v++) {
    const __mmask16 mask = lane_mask(count - v * LANES);
    const __m512 offset = bias ? _mm512_maskz_loadu_ps(mask, bias + v * LANES) : _mm512_setzero_ps();
    for (int r = 0; r < rows; r++) {
      if (load) {
        const __m512 value = _mm512_maskz_loadu_ps(mask, output + (size_t)r * output_stride + v * LANES);
        sum[r][v] = bias ? _mm512_add_ps(value, offset) : value;
      } else {
        sum[r][v] = offset;
      }
    }
  }
  for (size_t k = 0; k < depth; k++) {
    __m512 w[TILE_VECTORS];
    for (int v = 0; v < TILE_VECTORS; v++) w[v] = _mm512_load_ps(panel + k * PANEL + v * LANES);
    for (int r = 0; r < rows; r++) {
      const __m512 value = _mm512_set1_ps(x[(size_t)r * x_stride + k]);
      for (int v = 0; v < TILE_VECTORS; v++) sum[r][v] = _mm512_fmadd_ps(value, w[v], sum[r][v]);
    }
  }
  for (int v = 0; v < TILE_VECTORS; v++) {
    const __mmask16 mask = lane_mask(count - v * LANES);
    for (int r = 0; r < rows; r++) _mm512_mask_storeu_ps(output + (size_t)r * output_stride + v * LANES, mask, sum[r][v]);
  }
}

TL_AVX512 __attribute__((noinline)) void tk_linear_product_tiles(int rows, const float *x, size_t x_stride,
                                                                  const float *panel, size_t depth, int load,
                                                                  const float *bias, float *output,
                                                                  size_t output_stride, ptrdiff_t count) {
  switch (rows) {
#define TL_ROWS(R) \
  case R: product_tile(R, x, x_stride, panel, depth, load, bias, output, output_stride, count); return;
    TL_ROWS(1) TL_ROWS(2) TL_ROWS(3) TL_ROWS(4) TL_ROWS(5)
    default: product_tile(6, x, x_stride, panel, depth, load, bias, output, output_stride, count); return;
#undef TL_ROWS
  }
}

// The weight lines of the next packing block, walked a few per register tile during the current
// one, so that the packing reads them from L2 rather than waiting on memory (the weights of a
// forward pass, gigabytes of them, never stay in a cache between uses).
typedef struct {
  const char *weight;
  size_t row_bytes, first_byte, end_byte;  // a row's length; the block's bytes within each row
  size_t row, end_row, byte;               // the cursor
} weight_prefetch;

static weight_prefetch prefetch_block(const void *weight, size_t value_bytes, size_t in_features,
                                      size_t feature, size_t end_feature, size_t k0, size_t depth) {
  const weight_prefetch p = {(const char *)weight, in_features * value_bytes, k0 * value_bytes,
                             (k0 + depth) * value_bytes, feature, end_feature, k0 * value_bytes};
  return p;
}

static inline void prefetch_lines(weight_prefetch *p, size_t lines) {
  for (; lines > 0 && p->row < p->end_row; lines--) {
    _mm_prefetch(p->weight + p->row * p->row_bytes + p->byte, _MM_HINT_T1);
    p->byte += 64;
    if (p->byte >= p->end_byte) p->row++, p->byte = p->first_byte;
  }
}

void tk_linear(const float *x, size_t x_stride, size_t first_row, size_t end_row, size_t in_features,
               const void *weight, int weight_format, size_t out_features, size_t first_feature,
               size_t end_feature, const float *bias, int accumulate, float *workspace, float *output,
               size_t output_stride) {
  const size_t value_bytes = weight_format == TK_WEIGHT_F16 ? 2 : 4;
  if (end_feature > out_features) end_feature = out_features;
  if (first_row >= end_row || first_feature >= end_feature || in_features == 0) return;
  const size_t row_tiles = (end_row - first_row + TILE_ROWS - 1) / TILE_ROWS;
  const size_t blocks = (in_features + BLOCK_K - 1) / BLOCK_K, per_pass = pass_blocks(in_features);
  const size_t chunk_features = chunk_panels(in_features) * PANEL;
  for (size_t chunk = first_feature; chunk < end_feature; chunk += chunk_features) {
    const size_t chunk_end = end_feature - chunk < chunk_features ? end_feature : chunk + chunk_features;
    const size_t panels = (chunk_end - chunk + PANEL - 1) / PANEL;
    for (size_t first_block = 0; first_block < blocks; first_block += per_pass) {
      const size_t end_block = blocks - first_block < per_pass ? blocks : first_block + per_pass;
      // The chunk's panels for this pass's blocks of the reduction: [block][panel][k][64].
      for (size_t b = first_block; b < end_block; b++) {
        const size_t k0 = b * BLOCK_K, depth = in_features - k0 < BLOCK_K ? in_features - k0 : BLOCK_K;
        for (size_t p = 0; p < panels; p++) {
          const size_t feature = chunk + p * PANEL;
          const size_t count = chunk_end - feature < PANEL ? chunk_end - feature : PANEL;
          pack_panel(weight, weight_format, in_features, feature, count, k0, depth,
                     workspace + ((b - first_block) * panels + p) * PANEL * BLOCK_K);
        }
      }
      // The next pass's weight lines (or the next chunk's first), a few per register tile of this one.
      weight_prefetch next = prefetch_block(weight, value_bytes, in_features, 0, 0, 0, 0);
      if (end_block < blocks) {
        const size_t k0 = end_block * BLOCK_K, k1 = k0 + per_pass * BLOCK_K;
        next = prefetch_block(weight, value_bytes, in_features, chunk, chunk_end, k0,
                              (k1 < in_features ? k1 : in_features) - k0);
      } else if (chunk_end < end_feature) {
        const size_t next_end = end_feature - chunk_end < chunk_features ? end_feature : chunk_end + chunk_features;
        const size_t k1 = per_pass * BLOCK_K;
        next = prefetch_block(weight, value_bytes, in_features, chunk_end, next_end, 0,
                              k1 < in_features ? k1 : in_features);
      }
      const size_t lines = (next.end_row - next.row) * ((next.end_byte - next.first_byte + 63) / 64);
      const size_t lines_per_tile = lines / (row_tiles * panels * (end_block - first_block)) + 1;
      for (size_t r0 = first_row; r0 < end_row; r0 += BLOCK_ROWS) {
        const size_t block_end = end_row - r0 < BLOCK_ROWS ? end_row : r0 + BLOCK_ROWS;
        for (size_t b = first_block; b < end_block; b++) {
          const size_t k0 = b * BLOCK_K, depth = in_features - k0 < BLOCK_K ? in_features - k0 : BLOCK_K;
          // The first block starts from the bias (and the output when accumulating), later ones
          // from the partial sums the previous block left in the output.
          const int load = k0 > 0 || accumulate;
          for (size_t p = 0; p < panels; p++) {
            const size_t feature = chunk + p * PANEL;
            const ptrdiff_t count = (ptrdiff_t)(chunk_end - feature < PANEL ? chunk_end - feature : PANEL);
            const float *panel = workspace + ((b - first_block) * panels + p) * PANEL * BLOCK_K;
            const float *offset = k0 == 0 && bias ? bias + feature : NULL;
            for (size_t r = r0; r < block_end; r += TILE_ROWS) {
              const size_t rows = block_end - r < TILE_ROWS ? block_end - r : TILE_ROWS;
              if (load && r + TILE_ROWS < block_end) {  // the next tile's partial sums, into L2
                for (size_t i = 0; i < TILE_ROWS; i++)
                  for (size_t line = 0; line < PANEL; line += LANES)
                    _mm_prefetch((const char *)(output + (r + TILE_ROWS + i) * output_stride + feature + line),
                                 _MM_HINT_T1);
              }
              prefetch_lines(&next, lines_per_tile);
              tk_linear_product_tiles((int)rows, x + r * x_stride + k0, x_stride, panel, depth, load, offset,
                            output + r * output_stride + feature, output_stride, count);
            }
          }
        }
      }
    }
  }
}

int tk_linear_available(void) {
  static int state = -1;  // a benign race: every thread computes the same answer
  if (state < 0) {
    __builtin_cpu_init();
    state = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("f16c") ? 1 : 0;
  }
  return state;
}

#else

int tk_linear_available(void) { return 0; }

void tk_linear(const float *x, size_t x_stride, size_t first_row, size_t end_row, size_t in_features,
               const void *weight, int weight_format, size_t out_features, size_t first_feature,
               size_t end_feature, const float *bias, int accumulate, float *workspace, float *output,
               size_t output_stride) {
  (void)x, (void)x_stride, (void)first_row, (void)end_row, (void)in_features, (void)weight;
  (void)weight_format, (void)out_features, (void)first_feature, (void)end_feature, (void)bias;
  (void)accumulate, (void)workspace, (void)output, (void)output_stride;
}

#endif
