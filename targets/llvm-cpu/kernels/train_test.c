/*
 * The training kernels of train.c against plain double-precision references
 * on random data (fixed seed), with odd shapes that exercise vector tails;
 * the gradients also against central finite differences of the double
 * forward. Every ranged kernel runs once as one range and once split into
 * random pieces (called in reverse order), and the two must agree bit for
 * bit. Exit status 0 on success. `train_test bench` times the ternary
 * backward product and the fused cross entropy instead.
 * Build (per ISA variant, with or without the ISA flags):
 *   clang-22 -O2 <isa> -I../../../runtime/include train_test.c train.c \
 *            ternary.c -lm -o train_test
 */
#define _POSIX_C_SOURCE 199309L
#include "kernel_test.h"
#include "ternary.h"
#include "train.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t irand(int64_t n) { return (int64_t)((uniform() + 1.0) * 0.5 * n); }


static void same_bits(const char *what, const void *a, const void *b,
                      size_t bytes) {
  if (memcmp(a, b, bytes) != 0) {
    printf("%-58s split != single range FAIL\n", what);
    failures += 1;
  }
}


static float *frand(int64_t n, double s) {
  float *p = malloc(sizeof(float) * (n ? n : 1));
  for (int64_t i = 0; i < n; ++i)
    p[i] = (float)(s * uniform());
  return p;
}
static double *dalloc(int64_t n) { return calloc(n ? n : 1, sizeof(double)); }
static float *falloc(int64_t n) { return malloc(sizeof(float) * (n ? n : 1)); }
static void garbage(float *p, int64_t n) { memset(p, 0xff, sizeof(float) * n); }
static double *to_d(const float *p, int64_t n) {
  double *d = dalloc(n);
  for (int64_t i = 0; i < n; ++i)
    d[i] = p[i];
  return d;
}

/* Runs CALL over [0, units): SINGLE as one range, else in `parts` pieces with
 * random cut points (possibly empty), last piece first. */
static void cuts(int64_t units, int parts, int64_t *c) {
  c[0] = 0, c[parts] = units;
  for (int i = 1; i < parts; ++i)
    c[i] = irand(units + 1);
  for (int i = 1; i < parts; ++i) /* sort */
    for (int j = i + 1; j < parts; ++j)
      if (c[j] < c[i]) {
        int64_t s = c[i];
        c[i] = c[j], c[j] = s;
      }
}
#define SPLIT(units, parts, CALL)                                              \
  do {                                                                         \
    int64_t c_[8];                                                             \
    int n_ = (parts);                                                          \
    cuts((units), n_, c_);                                                     \
    for (int p_ = n_ - 1; p_ >= 0; --p_) {                                     \
      int64_t begin = c_[p_], end = c_[p_ + 1];                                \
      CALL;                                                                    \
    }                                                                          \
  } while (0)
#define PARTS (2 + (int)irand(2))

#define FD_H 1e-5
#define FD_TOL 1e-5

/* ------------------------------------------------------------------------ */

static double rms_loss(const double *x, const float *w, const float *dy,
                       int64_t D, double eps) { /* sum dy * y, one row */
  double ss = 0, l = 0;
  for (int64_t d = 0; d < D; ++d)
    ss += x[d] * x[d];
  double r = 1 / sqrt(ss / D + eps);
  for (int64_t d = 0; d < D; ++d)
    l += dy[d] * w[d] * x[d] * r;
  return l;
}

static void test_rms(int64_t T, int64_t D) {
  float *x = frand(T * D, 2.0), *dy = frand(T * D, 1.0), *wf = falloc(D);
  uint16_t *wb = malloc(2 * D);
  for (int64_t d = 0; d < D; ++d) {
    wb[d] = to_bf16((float)(1.0 + 0.5 * uniform()));
    wf[d] = from_bf16(wb[d]);
  }
  float eps = 1e-6f;
  double *want = dalloc(T * D);
  for (int64_t t = 0; t < T; ++t) {
    const float *xt = x + t * D, *dyt = dy + t * D;
    double ss = 0, s = 0;
    for (int64_t d = 0; d < D; ++d)
      ss += (double)xt[d] * xt[d], s += (double)wf[d] * dyt[d] * xt[d];
    double r = 1 / sqrt(ss / D + eps);
    for (int64_t d = 0; d < D; ++d)
      want[t * D + d] = r * wf[d] * dyt[d] - xt[d] * r * r * r * s / D;
  }
  float *a = falloc(T * D), *b = falloc(T * D);
  char name[96];
  for (int kind = 0; kind < 2; ++kind) {
    garbage(a, T * D), garbage(b, T * D);
    if (kind == 0) {
      SPLIT(T, 1, tlc_k_rms_norm_grad_bf16(x, wb, dy, a, D, eps, begin, end));
      SPLIT(T, PARTS, tlc_k_rms_norm_grad_bf16(x, wb, dy, b, D, eps, begin, end));
    } else {
      SPLIT(T, 1, tlc_k_rms_norm_grad_f32(x, wf, dy, a, D, eps, begin, end));
      SPLIT(T, PARTS, tlc_k_rms_norm_grad_f32(x, wf, dy, b, D, eps, begin, end));
    }
    snprintf(name, sizeof name, "rms_norm_grad %s T=%lld D=%lld",
             kind ? "f32" : "bf16", (long long)T, (long long)D);
    same_bits(name, a, b, sizeof(float) * T * D);
    check(name, a, want, T * D, 1e-5);
  }
  if (T * D <= 64) { /* a (the f32 kernel) against finite differences */
    double *fd = dalloc(T * D);
    for (int64_t t = 0; t < T; ++t) {
      double *xt = to_d(x + t * D, D);
      for (int64_t d = 0; d < D; ++d) {
        double x0 = xt[d];
        xt[d] = x0 + FD_H;
        double lp = rms_loss(xt, wf, dy + t * D, D, eps);
        xt[d] = x0 - FD_H;
        double lm = rms_loss(xt, wf, dy + t * D, D, eps);
        xt[d] = x0;
        fd[t * D + d] = (lp - lm) / (2 * FD_H);
      }
      free(xt);
    }
    snprintf(name, sizeof name, "rms_norm_grad finite differences T=%lld D=%lld",
             (long long)T, (long long)D);
    check(name, a, fd, T * D, FD_TOL);
    free(fd);
  }
  free(x), free(dy), free(wf), free(wb), free(want), free(a), free(b);
}

/* ------------------------------------------------------------------------ */

static void test_ternary_t(int64_t T, int64_t K, int64_t N) {
  int8_t *W = malloc(N * K);
  for (int64_t i = 0; i < N * K; ++i)
    W[i] = (int8_t)(irand(3) - 1);
  uint8_t *w = malloc(64 + tlc_ternary_packed_size(N, K));
  float gamma = 0.37f;
  memset(w, 0, 64);
  memcpy(w, &gamma, 4);
  tlc_ternary_pack(W, N, K, w + 64);
  float *dy = frand(T * N, 1.0), *a = falloc(T * K), *b = falloc(T * K);
  double *want = dalloc(T * K);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double d = dy[t * N + n] * (double)gamma;
      for (int64_t k = 0; k < K; ++k)
        want[t * K + k] += d * W[n * K + k];
    }
  int64_t units = (K + 63) / 64;
  garbage(a, T * K), garbage(b, T * K);
  SPLIT(units, 1, tlc_k_ternary_matmul_t(dy, w, a, T, K, N, begin, end));
  SPLIT(units, PARTS, tlc_k_ternary_matmul_t(dy, w, b, T, K, N, begin, end));
  char name[96];
  snprintf(name, sizeof name, "ternary_matmul_t T=%lld K=%lld N=%lld",
           (long long)T, (long long)K, (long long)N);
  same_bits(name, a, b, sizeof(float) * T * K);
  check(name, a, want, T * K, 1e-5);
  free(W), free(w), free(dy), free(a), free(b), free(want);
}

/* ------------------------------------------------------------------------ */

/* sum dy * scale * (x A^T) B^T, doubles. */
static double lora_loss(const double *x, const double *A, const double *B,
                        const float *dy, int64_t T, int64_t K, int64_t N,
                        int64_t R, double scale) {
  double l = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < R; ++r) {
      double u = 0, db = 0;
      for (int64_t k = 0; k < K; ++k)
        u += x[t * K + k] * A[r * K + k];
      for (int64_t n = 0; n < N; ++n)
        db += dy[t * N + n] * B[n * R + r];
      l += scale * u * db;
    }
  return l;
}

static void fd_grad(double *p, int64_t n, double *out,
                    double (*f)(void *), void *ctx) {
  for (int64_t i = 0; i < n; ++i) {
    double p0 = p[i];
    p[i] = p0 + FD_H;
    double lp = f(ctx);
    p[i] = p0 - FD_H;
    double lm = f(ctx);
    p[i] = p0;
    out[i] = (lp - lm) / (2 * FD_H);
  }
}

typedef struct {
  double *x, *A, *B;
  const float *dy;
  int64_t T, K, N, R;
  double scale;
} lora_ctx;
static double lora_f(void *c) {
  lora_ctx *l = c;
  return lora_loss(l->x, l->A, l->B, l->dy, l->T, l->K, l->N, l->R, l->scale);
}

static void test_lora(int64_t T, int64_t K, int64_t N, int64_t R) {
  float *x = frand(T * K, 1.0), *A = frand(R * K, 0.5), *B = frand(N * R, 0.5);
  float *dy = frand(T * N, 1.0), scale = 1.7f;
  double *u = dalloc(T * R), *du = dalloc(T * R), *wud = dalloc(T * 2 * R);
  double *wdx = dalloc(T * K), *wdA = dalloc(R * K), *wdB = dalloc(N * R);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t k = 0; k < K; ++k)
        u[t * R + r] += (double)x[t * K + k] * A[r * K + k];
      for (int64_t n = 0; n < N; ++n)
        du[t * R + r] += (double)dy[t * N + n] * B[n * R + r];
      du[t * R + r] *= scale;
      wud[t * 2 * R + r] = u[t * R + r];
      wud[t * 2 * R + R + r] = du[t * R + r];
      for (int64_t k = 0; k < K; ++k)
        wdx[t * K + k] += du[t * R + r] * A[r * K + k];
    }
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t k = 0; k < K; ++k)
        wdA[r * K + k] += du[t * R + r] * x[t * K + k];
      for (int64_t n = 0; n < N; ++n)
        wdB[n * R + r] += scale * dy[t * N + n] * u[t * R + r];
    }
  float *ud = falloc(T * 2 * R), *ud2 = falloc(T * 2 * R);
  float *dx = falloc(T * K), *dx2 = falloc(T * K);
  float *dA = falloc(R * K), *dA2 = falloc(R * K), *dB = falloc(N * R),
        *dB2 = falloc(N * R);
  garbage(ud, T * 2 * R), garbage(ud2, T * 2 * R);
  garbage(dx, T * K), garbage(dx2, T * K);
  SPLIT(T, 1, tlc_k_lora_grad_rows(x, A, B, dy, ud, dx, K, N, R, scale, begin,
                                   end));
  SPLIT(T, PARTS, tlc_k_lora_grad_rows(x, A, B, dy, ud2, dx2, K, N, R, scale,
                                       begin, end));
  int64_t units = (K + 63) / 64 + (N + 63) / 64;
  garbage(dA, R * K), garbage(dA2, R * K), garbage(dB, N * R), garbage(dB2, N * R);
  SPLIT(units, 1, tlc_k_lora_grad_weights(x, dy, ud, dA, dB, T, K, N, R, scale,
                                          begin, end));
  SPLIT(units, PARTS, tlc_k_lora_grad_weights(x, dy, ud, dA2, dB2, T, K, N, R,
                                              scale, begin, end));
  char name[96], what[128];
  snprintf(name, sizeof name, "T=%lld K=%lld N=%lld R=%lld", (long long)T,
           (long long)K, (long long)N, (long long)R);
#define LORA_CHECK(label, got, got2, want, n)                                  \
  snprintf(what, sizeof what, "lora_grad %s %s", label, name);                 \
  same_bits(what, got, got2, sizeof(float) * (n));                             \
  check(what, got, want, n, 1e-5);
  LORA_CHECK("ud", ud, ud2, wud, T * 2 * R)
  LORA_CHECK("dx", dx, dx2, wdx, T * K)
  LORA_CHECK("dA", dA, dA2, wdA, R * K)
  LORA_CHECK("dB", dB, dB2, wdB, N * R)
  if (T * K * N * R <= 2000) {
    lora_ctx c = {to_d(x, T * K), to_d(A, R * K), to_d(B, N * R), dy, T, K, N,
                                                       R, scale};
    double *fx = dalloc(T * K), *fA = dalloc(R * K), *fB = dalloc(N * R);
    fd_grad(c.x, T * K, fx, lora_f, &c);
    fd_grad(c.A, R * K, fA, lora_f, &c);
    fd_grad(c.B, N * R, fB, lora_f, &c);
    snprintf(what, sizeof what, "lora_grad finite differences dx %s", name);
    check(what, dx, fx, T * K, FD_TOL);
    snprintf(what, sizeof what, "lora_grad finite differences dA %s", name);
    check(what, dA, fA, R * K, FD_TOL);
    snprintf(what, sizeof what, "lora_grad finite differences dB %s", name);
    check(what, dB, fB, N * R, FD_TOL);
    free(c.x), free(c.A), free(c.B), free(fx), free(fA), free(fB);
  }
  free(x), free(A), free(B), free(dy), free(u), free(du), free(wud), free(wdx);
  free(wdA), free(wdB), free(ud), free(ud2), free(dx), free(dx2), free(dA);
  free(dA2), free(dB), free(dB2);
}

/* ------------------------------------------------------------------------ */

typedef struct {
  double *g, *u;
  const float *dm;
  int64_t n;
} srm_ctx;
static double srm_f(void *c) {
  srm_ctx *s = c;
  double l = 0;
  for (int64_t i = 0; i < s->n; ++i) {
    double r = s->g[i] > 0 ? s->g[i] : 0;
    l += s->dm[i] * r * r * s->u[i];
  }
  return l;
}

static void test_squared_relu(int64_t T, int64_t D) {
  int64_t n = T * D;
  float *g = frand(n, 2.0), *u = frand(n, 1.0), *dm = frand(n, 1.0);
  for (int64_t i = 0; i < n; ++i) /* away from the kink (finite differences) */
    if (fabsf(g[i]) < 0.05f)
      g[i] = g[i] < 0 ? -0.05f : 0.05f;
  double *wdg = dalloc(n), *wdu = dalloc(n);
  for (int64_t i = 0; i < n; ++i) {
    double r = g[i] > 0 ? g[i] : 0;
    wdg[i] = (double)dm[i] * u[i] * 2 * r;
    wdu[i] = dm[i] * r * r;
  }
  float *dg = falloc(n), *du = falloc(n), *dg2 = falloc(n), *du2 = falloc(n);
  garbage(dg, n), garbage(du, n), garbage(dg2, n), garbage(du2, n);
  SPLIT(T, 1, tlc_k_squared_relu_mul_grad(g, u, dm, dg, du, D, begin, end));
  SPLIT(T, PARTS, tlc_k_squared_relu_mul_grad(g, u, dm, dg2, du2, D, begin, end));
  char name[96];
  snprintf(name, sizeof name, "squared_relu_mul_grad dg T=%lld D=%lld",
           (long long)T, (long long)D);
  same_bits(name, dg, dg2, sizeof(float) * n);
  check(name, dg, wdg, n, 1e-6);
  snprintf(name, sizeof name, "squared_relu_mul_grad du T=%lld D=%lld",
           (long long)T, (long long)D);
  same_bits(name, du, du2, sizeof(float) * n);
  check(name, du, wdu, n, 1e-6);
  if (n <= 100) {
    srm_ctx c = {to_d(g, n), to_d(u, n), dm, n};
    double *fg = dalloc(n), *fu = dalloc(n);
    fd_grad(c.g, n, fg, srm_f, &c);
    fd_grad(c.u, n, fu, srm_f, &c);
    check("squared_relu_mul_grad finite differences dg", dg, fg, n, FD_TOL);
    check("squared_relu_mul_grad finite differences du", du, fu, n, FD_TOL);
    free(c.g), free(c.u), free(fg), free(fu);
  }
  free(g), free(u), free(dm), free(wdg), free(wdu), free(dg), free(du);
  free(dg2), free(du2);
}

/* ------------------------------------------------------------------------ */

typedef struct {
  double *q, *k, *v;
  const float *dout;
  int64_t T, H, KVH, HD, S;
  double scale;
} att_ctx;

/* Double forward: o (optional), lse (optional); returns sum dout * o. */
static double att_ref(const att_ctx *c, double *o, double *lse) {
  int64_t G = c->H / c->KVH, DQ = c->H * c->HD, DKV = c->KVH * c->HD;
  double *p = dalloc(c->S), l = 0;
  for (int64_t t = 0; t < c->T; ++t)
    for (int64_t h = 0; h < c->H; ++h) {
      int64_t j0 = t / c->S * c->S, g = h / G;
      double m = -INFINITY, sum = 0;
      for (int64_t j = j0; j <= t; ++j) {
        double s = 0;
        for (int64_t d = 0; d < c->HD; ++d)
          s += c->q[t * DQ + h * c->HD + d] * c->k[j * DKV + g * c->HD + d];
        p[j - j0] = s * c->scale;
        m = p[j - j0] > m ? p[j - j0] : m;
      }
      for (int64_t j = j0; j <= t; ++j)
        sum += p[j - j0] = exp(p[j - j0] - m);
      if (lse)
        lse[t * c->H + h] = m + log(sum);
      for (int64_t d = 0; d < c->HD; ++d) {
        double od = 0;
        for (int64_t j = j0; j <= t; ++j)
          od += p[j - j0] * c->v[j * DKV + g * c->HD + d];
        od /= sum;
        if (o)
          o[t * DQ + h * c->HD + d] = od;
        l += c->dout[t * DQ + h * c->HD + d] * od;
      }
    }
  free(p);
  return l;
}
static double att_f(void *c) { return att_ref(c, NULL, NULL); }

/* Double backward from the double forward. */
static void att_ref_grad(const att_ctx *c, double *dq, double *dk,
                         double *dv) {
  int64_t G = c->H / c->KVH, DQ = c->H * c->HD, DKV = c->KVH * c->HD;
  double *o = dalloc(c->T * DQ), *lse = dalloc(c->T * c->H);
  att_ref(c, o, lse);
  memset(dq, 0, sizeof(double) * c->T * DQ);
  memset(dk, 0, sizeof(double) * c->T * DKV);
  memset(dv, 0, sizeof(double) * c->T * DKV);
  for (int64_t i = 0; i < c->T; ++i)
    for (int64_t h = 0; h < c->H; ++h) {
      int64_t j0 = i / c->S * c->S, g = h / G;
      const double *qi = c->q + i * DQ + h * c->HD;
      const float *doi = c->dout + i * DQ + h * c->HD;
      double Di = 0;
      for (int64_t d = 0; d < c->HD; ++d)
        Di += doi[d] * o[i * DQ + h * c->HD + d];
      for (int64_t j = j0; j <= i; ++j) {
        const double *kj = c->k + j * DKV + g * c->HD,
            *vj = c->v + j * DKV + g * c->HD;
        double s = 0, dp = 0;
        for (int64_t d = 0; d < c->HD; ++d)
          s += qi[d] * kj[d], dp += doi[d] * vj[d];
        double p = exp(s * c->scale - lse[i * c->H + h]), ds = p * (dp - Di);
        for (int64_t d = 0; d < c->HD; ++d) {
          dv[j * DKV + g * c->HD + d] += p * doi[d];
          dq[i * DQ + h * c->HD + d] += c->scale * ds * kj[d];
          dk[j * DKV + g * c->HD + d] += c->scale * ds * qi[d];
        }
      }
    }
  free(o), free(lse);
}

static void test_attention(int64_t B, int64_t S, int64_t H, int64_t KVH,
                           int64_t HD) {
  int64_t T = B * S, DQ = H * HD, DKV = KVH * HD;
  float *q = frand(T * DQ, 2.0), *k = frand(T * DKV, 2.0), *v = frand(T * DKV, 1.0);
  float *dout = frand(T * DQ, 1.0), scale = 1.0f / sqrtf((float)HD);
  att_ctx c = {to_d(q, T * DQ), to_d(k, T * DKV), to_d(v, T * DKV), dout, T,
               H, KVH, HD, S, scale};
  double *wo = dalloc(T * DQ), *wlse = dalloc(T * H);
  double *wdq = dalloc(T * DQ), *wdk = dalloc(T * DKV), *wdv = dalloc(T * DKV);
  att_ref(&c, wo, wlse);
  att_ref_grad(&c, wdq, wdk, wdv);
  float *o = falloc(T * DQ), *o2 = falloc(T * DQ), *lse = falloc(T * H),
        *lse2 = falloc(T * H);
  garbage(o, T * DQ), garbage(o2, T * DQ), garbage(lse, T * H), garbage(lse2,
                                                   T * H);
  SPLIT(T * KVH, 1, tlc_k_causal_attention(q, k, v, o, lse, H, KVH, HD, S,
                                           scale, begin, end));
  SPLIT(T * KVH, PARTS, tlc_k_causal_attention(q, k, v, o2, lse2, H, KVH, HD,
                                               S, scale, begin, end));
  char name[96], what[128];
  snprintf(name, sizeof name, "B=%lld S=%lld H=%lld KVH=%lld HD=%lld",
           (long long)B, (long long)S, (long long)H, (long long)KVH, (long long)HD);
  snprintf(what, sizeof what, "causal_attention o %s", name);
  same_bits(what, o, o2, sizeof(float) * T * DQ);
  check(what, o, wo, T * DQ, 1e-5);
  snprintf(what, sizeof what, "causal_attention lse %s", name);
  same_bits(what, lse, lse2, sizeof(float) * T * H);
  check(what, lse, wlse, T * H, 1e-6);
  float *dq = falloc(T * DQ), *dk = falloc(T * DKV), *dv = falloc(T * DKV);
  float *dq2 = falloc(T * DQ), *dk2 = falloc(T * DKV), *dv2 = falloc(T * DKV);
  garbage(dq, T * DQ), garbage(dk, T * DKV), garbage(dv, T * DKV);
  garbage(dq2, T * DQ), garbage(dk2, T * DKV), garbage(dv2, T * DKV);
  SPLIT(B * KVH, 1, tlc_k_causal_attention_grad(q, k, v, o, lse, dout, dq, dk,
                                                dv, H, KVH, HD, S, scale,
                                                begin, end));
  SPLIT(B * KVH, PARTS, tlc_k_causal_attention_grad(q, k, v, o, lse, dout, dq2,
                                                    dk2, dv2, H, KVH, HD, S,
                                                    scale, begin, end));
#define ATT_CHECK(label, got, got2, want, n)                                   \
  snprintf(what, sizeof what, "causal_attention_grad %s %s", label, name);     \
  same_bits(what, got, got2, sizeof(float) * (n));                             \
  check(what, got, want, n, 1e-5);
  ATT_CHECK("dq", dq, dq2, wdq, T * DQ)
  ATT_CHECK("dk", dk, dk2, wdk, T * DKV)
  ATT_CHECK("dv", dv, dv2, wdv, T * DKV)
  if (T * DQ <= 200) {
    double *fq = dalloc(T * DQ), *fk = dalloc(T * DKV), *fv = dalloc(T * DKV);
    fd_grad(c.q, T * DQ, fq, att_f, &c);
    fd_grad(c.k, T * DKV, fk, att_f, &c);
    fd_grad(c.v, T * DKV, fv, att_f, &c);
    snprintf(what, sizeof what, "attention finite differences dq %s", name);
    check(what, dq, fq, T * DQ, FD_TOL);
    snprintf(what, sizeof what, "attention finite differences dk %s", name);
    check(what, dk, fk, T * DKV, FD_TOL);
    snprintf(what, sizeof what, "attention finite differences dv %s", name);
    check(what, dv, fv, T * DKV, FD_TOL);
    free(fq), free(fk), free(fv);
  }
  free(q), free(k), free(v), free(dout), free(c.q), free(c.k), free(c.v);
  free(wo), free(wlse), free(wdq), free(wdk), free(wdv), free(o), free(o2);
  free(lse), free(lse2), free(dq), free(dk), free(dv), free(dq2), free(dk2),
                                                            free(dv2);
}

/* ------------------------------------------------------------------------ */

typedef struct {
  double *x;
  const float *w;
  const int32_t *labels;
  int64_t T, K, V;
  double loss_scale;
} ce_ctx;

/* Double reference: loss, lse per token (0 if ignored), dx (optional) of
 * loss_scale * mean loss; returns loss_scale * mean loss. */
static double ce_ref(const ce_ctx *c, double *loss, double *lse, double *dx) {
  int64_t count = 0;
  for (int64_t t = 0; t < c->T; ++t)
    count += c->labels[t] >= 0;
  double *z = dalloc(c->V), total = 0;
  if (dx)
    memset(dx, 0, sizeof(double) * c->T * c->K);
  for (int64_t t = 0; t < c->T; ++t) {
    if (loss)
      loss[t] = lse[t] = 0;
    if (c->labels[t] < 0)
      continue;
    double m = -INFINITY, s = 0;
    for (int64_t v = 0; v < c->V; ++v) {
      z[v] = 0;
      for (int64_t k = 0; k < c->K; ++k)
        z[v] += c->x[t * c->K + k] * c->w[v * c->K + k];
      m = z[v] > m ? z[v] : m;
    }
    for (int64_t v = 0; v < c->V; ++v)
      s += exp(z[v] - m);
    double l = m + log(s);
    if (loss)
      loss[t] = l - z[c->labels[t]], lse[t] = l;
    total += l - z[c->labels[t]];
    if (dx)
      for (int64_t v = 0; v < c->V; ++v) {
        double g = (exp(z[v] - l) - (v == c->labels[t])) * c->loss_scale / count;
        for (int64_t k = 0; k < c->K; ++k)
          dx[t * c->K + k] += g * c->w[v * c->K + k];
      }
  }
  free(z);
  return count ? c->loss_scale * total / count : 0;
}
static double ce_f(void *c) { return ce_ref(c, NULL, NULL, NULL); }

/* ignore: 0 none, 1 some, 2 all labels ignored. */
static void test_ce(int64_t T, int64_t K, int64_t V, double wscale,
                    int ignore) {
  float *x = frand(T * K, 1.0), *wf = falloc(V * K);
  uint16_t *wb = malloc(2 * V * K);
  for (int64_t i = 0; i < V * K; ++i) {
    wb[i] = to_bf16((float)(wscale * uniform()));
    wf[i] = from_bf16(wb[i]);
  }
  int32_t *labels = malloc(4 * T);
  for (int64_t t = 0; t < T; ++t)
    labels[t] = (int32_t)irand(V);
  if (ignore == 1)
    for (int64_t t = 1; t < T; t += 4)
      labels[t] = -100;
  if (ignore == 2)
    for (int64_t t = 0; t < T; ++t)
      labels[t] = -100;
  labels[T - 1] = ignore == 2 ? -100 : (int32_t)(V - 1);
  tlc_train_hyper_t hyper;
  memset(&hyper, 0, sizeof hyper);
  hyper.loss_scale = 0.5f;
  ce_ctx c = {to_d(x, T * K), wf, labels, T, K, V, hyper.loss_scale};
  double *wloss = dalloc(T), *wlse = dalloc(T), *wdx = dalloc(T * K);
  double wmean = ce_ref(&c, wloss, wlse, wdx) / hyper.loss_scale;
  int64_t units = (T + 15) / 16;
  float *dloss = falloc(T);
  tlc_k_mean_loss_grad(&hyper.loss_scale, labels, dloss, T, 0, 1);
  float *loss = falloc(T), *lse = falloc(T), *loss2 = falloc(T), *lse2 = falloc(T);
  float *dx = falloc(T * K), *dx2 = falloc(T * K), mean = NAN;
  char name[96], what[128];
  for (int kind = 0; kind < 2; ++kind) {
    snprintf(name, sizeof name, "%s T=%lld K=%lld V=%lld%s", kind ? "f32" : "bf16",
             (long long)T, (long long)K, (long long)V,
             ignore == 1 ? " (some ignored)" : ignore == 2 ? " (all ignored)" : "");
    garbage(loss, T), garbage(lse, T), garbage(loss2, T), garbage(lse2, T);
    garbage(dx, T * K), garbage(dx2, T * K);
    if (kind == 0) {
      SPLIT(units, 1, tlc_k_cross_entropy_bf16(x, wb, labels, loss, lse, T, K,
                                               V, begin, end));
      SPLIT(units, PARTS, tlc_k_cross_entropy_bf16(x, wb, labels, loss2, lse2,
                                                   T, K, V, begin, end));
      SPLIT(units, 1, tlc_k_cross_entropy_grad_bf16(x, wb, labels, lse, dloss,
                                                    dx, T, K, V, begin, end));
      SPLIT(units, PARTS, tlc_k_cross_entropy_grad_bf16(x, wb, labels, lse,
                                                        dloss, dx2, T, K, V,
                                                        begin, end));
    } else {
      SPLIT(units, 1, tlc_k_cross_entropy_f32(x, wf, labels, loss, lse, T, K,
                                              V, begin, end));
      SPLIT(units, PARTS, tlc_k_cross_entropy_f32(x, wf, labels, loss2, lse2,
                                                  T, K, V, begin, end));
      SPLIT(units, 1, tlc_k_cross_entropy_grad_f32(x, wf, labels, lse, dloss,
                                                   dx, T, K, V, begin, end));
      SPLIT(units, PARTS, tlc_k_cross_entropy_grad_f32(x, wf, labels, lse,
                                                       dloss, dx2, T, K, V,
                                                       begin, end));
    }
    snprintf(what, sizeof what, "cross_entropy loss %s", name);
    same_bits(what, loss, loss2, sizeof(float) * T);
    check(what, loss, wloss, T, 1e-6);
    snprintf(what, sizeof what, "cross_entropy lse %s", name);
    same_bits(what, lse, lse2, sizeof(float) * T);
    check(what, lse, wlse, T, 1e-6);
    snprintf(what, sizeof what, "cross_entropy_grad %s", name);
    same_bits(what, dx, dx2, sizeof(float) * T * K);
    check(what, dx, wdx, T * K, 1e-5);
  }
  tlc_k_loss_mean(loss, labels, &mean, T, 0, 1);
  snprintf(what, sizeof what, "loss_mean %s", name);
  check(what, &mean, &wmean, 1, 1e-6);
  if (T * K <= 64 && ignore != 2) {
    double *fx = dalloc(T * K);
    fd_grad(c.x, T * K, fx, ce_f, &c);
    snprintf(what, sizeof what, "cross_entropy finite differences %s", name);
    check(what, dx, fx, T * K, FD_TOL);
    free(fx);
  }
  free(x), free(wf), free(wb), free(labels), free(c.x), free(wloss), free(wlse);
  free(wdx), free(loss), free(lse), free(loss2), free(lse2), free(dx), free(dx2);
}

/* ------------------------------------------------------------------------ */

static void test_accumulate(int64_t n) {
  float *g = frand(n, 1.0), *acc = frand(n, 1.0), *acc2 = falloc(n);
  memcpy(acc2, acc, sizeof(float) * n);
  double *want = dalloc(n);
  for (int64_t i = 0; i < n; ++i)
    want[i] = (double)acc[i] + g[i];
  int64_t units = (n + 1023) / 1024;
  SPLIT(units, 1, tlc_k_accumulate(g, acc, n, begin, end));
  SPLIT(units, PARTS, tlc_k_accumulate(g, acc2, n, begin, end));
  char name[96];
  snprintf(name, sizeof name, "accumulate n=%lld", (long long)n);
  same_bits(name, acc, acc2, sizeof(float) * n);
  check(name, acc, want, n, 1e-7);
  free(g), free(acc), free(acc2), free(want);
}

/* A few optimizer steps (one of them accumulate-only) against the same
 * formulas in double, with and without clipping. */
static void test_optimizer(int64_t P, int adamw, float max_grad_norm) {
  int64_t S = adamw ? 4 * P : 2 * P;
  float *st = falloc(S), *st2 = falloc(S);
  double *ref = dalloc(S);
  for (int64_t i = 0; i < S; ++i)
    st[i] = i < P ? (float)uniform() : 0.0f;
  for (int64_t i = 0; i < S; ++i)
    ref[i] = st[i];
  tlc_train_hyper_t h;
  memset(&h, 0, sizeof h);
  h.lr = 1e-2f, h.beta1 = 0.9f, h.beta2 = 0.999f, h.eps = 1e-8f;
  h.weight_decay = 0.01f, h.max_grad_norm = max_grad_norm;
  int64_t units = (P + 1023) / 1024, applied = 0;
  char name[96];
  snprintf(name, sizeof name, "%s P=%lld max_grad_norm=%g", adamw ? "adamw" : "sgd",
           (long long)P, max_grad_norm);
  for (int step = 0; step < 4; ++step) {
    for (int64_t i = 0; i < P; ++i) { /* new gradients, accumulated */
      float g = (float)(0.3 * uniform());
      st[P + i] += g;
      ref[P + i] = st[P + i];
    }
    h.apply = step != 1;
    if (h.apply)
      ++applied;
    h.step_size = (float)(h.lr / (1.0 - pow(h.beta1, (double)applied)));
    h.bias_correction2_sqrt = (float)sqrt(1.0 - pow(h.beta2, (double)applied));
    h.grad_norm = -1.0f;
    tlc_k_grad_norm(st, &h, P, 0, 1);
    if (!h.apply) {
      memcpy(st2, st, sizeof(float) * S);
      if (adamw)
        tlc_k_adamw(st, &h, P, 0, units);
      else
        tlc_k_sgd(st, &h, P, 0, units);
      if (h.grad_norm != -1.0f || memcmp(st, st2, sizeof(float) * S))
        printf("%s: apply=0 changed the state FAIL\n", name), failures++;
      continue;
    }
    double norm = 0;
    for (int64_t i = 0; i < P; ++i)
      norm += ref[P + i] * ref[P + i];
    norm = sqrt(norm);
    double wn = norm;
    char what[128];
    snprintf(what, sizeof what, "grad_norm step %d %s", step, name);
    check(what, &h.grad_norm, &wn, 1, 1e-6);
    double clip = max_grad_norm > 0 ? fmin(max_grad_norm / (norm + 1e-6),
                                                            1.0) : 1.0;
    for (int64_t i = 0; i < P; ++i) {
      double g = ref[P + i] * clip, *p = ref + i;
      if (adamw) {
        double *m = ref + 2 * P + i, *v = ref + 3 * P + i;
        *p *= 1.0 - (double)h.lr * h.weight_decay;
        *m += (1.0 - h.beta1) * (g - *m);
        *v = *v * h.beta2 + (1.0 - h.beta2) * g * g;
        *p -= h.step_size * *m / (sqrt(*v) / h.bias_correction2_sqrt + h.eps);
      } else {
        g += h.weight_decay * *p;
        *p -= h.lr * g;
      }
      ref[P + i] = 0;
    }
    memcpy(st2, st, sizeof(float) * S);
    if (adamw) {
      SPLIT(units, 1, tlc_k_adamw(st, &h, P, begin, end));
      SPLIT(units, PARTS, tlc_k_adamw(st2, &h, P, begin, end));
    } else {
      SPLIT(units, 1, tlc_k_sgd(st, &h, P, begin, end));
      SPLIT(units, PARTS, tlc_k_sgd(st2, &h, P, begin, end));
    }
    snprintf(what, sizeof what, "%s step %d", name, step);
    same_bits(what, st, st2, sizeof(float) * S);
  }
  char what[128];
  snprintf(what, sizeof what, "%s params", name);
  check(what, st, ref, P, 1e-6);
  snprintf(what, sizeof what, "%s grads zeroed", name);
  check(what, st + P, ref + P, P, 0);
  if (adamw) {
    snprintf(what, sizeof what, "%s first moments", name);
    check(what, st + 2 * P, ref + 2 * P, P, 1e-5);
    snprintf(what, sizeof what, "%s second moments", name);
    check(what, st + 3 * P, ref + 3 * P, P, 1e-5);
  }
  free(st), free(st2), free(ref);
}

/* ------------------------------------------------------------------------ */

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void *amalloc(size_t n) { /* 64-byte aligned, as the runtime's buffers */
  return aligned_alloc(64, (n + 63) / 64 * 64);
}

static void bench(void) {
  { /* ternary backward product */
    int64_t T = 512, N = 2560, K = 2560;
    int8_t *W = malloc(N * K);
    for (int64_t i = 0; i < N * K; ++i)
      W[i] = (int8_t)(irand(3) - 1);
    size_t wbytes = 64 + tlc_ternary_packed_size(N, K);
    uint8_t *w = amalloc(wbytes);
    memset(w, 0, wbytes);
    float gamma = 1.0f;
    memcpy(w, &gamma, 4);
    tlc_ternary_pack(W, N, K, w + 64);
    float *dy = amalloc(4 * T * N), *dx = amalloc(4 * T * K);
    for (int64_t i = 0; i < T * N; ++i)
      dy[i] = (float)uniform();
    double best = 1e30;
    for (int r = 0; r < 4; ++r) {
      double t0 = now();
      tlc_k_ternary_matmul_t(dy, w, dx, T, K, N, 0, (K + 63) / 64);
      double dt = now() - t0;
      best = dt < best ? dt : best;
    }
    printf("ternary_matmul_t T=%lld N=%lld K=%lld: %.1f ms, %.1f GFLOP/s\n",
           (long long)T, (long long)N, (long long)K, best * 1e3,
           2.0 * T * N * K / best * 1e-9);
    free(W), free(w), free(dy), free(dx);
  }
  { /* fused cross entropy */
    int64_t T = 64, K = 2560, V = 32000, units = (T + 15) / 16;
    float *x = amalloc(4 * T * K), *wf = amalloc(4 * V * K);
    uint16_t *wb = amalloc(2 * V * K);
    for (int64_t i = 0; i < T * K; ++i)
      x[i] = (float)uniform();
    for (int64_t i = 0; i < V * K; ++i)
      wb[i] = to_bf16(wf[i] = (float)(0.05 * uniform()));
    int32_t *labels = malloc(4 * T);
    for (int64_t t = 0; t < T; ++t)
      labels[t] = (int32_t)irand(V);
    float *loss = falloc(T), *lse = falloc(T), *dx = amalloc(4 * T * K);
    tlc_train_hyper_t h;
    memset(&h, 0, sizeof h);
    h.loss_scale = 1.0f;
    float *dloss = falloc(T);
    tlc_k_mean_loss_grad(&h.loss_scale, labels, dloss, T, 0, 1);
    for (int kind = 0; kind < 4; ++kind) {
      double best = 1e30;
      for (int r = 0; r < 3; ++r) {
        double t0 = now();
        if (kind == 0)
          tlc_k_cross_entropy_bf16(x, wb, labels, loss, lse, T, K, V, 0, units);
        else if (kind == 1)
          tlc_k_cross_entropy_f32(x, wf, labels, loss, lse, T, K, V, 0, units);
        else if (kind == 2)
          tlc_k_cross_entropy_grad_bf16(x, wb, labels, lse, dloss, dx, T, K, V, 0,
                                        units);
        else
          tlc_k_cross_entropy_grad_f32(x, wf, labels, lse, dloss, dx, T, K, V, 0,
                                       units);
        double dt = now() - t0;
        best = dt < best ? dt : best;
      }
      printf("cross_entropy%s %s T=%lld K=%lld V=%lld: %.1f ms, %.1f GFLOP/s\n",
             kind < 2 ? "" : "_grad", kind % 2 ? "f32" : "bf16", (long long)T,
             (long long)K, (long long)V, best * 1e3,
             (kind < 2 ? 2.0 : 4.0) * T * K * V / best * 1e-9);
    }
    free(x), free(wf), free(wb), free(labels), free(loss), free(lse), free(dx);
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "bench") == 0) {
    bench();
    return 0;
  }
  printf("train kernels, ternary isa %d\n", tlc_ternary_isa());
  test_rms(3, 7);
  test_rms(5, 64);
  test_rms(2, 33);
  test_rms(4, 2560);
  test_ternary_t(1, 16, 1);
  test_ternary_t(5, 48, 37);
  test_ternary_t(7, 80, 70);
  test_ternary_t(13, 160, 100);
  test_ternary_t(64, 256, 200);
  test_ternary_t(3, 2560, 33);
  test_lora(3, 5, 4, 2);
  test_lora(5, 96, 40, 4);
  test_lora(7, 130, 67, 3);
  test_lora(33, 64, 200, 17);
  test_squared_relu(3, 17);
  test_squared_relu(4, 1000);
  test_attention(2, 3, 4, 2, 3);
  test_attention(2, 5, 4, 2, 8);
  test_attention(3, 7, 8, 8, 16);
  test_attention(2, 33, 6, 2, 64);
  test_attention(1, 100, 4, 1, 128);
  test_ce(5, 6, 9, 1.0, 1);
  test_ce(16, 64, 37, 1.0, 0);
  test_ce(37, 100, 300, 0.5, 1);
  test_ce(20, 256, 1000, 0.1, 1);
  test_ce(7, 32, 50, 1.0, 2);
  test_ce(3, 4000, 70, 0.05, 0);
  test_ce(18, 1000, 40, 0.1, 1); /* k chunks with a scalar k tail */
  test_accumulate(1000);
  test_accumulate(3000);
  test_optimizer(3000, 1, 1.0f);
  test_optimizer(1500, 1, 0.0f);
  test_optimizer(2100, 0, 1.0f);
  test_optimizer(700, 0, 0.0f);
  printf("%s\n", failures ? "FAILED" : "all ok");
  return failures != 0;
}
