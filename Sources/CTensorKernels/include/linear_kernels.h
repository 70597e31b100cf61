// The linear layer y = x·Wᵀ + b as one AVX-512 kernel that reads the weight as stored (fp16 or
// fp32) and widens it while packing: no widened copy of the weight in memory and no second
// packing pass by the BLAS. Every linear layer of SDXL's UNet and text encoders runs here where
// tk_linear_available says yes; the Tensors module keeps sgemm elsewhere.
#ifndef LINEAR_KERNELS_H
#define LINEAR_KERNELS_H

#include <stddef.h>

#include "weight_format.h"

/// 1 when this CPU runs the AVX-512F kernel, else 0.
int tk_linear_available(void);

/// Output features per packed panel: parts of a call split the features in multiples of this.
size_t tk_linear_panel_features(void);

/// Floats of workspace one tk_linear call over `features` output features of a reduction of
/// `in_features` needs (the packed panels of one chunk of features for one pass of the reduction).
size_t tk_linear_workspace_floats(size_t features, size_t in_features);

/// One part of output[r][o] = init + Σₖ x[r][k] · w[o][k] for a weight `w[out_features][in_features]`
/// (row-major, `weight_format`): rows `first_row ..< end_row` of the features `first_feature ..<
/// end_feature` (`first_feature` a multiple of tk_linear_panel_features()). Row r of x is
/// `x + r * x_stride`, of the output `output + r * output_stride`. Parts that share no row or no
/// feature may run at once.
///
/// init is `bias[o]` (0 without a bias), or `output + bias[o]` when `accumulate`; the sum is one
/// chain of fused multiply-adds over k in order, so a value depends only on its own row and
/// feature, never on how the work is split or batched. Needs tk_linear_available() and
/// in_features ≥ 1; `workspace` holds tk_linear_workspace_floats(end_feature − first_feature,
/// in_features) floats, 64-byte aligned.
void tk_linear(const float *x, size_t x_stride, size_t first_row, size_t end_row, size_t in_features,
               const void *weight, int weight_format, size_t out_features, size_t first_feature,
               size_t end_feature, const float *bias, int accumulate, float *workspace, float *output,
               size_t output_stride);

#endif
