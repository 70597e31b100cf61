// The 3×3, stride-1 convolution as one AVX-512 kernel: no im2col matrix in memory. Every 3×3
// convolution of SDXL's UNet (320–1280 channels) and VAE decoder (128–512 channels, up to 1024²)
// runs here where tk_conv3x3_available says yes; the Tensors module keeps im2col + sgemm elsewhere.
#ifndef CONV_KERNELS_H
#define CONV_KERNELS_H

#include <stddef.h>

#include "weight_format.h"

/// 1 when this CPU runs the AVX-512F kernel, else 0.
int tk_conv3x3_available(void);

/// Output channels per register tile: the packed weights hold them in groups of this many.
size_t tk_conv3x3_tile_channels(void);

/// Output positions that share one pass over the weights (a group of position tiles): a part
/// with fewer positions reads the weights for fewer outputs each.
size_t tk_conv3x3_group_positions(void);

/// Floats of packed weights for `out_channels` × `in_channels` × 3 × 3.
size_t tk_conv3x3_packed_weight_floats(size_t out_channels, size_t in_channels);

/// Floats of workspace one tk_conv3x3 call over `weight_tiles` weight tiles needs (its packed
/// input tiles and partial sums).
size_t tk_conv3x3_workspace_floats(size_t weight_tiles);

/// Packs register tiles `first_tile ..< first_tile + tile_count` of the weight `[out, in, 3, 3]`
/// (row-major, stored as `format`: TK_WEIGHT_F32, or TK_WEIGHT_F16 widened while packing, which
/// needs tk_conv3x3_available()) for tk_conv3x3: tile t holds output channels t·R ..< t·R + R
/// (R = tk_conv3x3_tile_channels(), zero past out_channels) as `[in·9][R]` fp32. Tiles are
/// independent, so threads may pack disjoint ranges at once.
void tk_conv3x3_pack_weights(const void *weight, int format, size_t out_channels, size_t in_channels,
                             size_t first_tile, size_t tile_count, float *packed);

/// One part of a 3×3 convolution with stride 1 and zero padding `padding` of one image
/// `input[in_channels][height][width]` into `output[out_channels][out_height][out_width]`
/// (out_height = height + 2·padding − 2, likewise the width): output positions
/// `first_position ..< end_position` (flat over out_height × out_width) of the channels of weight
/// tiles `first_tile ..< end_tile`. Parts that share no position or no tile may run at once.
/// Output channel o starts at `output + o * output_channel_stride` (out_height × out_width for a
/// whole image; a band of rows of a taller plane passes that plane's size, and `output` pointing
/// at the band's first row).
///
/// Each output is `init + Σₖ w[k]·x[k]` as one chain of fused multiply-adds over k = (c·3 + ky)·3
/// + kx in order, where init is `bias[o]` (0 without a bias), or `output + bias[o]` when
/// `accumulate`: a value depends only on its own inputs, never on how the work is split.
/// Needs tk_conv3x3_available(); `workspace` holds tk_conv3x3_workspace_floats() floats, 64-byte
/// aligned.
void tk_conv3x3(const float *input, size_t in_channels, size_t height, size_t width,
                size_t padding, const float *packed_weights, size_t out_channels,
                const float *bias, int accumulate, size_t first_position, size_t end_position,
                size_t first_tile, size_t end_tile, float *workspace, float *output,
                size_t output_channel_stride);

#endif
