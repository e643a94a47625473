// A stack of FiLM-conditioned affine couplings (pcflow.transforms.PointAffineCoupling), evaluated
// one tile of points at a time through every layer: forward, inverse, and a backward pass that
// recomputes instead of storing activations.
//
// Why a kernel: in eager PyTorch every layer writes its hidden activations to memory, adds the
// biases with broadcast copies, runs the ReLUs as separate passes and reads everything back,
// and the per-point networks' first and last layers are matrix products with 1 to 3 columns.
// Here a tile of P points (64 with AVX-512) is carried through all layers in L1 cache, in a
// points-in-lanes layout (coordinate-major, P points per row), so that every layer is scalar
// weights broadcast against vectors of points: the H x H product is a register-blocked
// microkernel, the first layer, biases, ReLUs, last layer and the coupling itself are fused
// around it, and no horizontal reduction is needed anywhere. Only the per-shape weights move
// between cache levels; the points never leave the tile until the last layer is done.
//
// Layouts (float32, contiguous; L layers, B shapes, D coordinates, H hidden units; net 0
// computes the shift, net 1 the raw log-scale):
//   layout (L, 1 + D) int32: number of transformed coordinates, the transformed coordinates,
//                            then the conditioning ones
//   w1, flat: per layer (2, ni, H), a row per conditioning coordinate; b1 (L, 2, H)
//   wh (L, 2, H, H) [k][j]: the hidden layer, shared by all shapes
//   fs, fb (L, 2, B, H): per-shape FiLM scale and folded bias; the hidden layer's output is
//                        relu((h1 wh) * fs + fb)
//   wl, flat: per layer (2, H, nt); bl, flat: per layer (2, nt)   (the last layer)
//   bound (L,): the softsign bound of the log-scale
// (ni and nt: the layer's numbers of conditioning and transformed coordinates; the flat
// tensors are the layers' parameters concatenated, as they are stored.)

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

#if defined(__AVX512F__)
#define PCF_VL 16
constexpr int MR = 4;
#elif defined(__AVX__)
#define PCF_VL 8
constexpr int MR = 2;
#else
#define PCF_VL 4
constexpr int MR = 4;
#endif
constexpr int VL = PCF_VL;
constexpr int NJ = 4;        // vectors of points per tile
constexpr int P = VL * NJ;   // points per tile

typedef float vf __attribute__((vector_size(PCF_VL * 4)));
typedef int32_t vi __attribute__((vector_size(PCF_VL * 4)));

// One broadcast instruction (vf{} + s would be an add: -0.0 + 0.0 is not -0.0).
inline vf splat(float s) { return __builtin_shuffle(vf{s}, vi{}); }
inline vf load(const float* p) { return *reinterpret_cast<const vf*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vf*>(p) = v; }
inline vf relu(vf v) {
  const vf zero = {};
  return v > zero ? v : zero;
}
inline vf vabs(vf v) { return reinterpret_cast<vf>(reinterpret_cast<vi>(v) & 0x7fffffff); }

// exp with Cephes' expf polynomial: 2^n * p(r), |r| <= ln(2)/2, about 1 ulp on [-87, 88].
inline vf vexp(vf x) {
  const vf lo = splat(-87.0f), hi = splat(88.0f);
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  vf t = x * 1.44269504088896341f + magic;
  vf n = t - magic;
  vi ni = reinterpret_cast<vi>(t) - 0x4B400000;
  vf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  return reinterpret_cast<vf>(reinterpret_cast<vi>(p) + (ni << 23));
}

// The one product of the kernel, register-blocked: acc[r][c] += sum over i < n of
// a[r * a_row + i * a_col] (a scalar, broadcast) * b[i * b_row + c * VL : + VL] (a vector).
// The hidden layer, its backward pass and its weight gradient are all this, with other strides.
template <int NV>
inline void microkernel(vf (&acc)[MR][NV], const float* a, int64_t a_row, int64_t a_col,
                        const float* b, int64_t b_row, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float* bi = b + i * b_row;
    const float* ai = a + i * a_col;
    vf bv[NV];
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) {
      bv[c] = load(bi + c * VL);
#if PCF_VL == 8
      // Keep b in registers: GCC otherwise folds the load into each row's FMA, MR loads per
      // vector, and 10 loads per 8 FMAs is more than AVX2 CPUs' two loads a cycle can feed.
      asm("" : "+x"(bv[c]));
#endif
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const vf w = splat(ai[r * a_row]);
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c) acc[r][c] += w * bv[c];
    }
  }
}

struct Stack {
  int64_t L, B, D, H;
  const int32_t* layout;
  const float *w1, *b1, *wh, *fs, *fb, *wl, *bl, *bound;
  // Offsets of layer l's net-0 weights in the flat w1, wl and bl (net 1's follow them).
  std::vector<int64_t> o1, ol, ob;
};

struct Aligned {
  explicit Aligned(size_t floats)
      : ptr(static_cast<float*>(std::aligned_alloc(64, ((floats * 4 + 63) / 64) * 64))),
        size(floats) {
    if (ptr == nullptr) throw std::bad_alloc();
  }
  Aligned(const Aligned&) = delete;
  Aligned& operator=(const Aligned&) = delete;
  ~Aligned() { std::free(ptr); }
  float* ptr;
  size_t size;
};

// One network (0: the shift, 1: the raw log-scale) of layer l, seen from shape b: its
// coordinates, where its weights and FiLM terms lie, and their offsets (for the gradients).
struct Net {
  Net(const Stack& s, int64_t l, int net, int64_t b)
      : nt(s.layout[l * (1 + s.D)]),
        ni(static_cast<int>(s.D) - nt),
        tr(s.layout + l * (1 + s.D) + 1),
        id(tr + nt),
        ln(l * 2 + net),
        o1(s.o1[l] + net * ni * s.H),
        ol(s.ol[l] + net * s.H * nt),
        ob(s.ob[l] + net * nt),
        w1(s.w1 + o1),
        b1(s.b1 + ln * s.H),
        wh(s.wh + ln * s.H * s.H),
        fs(s.fs + (ln * s.B + b) * s.H),
        fb(s.fb + (ln * s.B + b) * s.H),
        wl(s.wl + ol),
        bl(s.bl + ob) {}
  int nt, ni;              // transformed and conditioning coordinates
  const int32_t *tr, *id;  // their indices
  int64_t ln, o1, ol, ob;  // (layer, net) index; offsets in the flat w1, wl, bl
  const float *w1, *b1, *wh, *fs, *fb, *wl, *bl;
};

// One network of one layer on the tile: out[q] (transformed coordinate q, P points). With
// ``g`` (H, P), the hidden layer's sums before FiLM are kept for the backward pass.
void network(const Stack& s, const Net& n, const float* x, float* h1, float* out,
             float* g = nullptr) {
  const int64_t H = s.H;
  const int nt = n.nt, ni = n.ni;
  const int32_t* id = n.id;
  const float *w1 = n.w1, *b1 = n.b1, *wh = n.wh, *fs = n.fs, *fb = n.fb, *wl = n.wl, *bl = n.bl;

  // First layer, conditioning coordinates -> H, ReLU: h1[k] = relu(b1[k] + sum_d w1[d, k] x[d]).
  for (int64_t k = 0; k < H; ++k) {
    vf acc[NJ];
#pragma GCC unroll 4
    for (int v = 0; v < NJ; ++v) acc[v] = splat(b1[k]);
    for (int q = 0; q < ni; ++q) {
      const vf w = splat(w1[q * H + k]);
      const float* xd = x + id[q] * P;
#pragma GCC unroll 4
      for (int v = 0; v < NJ; ++v) acc[v] += w * load(xd + v * VL);
    }
#pragma GCC unroll 4
    for (int v = 0; v < NJ; ++v) store(h1 + k * P + v * VL, relu(acc[v]));
  }
  for (int q = 0; q < nt; ++q) {
#pragma GCC unroll 4
    for (int v = 0; v < NJ; ++v) store(out + q * P + v * VL, splat(bl[q]));
  }
  // Hidden layer H -> H, FiLM, ReLU, then straight into the last layer. The weights are the
  // layer's own, shared by every shape (they stay in cache); FiLM is applied to the sums.
  for (int64_t j0 = 0; j0 < H; j0 += MR) {
    vf acc[MR][NJ];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < NJ; ++v) acc[r][v] = vf{};
    }
    microkernel<NJ>(acc, wh + j0, 1, H, h1, P, H);  // sum over k of wh[k, j] h1[k, :]
    if (g != nullptr) {
      for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < NJ; ++v) store(g + (j0 + r) * P + v * VL, acc[r][v]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const vf scale = splat(fs[j0 + r]), bias = splat(fb[j0 + r]);
#pragma GCC unroll 4
      for (int v = 0; v < NJ; ++v) acc[r][v] = relu(acc[r][v] * scale + bias);
    }
    for (int q = 0; q < nt; ++q) {
      const float* wq = wl + j0 * nt + q;
#pragma GCC unroll 4
      for (int v = 0; v < NJ; ++v) {
        vf o = load(out + q * P + v * VL);
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) o += wq[r * nt] * acc[r][v];
        store(out + q * P + v * VL, o);
      }
    }
  }
}

// Where the inputs of every `every`-th step are kept for the backward pass: (C, B, N, D) with
// C = (L - 1) / every, entry c holding the inputs of step (c + 1) * every; null data: none.
struct Checkpoints {
  float* data = nullptr;
  int64_t every = 0, N = 0;
  bool at(int64_t step, int64_t L) const {
    return data != nullptr && step > 0 && step < L && step % every == 0;
  }
  float* state(int64_t step, int64_t b, int64_t B, int64_t n0, int64_t D) const {
    return data + ((step / every - 1) * B * N + b * N + n0) * D;
  }
};

void load_tile(const float* src, int64_t D, int64_t count, float* x);
void store_tile(const float* x, int64_t D, int64_t count, float* dst);

// Every layer on one tile: x (D, P) points in lanes, logdet (P,) accumulated. The tile holds
// points n0 to n0 + count of shape b; with checkpoints, it leaves its inputs of every
// `every`-th step there.
void tile(const Stack& s, int64_t b, bool inverse, float* x, float* logdet, float* h1,
          float* shift, float* raw, const Checkpoints& ck, int64_t n0, int64_t count) {
  for (int64_t step = 0; step < s.L; ++step) {
    const int64_t l = inverse ? s.L - 1 - step : step;
    if (ck.at(step, s.L)) store_tile(x, s.D, count, ck.state(step, b, s.B, n0, s.D));
    const Net shift_net(s, l, 0, b), scale_net(s, l, 1, b);
    network(s, shift_net, x, h1, shift);
    network(s, scale_net, x, h1, raw);
    const float bound = s.bound[l];
    for (int q = 0; q < shift_net.nt; ++q) {
      float* xd = x + shift_net.tr[q] * P;
#pragma GCC unroll 4
      for (int v = 0; v < NJ; ++v) {
        const vf u = load(raw + q * P + v * VL);
        const vf log_scale = bound * (u / (1.0f + vabs(u)));
        const vf t = load(shift + q * P + v * VL);
        const vf xv = load(xd + v * VL);
        const vf ld = load(logdet + v * VL);
        if (inverse) {
          store(xd + v * VL, (xv - t) * vexp(-log_scale));
          store(logdet + v * VL, ld - log_scale);
        } else {
          store(xd + v * VL, xv * vexp(log_scale) + t);
          store(logdet + v * VL, ld + log_scale);
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------ backward
//
// The backward pass walks the layers in the reverse of the order they ran in, one tile at a
// time, and rebuilds each layer's inputs from its outputs (couplings are invertible), so no
// activation is stored between the passes, as in reversible networks: per layer it evaluates
// the two networks again (keeping h1 and the pre-FiLM sums g), inverts the coupling, and
// back-propagates through the coupling and both networks. Gradients of the weights shared by
// all shapes are summed per thread (over points in vector lanes, reduced at the end), those
// of the per-shape FiLM terms per shape.

constexpr int MAX_D = 8;  // coordinates per point the backward pass supports

inline int64_t padded(int64_t h) { return (h + VL - 1) / VL * VL; }

struct Grads {
  // Lane-vector sums (reduced over lanes at the end) of w1, b1, wl, bl, in their layouts;
  // plain sums of wh transposed, (L, 2, H, Hp) [j][k], rows padded to whole vectors; lane
  // sums of fs, fb (L, 2, H) for the current shape.
  explicit Grads(const Stack& s)
      : w1(s.o1.back() * VL), b1(s.L * 2 * s.H * VL), wl(s.ol.back() * VL),
        bl(s.ob.back() * VL), wh(s.L * 2 * s.H * padded(s.H)), fs(s.L * 2 * s.H * VL),
        fb(s.L * 2 * s.H * VL) {
    for (Aligned* a : {&w1, &b1, &wl, &bl, &wh, &fs, &fb}) std::fill_n(a->ptr, a->size, 0.0f);
  }
  Aligned w1, b1, wl, bl, wh, fs, fb;  // fs, fb: the current shape's lane sums
  int64_t shape = -1;
};

inline float hsum(vf v) {
  alignas(64) float lanes[VL];
  store(lanes, v);
  float total = 0.0f;
  for (int i = 0; i < VL; ++i) total += lanes[i];
  return total;
}

inline void accumulate(float* lanes, vf v) { store(lanes, load(lanes) + v); }

// Vector stores: `= {}` on such an array compiles to `rep stosq` under -mtune=haswell (the
// AVX2 build), whose start-up costs more than the loop body it sits in, once per hidden unit.
inline void zero_lanes(vf (&lanes)[MAX_D]) {
#pragma GCC unroll 8
  for (int q = 0; q < MAX_D; ++q) lanes[q] = vf{};
}

// Moves the lane sums of the FiLM gradients of the thread's current shape into (L, 2, B, H).
void flush_film(const Stack& s, Grads& gr, float* fs_out, float* fb_out) {
  if (gr.shape < 0) return;
  for (int64_t ln = 0; ln < s.L * 2; ++ln) {
    for (int64_t j = 0; j < s.H; ++j) {
      const int64_t at = (ln * s.H + j) * VL, to = (ln * s.B + gr.shape) * s.H + j;
      fs_out[to] += hsum(load(gr.fs.ptr + at));
      fb_out[to] += hsum(load(gr.fb.ptr + at));
      store(gr.fs.ptr + at, vf{});
      store(gr.fb.ptr + at, vf{});
    }
  }
}

// h1t (P, Hp): the first layer again, relu(b1 + w1^T x), with points as rows (the layout the
// hidden layer's weight gradient needs); columns from H to Hp stay zero. wpad is scratch for
// the padded weights, (MAX_D + 1) rows of Hp.
void first_layer_rows(const Stack& s, const Net& n, const float* x, float* h1t, float* wpad) {
  const int64_t H = s.H, Hp = padded(H);
  const int ni = n.ni;
  const int32_t* id = n.id;
  std::fill_n(wpad, (ni + 1) * Hp, 0.0f);
  std::copy_n(n.b1, H, wpad);
  for (int q = 0; q < ni; ++q) std::copy_n(n.w1 + q * H, H, wpad + (q + 1) * Hp);
  for (int64_t c = 0; c < Hp; c += VL) {
    for (int p = 0; p < P; ++p) {
      vf acc = load(wpad + c);
      for (int q = 0; q < ni; ++q) acc += x[id[q] * P + p] * load(wpad + (q + 1) * Hp + c);
      store(h1t + p * Hp + c, relu(acc));
    }
  }
}

// dwt[j, c0 : c0 + JV * VL] += sum over the tile's points of dg[j, p] h1t[p, k]: the hidden
// layer's weight gradient, transposed ((H, Hp) rows, k in vector lanes).
template <int JV>
void weight_gradient(const float* dg, const float* h1t, float* dwt, int64_t H, int64_t c0) {
  const int64_t Hp = padded(H);
  for (int64_t j0 = 0; j0 < H; j0 += MR) {
    vf acc[MR][JV];
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
      for (int c = 0; c < JV; ++c) acc[r][c] = load(dwt + (j0 + r) * Hp + c0 + c * VL);
    }
    microkernel<JV>(acc, dg + j0 * P, P, 1, h1t + c0, Hp, P);  // sum over p of dg[j, p] h1t[p]
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
      for (int c = 0; c < JV; ++c) store(dwt + (j0 + r) * Hp + c0 + c * VL, acc[r][c]);
    }
  }
}

// Back-propagates d(out) (nt, P) through one network of layer l; adds to dx (D, P) and grads.
void network_backward(const Stack& s, const Net& n, const float* x, const float* h1,
                      const float* g, const float* dout, float* dx, float* dg, float* h1t,
                      float* wpad, Grads& gr) {
  const int64_t H = s.H, ln = n.ln, o1 = n.o1, ol = n.ol, ob = n.ob;
  const int nt = n.nt, ni = n.ni;
  const int32_t* id = n.id;
  const float *w1 = n.w1, *wh = n.wh, *fs = n.fs, *fb = n.fb, *wl = n.wl;

  for (int q = 0; q < nt; ++q) {
    vf sum = {};
#pragma GCC unroll 4
    for (int v = 0; v < NJ; ++v) sum += load(dout + q * P + v * VL);
    accumulate(gr.bl.ptr + (ob + q) * VL, sum);
  }
  // Last layer, ReLU and FiLM: dg = relu'(a2) (dout wl) fs, with a2 = g fs + fb.
  for (int64_t j = 0; j < H; ++j) {
    const vf scale = splat(fs[j]), bias = splat(fb[j]);
    vf dwl[MAX_D], dscale = {}, dbias = {};
    zero_lanes(dwl);
    for (int v = 0; v < NJ; ++v) {
      const vf gv = load(g + j * P + v * VL);
      const vf a2 = gv * scale + bias;
      const vf h2 = relu(a2);
      vf dh2 = {};
      for (int q = 0; q < nt; ++q) {
        const vf o = load(dout + q * P + v * VL);
        dh2 += wl[j * nt + q] * o;
        dwl[q] += o * h2;
      }
      const vf zero = {};
      const vf da2 = a2 > zero ? dh2 : zero;
      dscale += da2 * gv;
      dbias += da2;
      store(dg + j * P + v * VL, da2 * scale);
    }
    for (int q = 0; q < nt; ++q) accumulate(gr.wl.ptr + (ol + j * nt + q) * VL, dwl[q]);
    accumulate(gr.fs.ptr + (ln * H + j) * VL, dscale);
    accumulate(gr.fb.ptr + (ln * H + j) * VL, dbias);
  }
  // Hidden layer's weights: dwh^T += dg h1^T, with h1 evaluated again with points as rows.
  const int64_t Hp = padded(H);
  first_layer_rows(s, n, x, h1t, wpad);
  float* dwt = gr.wh.ptr + ln * H * Hp;
  int64_t c0 = 0;
  for (; c0 + NJ * VL <= Hp; c0 += NJ * VL) weight_gradient<NJ>(dg, h1t, dwt, H, c0);
  for (; c0 < Hp; c0 += VL) weight_gradient<1>(dg, h1t, dwt, H, c0);
  // Hidden layer's inputs, dh1 = wh dg, then the first layer's ReLU, weights and inputs.
  for (int64_t k0 = 0; k0 < H; k0 += MR) {
    vf acc[MR][NJ];
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < NJ; ++v) acc[r][v] = vf{};
    }
    microkernel<NJ>(acc, wh + k0 * H, H, 1, dg, P, H);  // sum over j of wh[k, j] dg[j, :]
    for (int r = 0; r < MR; ++r) {
      const int64_t k = k0 + r;
      vf db1 = {};
      vf dw1[MAX_D];
      zero_lanes(dw1);
      for (int v = 0; v < NJ; ++v) {
        const vf zero = {};
        const vf da1 = load(h1 + k * P + v * VL) > zero ? acc[r][v] : zero;
        db1 += da1;
        for (int q = 0; q < ni; ++q) {
          const float* xd = x + id[q] * P + v * VL;
          dw1[q] += load(xd) * da1;
          float* dxd = dx + id[q] * P + v * VL;
          store(dxd, load(dxd) + w1[q * H + k] * da1);
        }
      }
      accumulate(gr.b1.ptr + (ln * H + k) * VL, db1);
      for (int q = 0; q < ni; ++q) accumulate(gr.w1.ptr + (o1 + q * H + k) * VL, dw1[q]);
    }
  }
}

struct Buffers {
  explicit Buffers(int64_t D, int64_t H)
      : x(D * P), dx(D * P), det(P), dld(P), h1a(H * P), h1b(H * P), ga(H * P), gb(H * P),
        shift(D * P), raw(D * P), dshift(D * P), draw(D * P), dg(H * P), h1t(padded(H) * P),
        wpad((MAX_D + 1) * padded(H)) {}
  Aligned x, dx, det, dld, h1a, h1b, ga, gb, shift, raw, dshift, draw, dg, h1t, wpad;
};

// Back-propagates one tile through every layer: y (D, P) holds the stack's outputs and becomes
// its inputs, dy (D, P) the outputs' gradient and becomes the inputs'; dld (P) is the gradient
// of each point's log-determinant.
//
// Rebuilding inputs from outputs amplifies rounding where the log-scales are large (each
// inverted layer multiplies the error by up to exp(|log_scale|)); with checkpoints, the outputs
// of every `every`-th step are restored exactly before that step is walked back, so the error
// grows over `every` layers at most instead of over the whole stack.
void tile_backward(const Stack& s, int64_t b, bool inverse, Buffers& t, Grads& gr,
                   const Checkpoints& ck, int64_t n0, int64_t count) {
  float* y = t.x.ptr;
  float* dy = t.dx.ptr;
  for (int64_t step = s.L - 1; step >= 0; --step) {  // the steps as the forward pass ran them
    const int64_t l = inverse ? s.L - 1 - step : step;
    if (ck.at(step + 1, s.L)) load_tile(ck.state(step + 1, b, s.B, n0, s.D), s.D, count, y);
    const Net shift_net(s, l, 0, b), scale_net(s, l, 1, b);
    // The conditioning coordinates are the same on both sides of the layer.
    network(s, shift_net, y, t.h1a.ptr, t.shift.ptr, t.ga.ptr);
    network(s, scale_net, y, t.h1b.ptr, t.raw.ptr, t.gb.ptr);
    const float bound = s.bound[l];
    for (int q = 0; q < shift_net.nt; ++q) {
      float* yd = y + shift_net.tr[q] * P;
      float* dyd = dy + shift_net.tr[q] * P;
#pragma GCC unroll 4
      for (int v = 0; v < NJ; ++v) {
        const vf u = load(t.raw.ptr + q * P + v * VL);
        const vf den = 1.0f + vabs(u);
        const vf log_scale = bound * (u / den);
        const vf shift = load(t.shift.ptr + q * P + v * VL);
        const vf out = load(yd + v * VL), dout = load(dyd + v * VL);
        const vf dld = load(t.dld.ptr + v * VL);
        vf in, din, dshift, dlog_scale;
        if (inverse) {  // out = (in - shift) exp(-s), logdet -= s
          const vf e = vexp(-log_scale);
          in = out * vexp(log_scale) + shift;
          din = dout * e;
          dshift = -din;
          dlog_scale = -(dout * out) - dld;
        } else {  // out = in exp(s) + shift, logdet += s
          const vf e = vexp(log_scale);
          in = (out - shift) * vexp(-log_scale);
          din = dout * e;
          dshift = dout;
          dlog_scale = dout * (out - shift) + dld;
        }
        store(yd + v * VL, in);
        store(dyd + v * VL, din);
        store(t.dshift.ptr + q * P + v * VL, dshift);
        store(t.draw.ptr + q * P + v * VL, dlog_scale * (bound / (den * den)));
      }
    }
    network_backward(s, shift_net, y, t.h1a.ptr, t.ga.ptr, t.dshift.ptr, dy, t.dg.ptr,
                     t.h1t.ptr, t.wpad.ptr, gr);
    network_backward(s, scale_net, y, t.h1b.ptr, t.gb.ptr, t.draw.ptr, dy, t.dg.ptr,
                     t.h1t.ptr, t.wpad.ptr, gr);
  }
}

// ----------------------------------------------------------------------------- validation

// Thrown for bad arguments; the C entry points turn it into status 1 and a message.
struct Invalid : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline std::string to_text(const char* s) { return s; }
inline std::string to_text(const std::string& s) { return s; }
template <class T>
inline std::string to_text(T v) { return std::to_string(v); }

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::string message;
  ((message += to_text(parts)), ...);
  throw Invalid(message);
}

}  // namespace

// The stack's sizes and parameters as the caller holds them (see the layouts at the top), with
// the number of elements of every buffer so that nothing is read out of bounds.
struct pcf_couplings {
  int64_t L, B, N, D, H;
  const int32_t* layout;
  const float *w1, *b1, *wh, *fs, *fb, *wl, *bl, *bound;
  int64_t layout_size, w1_size, b1_size, wh_size, fs_size, fb_size, wl_size, bl_size, bound_size;
};

namespace {

// Checks every size and every index of the layout; a kernel must not trust its caller.
Stack make_stack(const pcf_couplings& a) {
  if (a.L < 1 || a.B < 0 || a.N < 0) fail("need L >= 1 layers and B, N >= 0; got L=", a.L);
  if (a.D < 2 || a.D > MAX_D) fail("points must have 2 to ", MAX_D, " coordinates, got ", a.D);
  if (a.H < MR || a.H % MR != 0) fail("hidden width must be a positive multiple of ", MR, ", got ", a.H);
  if (a.layout == nullptr || a.layout_size != a.L * (1 + a.D))
    fail("layout must hold L * (1 + D) = ", a.L * (1 + a.D), " entries, got ", a.layout_size);
  Stack s{a.L, a.B, a.D, a.H, a.layout, a.w1, a.b1, a.wh, a.fs, a.fb, a.wl, a.bl, a.bound,
          {0}, {0}, {0}};
  for (int64_t l = 0; l < a.L; ++l) {
    const int32_t* row = a.layout + l * (1 + a.D);
    const int64_t nt = row[0];
    if (nt < 1 || nt >= a.D)
      fail("layout: layer ", l, " must transform 1 to D - 1 = ", a.D - 1, " coordinates, got ", nt);
    bool seen[MAX_D] = {};
    for (int64_t q = 0; q < a.D; ++q) {
      const int32_t c = row[1 + q];
      if (c < 0 || c >= a.D || seen[c])
        fail("layout: layer ", l, " must list each coordinate 0 to ", a.D - 1,
             " once; entry ", q, " is ", c);
      seen[c] = true;
    }
    s.o1.push_back(s.o1.back() + 2 * (a.D - nt) * a.H);
    s.ol.push_back(s.ol.back() + 2 * a.H * nt);
    s.ob.push_back(s.ob.back() + 2 * nt);
  }
  const std::pair<int64_t, int64_t> sizes[] = {
      {a.w1_size, s.o1.back()},          {a.b1_size, a.L * 2 * a.H},
      {a.wh_size, a.L * 2 * a.H * a.H},  {a.fs_size, a.L * 2 * a.B * a.H},
      {a.fb_size, a.L * 2 * a.B * a.H},  {a.wl_size, s.ol.back()},
      {a.bl_size, s.ob.back()},          {a.bound_size, a.L}};
  const char* names[] = {"w1", "b1", "wh", "fs", "fb", "wl", "bl", "bound"};
  const float* pointers[] = {a.w1, a.b1, a.wh, a.fs, a.fb, a.wl, a.bl, a.bound};
  for (int i = 0; i < 8; ++i) {
    if (pointers[i] == nullptr || sizes[i].first != sizes[i].second)
      fail(names[i], " must hold ", sizes[i].second, " floats for this layout, got ",
           sizes[i].first);
  }
  return s;
}

// Copies a tile of points (B, N, D) into the points-in-lanes layout (D, P), zero-padded.
void load_tile(const float* src, int64_t D, int64_t count, float* x) {
  for (int64_t d = 0; d < D; ++d) {
    for (int64_t p = 0; p < P; ++p) x[d * P + p] = p < count ? src[p * D + d] : 0.0f;
  }
}

void store_tile(const float* x, int64_t D, int64_t count, float* dst) {
  for (int64_t p = 0; p < count; ++p) {
    for (int64_t d = 0; d < D; ++d) dst[p * D + d] = x[d * P + p];
  }
}

// Splits tasks 0..n into `threads` contiguous chunks, one per thread (this one included).
template <class F>
void parallel_for(int64_t n, int64_t threads, const F& body) {
  threads = std::max<int64_t>(1, std::min(threads, n));
  if (threads <= 1) {
    if (n > 0) body(0, n);
    return;
  }
  std::exception_ptr error;
  std::mutex lock;
  auto chunk = [&](int64_t t) {
    try {
      body(n * t / threads, n * (t + 1) / threads);
    } catch (...) {
      const std::lock_guard<std::mutex> guard(lock);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(chunk, t);
  chunk(0);
  for (std::thread& thread : pool) thread.join();
  if (error) std::rethrow_exception(error);
}

Checkpoints make_checkpoints(const pcf_couplings& a, float* data, int64_t every,
                             int64_t size) {
  Checkpoints ck;
  if (data == nullptr || every <= 0) return ck;
  const int64_t needed = (a.L - 1) / every * a.B * a.N * a.D;
  if (size != needed)
    fail("checkpoints must hold (L - 1) / every * B * N * D = ", needed, " floats, got ", size);
  ck.data = data;
  ck.every = every;
  ck.N = a.N;
  return ck;
}

void forward(const pcf_couplings& a, const float* in, float* out, float* ld, float* ck_data,
             int64_t every, int64_t ck_size, bool inverse, int64_t threads) {
  const Stack s = make_stack(a);
  const Checkpoints ck = make_checkpoints(a, ck_data, every, ck_size);
  const int64_t N = a.N, D = s.D, H = s.H;
  const int64_t tiles_per_shape = (N + P - 1) / P;
  parallel_for(s.B * tiles_per_shape, threads, [&](int64_t begin, int64_t end) {
    Aligned x(D * P), det(P), h1(H * P), shift(D * P), raw(D * P);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / tiles_per_shape;
      const int64_t n0 = (task % tiles_per_shape) * P;
      const int64_t count = std::min<int64_t>(P, N - n0);
      load_tile(in + (b * N + n0) * D, D, count, x.ptr);
      std::fill_n(det.ptr, P, 0.0f);
      tile(s, b, inverse, x.ptr, det.ptr, h1.ptr, shift.ptr, raw.ptr, ck, n0, count);
      store_tile(x.ptr, D, count, out + (b * N + n0) * D);
      std::copy_n(det.ptr, count, ld + b * N + n0);
    }
  });
}

// Gradients of a forward call from its outputs (and checkpoints, if it kept them). The
// gradient buffers are (inputs, w1, b1, wh, fs, fb, wl, bl), shaped as their tensors; they are
// overwritten.
void backward(const pcf_couplings& a, const float* y_all, const float* ck_data, int64_t every,
              int64_t ck_size, const float* dy_all, const float* dld_all, bool inverse,
              int64_t threads, float* dx_all, float* const* grad) {
  const Stack s = make_stack(a);
  const Checkpoints ck = make_checkpoints(a, const_cast<float*>(ck_data), every, ck_size);
  const int64_t B = s.B, N = a.N, D = s.D, H = s.H, L = s.L;
  const int64_t film = L * 2 * B * H;
  // Each chunk of tiles (one per thread) sums its own gradients; they are added up at the end.
  std::mutex lock;
  std::vector<std::unique_ptr<Grads>> grads;
  std::vector<std::vector<float>> film_fs, film_fb;
  const int64_t tiles_per_shape = (N + P - 1) / P;
  parallel_for(B * tiles_per_shape, threads, [&](int64_t begin, int64_t end) {
    auto owned = std::make_unique<Grads>(s);
    Grads& gr = *owned;
    std::vector<float> chunk_fs(film, 0.0f), chunk_fb(film, 0.0f);
    Buffers t(D, H);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / tiles_per_shape;
      const int64_t n0 = (task % tiles_per_shape) * P;
      const int64_t count = std::min<int64_t>(P, N - n0);
      if (b != gr.shape) {
        flush_film(s, gr, chunk_fs.data(), chunk_fb.data());
        gr.shape = b;
      }
      // Padding lanes carry zero gradients, so they add nothing to the weights' gradients.
      load_tile(y_all + (b * N + n0) * D, D, count, t.x.ptr);
      load_tile(dy_all + (b * N + n0) * D, D, count, t.dx.ptr);
      std::fill_n(t.dld.ptr, P, 0.0f);
      std::copy_n(dld_all + b * N + n0, count, t.dld.ptr);
      tile_backward(s, b, inverse, t, gr, ck, n0, count);
      store_tile(t.dx.ptr, D, count, dx_all + (b * N + n0) * D);
    }
    flush_film(s, gr, chunk_fs.data(), chunk_fb.data());
    gr.shape = -1;
    const std::lock_guard<std::mutex> guard(lock);
    grads.push_back(std::move(owned));
    film_fs.push_back(std::move(chunk_fs));
    film_fb.push_back(std::move(chunk_fb));
  });
  float *grad_w1 = grad[0], *grad_b1 = grad[1], *grad_wh = grad[2], *grad_fs = grad[3],
        *grad_fb = grad[4], *grad_wl = grad[5], *grad_bl = grad[6];
  const std::pair<const Aligned Grads::*, std::pair<float*, int64_t>> lane_sums[] = {
      {&Grads::w1, {grad_w1, s.o1.back()}},
      {&Grads::b1, {grad_b1, L * 2 * H}},
      {&Grads::wl, {grad_wl, s.ol.back()}},
      {&Grads::bl, {grad_bl, s.ob.back()}}};
  for (const auto& [member, target] : lane_sums) std::fill_n(target.first, target.second, 0.0f);
  std::fill_n(grad_wh, L * 2 * H * H, 0.0f);
  std::fill_n(grad_fs, film, 0.0f);
  std::fill_n(grad_fb, film, 0.0f);
  const int64_t Hp = padded(H);
  for (size_t chunk = 0; chunk < grads.size(); ++chunk) {
    const Grads& gr = *grads[chunk];
    for (const auto& [member, target] : lane_sums) {
      const Aligned& lanes = gr.*member;
      for (int64_t i = 0; i < target.second; ++i) target.first[i] += hsum(load(lanes.ptr + i * VL));
    }
    // (L, 2, H, H) [k][j]; the sums are [j][k]
    for (int64_t ln = 0; ln < L * 2; ++ln) {
      for (int64_t j = 0; j < H; ++j) {
        for (int64_t k = 0; k < H; ++k) {
          grad_wh[(ln * H + k) * H + j] += gr.wh.ptr[(ln * H + j) * Hp + k];
        }
      }
    }
    for (int64_t i = 0; i < film; ++i) {
      grad_fs[i] += film_fs[chunk][i];
      grad_fb[i] += film_fb[chunk][i];
    }
  }
}

// Runs `body`, turning every exception into a status and a message for the caller.
template <class F>
int guarded(char* error, int64_t error_size, const F& body) {
  std::string message;
  int status = 0;
  try {
    body();
  } catch (const Invalid& e) {
    message = e.what();
    status = 1;
  } catch (const std::bad_alloc&) {
    message = "out of memory";
    status = 2;
  } catch (const std::exception& e) {
    message = e.what();
    status = 3;
  }
  if (status != 0 && error != nullptr && error_size > 0) {
    std::snprintf(error, static_cast<size_t>(error_size), "%s", message.c_str());
  }
  return status;
}

}  // namespace

#define PCF_API extern "C" __attribute__((visibility("default")))

// Vector lanes, points per tile and the hidden product's row block of this build.
PCF_API void pcf_couplings_info(int64_t* vector_width, int64_t* tile_points, int64_t* row_block) {
  *vector_width = VL;
  *tile_points = P;
  *row_block = MR;
}

// outputs (B, N, D) and logdet (B, N) of the stack (inverse: noise to data, last layer first).
// Returns 0, or a nonzero status with a message in `error`.
PCF_API int pcf_couplings_forward(const pcf_couplings* stack, const float* inputs, float* outputs,
                                  float* logdet, float* checkpoints, int64_t every,
                                  int64_t checkpoints_size, int inverse, int64_t threads,
                                  char* error, int64_t error_size) {
  return guarded(error, error_size, [&] {
    if (stack == nullptr || inputs == nullptr || outputs == nullptr || logdet == nullptr)
      fail("null pointer argument");
    forward(*stack, inputs, outputs, logdet, checkpoints, every, checkpoints_size, inverse != 0,
            threads);
  });
}

// grads: 8 buffers (inputs, w1, b1, wh, fs, fb, wl, bl), overwritten.
PCF_API int pcf_couplings_backward(const pcf_couplings* stack, const float* outputs,
                                   const float* checkpoints, int64_t every,
                                   int64_t checkpoints_size, const float* grad_outputs,
                                   const float* grad_logdet, int inverse, int64_t threads,
                                   float* const* grads, char* error, int64_t error_size) {
  return guarded(error, error_size, [&] {
    if (stack == nullptr || outputs == nullptr || grad_outputs == nullptr ||
        grad_logdet == nullptr || grads == nullptr)
      fail("null pointer argument");
    for (int i = 0; i < 8; ++i) {
      if (grads[i] == nullptr) fail("null gradient buffer ", i);
    }
    backward(*stack, outputs, checkpoints, every, checkpoints_size, grad_outputs, grad_logdet,
             inverse != 0, threads, grads[0], grads + 1);
  });
}
