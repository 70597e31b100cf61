// The 3×3, stride-1 convolution in AVX-512F (see conv_kernels.h).
//
// A convolution is a gemm out[o][p] = Σₖ w[o][k] · x[k][p] whose k = (c, ky, kx) rows of x are
// shifted views of the input. im2col + sgemm writes that x to memory in full, and sgemm then
// packs it again: two memory passes over a matrix nine times the input. Here the view is packed
// straight from the input into L1-sized tiles:
//   - weights: packed once per call as [tile of 6 output channels][k][6], from fp32 or from fp16
//     as stored (widened while packed);
//   - input: per 64 output positions and block of 16 channels, the 144 rows of their receptive
//     fields as [k][64] (zero where a field leaves the image), read from the image in runs;
//   - products: register tiles of 6 channels × 64 positions (24 accumulators), the 6 weights
//     broadcast, the 4 input vectors loaded from the L1 tile. Between channel blocks the partial
//     sums of a group of 256 positions wait in a contiguous per-thread buffer in L2, not in the
//     output: its rows lie a plane apart (64 KB at 128²), which maps them onto a few cache sets.
// Reading the fields in place instead of packing them (possible for the decoder's pre-bordered
// bands) was no faster: nearly every such load straddles two cache lines.
// Each output is one chain of fused multiply-adds in k order whatever the split, so a result
// never depends on the band, batch or thread it was computed in.
#include "conv_kernels.h"

#include <stdint.h>
#include <string.h>

enum {
  LANES = 16,
  TILE_VECTORS = 4,
  TILE_POSITIONS = LANES * TILE_VECTORS,  // output positions of one register tile
  TILE_CHANNELS = 6,                      // output channels of one register tile
  GROUP_TILES = 4,                        // position tiles that share one pass over the weights
  BLOCK_CHANNELS = 16,                    // input channels per packed block (144 rows, 36 KB)
  TAPS = 9,
};

size_t tk_conv3x3_tile_channels(void) { return TILE_CHANNELS; }

size_t tk_conv3x3_group_positions(void) { return GROUP_TILES * TILE_POSITIONS; }

size_t tk_conv3x3_packed_weight_floats(size_t out_channels, size_t in_channels) {
  return (out_channels + TILE_CHANNELS - 1) / TILE_CHANNELS * TILE_CHANNELS * in_channels * TAPS;
}

size_t tk_conv3x3_workspace_floats(size_t weight_tiles) {
  return (size_t)GROUP_TILES * BLOCK_CHANNELS * TAPS * TILE_POSITIONS  // packed inputs
         + weight_tiles * GROUP_TILES * TILE_CHANNELS * TILE_POSITIONS;  // partial sums
}

// Half floats are widened by the AVX-512 part below (F16C); fp32 is packed here on any CPU.
static void pack_halves(const uint16_t *weight, size_t out_channels, size_t in_channels, size_t first_tile,
                        size_t tile_count, float *packed);

void tk_conv3x3_pack_weights(const void *weight, int format, size_t out_channels, size_t in_channels,
                             size_t first_tile, size_t tile_count, float *packed) {
  if (format == TK_WEIGHT_F16) {
    pack_halves(weight, out_channels, in_channels, first_tile, tile_count, packed);
    return;
  }
  const float *values = weight;
  const size_t reduction = in_channels * TAPS;
  for (size_t tile = first_tile; tile < first_tile + tile_count; tile++) {
    float *target = packed + tile * TILE_CHANNELS * reduction;
    const size_t first = tile * TILE_CHANNELS;
    const size_t rows = out_channels - first < TILE_CHANNELS ? out_channels - first : TILE_CHANNELS;
    if (rows < TILE_CHANNELS) {  // the last tile, zero past the last channel
      memset(target, 0, TILE_CHANNELS * reduction * sizeof(float));
      for (size_t r = 0; r < rows; r++)
        for (size_t k = 0; k < reduction; k++) target[k * TILE_CHANNELS + r] = values[(first + r) * reduction + k];
      continue;
    }
    // Six rows read side by side, the tile written in order: one pass through each.
    const float *row = values + first * reduction;
    for (size_t k = 0; k < reduction; k++) {
      float *column = target + k * TILE_CHANNELS;
      for (size_t r = 0; r < TILE_CHANNELS; r++) column[r] = row[r * reduction + k];
    }
  }
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>

#include "avx512_lanes.h"

#define TC_AVX512 __attribute__((target("avx512f,fma")))
#define TC_INLINE static inline __attribute__((always_inline))
// Not inlined into the driver: one call per register tile is cheap, and `perf` shows the parts.
#define TC_KERNEL TC_AVX512 __attribute__((noinline)) static

// The fp16 weight straight into the packed tiles: sixteen k of the tile's six rows widened at
// once (F16C), then written out as [k][6]. The widened values are exact, so the packed tiles are
// the same as packing a widened fp32 copy, without that copy's pass through memory.
__attribute__((target("avx512f,f16c"))) static void pack_halves(const uint16_t *weight, size_t out_channels,
                                                               size_t in_channels, size_t first_tile,
                                                               size_t tile_count, float *packed) {
  const size_t reduction = in_channels * TAPS;
  for (size_t tile = first_tile; tile < first_tile + tile_count; tile++) {
    float *target = packed + tile * TILE_CHANNELS * reduction;
    const size_t first = tile * TILE_CHANNELS;
    const size_t rows = out_channels - first < TILE_CHANNELS ? out_channels - first : TILE_CHANNELS;
    const uint16_t *row = weight + first * reduction;
    size_t k = 0;
    if (rows == TILE_CHANNELS) {
      for (; k + LANES <= reduction; k += LANES) {
        float widened[TILE_CHANNELS][LANES];
        for (size_t r = 0; r < TILE_CHANNELS; r++)
          _mm512_storeu_ps(widened[r], _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(row + r * reduction + k))));
        for (size_t i = 0; i < LANES; i++)
          for (size_t r = 0; r < TILE_CHANNELS; r++) target[(k + i) * TILE_CHANNELS + r] = widened[r][i];
      }
    }
    // The rest of the reduction, and the last tile (zero past the last channel).
    for (; k < reduction; k++)
      for (size_t r = 0; r < TILE_CHANNELS; r++)
        target[k * TILE_CHANNELS + r] = r < rows ? _cvtsh_ss(row[r * reduction + k]) : 0.0f;
  }
}

// `count` (≤ 64) floats from `source` to `target`, or zeros when `source` is NULL.
TC_AVX512 TC_INLINE void copy_run(float *target, const float *source, ptrdiff_t count) {
  if (count == TILE_POSITIONS && source) {  // the common case: a whole tile inside one row
    for (int v = 0; v < TILE_VECTORS; v++) _mm512_store_ps(target + v * LANES, _mm512_loadu_ps(source + v * LANES));
    return;
  }
  for (ptrdiff_t i = 0; i < count; i += LANES) {
    const __mmask16 mask = lane_mask(count - i);
    const __m512 value = source ? _mm512_maskz_loadu_ps(mask, source + i) : _mm512_setzero_ps();
    _mm512_mask_storeu_ps(target + i, mask, value);
  }
}

// The receptive-field rows of `channels` input channels (from `input`, the first of them) for
// the `count` output positions from `position`, as [channel·9 + tap][64], zero outside the image
// and past `count`. Runs of one output row are copied for all channels at once.
TC_AVX512 static void pack_positions(const float *input, size_t channels, size_t height,
                                     size_t width, size_t padding, size_t out_width,
                                     size_t position, ptrdiff_t count, float *packed) {
  const size_t plane = height * width;
  for (int tap = 0; tap < TAPS; tap++) {
    const ptrdiff_t ky = tap / 3, kx = tap % 3;
    ptrdiff_t done = 0;
    size_t p = position;
    while (done < count) {
      const ptrdiff_t y = (ptrdiff_t)(p / out_width), x = (ptrdiff_t)(p % out_width);
      ptrdiff_t run = (ptrdiff_t)out_width - x;
      if (run > count - done) run = count - done;
      const ptrdiff_t row = y + ky - (ptrdiff_t)padding, column = x + kx - (ptrdiff_t)padding;
      // Of the run's input columns column ..< column + run, those inside 0 ..< width.
      ptrdiff_t first = column < 0 ? -column : 0;
      ptrdiff_t end = (ptrdiff_t)width - column < run ? (ptrdiff_t)width - column : run;
      if (row < 0 || row >= (ptrdiff_t)height || first >= end) first = end = 0;
      // Where the run reads: its first inside column (only used when there is one).
      const size_t offset = end > first ? (size_t)row * width + (size_t)(column + first) : 0;
      for (size_t c = 0; c < channels; c++) {
        float *target = packed + (c * TAPS + (size_t)tap) * TILE_POSITIONS + done;
        if (first > 0) copy_run(target, NULL, first);
        if (end > first) copy_run(target + first, input + c * plane + offset, end - first);
        if (run > end) copy_run(target + end, NULL, run - end);
      }
      done += run;
      p += (size_t)run;
    }
  }
  if (count < TILE_POSITIONS) {
    for (size_t k = 0; k < channels * TAPS; k++)
      copy_run(packed + k * TILE_POSITIONS + count, NULL, TILE_POSITIONS - count);
  }
}

// A rows × 64 register tile: sums = start + packed weights [k][6] · packed inputs [k][64] over
// `reduction` k. It starts from `initial` (one value per row) or, when that is NULL, from the
// partial sums in `partial` ([6][64]); it ends in `partial`, or, when `output` is not NULL, in the
// output rows (stride `stride`, the first `count` positions).
TC_AVX512 TC_INLINE void product_tile(const int rows, const float *weights, const float *inputs,
                                      size_t reduction, float *partial, const float *initial,
                                      float *output, size_t stride, ptrdiff_t count) {
  __m512 sum[TILE_CHANNELS][TILE_VECTORS];
  for (int r = 0; r < rows; r++)
    for (int v = 0; v < TILE_VECTORS; v++)
      sum[r][v] = initial ? _mm512_set1_ps(initial[r]) : _mm512_load_ps(partial + r * TILE_POSITIONS + v * LANES);
  for (size_t k = 0; k < reduction; k++) {
    __m512 input[TILE_VECTORS];
    for (int v = 0; v < TILE_VECTORS; v++) input[v] = _mm512_load_ps(inputs + k * TILE_POSITIONS + v * LANES);
    for (int r = 0; r < rows; r++) {
      const __m512 weight = _mm512_set1_ps(weights[k * TILE_CHANNELS + r]);
      for (int v = 0; v < TILE_VECTORS; v++) sum[r][v] = _mm512_fmadd_ps(weight, input[v], sum[r][v]);
    }
  }
  if (output) {
    for (int v = 0; v < TILE_VECTORS; v++) {
      const __mmask16 mask = lane_mask(count - v * LANES);
      for (int r = 0; r < rows; r++) _mm512_mask_storeu_ps(output + r * stride + v * LANES, mask, sum[r][v]);
    }
  } else {
    for (int r = 0; r < rows; r++)
      for (int v = 0; v < TILE_VECTORS; v++) _mm512_store_ps(partial + r * TILE_POSITIONS + v * LANES, sum[r][v]);
  }
}

TC_KERNEL void product_tiles(int rows, const float *weights, const float *inputs, size_t reduction,
                             float *partial, const float *initial, float *output, size_t stride,
                             ptrdiff_t count) {
  switch (rows) {
#define TC_ROWS(R) \
  case R: product_tile(R, weights, inputs, reduction, partial, initial, output, stride, count); return;
    TC_ROWS(1) TC_ROWS(2) TC_ROWS(3) TC_ROWS(4) TC_ROWS(5)
    default: product_tile(6, weights, inputs, reduction, partial, initial, output, stride, count); return;
#undef TC_ROWS
  }
}

// The partial sums of rows × `count` outputs start as output + bias (an accumulating call).
TC_AVX512 static void load_partial(int rows, const float *output, size_t stride, ptrdiff_t count,
                                   const float *bias, float *partial) {
  for (int r = 0; r < rows; r++) {
    const __m512 offset = _mm512_set1_ps(bias ? bias[r] : 0.0f);
    for (int v = 0; v < TILE_VECTORS; v++) {
      const __m512 value = _mm512_maskz_loadu_ps(lane_mask(count - v * LANES), output + r * stride + v * LANES);
      _mm512_store_ps(partial + r * TILE_POSITIONS + v * LANES, bias ? _mm512_add_ps(value, offset) : value);
    }
  }
}

void tk_conv3x3(const float *input, size_t in_channels, size_t height, size_t width,
                size_t padding, const float *packed_weights, size_t out_channels,
                const float *bias, int accumulate, size_t first_position, size_t end_position,
                size_t first_tile, size_t end_tile, float *workspace, float *output,
                size_t output_channel_stride) {
  const size_t out_width = width + 2 * padding - 2, reduction = in_channels * TAPS;
  const size_t plane = height * width, input_floats = (size_t)BLOCK_CHANNELS * TAPS * TILE_POSITIONS;
  const size_t group = (size_t)GROUP_TILES * TILE_POSITIONS, partial_floats = TILE_CHANNELS * TILE_POSITIONS;
  // Packed inputs, then the partial sums of each (weight tile, position tile) of a group.
  float *inputs = workspace, *partials = workspace + GROUP_TILES * input_floats;
  const float zeros[TILE_CHANNELS] = {0};
  for (size_t start = first_position; start < end_position; start += group) {
    const size_t count = end_position - start < group ? end_position - start : group;
    const size_t tiles = (count + TILE_POSITIONS - 1) / TILE_POSITIONS;
    if (accumulate) {
      for (size_t m = first_tile; m < end_tile; m++)
        for (size_t t = 0; t < tiles; t++) {
          const size_t channel = m * TILE_CHANNELS, done = t * TILE_POSITIONS;
          const size_t rows = out_channels - channel < TILE_CHANNELS ? out_channels - channel : TILE_CHANNELS;
          load_partial((int)rows, output + channel * output_channel_stride + start + done, output_channel_stride,
                       (ptrdiff_t)(count - done), bias ? bias + channel : NULL,
                       partials + ((m - first_tile) * GROUP_TILES + t) * partial_floats);
        }
    }
    for (size_t c0 = 0; c0 < in_channels; c0 += BLOCK_CHANNELS) {
      const size_t channels = in_channels - c0 < BLOCK_CHANNELS ? in_channels - c0 : BLOCK_CHANNELS;
      const int first_block = c0 == 0, last_block = c0 + channels == in_channels;
      for (size_t t = 0; t < tiles; t++) {
        const size_t done = t * TILE_POSITIONS;
        const ptrdiff_t tile_count = count - done < TILE_POSITIONS ? (ptrdiff_t)(count - done) : TILE_POSITIONS;
        pack_positions(input + c0 * plane, channels, height, width, padding, out_width, start + done,
                       tile_count, inputs + t * input_floats);
      }
      for (size_t t = 0; t < tiles; t++) {
        const size_t done = t * TILE_POSITIONS;
        const ptrdiff_t tile_count = count - done < TILE_POSITIONS ? (ptrdiff_t)(count - done) : TILE_POSITIONS;
        for (size_t m = first_tile; m < end_tile; m++) {
          const size_t channel = m * TILE_CHANNELS;
          const size_t rows = out_channels - channel < TILE_CHANNELS ? out_channels - channel : TILE_CHANNELS;
          const float *initial = first_block && !accumulate ? (bias ? bias + channel : zeros) : NULL;
          product_tiles((int)rows, packed_weights + channel * reduction + c0 * TAPS * TILE_CHANNELS,
                        inputs + t * input_floats, channels * TAPS,
                        partials + ((m - first_tile) * GROUP_TILES + t) * partial_floats, initial,
                        last_block ? output + channel * output_channel_stride + start + done : NULL,
                        output_channel_stride,
                        tile_count);
        }
      }
    }
  }
}

int tk_conv3x3_available(void) {
  static int state = -1;  // a benign race: every thread computes the same answer
  if (state < 0) {
    __builtin_cpu_init();
    state = __builtin_cpu_supports("avx512f") ? 1 : 0;
  }
  return state;
}

#else

// Without the AVX-512 kernel nothing packs half floats (tk_conv3x3_available() is 0).
static void pack_halves(const uint16_t *weight, size_t out_channels, size_t in_channels, size_t first_tile,
                        size_t tile_count, float *packed) {
  (void)weight, (void)out_channels, (void)in_channels, (void)first_tile, (void)tile_count, (void)packed;
}

int tk_conv3x3_available(void) { return 0; }

void tk_conv3x3(const float *input, size_t in_channels, size_t height, size_t width,
                size_t padding, const float *packed_weights, size_t out_channels,
                const float *bias, int accumulate, size_t first_position, size_t end_position,
                size_t first_tile, size_t end_tile, float *workspace, float *output,
                size_t output_channel_stride) {
  (void)input, (void)in_channels, (void)height, (void)width, (void)padding, (void)packed_weights;
  (void)out_channels, (void)bias, (void)accumulate, (void)first_position, (void)end_position;
  (void)first_tile, (void)end_tile, (void)workspace, (void)output, (void)output_channel_stride;
}

#endif
