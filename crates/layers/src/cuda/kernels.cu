// CUDA kernels of nin-layers' own ops, compiled at run time with NVRTC (see mod.rs).
//
// Every kernel is a template over the float type, instantiated as NAME_f32 and NAME_f64 at the
// end of this file. Tensors are contiguous and row-major ([N, C, H, W] unless said otherwise).
// Gradients are gathers (each thread owns one output value and adds its terms in the same order
// as the CPU kernels), never atomics, so results are deterministic.
//
// NVRTC compiles this file without the CUDA headers: only built-in types and functions.

typedef unsigned int u32;
typedef unsigned long long u64;

#define GRID_STRIDE(i, n) \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (u64)blockDim.x * gridDim.x)

__device__ __forceinline__ float exp_t(float x) { return expf(x); }
__device__ __forceinline__ double exp_t(double x) { return exp(x); }

// ---------------------------------------------------------------------------------------------
// Element-wise: ELU, its gradient, the ReLU mask, and the convolution's bias + ReLU epilogue.

template <typename T>
__device__ void elu_fwd(u64 n, double alpha, const T *x, T *y) {
    GRID_STRIDE(i, n) {
        T v = x[i];
        y[i] = v > T(0) ? v : T(alpha) * (exp_t(v) - T(1));
    }
}

// dx = dy · (1 if x > 0 else y + α), y the forward's output.
template <typename T>
__device__ void elu_bwd(u64 n, double alpha, const T *dy, const T *x, const T *y, T *dx) {
    GRID_STRIDE(i, n) { dx[i] = x[i] > T(0) ? dy[i] : dy[i] * (y[i] + T(alpha)); }
}

// out = g where the ReLU output y is positive, else 0.
template <typename T>
__device__ void relu_mask(u64 n, const T *g, const T *y, T *out) {
    GRID_STRIDE(i, n) { out[i] = y[i] > T(0) ? g[i] : T(0); }
}

// y = relu?(x + bias[c]) over [N, C, HW], the bias read only when has_bias. `v < 0` leaves NaN, as PyTorch.
template <typename T>
__device__ void bias_act(u64 n, u32 c, u32 hw, int relu, int has_bias, const T *bias, const T *x,
                         T *y) {
    GRID_STRIDE(i, n) {
        T v = x[i];
        if (has_bias) v += bias[(i / hw) % c];
        y[i] = (relu && v < T(0)) ? T(0) : v;
    }
}

// ---------------------------------------------------------------------------------------------
// Pooling, with PyTorch's geometry (Pool2dConfig::window in pool/mod.rs).

struct PoolGeom {
    u32 h, w, oh, ow, k, s, p, avg, count_include_pad;
};

// Window `o` along an axis of side `size`: [lo, hi) clipped to the input, and the span with
// padding that an average including padding divides by.
__device__ __forceinline__ void pool_window(const PoolGeom &g, u32 o, u32 size, int *lo, int *hi,
                                            int *span) {
    int start = (int)(o * g.s) - (int)g.p;
    int end_padded = min(start + (int)g.k, (int)(size + g.p));
    *span = end_padded - start;
    *lo = max(start, 0);
    *hi = max(min(end_padded, (int)size), 0);
}

// Row-major index of the first maximal cell of a window (NaN counts as maximal), or -1.
template <typename T>
__device__ int window_argmax(const T *plane, u32 w, int h0, int h1, int w0, int w1) {
    int best = -1;
    T bv = T(0);
    for (int y = h0; y < h1; ++y)
        for (int x = w0; x < w1; ++x) {
            int idx = y * (int)w + x;
            T v = plane[idx];
            if (v != v) return idx;
            if (best < 0 || v > bv) {
                best = idx;
                bv = v;
            }
        }
    return best;
}

__device__ __forceinline__ int avg_divisor(const PoolGeom &g, int h0, int h1, int hs, int w0,
                                           int w1, int ws) {
    if (g.count_include_pad) return hs * ws;
    int d = (h1 - h0) * (w1 - w0);
    return d > 0 ? d : 1;
}

// One thread per output; a max pool records its argmax (in-plane index, 0xffffffff for an empty
// window) when `record`.
template <typename T>
__device__ void pool_fwd(u64 n_out, PoolGeom g, int record, const T *x, T *y, u32 *argmax) {
    GRID_STRIDE(i, n_out) {
        u64 plane = i / ((u64)g.oh * g.ow);
        u32 o = (u32)(i % ((u64)g.oh * g.ow));
        u32 oy = o / g.ow, ox = o % g.ow;
        const T *xp = x + plane * g.h * g.w;
        int h0, h1, hs, w0, w1, ws;
        pool_window(g, oy, g.h, &h0, &h1, &hs);
        pool_window(g, ox, g.w, &w0, &w1, &ws);
        if (g.avg) {
            T sum = T(0);
            for (int yy = h0; yy < h1; ++yy)
                for (int xx = w0; xx < w1; ++xx) sum += xp[yy * (int)g.w + xx];
            y[i] = sum / T(avg_divisor(g, h0, h1, hs, w0, w1, ws));
        } else {
            int best = window_argmax(xp, g.w, h0, h1, w0, w1);
            y[i] = best >= 0 ? xp[best] : -T(__longlong_as_double(0x7ff0000000000000ULL));
            if (record) argmax[i] = best >= 0 ? (u32)best : 0xffffffffu;
        }
    }
}

// The windows along one axis that contain input cell `v`: [*first, *last].
__device__ __forceinline__ void covering(const PoolGeom &g, u32 v, u32 out, int *first,
                                         int *last) {
    int num = (int)(v + g.p) - (int)g.k + 1;
    *first = num > 0 ? (num + (int)g.s - 1) / (int)g.s : 0;
    *last = min((int)((v + g.p) / g.s), (int)out - 1);
}

// Gradient of a pool, one thread per input cell, gathering from the windows that cover it in
// row-major window order. Max: a window's gradient goes to its argmax, taken from `argmax` when
// `use_argmax` (recorded by the forward), else recomputed from `x`. Avg: each window's share.
template <typename T>
__device__ void pool_bwd(u64 n_in, PoolGeom g, int use_argmax, const T *x, const u32 *argmax,
                         const T *dy, T *dx) {
    GRID_STRIDE(i, n_in) {
        u64 plane = i / ((u64)g.h * g.w);
        u32 cell = (u32)(i % ((u64)g.h * g.w));
        u32 cy = cell / g.w, cx = cell % g.w;
        const T *dyp = dy + plane * g.oh * g.ow;
        int oy0, oy1, ox0, ox1;
        covering(g, cy, g.oh, &oy0, &oy1);
        covering(g, cx, g.ow, &ox0, &ox1);
        T acc = T(0);
        for (int oy = oy0; oy <= oy1; ++oy)
            for (int ox = ox0; ox <= ox1; ++ox) {
                u32 o = (u32)oy * g.ow + (u32)ox;
                int h0, h1, hs, w0, w1, ws;
                pool_window(g, oy, g.h, &h0, &h1, &hs);
                pool_window(g, ox, g.w, &w0, &w1, &ws);
                if ((int)cy < h0 || (int)cy >= h1 || (int)cx < w0 || (int)cx >= w1) continue;
                if (g.avg) {
                    acc += dyp[o] / T(avg_divisor(g, h0, h1, hs, w0, w1, ws));
                } else {
                    u32 best = use_argmax ? argmax[plane * g.oh * g.ow + o]
                                      : (u32)window_argmax(x + plane * g.h * g.w, g.w, h0, h1,
                                                           w0, w1);
                    if (best == cell) acc += dyp[o];
                }
            }
        dx[i] = acc;
    }
}

// ---------------------------------------------------------------------------------------------
// Batch norm over [N, C, HW]. `stats` is f64 [2, C]: each channel's mean, then 1/√(σ² + ε).
// Activations: 0 identity, 1 ReLU, 2 ELU(α).

#define BN_THREADS 256

// Sum of `v` over the block, in double; every thread gets it.
__device__ double block_sum(double v, double *shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    double total = shared[0];
    __syncthreads();
    return total;
}

// One block per channel: the mean, then the biased variance from the squared deviations (two
// passes, in double). out: f64 [2, C].
template <typename T>
__device__ void bn_moments(u32 n, u32 c, u32 hw, const T *x, double *out) {
    __shared__ double shared[BN_THREADS];
    u32 ch = blockIdx.x;
    u64 count = (u64)n * hw;
    double sum = 0;
    for (u64 j = threadIdx.x; j < count; j += blockDim.x)
        sum += (double)x[((j / hw) * c + ch) * hw + j % hw];
    double mean = block_sum(sum, shared) / (double)count;
    double sq = 0;
    for (u64 j = threadIdx.x; j < count; j += blockDim.x) {
        double d = (double)x[((j / hw) * c + ch) * hw + j % hw] - mean;
        sq += d * d;
    }
    double var = block_sum(sq, shared) / (double)count;
    if (threadIdx.x == 0) {
        out[ch] = mean;
        out[c + ch] = var;
    }
}

// Per channel (scale, shift) in T, exactly as NormOp::affine on the CPU.
template <typename T>
__device__ __forceinline__ void bn_affine(const double *stats, u32 c, u32 ch, const T *gamma,
                                          const T *beta, T *scale, T *shift) {
    double s = (double)gamma[ch] * stats[c + ch];
    *scale = T(s);
    *shift = T((double)beta[ch] - stats[ch] * s);
}

template <typename T>
__device__ __forceinline__ T bn_activate(int act, double alpha, T v) {
    if (act == 1) return v < T(0) ? T(0) : v;
    if (act == 2) return v > T(0) ? v : T(alpha) * (exp_t(v) - T(1));
    return v;
}

template <typename T>
__device__ void bn_fwd(u64 n, u32 c, u32 hw, int act, double alpha, const double *stats,
                       const T *gamma, const T *beta, const T *x, T *y) {
    GRID_STRIDE(i, n) {
        u32 ch = (u32)((i / hw) % c);
        T scale, shift;
        bn_affine(stats, c, ch, gamma, beta, &scale, &shift);
        y[i] = bn_activate(act, alpha, x[i] * scale + shift);
    }
}

// The gradient that reaches the norm through the activation (as norm_grad's `live`).
template <typename T>
__device__ __forceinline__ T bn_live(int act, double alpha, T scale, T shift, T x, T dy, T y) {
    if (act == 1) return x * scale + shift > T(0) ? dy : T(0);
    if (act == 2) return y > T(0) ? dy : dy * (y + T(alpha));
    return dy;
}

// One block per channel: sums[ch] = Σ g, sums[c + ch] = Σ g·(x − μ) · 1/σ (that is dγ), with g
// the gradient through the activation. `y` is the forward's output for ELU (x otherwise).
template <typename T>
__device__ void bn_bwd_sums(u32 n, u32 c, u32 hw, int act, double alpha, const double *stats,
                            const T *gamma, const T *beta, const T *x, const T *dy, const T *y,
                            double *sums) {
    __shared__ double shared[BN_THREADS];
    u32 ch = blockIdx.x;
    u64 count = (u64)n * hw;
    T scale, shift;
    bn_affine(stats, c, ch, gamma, beta, &scale, &shift);
    double mean = stats[ch];
    double s = 0, d = 0;
    for (u64 j = threadIdx.x; j < count; j += blockDim.x) {
        u64 at = ((j / hw) * c + ch) * hw + j % hw;
        double g = (double)bn_live(act, alpha, scale, shift, x[at], dy[at], y[at]);
        s += g;
        d += g * ((double)x[at] - mean);
    }
    double total = block_sum(s, shared);
    double dot = block_sum(d, shared);
    if (threadIdx.x == 0) {
        sums[ch] = total;
        sums[c + ch] = dot * stats[c + ch];
    }
}

// out = [dx (n values) | dγ (c) | dβ (c)]: dx = k·(g − mean(g) − x̂·mean(g·x̂)), k = γ/σ, for
// batch statistics, and k·g for running ones.
template <typename T>
__device__ void bn_bwd_dx(u64 n, u32 c, u32 hw, int act, double alpha, int batch_stats,
                          double count, const double *stats, const T *gamma, const T *beta,
                          const double *sums, const T *x, const T *dy, const T *y, T *out) {
    GRID_STRIDE(i, n) {
        u32 ch = (u32)((i / hw) % c);
        T scale, shift;
        bn_affine(stats, c, ch, gamma, beta, &scale, &shift);
        double inv_std = stats[c + ch], k = (double)gamma[ch] * inv_std;
        double b = 0, c0 = 0;
        if (batch_stats) {
            double mean_g = sums[ch] / count, mean_dot = sums[c + ch] / count;
            b = -k * mean_dot * inv_std;
            c0 = -k * mean_g - b * stats[ch];
        }
        T g = bn_live(act, alpha, scale, shift, x[i], dy[i], y[i]);
        out[i] = T(k) * g + T(b) * x[i] + T(c0);
    }
    GRID_STRIDE(j, (u64)c) {
        out[n + j] = T(sums[c + j]);
        out[n + c + j] = T(sums[j]);
    }
}

// ---------------------------------------------------------------------------------------------
// Convolution: im2col into [N·OH·OW, C_in·k·k] (one row per output position, so that
// dW = dY₂ · col and dcol = dY₂ᵀ · W₂ are single cuBLAS GEMMs), and its adjoint col2im.

struct ConvGeom {
    u32 c_in, h, w, oh, ow, k, s, p;
};

template <typename T>
__device__ void im2col(u64 n_col, ConvGeom g, const T *x, T *col) {
    u64 ckk = (u64)g.c_in * g.k * g.k, ohw = (u64)g.oh * g.ow;
    GRID_STRIDE(i, n_col) {
        u64 row = i / ckk;
        u32 j = (u32)(i % ckk);
        u64 img = row / ohw;
        u32 o = (u32)(row % ohw);
        u32 ch = j / (g.k * g.k), t = j % (g.k * g.k);
        int yy = (int)((o / g.ow) * g.s + t / g.k) - (int)g.p;
        int xx = (int)((o % g.ow) * g.s + t % g.k) - (int)g.p;
        bool inside = yy >= 0 && yy < (int)g.h && xx >= 0 && xx < (int)g.w;
        col[i] = inside ? x[((img * g.c_in + ch) * g.h + (u32)yy) * g.w + (u32)xx] : T(0);
    }
}

// dx[n, c, y, x] = Σ over the taps (ky, kx) whose window covers (y, x) of dcol[row, col].
template <typename T>
__device__ void col2im(u64 n_in, ConvGeom g, const T *dcol, T *dx) {
    u64 ckk = (u64)g.c_in * g.k * g.k, ohw = (u64)g.oh * g.ow;
    GRID_STRIDE(i, n_in) {
        u32 xx = (u32)(i % g.w);
        u32 yy = (u32)((i / g.w) % g.h);
        u32 ch = (u32)((i / ((u64)g.w * g.h)) % g.c_in);
        u64 img = i / ((u64)g.w * g.h * g.c_in);
        T acc = T(0);
        for (u32 ky = 0; ky < g.k; ++ky) {
            int ty = (int)(yy + g.p) - (int)ky;
            if (ty < 0 || ty % (int)g.s != 0 || ty / (int)g.s >= (int)g.oh) continue;
            for (u32 kx = 0; kx < g.k; ++kx) {
                int tx = (int)(xx + g.p) - (int)kx;
                if (tx < 0 || tx % (int)g.s != 0 || tx / (int)g.s >= (int)g.ow) continue;
                u64 row = img * ohw + (u64)(ty / (int)g.s) * g.ow + (u64)(tx / (int)g.s);
                acc += dcol[row * ckk + (u64)ch * g.k * g.k + ky * g.k + kx];
            }
        }
        dx[i] = acc;
    }
}

// ---------------------------------------------------------------------------------------------
// Instantiations: NAME_f32 and NAME_f64 for each kernel above.

#define INSTANTIATE(T, SUF)                                                                      \
    extern "C" __global__ void elu_fwd_##SUF(u64 n, double a, const T *x, T *y) {               \
        elu_fwd<T>(n, a, x, y);                                                                  \
    }                                                                                            \
    extern "C" __global__ void elu_bwd_##SUF(u64 n, double a, const T *dy, const T *x,          \
                                             const T *y, T *dx) {                               \
        elu_bwd<T>(n, a, dy, x, y, dx);                                                          \
    }                                                                                            \
    extern "C" __global__ void relu_mask_##SUF(u64 n, const T *g, const T *y, T *o) {           \
        relu_mask<T>(n, g, y, o);                                                                \
    }                                                                                            \
    extern "C" __global__ void bias_act_##SUF(u64 n, u32 c, u32 hw, int relu, int hb,           \
                                              const T *b, const T *x, T *y) {                   \
        bias_act<T>(n, c, hw, relu, hb, b, x, y);                                                \
    }                                                                                            \
    extern "C" __global__ void pool_fwd_##SUF(u64 n, PoolGeom g, int rec, const T *x, T *y,     \
                                              u32 *am) {                                        \
        pool_fwd<T>(n, g, rec, x, y, am);                                                        \
    }                                                                                            \
    extern "C" __global__ void pool_bwd_##SUF(u64 n, PoolGeom g, int ua, const T *x,            \
                                              const u32 *am, const T *dy, T *dx) {              \
        pool_bwd<T>(n, g, ua, x, am, dy, dx);                                                    \
    }                                                                                            \
    extern "C" __global__ void bn_moments_##SUF(u32 n, u32 c, u32 hw, const T *x, double *o) {  \
        bn_moments<T>(n, c, hw, x, o);                                                           \
    }                                                                                            \
    extern "C" __global__ void bn_fwd_##SUF(u64 n, u32 c, u32 hw, int act, double a,            \
                                            const double *st, const T *ga, const T *be,         \
                                            const T *x, T *y) {                                 \
        bn_fwd<T>(n, c, hw, act, a, st, ga, be, x, y);                                           \
    }                                                                                            \
    extern "C" __global__ void bn_bwd_sums_##SUF(u32 n, u32 c, u32 hw, int act, double a,       \
                                                 const double *st, const T *ga, const T *be,    \
                                                 const T *x, const T *dy, const T *y,           \
                                                 double *sums) {                                \
        bn_bwd_sums<T>(n, c, hw, act, a, st, ga, be, x, dy, y, sums);                            \
    }                                                                                            \
    extern "C" __global__ void bn_bwd_dx_##SUF(u64 n, u32 c, u32 hw, int act, double a, int bs, \
                                               double count, const double *st, const T *ga,     \
                                               const T *be, const double *sums, const T *x,     \
                                               const T *dy, const T *y, T *o) {                 \
        bn_bwd_dx<T>(n, c, hw, act, a, bs, count, st, ga, be, sums, x, dy, y, o);                \
    }                                                                                            \
    extern "C" __global__ void im2col_##SUF(u64 n, ConvGeom g, const T *x, T *col) {            \
        im2col<T>(n, g, x, col);                                                                 \
    }                                                                                            \
    extern "C" __global__ void col2im_##SUF(u64 n, ConvGeom g, const T *dcol, T *dx) {          \
        col2im<T>(n, g, dcol, dx);                                                               \
    }

INSTANTIATE(float, f32)
INSTANTIATE(double, f64)
