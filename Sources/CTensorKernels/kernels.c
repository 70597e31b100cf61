// Element-wise kernels behind Tensors' activations, normalisations and softmax. The AVX2+FMA
// forms follow the polynomials PyTorch's own vectorised CPU path uses
// (ATen/cpu/vec/vec256/vec256_float.h: Cephes exp, Abramowitz-Stegun 7.1.26 erf); the portable
// forms call libm. Swift's SIMD types compile to baseline SSE2 here and scalarise min/max,
// which made exp-heavy work (attention softmax) 5x slower than this.
#include "tensor_kernels.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define TK_X86 1
#include <immintrin.h>
#endif

// ---------------------------------------------------------------------------------------------
// Portable forms.

static float scalar_silu(float x) { return x / (1.0f + expf(-x)); }
static float scalar_gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

static float portable_max(const float *source, size_t count) {
  float maximum = -INFINITY;
  for (size_t i = 0; i < count; i++) maximum = source[i] > maximum ? source[i] : maximum;
  return maximum;
}

static float portable_exp_shifted_sum(const float *source, float *destination, size_t count,
                                      float shift) {
  float total = 0;
  for (size_t i = 0; i < count; i++) {
    destination[i] = expf(source[i] - shift);
    total += destination[i];
  }
  return total;
}

#if TK_X86
// ---------------------------------------------------------------------------------------------
// AVX2 + FMA forms.
#define TK_AVX2 __attribute__((target("avx2,fma")))

TK_AVX2 static inline __m256 exp8(__m256 input) {
  const __m256 low = _mm256_set1_ps(-87.3f);
  __m256 x = _mm256_min_ps(_mm256_max_ps(input, low), _mm256_set1_ps(88.3762626647949f));
  // n = round(x / ln2) by adding 1.5*2^23; x = n ln2 + r with ln2 split for an exact n ln2.
  __m256 shifted = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f),
                                   _mm256_set1_ps(12582912.0f));
  __m256 n = _mm256_sub_ps(shifted, _mm256_set1_ps(12582912.0f));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 r2 = _mm256_mul_ps(r, r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0f));
  __m256i integer = _mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x4B400000));
  __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(integer,
                                                                        _mm256_set1_epi32(127)), 23));
  __m256 result = _mm256_mul_ps(y, scale);
  result = _mm256_blendv_ps(result, _mm256_setzero_ps(), _mm256_cmp_ps(input, low, _CMP_LT_OQ));
  result = _mm256_blendv_ps(result, _mm256_set1_ps(INFINITY),
                            _mm256_cmp_ps(input, _mm256_set1_ps(88.72283f), _CMP_GT_OQ));
  return result;
}

TK_AVX2 static inline __m256 silu8(__m256 x) {
  __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

TK_AVX2 static inline __m256 quick_gelu8(__m256 x) {
  __m256 e = exp8(_mm256_mul_ps(x, _mm256_set1_ps(-1.702f)));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

TK_AVX2 static inline __m256 erf8(__m256 x) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  __m256 magnitude = _mm256_andnot_ps(sign_bit, x);
  __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f),
                           _mm256_fmadd_ps(magnitude, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.0f)));
  __m256 p = _mm256_set1_ps(1.061405429f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
  __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(magnitude, magnitude)));
  __m256 y = _mm256_fnmadd_ps(_mm256_mul_ps(p, t), e, _mm256_set1_ps(1.0f));
  return _mm256_or_ps(y, _mm256_and_ps(x, sign_bit));
}

TK_AVX2 static inline __m256 gelu8(__m256 x) {
  __m256 half_x = _mm256_mul_ps(x, _mm256_set1_ps(0.5f));
  __m256 e = erf8(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
  return _mm256_fmadd_ps(half_x, e, half_x);
}

// Runs `EXPR` (of the vector `v`) over count floats; the tail goes through a padded vector.
#define TK_MAP(EXPR)                                                          \
  size_t i = 0;                                                               \
  for (; i + 8 <= count; i += 8) {                                            \
    __m256 v = _mm256_loadu_ps(source + i);                                   \
    _mm256_storeu_ps(destination + i, (EXPR));                                \
  }                                                                           \
  if (i < count) {                                                            \
    float buffer[8] = {0};                                                    \
    memcpy(buffer, source + i, (count - i) * sizeof(float));                  \
    __m256 v = _mm256_loadu_ps(buffer);                                       \
    _mm256_storeu_ps(buffer, (EXPR));                                         \
    memcpy(destination + i, buffer, (count - i) * sizeof(float));             \
  }

TK_AVX2 static float avx2_max(const float *source, size_t count) {
  __m256 maxima = _mm256_set1_ps(-INFINITY);
  size_t i = 0;
  for (; i + 8 <= count; i += 8) maxima = _mm256_max_ps(maxima, _mm256_loadu_ps(source + i));
  float lanes[8];
  _mm256_storeu_ps(lanes, maxima);
  float maximum = portable_max(lanes, 8);
  for (; i < count; i++) maximum = source[i] > maximum ? source[i] : maximum;
  return maximum;
}

TK_AVX2 static float avx2_exp_shifted_sum(const float *source, float *destination, size_t count,
                                          float shift) {
  __m256 shift8 = _mm256_set1_ps(shift), sums = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    __m256 value = exp8(_mm256_sub_ps(_mm256_loadu_ps(source + i), shift8));
    _mm256_storeu_ps(destination + i, value);
    sums = _mm256_add_ps(sums, value);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, sums);
  float total = 0;
  for (int lane = 0; lane < 8; lane++) total += lanes[lane];
  if (i < count) {
    float buffer[8] = {0};
    memcpy(buffer, source + i, (count - i) * sizeof(float));
    _mm256_storeu_ps(buffer, exp8(_mm256_sub_ps(_mm256_loadu_ps(buffer), shift8)));
    for (size_t lane = 0; lane < count - i; lane++) total += buffer[lane];
    memcpy(destination + i, buffer, (count - i) * sizeof(float));
  }
  return total;
}

TK_AVX2 static void avx2_scale(const float *source, float *destination, size_t count, float factor) {
  __m256 f = _mm256_set1_ps(factor);
  TK_MAP(_mm256_mul_ps(v, f))
}

TK_AVX2 static void avx2_affine(const float *source, float *destination, size_t count, float scale,
                                float shift, int silu) {
  __m256 a = _mm256_set1_ps(scale), b = _mm256_set1_ps(shift);
  if (silu) {
    TK_MAP(silu8(_mm256_fmadd_ps(v, a, b)))
  } else {
    TK_MAP(_mm256_fmadd_ps(v, a, b))
  }
}

TK_AVX2 static void avx2_silu(const float *source, float *destination, size_t count) {
  TK_MAP(silu8(v))
}

TK_AVX2 static void avx2_quick_gelu(const float *source, float *destination, size_t count) {
  TK_MAP(quick_gelu8(v))
}

TK_AVX2 static void avx2_gelu(const float *source, float *destination, size_t count) {
  TK_MAP(gelu8(v))
}

TK_AVX2 static void avx2_geglu(const float *value, const float *gate, float *destination,
                               size_t count) {
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    __m256 g = gelu8(_mm256_loadu_ps(gate + i));
    _mm256_storeu_ps(destination + i, _mm256_mul_ps(_mm256_loadu_ps(value + i), g));
  }
  if (i < count) {
    float buffer[8] = {0};
    memcpy(buffer, gate + i, (count - i) * sizeof(float));
    _mm256_storeu_ps(buffer, gelu8(_mm256_loadu_ps(buffer)));
    for (size_t lane = 0; lane < count - i; lane++) destination[i + lane] = value[i + lane] * buffer[lane];
  }
}

static int detect_avx2(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

// ---------------------------------------------------------------------------------------------
// Dispatch.

int tk_uses_avx2(void) {
#if TK_X86
  static int state = -1;  // a benign race: every thread computes the same answer
  if (state < 0) state = detect_avx2();
  return state;
#else
  return 0;
#endif
}

float tk_max(const float *source, size_t count) {
#if TK_X86
  if (tk_uses_avx2()) return avx2_max(source, count);
#endif
  return portable_max(source, count);
}

float tk_exp_shifted_sum(const float *source, float *destination, size_t count, float shift) {
#if TK_X86
  if (tk_uses_avx2()) return avx2_exp_shifted_sum(source, destination, count, shift);
#endif
  return portable_exp_shifted_sum(source, destination, count, shift);
}

void tk_scale(const float *source, float *destination, size_t count, float factor) {
#if TK_X86
  if (tk_uses_avx2()) { avx2_scale(source, destination, count, factor); return; }
#endif
  for (size_t i = 0; i < count; i++) destination[i] = source[i] * factor;
}

void tk_affine(const float *source, float *destination, size_t count, float scale, float shift,
               int silu) {
#if TK_X86
  if (tk_uses_avx2()) { avx2_affine(source, destination, count, scale, shift, silu); return; }
#endif
  for (size_t i = 0; i < count; i++) {
    float value = source[i] * scale + shift;
    destination[i] = silu ? scalar_silu(value) : value;
  }
}

void tk_silu(const float *source, float *destination, size_t count) {
#if TK_X86
  if (tk_uses_avx2()) { avx2_silu(source, destination, count); return; }
#endif
  for (size_t i = 0; i < count; i++) destination[i] = scalar_silu(source[i]);
}

void tk_quick_gelu(const float *source, float *destination, size_t count) {
#if TK_X86
  if (tk_uses_avx2()) { avx2_quick_gelu(source, destination, count); return; }
#endif
  for (size_t i = 0; i < count; i++) destination[i] = source[i] / (1.0f + expf(-1.702f * source[i]));
}

void tk_gelu(const float *source, float *destination, size_t count) {
#if TK_X86
  if (tk_uses_avx2()) { avx2_gelu(source, destination, count); return; }
#endif
  for (size_t i = 0; i < count; i++) destination[i] = scalar_gelu(source[i]);
}

void tk_geglu(const float *value, const float *gate, float *destination, size_t count) {
#if TK_X86
  if (tk_uses_avx2()) { avx2_geglu(value, gate, destination, count); return; }
#endif
  for (size_t i = 0; i < count; i++) destination[i] = value[i] * scalar_gelu(gate[i]);
}
