// The 3×3, stride-1 convolution by Winograd's minimal filtering F(4×4, 3×3): each 4 × 4 block
// of outputs (a tile) comes from a 6 × 6 block of inputs through 36 element-wise products in a
// transformed domain, so the multiply-adds are 36 per 16 outputs instead of 144. The three
// stages, which the Tensors module runs in order (the products through tk_linear, one gemm per
// transformed element ξ = 0 ..< 36):
//   V[ξ][tile][c] = (Bᵀ d B)[ξ]   for each tile's input block d of channel c;
//   U[ξ][o][c]    = (G g Gᵀ)[ξ]   for each 3 × 3 weight g of output o and input c;
//   M[ξ][tile][o] = Σ_c V[ξ][tile][c] · U[ξ][o][c];
//   output tile   = Aᵀ M A (+ bias, + the output when accumulating).
// Tiles are numbered row by row over ceil(out_height / 4) × ceil(out_width / 4), their origin at
// the plane's first output, so an output's value depends on its image and the weights only,
// never on how the work is split or batched. It rounds differently from the direct sum (the
// transforms scale by up to 8 and by 1/24): the tests bound the difference against a double
// reference.
#ifndef WINOGRAD_KERNELS_H
#define WINOGRAD_KERNELS_H

#include <stddef.h>

#include "weight_format.h"

/// Transformed elements per tile (6 × 6) and outputs per tile side.
enum { TK_WINOGRAD_ELEMENTS = 36, TK_WINOGRAD_TILE = 4 };

/// 1 when this CPU runs the AVX-512F stages, else 0.
int tk_winograd_available(void);

/// U for output channels `first_out ..< first_out + count` of the weight `[out][in][3][3]`
/// (row-major, `format`): U[ξ][o − first_out][c] at `transformed + ξ · element_stride +
/// (o − first_out) · in_channels + c`.
void tk_winograd_transform_weights(const void *weight, int format, size_t in_channels, size_t first_out,
                                   size_t count, float *transformed, size_t element_stride);

/// Floats of workspace one tk_winograd_products call needs (64-byte aligned).
size_t tk_winograd_products_workspace_floats(void);

/// Output channels per panel of tk_winograd_products.
size_t tk_winograd_products_panel(void);

/// M[ξ][tile][o] = Σ_c V[ξ][tile][c] · U[ξ][o][c] for `tiles` tiles and the output channels of the
/// 64-channel panels `first_panel ..< end_panel`, with U made from the weight (as in
/// tk_winograd_transform_weights) a panel and 64 input channels at a time in the workspace, never
/// whole in memory: the same values, bit for bit, as tk_linear on tk_winograd_transform_weights'
/// U (one chain of fused multiply-adds over c in order, from zero). For few tiles (the 16² planes
/// of SDXL's deepest level), where tk_linear would spend more on packing U than on the products.
/// V[ξ] rows at `transformed_inputs + ξ · input_stride + tile · in_channels`, M[ξ] rows at
/// `products + ξ · product_stride + tile · out_channels`.
void tk_winograd_products(const void *weight, int format, size_t in_channels, size_t out_channels,
                          size_t first_panel, size_t end_panel, const float *transformed_inputs, size_t input_stride,
                          size_t tiles, float *products, size_t product_stride, float *workspace);

/// Floats of workspace one tk_winograd_transform_input call needs.
size_t tk_winograd_input_workspace_floats(size_t channels, size_t out_width);

/// V for the tiles of tile rows `first_tile_row ..< end_tile_row` of one image
/// `input[channels][height][width]` with zero padding `padding` (out_height = height + 2·padding
/// − 2, likewise the width): V[ξ][tile][c] at `transformed + ξ · element_stride + tile · channels
/// + c`, tiles counted from the first of `first_tile_row`. `workspace`: 64-byte aligned.
void tk_winograd_transform_input(const float *input, size_t channels, size_t height, size_t width,
                                 size_t padding, size_t first_tile_row, size_t end_tile_row, float *transformed,
                                 size_t element_stride, float *workspace);

/// Floats of workspace one tk_winograd_transform_output call needs.
size_t tk_winograd_output_workspace_floats(size_t channels, size_t out_width);

/// The outputs of tile rows `first_tile_row ..< end_tile_row` from M (laid out as V, with
/// `channels` output channels per tile): output channel o of row y starts at `output + o ·
/// channel_stride + y · out_width`. Each output is Aᵀ M A + bias[o] (0 without a bias), added to
/// the output when `accumulate`. `workspace`: 64-byte aligned.
void tk_winograd_transform_output(const float *transformed, size_t element_stride, size_t channels,
                                  size_t out_height, size_t out_width, size_t first_tile_row, size_t end_tile_row,
                                  const float *bias, int accumulate, float *workspace, float *output,
                                  size_t channel_stride);

#endif
