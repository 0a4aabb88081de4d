// Fused 3/8-rule RK4 rollout of the Spin-Neural ODE (and its backward pass), float32, CPU.
//
// Why: the twin's MLP is small (H = 32..64), so torch spends most of a step in per-op overhead,
// separate passes over memory and thin GEMMs (K = 2 inputs, N = 2 outputs). Here one call
// integrates a whole batch: every stage of every step stays in L1 and in registers.
//
// Layout: the SIMD lanes are trajectories. A tile of V x 16 trajectories moves through time
// together; a hidden unit's value for the tile is V vectors, so every weight is a broadcast and
// no horizontal sums are ever needed (the output layer is as cheap as the first). Rows are padded
// to a multiple of 16 by the caller. Arrays (row index b innermost, Bp = padded rows):
//   x0 (K, Bp)  u (N+1, D, Bp) drive features  base (H, Bp) first-layer bias + conditions
//   ws (H, K) wd (H, D) first layer | wh (L-1, H_in, H_out) whT (L-1, H_out, H_in) bh (L-1, H)
//   wo (H, K) bo (K) | out (N, K_out, Bp) states after every step (first K_out components)
// For training, the forward also stores every stage's activations act (L, H, S, Bp) and inputs
// inp (K + D, S, Bp), S = 4 N stages; the backward turns the loss gradient g (N, K, Bp) into
// dz (L, H, S, Bp) (pre-activation gradients) and dk (K, S, Bp) (stage outputs' gradients);
// the weight gradients are then a few large GEMMs over these (done by the caller, in torch).
//
// Portable C++17 with GCC/Clang vector extensions: the compiler maps a 16-float vector onto
// AVX-512, 2 x AVX2, 4 x NEON or SSE registers. tanh is Eigen's float rational approximation
// (clamped; within a few ulp of the exact value).
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

typedef float vf __attribute__((vector_size(64)));
typedef float vfu __attribute__((vector_size(64), aligned(4)));
constexpr int W = 16;      // floats per vector
constexpr int MAXK = 16;   // most state components / drive features per stage
constexpr int BLOCK = 4;   // output units computed together in a dense layer

// Benchmarks only (bench_twin.py's breakdown of where the time goes): a build with TWIN_SKIP
// set drops parts of the work, so its results are wrong by design: 1 activations (identity),
// 2 the drive input (interpolation and its first-layer terms), 4 the RK4 stage bookkeeping
// (every stage starts from x).
#ifndef TWIN_SKIP
#define TWIN_SKIP 0
#endif
constexpr bool SKIP_ACTIVATION = TWIN_SKIP & 1, SKIP_INPUT = TWIN_SKIP & 2,
               SKIP_STAGES = TWIN_SKIP & 4;

inline vf ld(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void st(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
inline vf splat(float a) { return a - vf{}; }

inline vf vtanh(vf x) {
    if (SKIP_ACTIVATION) return x;
    const vf c = splat(7.90531110763549805f);
    x = x > c ? c : x;  // clamped this way round, a NaN stays NaN
    x = x < -c ? -c : x;
    const vf x2 = x * x;
    vf p = x2 * splat(-2.76076847742355e-16f) + splat(2.00018790482477e-13f);
    p = x2 * p + splat(-8.60467152213735e-11f);
    p = x2 * p + splat(5.12229709037114e-08f);
    p = x2 * p + splat(1.48572235717979e-05f);
    p = x2 * p + splat(6.37261928875436e-04f);
    p = x2 * p + splat(4.89352455891786e-03f);
    p = x * p;
    vf q = x2 * splat(1.19825839466702e-06f) + splat(1.18534705686654e-04f);
    q = x2 * q + splat(2.26843463243900e-03f);
    q = x2 * q + splat(4.89352518554385e-03f);
    return p / q;
}

struct Net {
    int K, D, H, L;
    const float *ws, *wd, *wh, *whT, *bh, *wo, *bo;
};

// acc[a] = bias[i0 + a] + sum_j w[j * H + i0 + a] * in[j] for a < A (V vectors each), then
// epi(i0 + a, acc[a]). The register-blocked inner product of every dense layer.
template <int A, int V, class Epi>
inline void dense(int H, int i0, const float* w, const float* bias, const float* in, Epi&& epi) {
    vf acc[A][V];
    for (int a = 0; a < A; a++)
        for (int v = 0; v < V; v++) acc[a][v] = splat(bias ? bias[i0 + a] : 0.0f);
    for (int j = 0; j < H; j++) {
        vf hv[V];
        for (int v = 0; v < V; v++) hv[v] = ld(in + (j * V + v) * W);
        const float* wj = w + (int64_t)j * H + i0;
        for (int a = 0; a < A; a++) {
            const vf wa = splat(wj[a]);
            for (int v = 0; v < V; v++) acc[a][v] += wa * hv[v];
        }
    }
    for (int a = 0; a < A; a++) epi(i0 + a, acc[a]);
}

template <int V, class Epi>
inline void dense_all(int H, const float* w, const float* bias, const float* in, Epi&& epi) {
    int i = 0;
    for (; i + BLOCK <= H; i += BLOCK) dense<BLOCK, V>(H, i, w, bias, in, epi);
    for (; i < H; i++) dense<1, V>(H, i, w, bias, in, epi);
}

// Drive features at stage s between samples n and n + 1 (exact for the linear and held drive),
// from the samples a and b (normalised).
inline vf blend(vf a, vf b, int s, int hold) {
    if (hold || s == 3) return b;
    return s == 0 ? a : s == 1 ? (a + a + b) * splat(1.0f / 3.0f) : (a + b + b) * splat(1.0f / 3.0f);
}

// Where a tile's drive features come from. LaneFeatures: given for every sample in lane layout
// (training windows, whose delayed features reach back before the window); features from
// `held_from` on are held at sample n + 1 over the step whatever `hold` says (slow inputs, the
// twin's time-varying conditions). RowDrive: the raw
// drive of each row, row-major, in physical units (simulation): normalised here, preceded by
// `settle` samples at the row's rest level, delayed copies taken from a ring of past samples.
template <int V>
struct LaneFeatures {
    const float* u;
    int64_t Bp;
    int D, hold, held_from;
    void step(int64_t) {}
    void stage(int64_t n, int s, vf (*ud)[V]) const {
        for (int d = 0; d < D; d++)
            for (int v = 0; v < V; v++)
                ud[d][v] = blend(ld(u + (n * D + d) * Bp + v * W), ld(u + ((n + 1) * D + d) * Bp + v * W),
                                 s, hold || d >= held_from);
    }
};

template <int V, class T>
struct RowDrive {
    const T* drive;
    const float* rest;
    int64_t n_drive, settle, row0, rows;
    int delays, spacing, hold;
    float mean, inv_std;
    std::vector<vf> ring, first;  // the last `size` samples; sample 0 (what came before it)
    int64_t size;

    RowDrive(const T* drive_, const float* rest_, int64_t n_drive_, int64_t settle_, int64_t row0_,
             int64_t rows_, int delays_, int spacing_, int hold_, float mean_, float inv_std_)
        : drive(drive_), rest(rest_), n_drive(n_drive_), settle(settle_), row0(row0_), rows(rows_),
          delays(delays_), spacing(spacing_), hold(hold_), mean(mean_), inv_std(inv_std_),
          ring(((delays_ - 1) * spacing_ + 2) * V), first(V), size((delays_ - 1) * spacing_ + 2) {
        for (int v = 0; v < V; v++) first[v] = ring[v] = load(0, v);
    }
    vf load(int64_t m, int v) const {  // sample m of the 16 rows of vector v, normalised
        alignas(64) float lane[W];
        for (int l = 0; l < W; l++) {
            const int64_t row = std::min<int64_t>(row0 + v * W + l, rows - 1);
            lane[l] = m < settle ? rest[row] : static_cast<float>(drive[row * n_drive + m - settle]);
        }
        return (ld(lane) - splat(mean)) * splat(inv_std);
    }
    const vf* at(int64_t m) const { return m <= 0 ? first.data() : &ring[(m % size) * V]; }
    void step(int64_t n) {  // sample n + 1 arrives
        for (int v = 0; v < V; v++) ring[((n + 1) % size) * V + v] = load(n + 1, v);
    }
    void stage(int64_t n, int s, vf (*ud)[V]) const {
        for (int j = 0; j < delays; j++) {
            const vf *a = at(n - j * spacing), *b = at(n + 1 - j * spacing);
            for (int v = 0; v < V; v++) ud[j][v] = blend(a[v], b[v], s, hold);
        }
    }
};

// Where the states go. LaneStates: the first K_out components after every step, lane layout.
// RowOutput: the first component in physical units, row-major, from drive sample 0 on.
template <int V>
struct LaneStates {
    float* out;
    int64_t Bp;
    int K_out;
    void start(vf (*)[V]) {}
    void put(int64_t n, vf (*x)[V]) {
        for (int m = 0; m < K_out; m++)
            for (int v = 0; v < V; v++) st(out + (n * K_out + m) * Bp + v * W, x[m][v]);
    }
};

template <int V>
struct RowOutput {
    float* out;
    int64_t n_out, settle, row0, rows;
    float mean, scale;
    void write(int64_t t, vf (*x)[V]) {  // output sample t = the state after settle + t steps
        if (t < 0 || t >= n_out) return;
        for (int v = 0; v < V; v++) {
            alignas(64) float lane[W];
            st(lane, x[0][v] * splat(scale) + splat(mean));
            for (int l = 0; l < W && row0 + v * W + l < rows; l++) out[(row0 + v * W + l) * n_out + t] = lane[l];
        }
    }
    void start(vf (*x)[V]) { write(-settle, x); }
    void put(int64_t n, vf (*x)[V]) { write(n + 1 - settle, x); }
};

// Stage states of the 3/8 rule: x, x + k1/3, x + k2 - k1/3, x + k1 - k2 + k3.
template <int V>
inline void stage_state(int K, int s, vf (*x)[V], vf (*k)[MAXK][V], vf (*xs)[V]) {
    const vf third = splat(1.0f / 3.0f);
    for (int m = 0; m < K; m++)
        for (int v = 0; v < V; v++) {
            vf t = x[m][v];
            if (SKIP_STAGES) {}
            else if (s == 1) t += k[0][m][v] * third;
            else if (s == 2) t += k[1][m][v] - k[0][m][v] * third;
            else if (s == 3) t += k[0][m][v] - k[1][m][v] + k[2][m][v];
            xs[m][v] = t;
        }
}

// N steps of one tile of V x 16 rows (lane-layout pointers already offset to the tile).
template <int V, class Source, class Sink>
void forward_tile(const Net& net, int64_t Bp, int64_t N, const float* x0, const float* base,
                  Source& source, Sink& sink, float* act, float* inp) {
    const int K = net.K, D = SKIP_INPUT ? 0 : net.D, H = net.H, L = net.L;
    const int64_t S = 4 * N;
    std::vector<vf> buffers(2 * H * V);
    float* h_in = reinterpret_cast<float*>(buffers.data());
    float* h_out = h_in + H * V * W;
    vf x[MAXK][V], xs[MAXK][V], ud[MAXK][V], k[4][MAXK][V];
    for (int m = 0; m < K; m++)
        for (int v = 0; v < V; v++) x[m][v] = ld(x0 + m * Bp + v * W);
    sink.start(x);
    for (int64_t n = 0; n < N; n++) {
        source.step(n);
        for (int s = 0; s < 4; s++) {
            const int64_t sg = 4 * n + s;
            stage_state<V>(K, s, x, k, xs);
            source.stage(n, s, ud);
            if (inp) {
                for (int m = 0; m < K; m++)
                    for (int v = 0; v < V; v++) st(inp + (m * S + sg) * Bp + v * W, xs[m][v]);
                for (int d = 0; d < D; d++)
                    for (int v = 0; v < V; v++) st(inp + ((K + d) * S + sg) * Bp + v * W, ud[d][v]);
            }
            vf* kk = &k[s][0][0];
            for (int m = 0; m < K; m++)
                for (int v = 0; v < V; v++) kk[m * V + v] = splat(net.bo[m]);
            // a hidden layer's activations: to the tile buffer, the training store, and the
            // output layer when it is the last one
            auto emit = [&](int layer, int i, const vf* h) {
                for (int v = 0; v < V; v++) {
                    st(h_out + (i * V + v) * W, h[v]);
                    if (act) st(act + (((int64_t)layer * H + i) * S + sg) * Bp + v * W, h[v]);
                }
                if (layer == L - 1)
                    for (int m = 0; m < K; m++) {
                        const vf w = splat(net.wo[i * K + m]);
                        for (int v = 0; v < V; v++) kk[m * V + v] += w * h[v];
                    }
            };
            for (int i = 0; i < H; i++) {
                vf h[V];
                for (int v = 0; v < V; v++) {
                    vf a = ld(base + (int64_t)i * Bp + v * W);
                    for (int m = 0; m < K; m++) a += splat(net.ws[i * K + m]) * xs[m][v];
                    for (int d = 0; d < D; d++) a += splat(net.wd[i * net.D + d]) * ud[d][v];
                    h[v] = vtanh(a);
                }
                emit(0, i, h);
            }
            for (int l = 1; l < L; l++) {
                std::swap(h_in, h_out);
                dense_all<V>(H, net.wh + (int64_t)(l - 1) * H * H, net.bh + (l - 1) * H, h_in,
                             [&](int i, vf* a) {
                                 for (int v = 0; v < V; v++) a[v] = vtanh(a[v]);
                                 emit(l, i, a);
                             });
            }
        }
        for (int m = 0; m < K; m++)
            for (int v = 0; v < V; v++)
                x[m][v] += (k[0][m][v] + splat(3.0f) * (k[1][m][v] + k[2][m][v]) + k[3][m][v]) *
                           splat(0.125f);
        sink.put(n, x);
    }
}

// Vector-Jacobian product of one stage: gradient dk of its output -> gradient of its state,
// storing the pre-activation gradients dz and dk for the weight gradients.
template <int V>
void stage_vjp(const Net& net, int64_t Bp, int64_t S, int64_t sg, const float* act, vf (*dk)[V],
               float* dz, float* dk_store, float* buf_a, float* buf_b, vf (*dxs)[V]) {
    const int K = net.K, H = net.H, L = net.L;
    for (int m = 0; m < K; m++)
        for (int v = 0; v < V; v++) st(dk_store + (m * S + sg) * Bp + v * W, dk[m][v]);
    auto at = [&](int layer, int i, int v) { return (((int64_t)layer * H + i) * S + sg) * Bp + v * W; };
    // the last layer: dz = (wo dk) (1 - h^2)
    float* cur = buf_a;
    for (int i = 0; i < H; i++)
        for (int v = 0; v < V; v++) {
            vf g = splat(0.0f);
            for (int m = 0; m < K; m++) g += splat(net.wo[i * K + m]) * dk[m][v];
            const vf h = ld(act + at(L - 1, i, v));
            const vf z = g * (splat(1.0f) - h * h);
            st(cur + (i * V + v) * W, z);
            st(dz + at(L - 1, i, v), z);
        }
    for (int l = L - 1; l >= 1; l--) {
        float* prev = cur == buf_a ? buf_b : buf_a;
        dense_all<V>(H, net.whT + (int64_t)(l - 1) * H * H, nullptr, cur, [&](int j, vf* g) {
            for (int v = 0; v < V; v++) {
                const vf h = ld(act + at(l - 1, j, v));
                const vf z = g[v] * (splat(1.0f) - h * h);
                st(prev + (j * V + v) * W, z);
                st(dz + at(l - 1, j, v), z);
            }
        });
        cur = prev;
    }
    for (int m = 0; m < K; m++)
        for (int v = 0; v < V; v++) dxs[m][v] = splat(0.0f);
    for (int i = 0; i < H; i++)
        for (int m = 0; m < K; m++) {
            const vf w = splat(net.ws[i * K + m]);
            for (int v = 0; v < V; v++) dxs[m][v] += w * ld(cur + (i * V + v) * W);
        }
}

template <int V>
void backward_tile(const Net& net, int64_t Bp, int64_t N, const float* g, const float* act,
                   float* dz, float* dk_store, float* dx0) {
    const int K = net.K, H = net.H;
    const int64_t S = 4 * N;
    std::vector<vf> buffers(2 * H * V);
    float* buf_a = reinterpret_cast<float*>(buffers.data());
    float* buf_b = buf_a + H * V * W;
    vf lam[MAXK][V], dx[MAXK][V], dk[4][MAXK][V], dxs[MAXK][V];
    const float weights[4] = {0.125f, 0.375f, 0.375f, 0.125f};
    for (int m = 0; m < K; m++)
        for (int v = 0; v < V; v++) lam[m][v] = splat(0.0f);
    for (int64_t n = N - 1; n >= 0; n--) {
        for (int m = 0; m < K; m++)
            for (int v = 0; v < V; v++) {
                lam[m][v] += ld(g + (n * K + m) * Bp + v * W);
                dx[m][v] = lam[m][v];
                for (int s = 0; s < 4; s++) dk[s][m][v] = lam[m][v] * splat(weights[s]);
            }
        const vf third = splat(1.0f / 3.0f);
        for (int s = 3; s >= 0; s--) {
            stage_vjp<V>(net, Bp, S, 4 * n + s, act, dk[s], dz, dk_store, buf_a, buf_b, dxs);
            for (int m = 0; m < K; m++)
                for (int v = 0; v < V; v++) {
                    const vf d = dxs[m][v];
                    dx[m][v] += d;
                    if (s == 3) { dk[0][m][v] += d; dk[1][m][v] -= d; dk[2][m][v] += d; }
                    else if (s == 2) { dk[1][m][v] += d; dk[0][m][v] -= d * third; }
                    else if (s == 1) dk[0][m][v] += d * third;
                }
        }
        for (int m = 0; m < K; m++)
            for (int v = 0; v < V; v++) lam[m][v] = dx[m][v];
    }
    if (dx0)
        for (int m = 0; m < K; m++)
            for (int v = 0; v < V; v++) st(dx0 + m * Bp + v * W, lam[m][v]);
}

// Rows [r0, r1) in tiles of 3, 2 or 1 vectors (3 x 16 rows measured fastest at H = 32 and 64).
template <class F>
void tiles(int64_t r0, int64_t r1, F&& f) {
    for (int64_t b = r0; b < r1;) {
        if (b + 3 * W <= r1) { f(std::integral_constant<int, 3>{}, b); b += 3 * W; }
        else if (b + 2 * W <= r1) { f(std::integral_constant<int, 2>{}, b); b += 2 * W; }
        else { f(std::integral_constant<int, 1>{}, b); b += W; }
    }
}

}  // namespace

extern "C" {

int twin_kernel_abi(void) { return 2; }

// Returns 0, or -1 when a size is out of range (K, D > 16) or rows are not multiples of 16.
// Drive features d >= held_from are held over each step (pass D for none).
int twin_forward(int K, int D, int H, int L, const float* ws, const float* wd, const float* wh,
                 const float* bh, const float* wo, const float* bo, int64_t Bp, int64_t r0,
                 int64_t r1, int64_t N, int hold, int K_out, int held_from, const float* x0,
                 const float* u, const float* base, float* out, float* act, float* inp) {
    if (K < 1 || K > MAXK || D < 0 || D > MAXK || H < 1 || L < 1 || K_out < 1 || K_out > K ||
        Bp % W || r0 % W || r1 % W)
        return -1;
    const Net net{K, D, H, L, ws, wd, wh, nullptr, bh, wo, bo};
    tiles(r0, r1, [&](auto v, int64_t b) {
        constexpr int V = decltype(v)::value;
        LaneFeatures<V> source{u + b, Bp, D, hold, held_from};
        LaneStates<V> sink{out + b, Bp, K_out};
        forward_tile<V>(net, Bp, N, x0 + b, base + b, source, sink, act ? act + b : nullptr,
                        inp ? inp + b : nullptr);
    });
    return 0;
}

// Simulation straight from the drive: rows [r0, r1) of B (Bp = B padded to 16 for x0 and base),
// drive (B, n_drive) row-major float32 (is_double = 0) or float64, after `settle` samples at
// rest (B) volts; response (B, n_drive) float32 in physical units. `delays` copies of the drive
// `spacing` samples apart are the D = delays drive features.
int twin_simulate(int K, int D, int H, int L, const float* ws, const float* wd, const float* wh,
                  const float* bh, const float* wo, const float* bo, int64_t Bp, int64_t r0,
                  int64_t r1, int64_t B, int64_t n_drive, int64_t settle, int hold, int spacing,
                  const void* drive, int is_double, const float* rest, float u_mean, float u_std,
                  float y_mean, float y_std, const float* x0, const float* base, float* out) {
    if (K < 1 || K > MAXK || D < 1 || D > MAXK || H < 1 || L < 1 || spacing < 1 || n_drive < 1 ||
        settle < 0 || B < 1 || Bp < B || Bp % W || r0 % W || r1 % W || r1 > Bp)
        return -1;
    const Net net{K, D, H, L, ws, wd, wh, nullptr, bh, wo, bo};
    const int64_t N = settle + n_drive - 1;
    tiles(r0, r1, [&](auto v, int64_t b) {
        constexpr int V = decltype(v)::value;
        RowOutput<V> sink{out, n_drive, settle, b, B, y_mean, y_std};
        auto run = [&](auto* typed) {
            RowDrive<V, std::remove_const_t<std::remove_pointer_t<decltype(typed)>>> source(
                typed, rest, n_drive, settle, b, B, D, spacing, hold, u_mean, 1.0f / u_std);
            forward_tile<V>(net, Bp, N, x0 + b, base + b, source, sink, nullptr, nullptr);
        };
        if (is_double) run(static_cast<const double*>(drive));
        else run(static_cast<const float*>(drive));
    });
    return 0;
}

int twin_backward(int K, int D, int H, int L, const float* ws, const float* whT, const float* wo,
                  int64_t Bp, int64_t r0, int64_t r1, int64_t N, const float* g, const float* act,
                  float* dz, float* dk, float* dx0) {
    if (K < 1 || K > MAXK || H < 1 || L < 1 || Bp % W || r0 % W || r1 % W) return -1;
    const Net net{K, D, H, L, ws, nullptr, nullptr, whT, nullptr, wo, nullptr};
    tiles(r0, r1, [&](auto v, int64_t b) {
        backward_tile<decltype(v)::value>(net, Bp, N, g + b, act + b, dz + b, dk + b,
                                          dx0 ? dx0 + b : nullptr);
    });
    return 0;
}

}  // extern "C"
