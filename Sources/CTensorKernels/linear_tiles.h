// The linear kernel's register tile, shared with the Winograd products (private to this target).
#ifndef LINEAR_TILES_H
#define LINEAR_TILES_H

#include <stddef.h>

enum { TK_LINEAR_TILE_ROWS = 6, TK_LINEAR_PANEL = 64 };

/// A rows × 64 register tile (rows ≤ 6) over `depth` values of the reduction: x rows `x + r ·
/// x_stride` times a packed panel [k][64]. It starts from the output (`load`) or zero, plus `bias`
/// when not NULL (64 values), and ends in the output's first `count` features (rows `output + r ·
/// output_stride`); each sum is one chain of fused multiply-adds in k order. Needs AVX-512F and
/// a 64-byte aligned panel. Not inlined: one call per register tile is cheap, and `perf` shows
/// the parts.
void tk_linear_product_tiles(int rows, const float *x, size_t x_stride, const float *panel, size_t depth, int load,
                             const float *bias, float *output, size_t output_stride, ptrdiff_t count);

#endif
