// Fused window attention of ELAN's GMSA, one window-size group per call.
//
// Why: the exported graph cuts windows out with a Gather, writes each window's T x T attention map
// to memory (MatMul), reads it back twice (Softmax, MatMul) and puts the pixels back with another
// Gather. Here the windows are read straight from the channel-last projection at the group's
// channel offset (the cyclic shift is index arithmetic), and each window's map lives only in a
// per-thread block of 16 rows x T columns that stays in L1: compute the logits of 16 rows,
// softmax them, multiply with v, write the 16 output pixels, next rows.
//
// Layout: `proj` is (1, H, W, C) float32, contiguous. Token (dh, dw) of window (r, c) reads pixel
// ((r*ws + dh + s) mod H, (c*ws + dw + s) mod W), s = ws/2 when shifted else 0, and writes its
// output to the same pixel of `out` (1, H, W, Cout) at `out_offset`. Windows are row-major.
// out = softmax(q qT) v per window, no scale, softmax with the row max subtracted.
//
// Map storage for the block's second GMSA ("store"): (windows, T/16, T, 16), float32 or float16
// (IEEE half, F16C on the AVX2 path), blocks of 16 rows stored column by column (see map_index);
// rows are normalised before they are stored.
//
// Paths, chosen at run time: "avx2" (AVX2 + FMA + F16C, FP32), "scalar" (plain C++, any CPU),
// "bf16" (AVX-512 BF16: q, v and the map rounded to bf16, FP32 accumulation through
// _mm512_dpbf16_ps; only where the CPU has avx512bf16, and only when asked for).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace {

constexpr int64_t kLanes = 16;  // map rows per block held by a thread (two AVX2 vectors, one AVX-512)

struct Geometry {
  int64_t height, width, ws, shift, tokens, columns, windows;
};

// What one call computes, with raw pointers already offset to the group's channels.
struct Job {
  const float* q = nullptr;  // q of token pixel p: q[p * q_stride + k], k < channels
  int64_t q_stride = 0;
  const float* v = nullptr;
  int64_t v_stride = 0;
  float* out = nullptr;
  int64_t out_stride = 0;
  int64_t channels = 0;
  const void* map_in = nullptr;  // when set: reuse these maps instead of computing softmax(q qT)
  void* map_out = nullptr;       // when set: store the normalised maps here
  bool map_half = false;         // maps are float16 (else float32)
  Geometry g{};
};

inline void window_pixels(const Geometry& g, int64_t w, int64_t* pix) {
  const int64_t r = w / g.columns, c = w % g.columns;
  for (int64_t dh = 0; dh < g.ws; ++dh) {
    const int64_t h = (r * g.ws + dh + g.shift) % g.height;
    for (int64_t dw = 0; dw < g.ws; ++dw) {
      pix[dh * g.ws + dw] = h * g.width + (c * g.ws + dw + g.shift) % g.width;
    }
  }
}

// IEEE half <-> float in plain C++ (round to nearest even), for the scalar path.
inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t mant = x & 0x7fffffu;
  const int32_t exp = static_cast<int32_t>((x >> 23) & 0xffu) - 127 + 15;
  if (((x >> 23) & 0xffu) == 0xffu) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0u));
  if (exp >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  if (exp <= 0) {
    if (exp < -10) return static_cast<uint16_t>(sign);
    const uint32_t m = mant | 0x800000u;
    const int shift = 14 - exp;
    uint32_t half = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;  // may carry into the exponent: correct
  return static_cast<uint16_t>(sign | half);
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, x;
  if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do { ++e; mant <<= 1; } while (!(mant & 0x400u));
      x = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

// Map layout, shared by all paths: (windows, T/16, T, 16) with maps[w][b][j][l] = P[16 b + l][j],
// i.e. each block of 16 map rows stored column by column, as the vector paths produce and
// consume it. Only these kernels read it, so it need not be row-major.
inline int64_t map_index(int64_t T, int64_t w, int64_t i, int64_t j) {
  return ((w * (T / kLanes) + i / kLanes) * T + j) * kLanes + i % kLanes;
}

// ---------------------------------------------------------------------------------------------
// Plain C++ path: any CPU. One map row at a time.

void scalar_windows(const Job& job, int64_t begin, int64_t end) {
  const Geometry& g = job.g;
  const int64_t T = g.tokens, C = job.channels;
  std::vector<int64_t> pix(T);
  std::vector<float> p(T);
  std::vector<double> acc(C);
  for (int64_t w = begin; w < end; ++w) {
    window_pixels(g, w, pix.data());
    for (int64_t i = 0; i < T; ++i) {
      if (job.map_in) {
        for (int64_t j = 0; j < T; ++j) {
          const int64_t at = map_index(T, w, i, j);
          p[j] = job.map_half ? half_to_float(static_cast<const uint16_t*>(job.map_in)[at])
                              : static_cast<const float*>(job.map_in)[at];
        }
      } else {
        const float* qi = job.q + pix[i] * job.q_stride;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < T; ++j) {
          const float* qj = job.q + pix[j] * job.q_stride;
          float s = 0.f;
          for (int64_t k = 0; k < C; ++k) s += qi[k] * qj[k];
          p[j] = s;
          mx = std::max(mx, s);
        }
        float sum = 0.f;
        for (int64_t j = 0; j < T; ++j) {
          p[j] = std::exp(p[j] - mx);
          sum += p[j];
        }
        const float inv = 1.f / sum;
        for (int64_t j = 0; j < T; ++j) p[j] *= inv;
        if (job.map_out) {
          for (int64_t j = 0; j < T; ++j) {
            const int64_t at = map_index(T, w, i, j);
            if (job.map_half) {
              static_cast<uint16_t*>(job.map_out)[at] = float_to_half(p[j]);
            } else {
              static_cast<float*>(job.map_out)[at] = p[j];
            }
          }
        }
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = 0; j < T; ++j) {
        const float* vj = job.v + pix[j] * job.v_stride;
        for (int64_t k = 0; k < C; ++k) acc[k] += static_cast<double>(p[j]) * vj[k];
      }
      float* o = job.out + pix[i] * job.out_stride;
      for (int64_t k = 0; k < C; ++k) o[k] = static_cast<float>(acc[k]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA (+ F16C for half maps), FP32.
//
// Blocking: a window's map is produced 16 rows (i0 .. i0+15) at a time, held transposed as
// s[j][l] = logit(i0 + l, j), j < T (T x 16 floats: 1 KB for ws 4, 16 KB for ws 16, in L1).
// Since q·qT is symmetric, s[j][l] = q_j · q_{i0+l}: a 4 x 16 register tile per step, with the
// 16 query rows as two vectors and 4 tokens j broadcast. The softmax then runs down the columns,
// lane-wise (no horizontal reductions), and map·v accumulates 16 rows x 5 channels in 10
// registers, each FMA doing 8 useful MACs (20 channels need no padding).

#define AVX2_TARGET __attribute__((target("avx2,fma,f16c")))

// exp(s - m) for s <= m (softmax after the max is subtracted), as 2^t with t = (s - m)·log2(e):
// t = n + f, |f| <= 1/2, 2^f by its degree-5 Taylor polynomial (relative error < 3e-6), 2^n added
// to the exponent bits. n comes from the 1.5·2^23 rounding trick (adds, which run beside the FMAs).
// t is clamped at -126, so logit gaps of 1e6 give a tiny normal number, never NaN, inf or garbage.
AVX2_TARGET inline __m256 exp_shifted(__m256 s, __m256 m) {
  const __m256 magic = _mm256_set1_ps(12582912.f);  // 1.5 * 2^23
  // s - m first (exact where s is near m): folding m into an FMA would lose the small gaps of large logits
  const __m256 t = _mm256_max_ps(_mm256_mul_ps(_mm256_sub_ps(s, m), _mm256_set1_ps(1.44269504088896341f)), _mm256_set1_ps(-126.f));
  const __m256 kb = _mm256_add_ps(t, magic);  // low mantissa bits of kb hold n = round(t)
  const __m256 f = _mm256_sub_ps(t, _mm256_sub_ps(kb, magic));
  __m256 y = _mm256_fmadd_ps(_mm256_set1_ps(1.3333558146428443e-3f), f, _mm256_set1_ps(9.6181291076284772e-3f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(5.5504108664821580e-2f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(2.4022650695910071e-1f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(6.9314718055994531e-1f));
  y = _mm256_fmadd_ps(y, f, _mm256_set1_ps(1.f));
  const __m256i scale = _mm256_slli_epi32(_mm256_castps_si256(kb), 23);  // n << 23 (mod 2^32)
  return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(y), scale));
}

// s[j][l] = q_j · q_{i0+l} for all j < T. q: T x C row-major (broadcast side); qt: C x T.
AVX2_TARGET inline void logits_block(const float* q, const float* qt, int64_t i0, int64_t T, int64_t C, float* s) {
  for (int64_t j = 0; j < T; j += 4) {
    __m256 acc[4][2];
    for (int r = 0; r < 4; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < C; ++k) {
      const __m256 b0 = _mm256_loadu_ps(qt + k * T + i0), b1 = _mm256_loadu_ps(qt + k * T + i0 + 8);
      for (int r = 0; r < 4; ++r) {
        const __m256 a = _mm256_broadcast_ss(q + (j + r) * C + k);
        acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
      }
    }
    for (int r = 0; r < 4; ++r) {
      _mm256_storeu_ps(s + (j + r) * kLanes, acc[r][0]);
      _mm256_storeu_ps(s + (j + r) * kLanes + 8, acc[r][1]);
    }
  }
}

// Softmax down each of the 16 columns: s = exp(s - column max) in place; inv[l] = 1 / column sum.
AVX2_TARGET inline void softmax_block(float* s, int64_t T, float* inv) {
  __m256 m0 = _mm256_loadu_ps(s), m1 = _mm256_loadu_ps(s + 8);
  for (int64_t j = 1; j < T; ++j) {
    m0 = _mm256_max_ps(m0, _mm256_loadu_ps(s + j * kLanes));
    m1 = _mm256_max_ps(m1, _mm256_loadu_ps(s + j * kLanes + 8));
  }
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (int64_t j = 0; j < T; ++j) {
    const __m256 e0 = exp_shifted(_mm256_loadu_ps(s + j * kLanes), m0);
    const __m256 e1 = exp_shifted(_mm256_loadu_ps(s + j * kLanes + 8), m1);
    _mm256_storeu_ps(s + j * kLanes, e0);
    _mm256_storeu_ps(s + j * kLanes + 8, e1);
    a0 = _mm256_add_ps(a0, e0);
    a1 = _mm256_add_ps(a1, e1);
  }
  const __m256 one = _mm256_set1_ps(1.f);  // sums are >= 1: each column's max term is exp(0)
  _mm256_storeu_ps(inv, _mm256_div_ps(one, a0));
  _mm256_storeu_ps(inv + 8, _mm256_div_ps(one, a1));
}

// The block's map, normalised, to maps[w][b] (T x 16, contiguous).
AVX2_TARGET inline void store_map_block(const Job& job, int64_t at, const float* s, const float* inv, int64_t T) {
  const __m256 k0 = _mm256_loadu_ps(inv), k1 = _mm256_loadu_ps(inv + 8);
  if (job.map_half) {
    uint16_t* dst = static_cast<uint16_t*>(job.map_out) + at;
    for (int64_t j = 0; j < T * kLanes; j += kLanes) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j),
                       _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(s + j), k0), _MM_FROUND_TO_NEAREST_INT));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j + 8),
                       _mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(s + j + 8), k1), _MM_FROUND_TO_NEAREST_INT));
    }
  } else {
    float* dst = static_cast<float*>(job.map_out) + at;
    for (int64_t j = 0; j < T * kLanes; j += kLanes) {
      _mm256_storeu_ps(dst + j, _mm256_mul_ps(_mm256_loadu_ps(s + j), k0));
      _mm256_storeu_ps(dst + j + 8, _mm256_mul_ps(_mm256_loadu_ps(s + j + 8), k1));
    }
  }
}

AVX2_TARGET inline void load_map_block(const Job& job, int64_t at, float* s, int64_t T) {
  if (job.map_half) {
    const uint16_t* src = static_cast<const uint16_t*>(job.map_in) + at;
    for (int64_t j = 0; j < T * kLanes; j += 8) {
      _mm256_storeu_ps(s + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j))));
    }
  } else {
    std::memcpy(s, static_cast<const float*>(job.map_in) + at, sizeof(float) * T * kLanes);
  }
}

// o[ch][l] (ch0 <= ch < ch0 + NC) = sum_j s[j][l] v[j][ch]: 16 rows x NC channels in 2·NC registers.
template <int NC>
AVX2_TARGET inline void map_times_v(const float* s, const float* v, int64_t T, int64_t C, int64_t ch0, float* o) {
  __m256 acc[NC][2];
  for (int c = 0; c < NC; ++c) acc[c][0] = acc[c][1] = _mm256_setzero_ps();
  for (int64_t j = 0; j < T; ++j) {
    const __m256 p0 = _mm256_loadu_ps(s + j * kLanes), p1 = _mm256_loadu_ps(s + j * kLanes + 8);
    for (int c = 0; c < NC; ++c) {
      const __m256 a = _mm256_broadcast_ss(v + j * C + ch0 + c);
      acc[c][0] = _mm256_fmadd_ps(p0, a, acc[c][0]);
      acc[c][1] = _mm256_fmadd_ps(p1, a, acc[c][1]);
    }
  }
  for (int c = 0; c < NC; ++c) {
    _mm256_storeu_ps(o + (ch0 + c) * kLanes, acc[c][0]);
    _mm256_storeu_ps(o + (ch0 + c) * kLanes + 8, acc[c][1]);
  }
}

AVX2_TARGET void avx2_windows(const Job& job, int64_t begin, int64_t end) {
  const Geometry& g = job.g;
  const int64_t T = g.tokens, C = job.channels;
  const bool compute = job.map_in == nullptr;
  std::vector<int64_t> pix(T);
  std::vector<float> q(compute ? T * C : 0), qt(compute ? C * T : 0), v(T * C), s(T * kLanes), o(C * kLanes);
  float inv[kLanes];
  for (int64_t w = begin; w < end; ++w) {
    window_pixels(g, w, pix.data());
    for (int64_t t = 0; t < T; ++t) {  // this window's q and v, packed once, read T / 16 times
      std::memcpy(v.data() + t * C, job.v + pix[t] * job.v_stride, sizeof(float) * C);
      if (compute) {
        const float* qs = job.q + pix[t] * job.q_stride;
        std::memcpy(q.data() + t * C, qs, sizeof(float) * C);
        for (int64_t k = 0; k < C; ++k) qt[k * T + t] = qs[k];
      }
    }
    for (int64_t i0 = 0; i0 < T; i0 += kLanes) {
      const int64_t at = (w * T + i0) * T;  // = map_index(T, w, i0, 0)
      if (compute) {
        logits_block(q.data(), qt.data(), i0, T, C, s.data());
        softmax_block(s.data(), T, inv);
        if (job.map_out) store_map_block(job, at, s.data(), inv, T);
      } else {
        load_map_block(job, at, s.data(), T);
        std::fill(inv, inv + kLanes, 1.f);
      }
      for (int64_t ch0 = 0; ch0 < C; ch0 += 5) {
        switch (std::min<int64_t>(5, C - ch0)) {
          case 1: map_times_v<1>(s.data(), v.data(), T, C, ch0, o.data()); break;
          case 2: map_times_v<2>(s.data(), v.data(), T, C, ch0, o.data()); break;
          case 3: map_times_v<3>(s.data(), v.data(), T, C, ch0, o.data()); break;
          case 4: map_times_v<4>(s.data(), v.data(), T, C, ch0, o.data()); break;
          default: map_times_v<5>(s.data(), v.data(), T, C, ch0, o.data()); break;
        }
      }
      for (int64_t l = 0; l < kLanes; ++l) {
        float* dst = job.out + pix[i0 + l] * job.out_stride;
        for (int64_t ch = 0; ch < C; ++ch) dst[ch] = o[ch * kLanes + l] * inv[l];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// AVX-512 BF16: q, v and the map rounded to bf16, products accumulated in FP32 by vdpbf16ps,
// which sums pairs: acc[i] += a[2i] b[2i] + a[2i+1] b[2i+1]. Pairs run along the contracted
// axis (channels for q·qT, tokens for map·v), packed as uint32 with the even element low. Same
// blocking as the AVX2 path with one 16-lane register per block row; the softmax stays FP32
// (the AVX2 helpers above: AVX-512 CPUs have AVX2). Compiled everywhere, run only where
// __builtin_cpu_supports("avx512bf16").

#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")))

inline uint16_t float_to_bf16(float f) {  // round to nearest even; inputs here are finite
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

inline uint32_t bf16_pair(float even, float odd) {
  return static_cast<uint32_t>(float_to_bf16(even)) | (static_cast<uint32_t>(float_to_bf16(odd)) << 16);
}

// o[ch][l] (ch0 <= ch < ch0 + NC) = sum_j p[j][l] v[j][ch], pairs of j: pp[jp] (16 lanes), vp[jp][ch].
template <int NC>
BF16_TARGET inline void bf16_map_times_v(const uint32_t* pp, const uint32_t* vp, int64_t T, int64_t C, int64_t ch0, float* o) {
  __m512 acc[NC];
  for (int c = 0; c < NC; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t jp = 0; jp < T / 2; ++jp) {
    const __m512bh a = (__m512bh)_mm512_loadu_si512(pp + jp * kLanes);
    for (int c = 0; c < NC; ++c) {
      const __m512bh b = (__m512bh)_mm512_set1_epi32(static_cast<int>(vp[jp * C + ch0 + c]));
      acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
    }
  }
  for (int c = 0; c < NC; ++c) _mm512_storeu_ps(o + (ch0 + c) * kLanes, acc[c]);
}

BF16_TARGET void bf16_windows(const Job& job, int64_t begin, int64_t end) {
  const Geometry& g = job.g;
  const int64_t T = g.tokens, C = job.channels, CP2 = (C + 1) / 2;
  const bool compute = job.map_in == nullptr;
  std::vector<int64_t> pix(T);
  std::vector<uint32_t> qp(compute ? T * CP2 : 0), qtp(compute ? CP2 * T : 0), vp((T / 2) * C), pp((T / 2) * kLanes);
  std::vector<float> s(T * kLanes), o(C * kLanes);
  float inv[kLanes];
  for (int64_t w = begin; w < end; ++w) {
    window_pixels(g, w, pix.data());
    if (compute) {
      for (int64_t t = 0; t < T; ++t) {
        const float* qs = job.q + pix[t] * job.q_stride;
        for (int64_t kp = 0; kp < CP2; ++kp) {
          const uint32_t pair = bf16_pair(qs[2 * kp], 2 * kp + 1 < C ? qs[2 * kp + 1] : 0.f);
          qp[t * CP2 + kp] = pair;
          qtp[kp * T + t] = pair;
        }
      }
    }
    for (int64_t t = 0; t < T; t += 2) {  // v pairs along tokens: vp[t/2][ch] = (v[t][ch], v[t+1][ch])
      const float* v0 = job.v + pix[t] * job.v_stride;
      const float* v1 = job.v + pix[t + 1] * job.v_stride;
      for (int64_t ch = 0; ch < C; ++ch) vp[(t / 2) * C + ch] = bf16_pair(v0[ch], v1[ch]);
    }
    for (int64_t i0 = 0; i0 < T; i0 += kLanes) {
      const int64_t at = (w * T + i0) * T;
      if (compute) {
        for (int64_t j = 0; j < T; j += 4) {
          __m512 acc[4];
          for (int r = 0; r < 4; ++r) acc[r] = _mm512_setzero_ps();
          for (int64_t kp = 0; kp < CP2; ++kp) {
            const __m512bh b = (__m512bh)_mm512_loadu_si512(qtp.data() + kp * T + i0);
            for (int r = 0; r < 4; ++r) {
              const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(qp[(j + r) * CP2 + kp]));
              acc[r] = _mm512_dpbf16_ps(acc[r], a, b);
            }
          }
          for (int r = 0; r < 4; ++r) _mm512_storeu_ps(s.data() + (j + r) * kLanes, acc[r]);
        }
        softmax_block(s.data(), T, inv);
        if (job.map_out) store_map_block(job, at, s.data(), inv, T);
      } else {
        load_map_block(job, at, s.data(), T);
        std::fill(inv, inv + kLanes, 1.f);
      }
      for (int64_t jp = 0; jp < T / 2; ++jp) {  // map rows j = 2jp, 2jp+1 as bf16 pairs per lane
        const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(s.data() + 2 * jp * kLanes)));
        const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(s.data() + (2 * jp + 1) * kLanes)));
        _mm512_storeu_si512(pp.data() + jp * kLanes, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
      }
      for (int64_t ch0 = 0; ch0 < C; ch0 += 8) {
        switch (std::min<int64_t>(8, C - ch0)) {
          case 1: bf16_map_times_v<1>(pp.data(), vp.data(), T, C, ch0, o.data()); break;
          case 2: bf16_map_times_v<2>(pp.data(), vp.data(), T, C, ch0, o.data()); break;
          case 3: bf16_map_times_v<3>(pp.data(), vp.data(), T, C, ch0, o.data()); break;
          case 4: bf16_map_times_v<4>(pp.data(), vp.data(), T, C, ch0, o.data()); break;
          case 5: bf16_map_times_v<5>(pp.data(), vp.data(), T, C, ch0, o.data()); break;
          case 6: bf16_map_times_v<6>(pp.data(), vp.data(), T, C, ch0, o.data()); break;
          case 7: bf16_map_times_v<7>(pp.data(), vp.data(), T, C, ch0, o.data()); break;
          default: bf16_map_times_v<8>(pp.data(), vp.data(), T, C, ch0, o.data()); break;
        }
      }
      for (int64_t l = 0; l < kLanes; ++l) {
        float* dst = job.out + pix[i0 + l] * job.out_stride;
        for (int64_t ch = 0; ch < C; ++ch) dst[ch] = o[ch * kLanes + l] * inv[l];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatch and the Python-facing functions.

bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"); }
bool has_bf16() { return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"); }

// "auto" -> the path that runs for `precision` on this CPU; an explicit path is checked.
std::string resolve_path(const std::string& path, const std::string& precision) {
  TORCH_CHECK(precision == "f32" || precision == "bf16", "precision is f32 or bf16, got ", precision);
  if (precision == "bf16") {
    TORCH_CHECK(path == "auto" || path == "bf16", "bf16 precision runs only on the bf16 path");
    TORCH_CHECK(has_bf16(), "bf16 precision needs a CPU with AVX-512 BF16 (avx512bf16); this one has none");
    return "bf16";
  }
  if (path == "auto") return has_avx2() ? "avx2" : "scalar";
  TORCH_CHECK(path == "scalar" || path == "avx2", "f32 precision runs on the scalar or avx2 path, got ", path);
  TORCH_CHECK(path != "avx2" || has_avx2(), "the avx2 path needs AVX2, FMA and F16C");
  return path;
}

void check_pixels(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4 && t.size(0) == 1, name, " must be (1, H, W, C)");
  TORCH_CHECK(t.scalar_type() == torch::kFloat32 && t.is_contiguous() && t.device().is_cpu(), name,
              " must be a contiguous CPU float32 tensor");
}

Geometry geometry_of(const torch::Tensor& t, int64_t ws, bool shifted) {
  const int64_t H = t.size(1), W = t.size(2);
  TORCH_CHECK(ws > 0 && ws % 4 == 0, "the window size must be a multiple of 4 (T = ws*ws a multiple of 16), got ", ws);
  TORCH_CHECK(H % ws == 0 && W % ws == 0, "H and W must be multiples of the window size ", ws);
  return Geometry{H, W, ws, shifted ? ws / 2 : 0, ws * ws, W / ws, (H / ws) * (W / ws)};
}

void run(Job& job, const std::string& path) {
  const Geometry& g = job.g;
  const int64_t grain = std::max<int64_t>(1, 64 / g.tokens);
  at::parallel_for(0, g.windows, grain, [&](int64_t begin, int64_t end) {
    if (path == "avx2") {
      avx2_windows(job, begin, end);
    } else if (path == "bf16") {
      bf16_windows(job, begin, end);
    } else {
      scalar_windows(job, begin, end);
    }
  });
}

void set_out(Job& job, torch::Tensor& out, int64_t out_offset, const torch::Tensor& like) {
  check_pixels(out, "out");
  TORCH_CHECK(out.size(1) == like.size(1) && out.size(2) == like.size(2), "out must have the input's H and W");
  TORCH_CHECK(out_offset >= 0 && out_offset + job.channels <= out.size(3), "out_offset + channels exceeds out's channels");
  job.out = out.data_ptr<float>() + out_offset;
  job.out_stride = out.size(3);
}

void set_maps(Job& job, const torch::Tensor& maps, bool writing) {
  const Geometry& g = job.g;
  TORCH_CHECK(maps.dim() == 4 && maps.size(0) == g.windows && maps.size(1) == g.tokens / kLanes && maps.size(2) == g.tokens &&
                  maps.size(3) == kLanes,
              "maps must be (windows, T/16, T, 16) = (", g.windows, ", ", g.tokens / kLanes, ", ", g.tokens, ", ", kLanes, ")");
  TORCH_CHECK(maps.is_contiguous() && (maps.scalar_type() == torch::kFloat32 || maps.scalar_type() == torch::kFloat16),
              "maps must be contiguous float32 or float16");
  job.map_half = maps.scalar_type() == torch::kFloat16;
  if (writing) {
    job.map_out = maps.data_ptr();
  } else {
    job.map_in = maps.data_ptr();
  }
}

Job source(const torch::Tensor& q_proj, int64_t q_offset, const torch::Tensor& v_proj, int64_t v_offset,
           int64_t channels, int64_t ws, bool shifted) {
  check_pixels(q_proj, "q projection");
  check_pixels(v_proj, "v projection");
  TORCH_CHECK(q_proj.size(1) == v_proj.size(1) && q_proj.size(2) == v_proj.size(2), "q and v projections differ in H, W");
  TORCH_CHECK(channels > 0 && q_offset >= 0 && q_offset + channels <= q_proj.size(3), "q channels out of range");
  TORCH_CHECK(v_offset >= 0 && v_offset + channels <= v_proj.size(3), "v channels out of range");
  Job job;
  job.q = q_proj.data_ptr<float>() + q_offset;
  job.q_stride = q_proj.size(3);
  job.v = v_proj.data_ptr<float>() + v_offset;
  job.v_stride = v_proj.size(3);
  job.channels = channels;
  job.g = geometry_of(q_proj, ws, shifted);
  return job;
}

// First GMSA, one group: q = proj[..., offset : offset+channels], v = the next `channels`.
void first_gmsa(const torch::Tensor& proj, int64_t offset, int64_t channels, int64_t ws, bool shifted, torch::Tensor out,
                int64_t out_offset, c10::optional<torch::Tensor> maps, const std::string& precision, const std::string& path) {
  Job job = source(proj, offset, proj, offset + channels, channels, ws, shifted);
  set_out(job, out, out_offset, proj);
  if (maps.has_value()) set_maps(job, *maps, true);
  run(job, resolve_path(path, precision));
}

// Second GMSA, "store": out = map . v with the first GMSA's stored maps; v = proj[..., offset : offset+channels].
void second_gmsa_store(const torch::Tensor& proj, int64_t offset, int64_t channels, int64_t ws, bool shifted,
                       const torch::Tensor& maps, torch::Tensor out, int64_t out_offset, const std::string& precision,
                       const std::string& path) {
  Job job = source(proj, offset, proj, offset, channels, ws, shifted);
  set_out(job, out, out_offset, proj);
  set_maps(job, maps, false);
  run(job, resolve_path(path, precision));
}

// Second GMSA, "recompute": softmax(q qT) again from the first GMSA's projection (q at q_offset),
// times this GMSA's v = proj[..., offset : offset+channels].
void second_gmsa_recompute(const torch::Tensor& q_proj, int64_t q_offset, const torch::Tensor& proj, int64_t offset,
                           int64_t channels, int64_t ws, bool shifted, torch::Tensor out, int64_t out_offset,
                           const std::string& precision, const std::string& path) {
  Job job = source(q_proj, q_offset, proj, offset, channels, ws, shifted);
  set_out(job, out, out_offset, proj);
  run(job, resolve_path(path, precision));
}

std::vector<std::string> cpu_paths() {
  std::vector<std::string> paths{"scalar"};
  if (has_avx2()) paths.emplace_back("avx2");
  if (has_bf16()) paths.emplace_back("bf16");
  return paths;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused window attention of ELAN's GMSA (one window-size group per call)";
  m.def("first_gmsa", &first_gmsa, py::arg("proj"), py::arg("offset"), py::arg("channels"), py::arg("ws"),
        py::arg("shifted"), py::arg("out"), py::arg("out_offset"), py::arg("maps") = py::none(),
        py::arg("precision") = "f32", py::arg("path") = "auto");
  m.def("second_gmsa_store", &second_gmsa_store, py::arg("proj"), py::arg("offset"), py::arg("channels"), py::arg("ws"),
        py::arg("shifted"), py::arg("maps"), py::arg("out"), py::arg("out_offset"), py::arg("precision") = "f32",
        py::arg("path") = "auto");
  m.def("second_gmsa_recompute", &second_gmsa_recompute, py::arg("q_proj"), py::arg("q_offset"), py::arg("proj"),
        py::arg("offset"), py::arg("channels"), py::arg("ws"), py::arg("shifted"), py::arg("out"), py::arg("out_offset"),
        py::arg("precision") = "f32", py::arg("path") = "auto");
  m.def("cpu_paths", &cpu_paths, "paths this CPU can run: scalar, avx2, bf16");
  m.def("resolve_path", &resolve_path, py::arg("path"), py::arg("precision"));
}
