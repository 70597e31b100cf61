// Attention for head dimension 64 (every attention of SDXL's UNet and of its text encoders) as one
// AVX-512 kernel: scores, online softmax and the value product in registers and L1/L2, with the
// keys and values of a head packed once. The Tensors module calls it where tk_attention_available
// says yes and runs its gemm-based form elsewhere.
#ifndef ATTENTION_KERNELS_H
#define ATTENTION_KERNELS_H

#include <stddef.h>

/// 1 when this CPU runs the AVX-512F kernel, else 0.
int tk_attention_available(void);

/// Floats of workspace tk_attention_head64 needs for `key_count` keys, query blocks of
/// `block_rows` rows and key tiles of `tile_keys` keys (a multiple of 16).
size_t tk_attention_workspace_floats(size_t key_count, size_t block_rows, size_t tile_keys);

/// softmax(scale · Q·Kᵀ)·V for one head of dimension 64, non-causal.
///
/// Query row i is `queries + i * query_stride` (64 floats), key j `keys + j * key_stride`, value
/// j `values + j * value_stride`, output row i `output + i * output_stride`. Query rows are taken
/// `block_rows` at a time; each block walks the keys `tile_keys` at a time with an online
/// softmax. A row's result depends only on its own query, the keys, the values and `tile_keys`
/// (not on its position in a block), so a sample gives the same bits in any batch.
/// Needs tk_attention_available() and key_count ≥ 1.
void tk_attention_head64(const float *queries, size_t query_stride, size_t query_count,
                         const float *keys, size_t key_stride, const float *values,
                         size_t value_stride, size_t key_count, float scale, size_t block_rows,
                         size_t tile_keys, float *workspace, float *output, size_t output_stride);

#endif
