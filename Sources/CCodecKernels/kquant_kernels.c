// ggml's K-quant scale searches, eight sub-blocks at a time: each vector lane runs one sub-block's
// search with exactly ggml's scalar float operations in ggml's order (lanes never mix), so the
// results are bit-identical to ggml's reference built without FMA contraction. Vectorising across
// sub-blocks instead of within one keeps every sum in ggml's order.
#include "codec_kernels.h"

#include <stdint.h>

// Fused multiply-adds would change the bits: never contract.
#pragma STDC FP_CONTRACT OFF
#if defined(__clang__)
#pragma clang fp contract(off)
// The vector helpers are always inlined, so no 256-bit value crosses a call without AVX.
#pragma clang diagnostic ignored "-Wpsabi"
#endif

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

#define CK_INLINE static inline __attribute__((always_inline))

CK_INLINE v8f splat(float v) { return (v8f){v, v, v, v, v, v, v, v}; }
CK_INLINE v8i splati(int32_t v) { return (v8i){v, v, v, v, v, v, v, v}; }

/// Lanes of `a` where `mask` is all ones, else of `b`.
CK_INLINE v8f select(v8i mask, v8f a, v8f b) { return (v8f)(((v8i)a & mask) | ((v8i)b & ~mask)); }
CK_INLINE v8i selecti(v8i mask, v8i a, v8i b) { return (a & mask) | (b & ~mask); }

/// ggml `nearest_int` (|f| ≤ 2^22): the float adder rounds half to even.
CK_INLINE v8i nearest(v8f f) {
  v8f v = f + splat(12582912.f);
  return ((v8i)v & splati(0x007FFFFF)) - splati(0x00400000);
}

CK_INLINE v8i clamp_levels(v8i l, int32_t nmax) {
  l = selecti(l < splati(0), splati(0), l);
  return selecti(l > splati(nmax), splati(nmax), l);
}

CK_INLINE v8f absf(v8f v) { return (v8f)((v8i)v & splati(0x7FFFFFFF)); }

// `make_qkx2_quants` (= `make_qkx3_quants` with explicit weights) for 8 sub-blocks of n values.
CK_INLINE void qkx8_body(int n, int nmax, const float *x, const float *w, uint8_t *L, float *scale_out,
                         float *min_out, float rmin, float rdelta, int nstep, int use_mad) {
  v8f xt[32], wt[32], la[32];
  for (int i = 0; i < n; i++)
    for (int k = 0; k < 8; k++) {
      xt[i][k] = x[k * n + i];
      wt[i][k] = w[k * n + i];
    }
  v8f mn = xt[0], mx = xt[0], sum_w = wt[0], sum_x = sum_w * xt[0];
  for (int i = 1; i < n; i++) {
    mn = select(xt[i] < mn, xt[i], mn);
    mx = select(xt[i] > mx, xt[i], mx);
    sum_w += wt[i];
    sum_x += wt[i] * xt[i];
  }
  mn = select(mn > splat(0), splat(0), mn);
  v8i flat = mx == mn;
  const v8f fnmax = splat((float)nmax);
  v8f iscale = fnmax / (mx - mn);
  v8f scale = splat(1) / iscale;
  v8f best_error = splat(0);
  for (int i = 0; i < n; i++) {
    v8f l = __builtin_convertvector(clamp_levels(nearest(iscale * (xt[i] - mn)), nmax), v8f);
    v8f diff = scale * l + mn - xt[i];
    diff = use_mad ? absf(diff) : diff * diff;
    best_error += wt[i] * diff;
  }
  // Where the best levels came from: recomputed at the end instead of copied at every improvement.
  v8f best_iscale = iscale, best_from = mn;
  for (int is = 0; is <= nstep; is++) {
    v8f step_iscale = splat(rmin + rdelta * (float)is + (float)nmax) / (mx - mn);
    v8f sum_l = splat(0), sum_l2 = splat(0), sum_xl = splat(0);
    for (int i = 0; i < n; i++) {
      v8f l = __builtin_convertvector(clamp_levels(nearest(step_iscale * (xt[i] - mn)), nmax), v8f);
      la[i] = l;
      v8f wl = wt[i] * l;
      sum_l += wl;
      sum_l2 += wl * l;
      sum_xl += wl * xt[i];
    }
    v8f D = sum_w * sum_l2 - sum_l * sum_l;
    v8i usable = (D > splat(0)) & ~flat;
    if (!(usable[0] | usable[1] | usable[2] | usable[3] | usable[4] | usable[5] | usable[6] | usable[7])) continue;
    v8f this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
    v8f this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
    v8i positive = this_min > splat(0);
    this_min = select(positive, splat(0), this_min);
    this_scale = select(positive, sum_xl / sum_l2, this_scale);
    v8f error = splat(0);
    for (int i = 0; i < n; i++) {
      v8f diff = this_scale * la[i] + this_min - xt[i];
      diff = use_mad ? absf(diff) : diff * diff;
      error += wt[i] * diff;
    }
    v8i better = usable & (error < best_error);
    best_error = select(better, error, best_error);
    scale = select(better, this_scale, scale);
    best_iscale = select(better, step_iscale, best_iscale);
    best_from = select(better, mn, best_from);
    mn = select(better, this_min, mn);
  }
  for (int i = 0; i < n; i++) {
    v8i l = clamp_levels(nearest(best_iscale * (xt[i] - best_from)), nmax);
    l = selecti(flat, splati(0), l);
    for (int k = 0; k < 8; k++) L[k * n + i] = (uint8_t)l[k];
  }
  scale = select(flat, splat(0), scale);
  for (int k = 0; k < 8; k++) {
    scale_out[k] = scale[k];
    min_out[k] = -mn[k];
  }
}


// `make_qx_quants(n, nmax, x, L, rmse_type 1, qw)` for 8 sub-blocks of n values: signed levels in
// [-nmax, nmax-1] stored as l + nmax; weights qw, or x² when qw is NULL.
CK_INLINE void qx8_body(int n, int nmax, const float *x, const float *qw, int8_t *L, float *scale_out) {
  v8f xt[32], wt[32];
  for (int i = 0; i < n; i++)
    for (int k = 0; k < 8; k++) {
      xt[i][k] = x[k * n + i];
      wt[i][k] = qw ? qw[k * n + i] : x[k * n + i] * x[k * n + i];
    }
  v8f max = splat(0), amax = splat(0);
  for (int i = 0; i < n; i++) {
    v8f ax = absf(xt[i]);
    v8i larger = ax > amax;
    amax = select(larger, ax, amax);
    max = select(larger, xt[i], max);
  }
  v8i zero = amax < splat(1e-15f);
  const v8i low = splati(-nmax), high = splati(nmax - 1);
  v8f iscale = splat((float)-nmax) / max;
  v8f sumlx = splat(0), suml2 = splat(0);
  for (int i = 0; i < n; i++) {
    v8i l = nearest(iscale * xt[i]);
    l = selecti(l > high, high, selecti(l < low, low, l));
    v8f fl = __builtin_convertvector(l, v8f);
    sumlx += wt[i] * xt[i] * fl;
    suml2 += wt[i] * fl * fl;
  }
  v8f scale = select(suml2 != splat(0), sumlx / suml2, splat(0));
  v8f best = scale * sumlx, best_iscale = iscale;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = splat(-((float)nmax + 0.1f * (float)is)) / max;
    sumlx = splat(0);
    suml2 = splat(0);
    for (int i = 0; i < n; i++) {
      v8i l = nearest(iscale * xt[i]);
      l = selecti(l > high, high, selecti(l < low, low, l));
      v8f fl = __builtin_convertvector(l, v8f);
      sumlx += wt[i] * xt[i] * fl;
      suml2 += wt[i] * fl * fl;
    }
    v8i better = (suml2 > splat(0)) & (sumlx * sumlx > best * suml2);
    scale = select(better, sumlx / suml2, scale);
    best = select(better, scale * sumlx, best);
    best_iscale = select(better, iscale, best_iscale);
  }
  for (int i = 0; i < n; i++) {
    v8i l = nearest(best_iscale * xt[i]);
    l = selecti(l > high, high, selecti(l < low, low, l)) + splati(nmax);
    l = selecti(zero, splati(0), l);
    for (int k = 0; k < 8; k++) L[k * n + i] = (int8_t)l[k];
  }
  scale = select(zero, splat(0), scale);
  for (int k = 0; k < 8; k++) scale_out[k] = scale[k];
}

// `make_q3_quants(n, nmax, x, L, do_rmse = true)` for 8 sub-blocks of n values: levels stored as
// l + nmax (0 for an all-zero sub-block, as ggml leaves them). A lane whose pass changes nothing
// would change nothing in a further pass either, so running all lanes until none changes (at most
// five passes) leaves every lane where ggml's own early exit does.
CK_INLINE void q3_8_body(int n, int nmax, const float *x, int8_t *L, float *scale_out) {
  v8f xt[32], wt[32];
  v8i lt[32];
  for (int i = 0; i < n; i++)
    for (int k = 0; k < 8; k++) {
      xt[i][k] = x[k * n + i];
      wt[i][k] = x[k * n + i] * x[k * n + i];
    }
  v8f max = splat(0), amax = splat(0);
  for (int i = 0; i < n; i++) {
    v8f ax = absf(xt[i]);
    v8i larger = ax > amax;
    amax = select(larger, ax, amax);
    max = select(larger, xt[i], max);
  }
  v8i zero = amax < splat(1e-15f);
  const v8i low = splati(-nmax), high = splati(nmax - 1);
  v8f iscale = splat((float)-nmax) / max;
  v8f sumlx = splat(0), suml2 = splat(0);
  for (int i = 0; i < n; i++) {
    v8i l = nearest(iscale * xt[i]);
    l = selecti(l > high, high, selecti(l < low, low, l));
    lt[i] = l;
    v8f fl = __builtin_convertvector(l, v8f);
    sumlx += wt[i] * xt[i] * fl;
    suml2 += wt[i] * fl * fl;
  }
  for (int itry = 0; itry < 5; ++itry) {
    v8i changed = splati(0);
    for (int i = 0; i < n; i++) {
      v8f fl = __builtin_convertvector(lt[i], v8f);
      v8f slx = sumlx - wt[i] * xt[i] * fl;
      v8f sl2 = suml2 - wt[i] * fl * fl;
      v8i new_l = nearest(xt[i] * sl2 / slx);
      new_l = selecti(new_l > high, high, selecti(new_l < low, low, new_l));
      v8f fnew = __builtin_convertvector(new_l, v8f);
      v8f slx2 = slx + wt[i] * xt[i] * fnew;
      v8f sl22 = sl2 + wt[i] * fnew * fnew;
      v8i take = (slx > splat(0)) & (new_l != lt[i]) & (sl22 > splat(0)) &
                 (slx2 * slx2 * suml2 > sumlx * sumlx * sl22) & ~zero;
      lt[i] = selecti(take, new_l, lt[i]);
      sumlx = select(take, slx2, sumlx);
      suml2 = select(take, sl22, suml2);
      changed |= take;
    }
    if (!(changed[0] | changed[1] | changed[2] | changed[3] | changed[4] | changed[5] | changed[6] | changed[7]))
      break;
  }
  for (int i = 0; i < n; i++) {
    v8i l = selecti(zero, splati(0), lt[i] + splati(nmax));
    for (int k = 0; k < 8; k++) L[k * n + i] = (int8_t)l[k];
  }
  v8f scale = select(suml2 > splat(0), sumlx / suml2, splat(0));
  scale = select(zero, splat(0), scale);
  for (int k = 0; k < 8; k++) scale_out[k] = scale[k];
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static void q3_8_avx2(int n, int nmax, const float *x, int8_t *L, float *scale_out) {
  q3_8_body(n, nmax, x, L, scale_out);
}

__attribute__((target("avx2"))) static void qx8_avx2(int n, int nmax, const float *x, const float *qw, int8_t *L,
                                                     float *scale_out) {
  qx8_body(n, nmax, x, qw, L, scale_out);
}

__attribute__((target("avx2"))) static void qkx8_avx2(int n, int nmax, const float *x, const float *w, uint8_t *L,
                                                      float *scale_out, float *min_out, float rmin, float rdelta,
                                                      int nstep, int use_mad) {
  qkx8_body(n, nmax, x, w, L, scale_out, min_out, rmin, rdelta, nstep, use_mad);
}

static int force_portable = 0;  // tests: the portable build must give the same bits

static int has_avx2(void) {
  static int cached = -1;
  if (cached < 0) cached = __builtin_cpu_supports("avx2");
  return cached && !force_portable;
}
#endif

static void qkx8_portable(int n, int nmax, const float *x, const float *w, uint8_t *L, float *scale_out,
                          float *min_out, float rmin, float rdelta, int nstep, int use_mad) {
  qkx8_body(n, nmax, x, w, L, scale_out, min_out, rmin, rdelta, nstep, use_mad);
}

void ck_qkx_search8(int n, int nmax, const float *x, const float *weights, uint8_t *levels, float *scales,
                    float *mins, float rmin, float rdelta, int nstep, int use_mad) {
#if defined(__x86_64__)
  if (has_avx2()) {
    qkx8_avx2(n, nmax, x, weights, levels, scales, mins, rmin, rdelta, nstep, use_mad);
    return;
  }
#endif
  qkx8_portable(n, nmax, x, weights, levels, scales, mins, rmin, rdelta, nstep, use_mad);
}

static void qx8_portable(int n, int nmax, const float *x, const float *qw, int8_t *L, float *scale_out) {
  qx8_body(n, nmax, x, qw, L, scale_out);
}

void ck_qx_search8(int n, int nmax, const float *x, const float *weights, signed char *levels, float *scales) {
#if defined(__x86_64__)
  if (has_avx2()) {
    qx8_avx2(n, nmax, x, weights, levels, scales);
    return;
  }
#endif
  qx8_portable(n, nmax, x, weights, levels, scales);
}

static void q3_8_portable(int n, int nmax, const float *x, int8_t *L, float *scale_out) {
  q3_8_body(n, nmax, x, L, scale_out);
}

void ck_q3_search8(int n, int nmax, const float *x, signed char *levels, float *scales) {
#if defined(__x86_64__)
  if (has_avx2()) {
    q3_8_avx2(n, nmax, x, levels, scales);
    return;
  }
#endif
  q3_8_portable(n, nmax, x, levels, scales);
}

void ck_kquant_force_portable(int on) {
#if defined(__x86_64__)
  force_portable = on;
#else
  (void)on;
#endif
}
