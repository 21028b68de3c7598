// LeptonGaussianNoise: n standard normal draws times a scale, for DP-SGD's noise, in one fused CPU
// kernel. Counter-based Philox-4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as
// 1, 2, 3"; the generator behind TensorFlow's own random ops) gives 32-bit words, and the
// Box-Muller transform turns each pair of them into two normals, written so that the compiler
// vectorizes the generator and Eigen's packet math vectorizes log, sqrt, cos and sin.
// Built and loaded by native_noise.py, which documents the layout and the key.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <random>

#include "third_party/eigen3/Eigen/Core"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace lepton_nb {
using namespace tensorflow;

constexpr int kLanes = 64;  // Philox blocks per chunk: 4 words each, so 256 draws per chunk
using Lanes = Eigen::Array<float, kLanes, 1>;

// Philox-4x32-10 of the counters (block + l, stream) under the key (k0, k1), l = 0 .. kLanes - 1:
// out[w][l] is word w of block + l.
inline void philox_chunk(uint64_t block, uint64_t stream, uint32_t k0, uint32_t k1, uint32_t out[4][kLanes]) {
  const uint32_t s0 = static_cast<uint32_t>(stream), s1 = static_cast<uint32_t>(stream >> 32);
  for (int l = 0; l < kLanes; ++l) {
    const uint64_t b = block + l;
    uint32_t c0 = static_cast<uint32_t>(b), c1 = static_cast<uint32_t>(b >> 32), c2 = s0, c3 = s1;
    uint32_t key0 = k0, key1 = k1;
#pragma GCC unroll 10
    for (int r = 0; r < 10; ++r) {
      const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
      const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ key0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ key1;
      c1 = static_cast<uint32_t>(p1);
      c3 = static_cast<uint32_t>(p0);
      c0 = n0;
      c2 = n2;
      key0 += 0x9E3779B9u;
      key1 += 0xBB67AE85u;
    }
    out[0][l] = c0;
    out[1][l] = c1;
    out[2][l] = c2;
    out[3][l] = c3;
  }
}

class GaussianNoiseOp : public OpKernel {
 public:
  explicit GaussianNoiseOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    int64_t seed, seed2;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("seed", &seed));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("seed2", &seed2));
    if (seed == 0 && seed2 == 0) {  // unseeded: a key from the operating system's entropy
      std::random_device os("/dev/urandom");
      k0_ = os();
      k1_ = os();
    } else {
      k0_ = static_cast<uint32_t>(seed) ^ static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32);
      k1_ = static_cast<uint32_t>(seed2) ^ static_cast<uint32_t>(static_cast<uint64_t>(seed2) >> 32);
    }
  }

  void Compute(OpKernelContext* ctx) override {
    const int64_t n = ctx->input(0).scalar<int64_t>()();
    const float scale = ctx->input(1).scalar<float>()();
    OP_REQUIRES(ctx, n >= 0, errors::InvalidArgument("LeptonGaussianNoise: n must be >= 0, got ", n));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({n}), &out));
    float* z = out->flat<float>().data();
    const uint64_t stream = calls_.fetch_add(1);  // every call of this op draws from fresh counters
    const uint32_t k0 = k0_, k1 = k1_;
    constexpr int64_t kPerChunk = 4 * kLanes;
    auto work = [=](int64_t begin, int64_t end) {
      uint32_t bits[4][kLanes];
      alignas(64) float buf[kPerChunk];
      for (int64_t c = begin; c < end; ++c) {
        philox_chunk(static_cast<uint64_t>(c) * kLanes, stream, k0, k1, bits);
        // words (0, 1) and (2, 3) of each block: u1 = (top 24 bits + 1) / 2^24 in (0, 1],
        // u2 = top 24 bits / 2^24 in [0, 1); r = sqrt(-2 ln u1) reaches 5.77 sigma.
        for (int h = 0; h < 2; ++h) {
          Lanes u1, u2;
          for (int l = 0; l < kLanes; ++l) {
            u1[l] = static_cast<float>((bits[2 * h][l] >> 8) + 1) * 5.9604644775390625e-8f;
            u2[l] = static_cast<float>(bits[2 * h + 1][l] >> 8) * 5.9604644775390625e-8f;
          }
          const Lanes r = (-2.0f * u1.log()).sqrt() * scale;
          const Lanes t = 6.2831853071795864769f * u2;
          Eigen::Map<Lanes>(buf + 2 * h * kLanes) = r * t.cos();
          Eigen::Map<Lanes>(buf + (2 * h + 1) * kLanes) = r * t.sin();
        }
        const int64_t start = c * kPerChunk;
        std::copy(buf, buf + std::min<int64_t>(kPerChunk, n - start), z + start);
      }
    };
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    Shard(workers->NumThreads(), workers, (n + kPerChunk - 1) / kPerChunk, /*cost_per_unit=*/20000, work);
  }

 private:
  uint32_t k0_, k1_;
  std::atomic<uint64_t> calls_{0};
};

REGISTER_OP("LeptonGaussianNoise")
    .Input("n: int64")
    .Input("scale: float")
    .Output("output: float")
    .Attr("seed: int = 0")
    .Attr("seed2: int = 0")
    .SetIsStateful()
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      shape_inference::DimensionHandle n;
      TF_RETURN_IF_ERROR(c->MakeDimForScalarInput(0, &n));
      c->set_output(0, c->Vector(n));
      return OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("LeptonGaussianNoise").Device(DEVICE_CPU), GaussianNoiseOp);

}  // namespace lepton_nb
