// nn::Conv2d as im2col + one GEMM per batch (CBLAS). The column matrix holds the whole batch,
// (Cin·k·k) × (N·Ho·Wo), so a batch of small images is one large, efficient GEMM rather than N
// small ones. Checked by tests/nn/layers_test.cc.
#include "bnorm/nn/conv2d.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "bnorm/parallel.h"
#include "bnorm/random.h"
#include "internal/blas.h"
#include "internal/checks.h"

namespace bnorm::nn {

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride,
               int64_t padding, bool bias)
    : in_(in_channels),
      out_(out_channels),
      k_(kernel_size),
      stride_(stride),
      pad_(padding),
      has_bias_(bias) {
  if (in_ < 1 || out_ < 1 || k_ < 1 || stride_ < 1 || pad_ < 0) {
    throw ValueError(
        fmt::format("Conv2d: in_channels, out_channels, kernel_size, stride must be "
                    ">= 1 and padding >= 0, got {}, {}, {}, {}, {}",
                    in_, out_, k_, stride_, pad_));
  }
  const float bound = 1.0f / std::sqrt(static_cast<float>(in_ * k_ * k_));
  std::uniform_real_distribution<float> u(-bound, bound);
  weight_.value = Tensor::empty({out_, in_, k_, k_});
  float* w = weight_.value.data<float>();
  for (int64_t i = 0; i < weight_.value.numel(); ++i) w[i] = u(generator());
  weight_.grad = Tensor::zeros({out_, in_, k_, k_});
  if (has_bias_) {
    bias_.value = Tensor::empty({out_});
    float* b = bias_.value.data<float>();
    for (int64_t i = 0; i < out_; ++i) b[i] = u(generator());
    bias_.grad = Tensor::zeros({out_});
  }
}

namespace {
// col[(ci·k·k + ky·k + kx)·(N·P) + n·P + oy·wo + ox] = x[n, ci, oy·s − p + ky, ox·s − p + kx] or 0.
void im2col(const float* x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t s,
            int64_t p, int64_t ho, int64_t wo, float* col) {
  const int64_t P = ho * wo, NP = n * P;
  parallel_for(0, c * k * k, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t ci = row / (k * k), ky = (row / k) % k, kx = row % k;
      for (int64_t b = 0; b < n; ++b) {
        const float* xp = x + (b * c + ci) * h * w;
        float* cp = col + row * NP + b * P;
        for (int64_t oy = 0; oy < ho; ++oy) {
          const int64_t iy = oy * s - p + ky;
          for (int64_t ox = 0; ox < wo; ++ox) {
            const int64_t ix = ox * s - p + kx;
            cp[oy * wo + ox] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? xp[iy * w + ix] : 0.0f;
          }
        }
      }
    }
  });
}

// The adjoint of im2col: dx[n, ci, iy, ix] += dcol[...]. Parallel over (n, ci) planes, so no
// two threads write the same element.
void col2im(const float* col, int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, int64_t s,
            int64_t p, int64_t ho, int64_t wo, float* dx) {
  const int64_t P = ho * wo, NP = n * P;
  parallel_for(0, n * c, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t plane = i0; plane < i1; ++plane) {
      const int64_t b = plane / c, ci = plane % c;
      float* xp = dx + plane * h * w;
      std::fill(xp, xp + h * w, 0.0f);
      for (int64_t ky = 0; ky < k; ++ky)
        for (int64_t kx = 0; kx < k; ++kx) {
          const float* cp = col + ((ci * k + ky) * k + kx) * NP + b * P;
          for (int64_t oy = 0; oy < ho; ++oy) {
            const int64_t iy = oy * s - p + ky;
            if (iy < 0 || iy >= h) continue;
            for (int64_t ox = 0; ox < wo; ++ox) {
              const int64_t ix = ox * s - p + kx;
              if (ix >= 0 && ix < w) xp[iy * w + ix] += cp[oy * wo + ox];
            }
          }
        }
    }
  });
}
}  // namespace

Tensor Conv2d::forward(const Tensor& x) {
  detail::check_float_input("Conv2d", "input", x, 4);
  if (x.size(1) != in_) {
    throw ValueError(
        fmt::format("Conv2d: input must have in_channels={} channels, got {} (shape {})", in_,
                    x.size(1), shape_str(x.shape())));
  }
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  ho_ = (h + 2 * pad_ - k_) / stride_ + 1;
  wo_ = (w + 2 * pad_ - k_) / stride_ + 1;
  if (h + 2 * pad_ < k_ || w + 2 * pad_ < k_) {
    throw ValueError(
        fmt::format("Conv2d: input {}x{} (padded by {}) must be at least the kernel "
                    "size {}",
                    h, w, pad_, k_));
  }
  const int64_t K = in_ * k_ * k_, P = ho_ * wo_, NP = n * P;
  // Scratch as tensors, not zero-filled vectors: every element is written before it is read, and
  // tensor storage is reused between calls (Tensor's storage cache) where a fresh vector of many
  // MiB costs a page fault per 4 KiB on every call.
  Tensor col = Tensor::empty({K, NP});
  im2col(x.data<float>(), n, in_, h, w, k_, stride_, pad_, ho_, wo_, col.data<float>());
  Tensor out = Tensor::empty({out_, NP});
  detail::sgemm(false, false, out_, NP, K, 1.0f, weight_.value.data<float>(), col.data<float>(),
                0.0f, out.data<float>());
  Tensor y = Tensor::empty({n, out_, ho_, wo_});
  float* yp = y.data<float>();
  const float* b = has_bias_ ? bias_.value.data<float>() : nullptr;
  parallel_for(0, n * out_, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t plane = i0; plane < i1; ++plane) {
      const int64_t bi = plane / out_, co = plane % out_;
      const float add = b ? b[co] : 0.0f;
      const float* src = out.data<float>() + co * NP + bi * P;
      float* dst = yp + plane * P;
      for (int64_t i = 0; i < P; ++i) dst[i] = src[i] + add;
    }
  });
  x_ = x;
  return y;
}

Tensor Conv2d::backward(const Tensor& dy) {
  if (!x_.defined()) throw ValueError("Conv2d: backward called before forward");
  const int64_t n = x_.size(0), h = x_.size(2), w = x_.size(3);
  detail::check_grad_shape("Conv2d", dy, {n, out_, ho_, wo_});
  Tensor g = dy.is_contiguous() ? dy : dy.clone(MemoryFormat::kContiguous);
  const int64_t K = in_ * k_ * k_, P = ho_ * wo_, NP = n * P;
  // dy as (Cout, N·P).
  Tensor gr_tensor = Tensor::empty({out_, NP});  // scratch, see forward
  float* gr = gr_tensor.data<float>();
  const float* gp = g.data<float>();
  for (int64_t bi = 0; bi < n; ++bi)
    for (int64_t co = 0; co < out_; ++co)
      std::copy(gp + (bi * out_ + co) * P, gp + (bi * out_ + co + 1) * P, gr + co * NP + bi * P);
  if (has_bias_) {
    float* db = bias_.grad.data<float>();
    for (int64_t co = 0; co < out_; ++co) {
      double s = 0;
      for (int64_t i = 0; i < NP; ++i) s += gr[co * NP + i];
      db[co] += static_cast<float>(s);
    }
  }
  Tensor col_tensor = Tensor::empty({K, NP});
  float* col = col_tensor.data<float>();
  im2col(x_.data<float>(), n, in_, h, w, k_, stride_, pad_, ho_, wo_, col);
  detail::sgemm(false, true, out_, K, NP, 1.0f, gr, col, 1.0f, weight_.grad.data<float>());
  detail::sgemm(true, false, K, NP, out_, 1.0f, weight_.value.data<float>(), gr, 0.0f, col);
  Tensor dx = Tensor::empty({n, in_, h, w});
  col2im(col, n, in_, h, w, k_, stride_, pad_, ho_, wo_, dx.data<float>());
  return dx;
}

std::vector<std::pair<std::string, Parameter*>> Conv2d::named_parameters() {
  if (!has_bias_) return {{"weight", &weight_}};
  return {{"weight", &weight_}, {"bias", &bias_}};
}

std::string Conv2d::repr() const {
  return fmt::format(
      "Conv2d({}, {}, kernel_size=({}, {}), stride=({}, {}), padding=({}, {}), bias={})", in_, out_,
      k_, k_, stride_, stride_, pad_, pad_, has_bias_ ? "True" : "False");
}

}  // namespace bnorm::nn
