#include "codec_kernels.h"

#include <stdint.h>
#include <string.h>

// Portable conversions (the F16C paths' tails and fallback): the same algorithms as the Swift
// FloatCodec.floatFromHalf / FloatCodec.half.
static float portable_float_from_half(uint16_t half) {
  uint32_t h = half, sign = (h & 0x8000u) << 16, magnitude = h & 0x7FFFu, shifted = magnitude << 13;
  uint32_t bits;
  if (magnitude >= 0x7C00u) {
    bits = shifted + (224u << 23);
    if (magnitude > 0x7C00u) bits |= 0x400000u;  // NaN: quiet
  } else if (magnitude < 0x0400u) {
    float value, magic;
    uint32_t m = 113u << 23, v = shifted + (113u << 23);
    memcpy(&value, &v, 4);
    memcpy(&magic, &m, 4);
    value -= magic;
    memcpy(&bits, &value, 4);
  } else {
    bits = shifted + (112u << 23);
  }
  bits |= sign;
  float result;
  memcpy(&result, &bits, 4);
  return result;
}

static uint16_t portable_half(float value) {
  uint32_t bits;
  memcpy(&bits, &value, 4);
  uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
  bits &= 0x7FFFFFFFu;
  if (bits >= (143u << 23)) {
    if (bits > (255u << 23)) return sign | 0x7E00u | (uint16_t)((bits & 0x7FFFFFu) >> 13);
    return sign | 0x7C00u;
  }
  if (bits < (113u << 23)) {
    uint32_t magic = 126u << 23, out;
    float f, m;
    memcpy(&f, &bits, 4);
    memcpy(&m, &magic, 4);
    f += m;
    memcpy(&out, &f, 4);
    return sign | (uint16_t)(out - magic);
  }
  uint32_t odd = (bits >> 13) & 1u;
  bits = bits + ((uint32_t)(15 - 127) << 23) + 0xFFFu + odd;
  return sign | (uint16_t)(bits >> 13);
}

static void portable_to_floats(const uint8_t *in, float *out, size_t count) {
  for (size_t i = 0; i < count; i++) out[i] = portable_float_from_half((uint16_t)(in[2 * i] | (in[2 * i + 1] << 8)));
}

static void portable_to_halves(const float *in, uint8_t *out, size_t count, int clamp, size_t *overflowed,
                               size_t *nans, size_t *infinities) {
  for (size_t i = 0; i < count; i++) {
    uint32_t bits;
    memcpy(&bits, &in[i], 4);
    uint32_t magnitude = bits & 0x7FFFFFFFu;
    uint16_t h = portable_half(in[i]);
    if ((h & 0x7FFFu) == 0x7C00u && magnitude < 0x7F800000u) {
      *overflowed += 1;
      if (clamp) h = (h & 0x8000u) | 0x7BFFu;
    } else if (magnitude > 0x7F800000u) {
      *nans += 1;
    } else if (magnitude == 0x7F800000u) {
      *infinities += 1;
    }
    out[2 * i] = (uint8_t)h;
    out[2 * i + 1] = (uint8_t)(h >> 8);
  }
}

#if defined(__x86_64__)
#include <immintrin.h>
#define CK_F16C __attribute__((target("avx2,f16c")))

int ck_uses_f16c(void) {
  static int cached = -1;
  if (cached < 0) cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  return cached;
}

CK_F16C static void f16c_to_floats(const uint8_t *in, float *out, size_t count) {
  size_t i = 0;
  for (; i + 8 <= count; i += 8) _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + 2 * i))));
  portable_to_floats(in + 2 * i, out + i, count - i);
}

CK_F16C static void f16c_to_halves(const float *in, uint8_t *out, size_t count, int clamp, size_t *overflowed,
                                   size_t *nans, size_t *infinities, int stream) {
  const __m256 magnitude_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256 infinity = _mm256_castsi256_ps(_mm256_set1_epi32(0x7F800000));
  const __m128i half_magnitude = _mm_set1_epi16(0x7FFF), half_infinity = _mm_set1_epi16(0x7C00);
  size_t over = 0, nan = 0, infinite = 0, i = 0;
  if (stream) {
    // Non-temporal stores need 16-byte aligned destinations: the first few values go the usual
    // way (none at all if the output is not even 2-byte aligned).
    if ((uintptr_t)out & 1u) stream = 0;
    size_t head = stream ? ((16u - ((uintptr_t)out & 15u)) & 15u) / 2u : 0;
    if (head > count) head = count;
    portable_to_halves(in, out, head, clamp, overflowed, nans, infinities);
    i = head;
  }
  for (; i + 8 <= count; i += 8) {
    __m256 x = _mm256_loadu_ps(in + i);
    __m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT);
    nan += (size_t)__builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
    if (_mm_movemask_epi8(_mm_cmpeq_epi16(_mm_and_si128(h, half_magnitude), half_infinity))) {
      // Rare: some lane is ±infinity; those from finite inputs overflowed, the others were ±infinity.
      int finite = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_and_ps(x, magnitude_mask), infinity, _CMP_LT_OQ));
      uint16_t lanes[8];
      _mm_storeu_si128((__m128i *)lanes, h);
      for (int k = 0; k < 8; k++) {
        if ((lanes[k] & 0x7FFFu) != 0x7C00u) continue;
        if ((finite >> k) & 1) {
          over += 1;
          if (clamp) lanes[k] = (uint16_t)((lanes[k] & 0x8000u) | 0x7BFFu);
        } else {
          infinite += 1;
        }
      }
      h = _mm_loadu_si128((const __m128i *)lanes);
    }
    if (stream) {
      _mm_stream_si128((__m128i *)(out + 2 * i), h);
    } else {
      _mm_storeu_si128((__m128i *)(out + 2 * i), h);
    }
  }
  // The streamed stores are visible to other threads (and devices) before anything stored after.
  if (stream) _mm_sfence();
  *overflowed += over;
  *nans += nan;
  *infinities += infinite;
  portable_to_halves(in + i, out + 2 * i, count - i, clamp, overflowed, nans, infinities);
}

void ck_halves_to_floats(const void *halves, float *floats, size_t count) {
  if (ck_uses_f16c()) f16c_to_floats(halves, floats, count);
  else portable_to_floats(halves, floats, count);
}

void ck_floats_to_halves(const float *floats, void *halves, size_t count, int clamp, size_t *overflowed,
                         size_t *nans, size_t *infinities, int stream) {
  if (ck_uses_f16c()) f16c_to_halves(floats, halves, count, clamp, overflowed, nans, infinities, stream);
  else portable_to_halves(floats, halves, count, clamp, overflowed, nans, infinities);
}

#else

int ck_uses_f16c(void) { return 0; }

void ck_halves_to_floats(const void *halves, float *floats, size_t count) { portable_to_floats(halves, floats, count); }

void ck_floats_to_halves(const float *floats, void *halves, size_t count, int clamp, size_t *overflowed,
                         size_t *nans, size_t *infinities, int stream) {
  (void)stream;
  portable_to_halves(floats, halves, count, clamp, overflowed, nans, infinities);
}

#endif
