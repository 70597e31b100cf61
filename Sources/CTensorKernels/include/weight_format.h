// How a weight's values are stored, for the kernels that read weights as stored and widen them
// while packing (tk_linear, tk_conv3x3_pack_weights).
#ifndef WEIGHT_FORMAT_H
#define WEIGHT_FORMAT_H

enum {
  TK_WEIGHT_F32 = 0,
  TK_WEIGHT_F16 = 1,  // IEEE binary16
};

#endif
