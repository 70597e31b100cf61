// Winograd F(4×4, 3×3) stages in AVX-512F (see winograd_kernels.h).
//
// The transforms work on 16 channels at a time, one per lane, so that V and M, whose rows are a
// tile's channels, are read and written in whole vectors. The planes hold a channel's positions
// side by side instead, so the input stage first turns the six input rows of a tile row into a
// band [row][column][channel] (16 × 16 register transposes), and the output stage gathers a tile
// row's outputs in a band [row][column][channel] that it transposes back into the planes.
#include "winograd_kernels.h"

#include "linear_kernels.h"
#include "linear_tiles.h"

#include <stdint.h>
#include <string.h>

enum {
  LANES = 16,
  TILE = TK_WINOGRAD_TILE,  // outputs per tile side
  BLOCK = TILE + 2,         // inputs per tile side
  ELEMENTS = TK_WINOGRAD_ELEMENTS,
  PANEL = TK_LINEAR_PANEL,   // output channels per panel of tk_winograd_products
  DEPTH = 64,                // input channels per transformed block of U there (36 × 16 KB, in L2)
  // Floats per element ξ of that block: a cache line more than its 16 KB, so that the 36 stores of
  // one weight's transform land in 36 cache sets rather than all in one (4 KB apart: 3× slower).
  PACKED_ELEMENT = DEPTH * PANEL + LANES,
};

static size_t round_up(size_t value, size_t step) { return (value + step - 1) / step * step; }

// Band columns: the inputs of a tile row's tiles, or its outputs rounded to whole vectors.
static size_t input_band_columns(size_t out_width) { return round_up(out_width, TILE) + 2; }
static size_t output_band_columns(size_t out_width) { return round_up(round_up(out_width, TILE), LANES); }

size_t tk_winograd_input_workspace_floats(size_t channels, size_t out_width) {
  return BLOCK * input_band_columns(out_width) * round_up(channels, LANES);
}

size_t tk_winograd_output_workspace_floats(size_t channels, size_t out_width) {
  return TILE * output_band_columns(out_width) * round_up(channels, LANES);
}

// The stages need what the linear kernel, whose register tile they share, needs (AVX-512F, F16C).
int tk_winograd_available(void) { return tk_linear_available(); }

size_t tk_winograd_products_panel(void) { return PANEL; }

size_t tk_winograd_products_workspace_floats(void) {
  return ELEMENTS * PACKED_ELEMENT  // U for one panel and block of input channels: [ξ][c][64]
         + LANES * DEPTH * 9;      // sixteen output channels' 3 × 3 weights, widened
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>

#include "avx512_lanes.h"

#define TW_AVX512 __attribute__((target("avx512f,fma,f16c")))
#define TW_INLINE static inline __attribute__((always_inline))

// r = Bᵀ z: the input transform along one side of a 6 × 6 block.
TW_AVX512 TW_INLINE void input_side(const __m512 z[BLOCK], __m512 r[BLOCK]) {
  const __m512 two = _mm512_set1_ps(2), four = _mm512_set1_ps(4), five = _mm512_set1_ps(5);
  r[0] = _mm512_fnmadd_ps(five, z[2], _mm512_fmadd_ps(four, z[0], z[4]));
  r[1] = _mm512_fnmadd_ps(four, _mm512_add_ps(z[1], z[2]), _mm512_add_ps(z[3], z[4]));
  r[2] = _mm512_fmadd_ps(four, _mm512_sub_ps(z[1], z[2]), _mm512_sub_ps(z[4], z[3]));
  r[3] = _mm512_fmadd_ps(two, _mm512_sub_ps(z[3], z[1]), _mm512_sub_ps(z[4], z[2]));
  r[4] = _mm512_fnmadd_ps(two, _mm512_sub_ps(z[3], z[1]), _mm512_sub_ps(z[4], z[2]));
  r[5] = _mm512_fnmadd_ps(five, z[3], _mm512_fmadd_ps(four, z[1], z[5]));
}

// r = G z: the weight transform along one side of a 3 × 3 weight.
TW_AVX512 TW_INLINE void weight_side(__m512 a, __m512 b, __m512 c, __m512 r[BLOCK]) {
  const __m512 quarter = _mm512_set1_ps(0.25f), sixth = _mm512_set1_ps(1.0f / 6);
  const __m512 twelfth = _mm512_set1_ps(1.0f / 12), twentyfourth = _mm512_set1_ps(1.0f / 24);
  const __m512 outer = _mm512_add_ps(a, c);
  r[0] = _mm512_mul_ps(quarter, a);
  r[1] = _mm512_mul_ps(_mm512_set1_ps(-1.0f / 6), _mm512_add_ps(outer, b));
  r[2] = _mm512_mul_ps(_mm512_set1_ps(-1.0f / 6), _mm512_sub_ps(outer, b));
  const __m512 even = _mm512_fmadd_ps(twentyfourth, a, _mm512_mul_ps(sixth, c));
  r[3] = _mm512_fmadd_ps(twelfth, b, even);
  r[4] = _mm512_fnmadd_ps(twelfth, b, even);
  r[5] = c;
}

// r = Aᵀ z: the output transform along one side of a 6 × 6 block.
TW_AVX512 TW_INLINE void output_side(const __m512 z[BLOCK], __m512 r[TILE]) {
  const __m512 two = _mm512_set1_ps(2), four = _mm512_set1_ps(4), eight = _mm512_set1_ps(8);
  const __m512 sum12 = _mm512_add_ps(z[1], z[2]), difference12 = _mm512_sub_ps(z[1], z[2]);
  const __m512 sum34 = _mm512_add_ps(z[3], z[4]), difference34 = _mm512_sub_ps(z[3], z[4]);
  r[0] = _mm512_add_ps(_mm512_add_ps(z[0], sum12), sum34);
  r[1] = _mm512_fmadd_ps(two, difference34, difference12);
  r[2] = _mm512_fmadd_ps(four, sum34, sum12);
  r[3] = _mm512_add_ps(_mm512_fmadd_ps(eight, difference34, difference12), z[5]);
}

// G g Gᵀ of nine weight vectors g[ky·3 + kx] (the same operations, lane by lane, whichever way the
// lanes run: over input channels or over output channels) into r[i·6 + j].
TW_AVX512 TW_INLINE void transform_weight(const __m512 g[9], __m512 r[ELEMENTS]) {
  __m512 columns[3][BLOCK];  // G applied down each column of the 3 × 3 weight
  for (int kx = 0; kx < 3; kx++) weight_side(g[kx], g[3 + kx], g[6 + kx], columns[kx]);
  for (int i = 0; i < BLOCK; i++) weight_side(columns[0][i], columns[1][i], columns[2][i], r + i * BLOCK);
}

TW_AVX512 void tk_winograd_transform_weights(const void *weight, int format, size_t in_channels, size_t first_out,
                                             size_t count, float *transformed, size_t element_stride) {
  float widened[9 * LANES];
  const __m512i taps = _mm512_mullo_epi32(_mm512_set1_epi32(9), _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5,
                                                                                 4, 3, 2, 1, 0));
  for (size_t o = 0; o < count; o++) {
    const size_t row = (first_out + o) * in_channels * 9;
    for (size_t c0 = 0; c0 < in_channels; c0 += LANES) {
      const size_t lanes = in_channels - c0 < LANES ? in_channels - c0 : LANES;
      const __mmask16 mask = lane_mask((ptrdiff_t)lanes);
      // The 3 × 3 weights of sixteen input channels, as [channel][tap] fp32.
      if (format == TK_WEIGHT_F16) {
        const uint16_t *halves = (const uint16_t *)weight + row + c0 * 9;
        size_t i = 0;
        for (; i + LANES <= 9 * lanes; i += LANES)
          _mm512_storeu_ps(widened + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(halves + i))));
        for (; i < 9 * lanes; i++) widened[i] = _cvtsh_ss(halves[i]);
      } else {
        memcpy(widened, (const float *)weight + row + c0 * 9, 9 * lanes * sizeof(float));
      }
      __m512 g[9], u[ELEMENTS];
      for (int tap = 0; tap < 9; tap++)
        g[tap] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, taps, widened + tap, 4);
      transform_weight(g, u);
      for (int element = 0; element < ELEMENTS; element++)
        _mm512_mask_storeu_ps(transformed + (size_t)element * element_stride + o * in_channels + c0, mask, u[element]);
    }
  }
}

// U of sixteen whole output channels `first_out ...` and input channels `c0 ..< c0 + depth` (a
// multiple of 16) into packed[ξ][c][64] (`packed` at the group's first lane): per sixteen input
// channels, their 144 weights of the sixteen outputs turned by nine 16 × 16 register transposes
// into one vector per (channel, tap) in `staging` ([144][16]), cheaper than gathering them.
TW_AVX512 static void transposed_weight_group(const void *weight, int format, size_t in_channels, size_t first_out,
                                              size_t c0, size_t depth, float *staging, float *packed) {
  const size_t value_bytes = format == TK_WEIGHT_F16 ? 2 : 4;
  for (size_t block = 0; block < depth; block += LANES) {
    // Each row's weights two blocks ahead, into L2: sixteen rows a weight row apart are too many
    // streams for the prefetcher to keep up with.
    for (size_t l = 0; l < LANES; l++) {
      const char *ahead = (const char *)weight + ((first_out + l) * in_channels + c0 + block + 2 * LANES) * 9 * value_bytes;
      for (size_t line = 0; line < 9 * LANES * value_bytes; line += 64) _mm_prefetch(ahead + line, _MM_HINT_T1);
    }
    for (size_t v = 0; v < 9; v++) {
      __m512 values[LANES];
      for (size_t l = 0; l < LANES; l++) {
        const size_t index = ((first_out + l) * in_channels + c0 + block) * 9 + v * LANES;
        values[l] = format == TK_WEIGHT_F16
                        ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)weight + index)))
                        : _mm512_loadu_ps((const float *)weight + index);
      }
      transpose16(values);
      for (size_t j = 0; j < LANES; j++) _mm512_store_ps(staging + (v * LANES + j) * LANES, values[j]);
    }
    for (size_t c = 0; c < LANES; c++) {
      __m512 g[9], u[ELEMENTS];
      for (int tap = 0; tap < 9; tap++) g[tap] = _mm512_load_ps(staging + (c * 9 + (size_t)tap) * LANES);
      transform_weight(g, u);
      for (int element = 0; element < ELEMENTS; element++)
        _mm512_store_ps(packed + (size_t)element * PACKED_ELEMENT + (block + c) * PANEL, u[element]);
    }
  }
}

TW_AVX512 void tk_winograd_products(const void *weight, int format, size_t in_channels, size_t out_channels,
                                    size_t first_panel, size_t end_panel, const float *transformed_inputs,
                                    size_t input_stride, size_t tiles, float *products, size_t product_stride,
                                    float *workspace) {
  float *packed = workspace, *widened = workspace + ELEMENTS * PACKED_ELEMENT;
  const __m512i rows = _mm512_mullo_epi32(_mm512_set1_epi32(DEPTH * 9), _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9,
                                                                                         8, 7, 6, 5, 4, 3, 2, 1, 0));
  for (size_t panel = first_panel; panel < end_panel; panel++) {
    const size_t first_out = panel * PANEL;
    const size_t count = out_channels - first_out < PANEL ? out_channels - first_out : PANEL;
    for (size_t c0 = 0; c0 < in_channels; c0 += DEPTH) {
      const size_t depth = in_channels - c0 < DEPTH ? in_channels - c0 : DEPTH;
      // U[ξ][c][64] of this panel and block of input channels, sixteen output channels per vector.
      for (size_t group = 0; group < PANEL; group += LANES) {
        const size_t lanes = group < count ? (count - group < LANES ? count - group : LANES) : 0;
        if (lanes == LANES && depth % LANES == 0) {
          transposed_weight_group(weight, format, in_channels, first_out + group, c0, depth, widened,
                                  packed + group);
          continue;
        }
        // A partial group or block: each channel's weights widened in a row, then gathered.
        for (size_t l = 0; l < lanes; l++) {
          const size_t start = ((first_out + group + l) * in_channels + c0) * 9;
          float *target = widened + l * DEPTH * 9;
          if (format == TK_WEIGHT_F16) {
            const uint16_t *halves = (const uint16_t *)weight + start;
            size_t i = 0;
            for (; i + LANES <= 9 * depth; i += LANES)
              _mm512_storeu_ps(target + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(halves + i))));
            for (; i < 9 * depth; i++) target[i] = _cvtsh_ss(halves[i]);
          } else {
            memcpy(target, (const float *)weight + start, 9 * depth * sizeof(float));
          }
        }
        const __mmask16 mask = lane_mask((ptrdiff_t)lanes);
        for (size_t c = 0; c < depth; c++) {
          __m512 g[9], u[ELEMENTS];
          for (int tap = 0; tap < 9; tap++)
            g[tap] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, rows, widened + c * 9 + (size_t)tap, 4);
          transform_weight(g, u);
          for (int element = 0; element < ELEMENTS; element++)
            _mm512_store_ps(packed + (size_t)element * PACKED_ELEMENT + c * PANEL + group, u[element]);
        }
      }
      // The block's share of every product: M[ξ] (+)= V[ξ][:, c0 ..< c0 + depth] · U[ξ].
      for (size_t element = 0; element < ELEMENTS; element++) {
        const float *inputs = transformed_inputs + element * input_stride + c0;
        float *outputs = products + element * product_stride + first_out;
        for (size_t tile = 0; tile < tiles; tile += TK_LINEAR_TILE_ROWS) {
          const size_t rows_here = tiles - tile < TK_LINEAR_TILE_ROWS ? tiles - tile : TK_LINEAR_TILE_ROWS;
          tk_linear_product_tiles((int)rows_here, inputs + tile * in_channels, in_channels,
                                  packed + element * PACKED_ELEMENT, depth, c0 > 0, NULL,
                                  outputs + tile * out_channels, out_channels, (ptrdiff_t)count);
        }
      }
    }
  }
}

// The six input rows of tile row `tile_row` as band[row][column][channel] (channels padded to
// whole vectors with zeros), zero outside the image.
TW_AVX512 static void fill_input_band(const float *input, size_t channels, size_t height, size_t width, size_t padding,
                                      size_t tile_row, size_t columns, size_t channel_stride, float *band) {
  const size_t plane = height * width;
  for (size_t i = 0; i < BLOCK; i++) {
    float *row = band + i * columns * channel_stride;
    const ptrdiff_t y = (ptrdiff_t)(tile_row * TILE + i) - (ptrdiff_t)padding;
    if (y < 0 || y >= (ptrdiff_t)height) {
      memset(row, 0, columns * channel_stride * sizeof(float));
      continue;
    }
    // Columns left and right of the image.
    memset(row, 0, padding * channel_stride * sizeof(float));
    memset(row + (padding + width) * channel_stride, 0, (columns - padding - width) * channel_stride * sizeof(float));
    for (size_t c0 = 0; c0 < channel_stride; c0 += LANES) {
      for (size_t x0 = 0; x0 < width; x0 += LANES) {
        const __mmask16 mask = lane_mask((ptrdiff_t)(width - x0));
        __m512 values[LANES];
        for (size_t l = 0; l < LANES; l++)
          values[l] = c0 + l < channels
                          ? _mm512_maskz_loadu_ps(mask, input + (c0 + l) * plane + (size_t)y * width + x0)
                          : _mm512_setzero_ps();
        transpose16(values);
        const size_t count = width - x0 < LANES ? width - x0 : LANES;
        for (size_t j = 0; j < count; j++) _mm512_store_ps(row + (x0 + j + padding) * channel_stride + c0, values[j]);
      }
    }
  }
}

TW_AVX512 void tk_winograd_transform_input(const float *input, size_t channels, size_t height, size_t width,
                                           size_t padding, size_t first_tile_row, size_t end_tile_row,
                                           float *transformed, size_t element_stride, float *workspace) {
  const size_t out_width = width + 2 * padding - 2, tiles_x = round_up(out_width, TILE) / TILE;
  const size_t columns = input_band_columns(out_width), channel_stride = round_up(channels, LANES);
  for (size_t tile_row = first_tile_row; tile_row < end_tile_row; tile_row++) {
    fill_input_band(input, channels, height, width, padding, tile_row, columns, channel_stride, workspace);
    for (size_t tx = 0; tx < tiles_x; tx++) {
      const size_t tile = (tile_row - first_tile_row) * tiles_x + tx;
      for (size_t c0 = 0; c0 < channels; c0 += LANES) {
        const __mmask16 mask = lane_mask((ptrdiff_t)(channels - c0));
        __m512 down[BLOCK][BLOCK];  // down[j]: Bᵀ applied down column j of the block
        for (int j = 0; j < BLOCK; j++) {
          __m512 z[BLOCK];
          for (int i = 0; i < BLOCK; i++)
            z[i] = _mm512_load_ps(workspace + ((size_t)i * columns + tx * TILE + (size_t)j) * channel_stride + c0);
          input_side(z, down[j]);
        }
        for (int i = 0; i < BLOCK; i++) {
          __m512 z[BLOCK], r[BLOCK];
          for (int j = 0; j < BLOCK; j++) z[j] = down[j][i];
          input_side(z, r);
          for (int j = 0; j < BLOCK; j++)
            _mm512_mask_storeu_ps(transformed + (size_t)(i * BLOCK + j) * element_stride + tile * channels + c0, mask,
                                  r[j]);
        }
      }
    }
  }
}

TW_AVX512 void tk_winograd_transform_output(const float *transformed, size_t element_stride, size_t channels,
                                            size_t out_height, size_t out_width, size_t first_tile_row,
                                            size_t end_tile_row, const float *bias, int accumulate, float *workspace,
                                            float *output, size_t channel_stride) {
  const size_t tiles_x = round_up(out_width, TILE) / TILE, columns = output_band_columns(out_width);
  const size_t band_stride = round_up(channels, LANES);
  for (size_t tile_row = first_tile_row; tile_row < end_tile_row; tile_row++) {
    // The tile row's outputs into the band [row][column][channel].
    for (size_t tx = 0; tx < tiles_x; tx++) {
      const size_t tile = (tile_row - first_tile_row) * tiles_x + tx;
      for (size_t c0 = 0; c0 < channels; c0 += LANES) {
        const __mmask16 mask = lane_mask((ptrdiff_t)(channels - c0));
        __m512 down[BLOCK][TILE];  // down[j]: Aᵀ applied down column j of M
        for (int j = 0; j < BLOCK; j++) {
          __m512 z[BLOCK];
          for (int i = 0; i < BLOCK; i++)
            z[i] = _mm512_maskz_loadu_ps(mask, transformed + (size_t)(i * BLOCK + j) * element_stride + tile * channels + c0);
          output_side(z, down[j]);
        }
        for (int a = 0; a < TILE; a++) {
          __m512 z[BLOCK], r[TILE];
          for (int j = 0; j < BLOCK; j++) z[j] = down[j][a];
          output_side(z, r);
          for (int b = 0; b < TILE; b++)
            _mm512_store_ps(workspace + ((size_t)a * columns + tx * TILE + (size_t)b) * band_stride + c0, r[b]);
        }
      }
    }
    // The band back into the planes, sixteen channels × sixteen columns at a time.
    for (size_t a = 0; a < TILE && tile_row * TILE + a < out_height; a++) {
      const float *row = workspace + a * columns * band_stride;
      const size_t y = tile_row * TILE + a;
      for (size_t c0 = 0; c0 < channels; c0 += LANES) {
        for (size_t x0 = 0; x0 < out_width; x0 += LANES) {
          __m512 values[LANES];
          for (size_t j = 0; j < LANES; j++) values[j] = _mm512_load_ps(row + (x0 + j) * band_stride + c0);
          transpose16(values);
          const __mmask16 mask = lane_mask((ptrdiff_t)(out_width - x0));
          const size_t count = channels - c0 < LANES ? channels - c0 : LANES;
          for (size_t l = 0; l < count; l++) {
            float *target = output + (c0 + l) * channel_stride + y * out_width + x0;
            __m512 value = bias ? _mm512_add_ps(values[l], _mm512_set1_ps(bias[c0 + l])) : values[l];
            if (accumulate) value = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, target), value);
            _mm512_mask_storeu_ps(target, mask, value);
          }
        }
      }
    }
  }
}

#else

void tk_winograd_products(const void *weight, int format, size_t in_channels, size_t out_channels,
                          size_t first_panel, size_t end_panel, const float *transformed_inputs, size_t input_stride,
                          size_t tiles, float *products, size_t product_stride, float *workspace) {
  (void)weight, (void)format, (void)in_channels, (void)out_channels, (void)first_panel, (void)end_panel;
  (void)transformed_inputs, (void)input_stride, (void)tiles, (void)products, (void)product_stride, (void)workspace;
}

void tk_winograd_transform_weights(const void *weight, int format, size_t in_channels, size_t first_out,
                                   size_t count, float *transformed, size_t element_stride) {
  (void)weight, (void)format, (void)in_channels, (void)first_out, (void)count, (void)transformed;
  (void)element_stride;
}

void tk_winograd_transform_input(const float *input, size_t channels, size_t height, size_t width,
                                 size_t padding, size_t first_tile_row, size_t end_tile_row, float *transformed,
                                 size_t element_stride, float *workspace) {
  (void)input, (void)channels, (void)height, (void)width, (void)padding, (void)first_tile_row;
  (void)end_tile_row, (void)transformed, (void)element_stride, (void)workspace;
}

void tk_winograd_transform_output(const float *transformed, size_t element_stride, size_t channels,
                                  size_t out_height, size_t out_width, size_t first_tile_row, size_t end_tile_row,
                                  const float *bias, int accumulate, float *workspace, float *output,
                                  size_t channel_stride) {
  (void)transformed, (void)element_stride, (void)channels, (void)out_height, (void)out_width;
  (void)first_tile_row, (void)end_tile_row, (void)bias, (void)accumulate, (void)workspace, (void)output;
  (void)channel_stride;
}

#endif
