// decode_ops_test.cpp — the pieces incremental decoding is built from, on the CPU: the
// attention masks' visible key ranges and cache rings against a brute-force enumeration of the
// spec's rule, the prefill's bulk cache write against the row-by-row one, several linear layers
// in one call against one product at a time and a product of many rows against one row at a
// time (bit for bit, any thread count), and the prefill's caches against the keys and values of
// the teacher-forced forward.
#include <gtest/gtest.h>

#include <cstring>
#include <set>
#include <tuple>

#include "core/attention_mask.h"
#include "cpu/cpu_backend.h"
#include "infer/decoder.h"
#include "support/gradcheck.h"
#include "support/test_util.h"
#include "support/tiny_models.h"

namespace sf {
namespace {

// ---- the window type -----------------------------------------------------------------------------

// The spec's rules written out (§3): causal self-attention sees 0 <= j <= i; staggered
// cross-attention with window w sees i - w <= j <= i - 1, every j < i when w = 0.
bool causal_sees(int64_t i, int64_t j) { return j >= 0 && j <= i; }
bool staggered_sees(int64_t w, int64_t i, int64_t j) {
  return j >= 0 && j <= i - 1 && (w == 0 || j >= i - w);
}

TEST(AttentionMaskTest, VisibleKeysMatchABruteForceEnumeration) {
  for (const int64_t w : {0, 1, 2, 3, 7}) {
    const AttentionMask cross = AttentionMask::staggered(w), self = AttentionMask::causal();
    for (int64_t i = 0; i <= 40; ++i) {
      std::set<int64_t> want_cross, want_self, got_cross, got_self;
      for (int64_t j = -5; j <= 45; ++j) {
        if (staggered_sees(w, i, j)) want_cross.insert(j);
        if (causal_sees(i, j)) want_self.insert(j);
        EXPECT_EQ(cross.sees(i, j), staggered_sees(w, i, j)) << "w " << w << " i " << i << " j " << j;
      }
      const KeyRange rc = cross.keys_visible(i), rs = self.keys_visible(i);
      for (int64_t j = rc.begin; j < rc.end; ++j) got_cross.insert(j);
      for (int64_t j = rs.begin; j < rs.end; ++j) got_self.insert(j);
      EXPECT_EQ(got_cross, want_cross) << "w " << w << " i " << i;
      EXPECT_EQ(got_self, want_self) << "i " << i;
      EXPECT_EQ(rc.count(), static_cast<int64_t>(want_cross.size()));
      EXPECT_GE(rc.begin, 0);
    }
  }
}

// A ring of cache_slots(context) slots, written in decoding's order (self-attention: position i
// before the query at i attends; cross-attention: memory position i - 1 before the query at i),
// holds every key the query can see, each in slot j % slots.
TEST(AttentionMaskTest, CacheRingsHoldEveryVisibleKey) {
  for (const int64_t context : {1, 2, 5, 41}) {
    for (const int64_t w : {0, 1, 2, 3, 7}) {
      for (const bool cross : {false, true}) {
        const AttentionMask mask = cross ? AttentionMask::staggered(w) : AttentionMask::causal();
        const int64_t slots = mask.cache_slots(context);
        EXPECT_LE(slots, context);
        std::vector<int64_t> ring(static_cast<size_t>(slots), -1);  // the position in each slot
        for (int64_t i = 0; i < context; ++i) {
          const int64_t written = cross ? i - 1 : i;
          if (written >= 0) ring[static_cast<size_t>(written % slots)] = written;
          const KeyRange keys = mask.keys_visible(i);
          EXPECT_LE(keys.count(), slots) << "context " << context << " w " << w << " i " << i;
          for (int64_t j = keys.begin; j < keys.end; ++j)
            EXPECT_EQ(ring[static_cast<size_t>(j % slots)], j)
                << (cross ? "cross" : "self") << " context " << context << " w " << w << " i " << i;
        }
        if (cross && w > 0) {
          EXPECT_EQ(slots, std::min(w, context));
        }
      }
    }
  }
}

// ---- kernels ---------------------------------------------------------------------------------------

TEST(DecodeOps, CacheWriteRangeEqualsRowByRowWrites) {
  CpuBackend cpu;
  Rng rng(5);
  const int64_t B = 3, C = 7, W = 6;
  for (const auto& [sequence, first, n] : {std::tuple<int64_t, int64_t, int64_t>{1, 0, 5},
                                           {2, 4, 6}, {0, 3, 12}, {1, 6, 1}, {0, 0, 7}}) {
    const Tensor start = test::random_normal({B, C, 2, 3}, DType::f32, rng);
    const Tensor rows = test::random_normal({n, W}, DType::f32, rng);
    Tensor bulk = test::clone(start), reference = test::clone(start);
    cpu.kv_cache_write_range(bulk, rows, sequence, first);
    // The reference: each position j = first + r written by kv_cache_write, in order, into
    // slot j % C of the sequence's cache rows.
    Tensor sequence_rows = reference.slice(0, sequence, 1).view({1, C, W});
    for (int64_t r = 0; r < n; ++r) {
      Tensor slot = Tensor::zeros({1}, DType::i32);
      slot.data<int32_t>()[0] = static_cast<int32_t>((first + r) % C);
      cpu.kv_cache_write(sequence_rows, rows.slice(0, r, 1), slot);
    }
    EXPECT_EQ(test::max_abs_difference(bulk, reference), 0.0)
        << "sequence " << sequence << " first " << first << " n " << n;
  }
}

// A step of rows in blocks (AttentionStepRows::block_rows: a decoder stepping its first n of B
// sequences per stack) uses cache row (r / n) * B + r % n for row r: the same as each row's own
// step over that one cache row, bit for bit, and the cache rows no step row maps to untouched.
TEST(DecodeOps, AttentionStepInBlocksUsesEachRowsMappedCacheRow) {
  CpuBackend cpu;
  Rng rng(9);
  const int64_t n = 2, B = 3, blocks = 2, N = n * blocks, C = 5, Hq = 4, Hkv = 2, hd = 4;
  const Tensor q0 = test::random_normal({N, Hq, hd}, DType::f32, rng);
  const Tensor k0 = test::random_normal({N, Hkv, hd}, DType::f32, rng);
  const Tensor v = test::random_normal({N, Hkv, hd}, DType::f32, rng);
  const Tensor caches0 = test::random_normal({2, blocks * B, C, Hkv, hd}, DType::f32, rng);
  const int32_t position[N] = {1, 3, 2, 4}, slot[N] = {1, 3, 2, 4}, begin[N] = {0, 0, 1, 2}, end[N] = {2, 4, 3, 5};
  auto indices = [](const int32_t* values, int64_t first, int64_t count) {
    Tensor t = Tensor::zeros({count}, DType::i32);
    std::copy(values + first, values + first + count, t.data<int32_t>());
    return t;
  };
  AttentionStepRows rows{indices(position, 0, N), indices(position, 0, N), indices(slot, 0, N),
                         indices(begin, 0, N), indices(end, 0, N)};
  rows.block_rows = n;
  rows.cache_block_rows = B;
  Tensor q = test::clone(q0), k = test::clone(k0), caches = test::clone(caches0);
  Tensor k_cache = caches.select(0), v_cache = caches.select(1);
  Tensor out = Tensor::zeros({N, Hq, hd});
  cpu.attention_step(out, q, k, v, k_cache, v_cache, rows, true, true, 10000.0);
  Tensor want_caches = test::clone(caches0);
  for (int64_t r = 0; r < N; ++r) {
    const int64_t cache_row = rows.cache_row(r);
    EXPECT_EQ(cache_row, (r / n) * B + r % n);
    Tensor qr = test::clone(q0.slice(0, r, 1)), kr = test::clone(k0.slice(0, r, 1));
    Tensor kc = want_caches.select(0).slice(0, cache_row, 1), vc = want_caches.select(1).slice(0, cache_row, 1);
    Tensor o = Tensor::zeros({1, Hq, hd});
    const AttentionStepRows own{indices(position, r, 1), indices(position, r, 1), indices(slot, r, 1),
                                indices(begin, r, 1), indices(end, r, 1)};
    cpu.attention_step(o, qr, kr, v.slice(0, r, 1), kc, vc, own, true, true, 10000.0);
    EXPECT_EQ(test::max_abs_difference(out.slice(0, r, 1), o), 0.0) << "row " << r;
  }
  EXPECT_EQ(test::max_abs_difference(caches, want_caches), 0.0) << "the caches";
  for (const int64_t untouched : {int64_t{2}, int64_t{5}})
    EXPECT_EQ(test::max_abs_difference(caches.select(0).slice(0, untouched, 1),
                                       caches0.select(0).slice(0, untouched, 1)),
              0.0)
        << "cache row " << untouched;
}

TEST(DecodeOps, CacheWriteRangeErrorsNameTheProblem) {
  CpuBackend cpu;
  Tensor cache = Tensor::zeros({2, 4, 6}), rows = Tensor::zeros({3, 5});
  test::expect_error([&] { cpu.kv_cache_write_range(cache, rows, 0, 0); }, {"kv_cache_write_range", "rows"});
  Tensor good = Tensor::zeros({3, 6});
  test::expect_error([&] { cpu.kv_cache_write_range(cache, good, 2, 0); }, {"sequence 2 of 2"});
}

// linear_many's products equal matmul's, bit for bit, whatever the other products of the call
// and the thread count: the staggered schedule's logits equal the sequential one's.
template <class T>
void check_linear_many(DType dt) {
  CpuBackend cpu;
  Rng rng(11);
  for (const int64_t rows : {1, 2, 6, 16, 17}) {  // 17: past the small-row kernel, OpenBLAS
    const Tensor x1 = test::random_normal({rows, 40}, dt, rng), x2 = test::random_normal({rows, 33}, dt, rng);
    const Tensor w1 = test::random_normal({48, 40}, dt, rng), w2 = test::random_normal({5, 33}, dt, rng);
    const Tensor w3 = test::random_normal({33, 48}, dt, rng), h = test::random_normal({rows, 48}, dt, rng);
    const Tensor start = test::random_normal({rows, 33}, dt, rng);
    Tensor r1 = Tensor::zeros({rows, 48}, dt), r2 = Tensor::zeros({rows, 5}, dt), r3 = test::clone(start);
    test::with_threads(1, [&] {
      cpu.matmul(r1, x1, false, w1, true, 1.0, 0.0);
      cpu.matmul(r2, x2, false, w2, true, 1.0, 0.0);
      cpu.matmul(r3, h, false, w3, true, 1.0, 1.0);
    });
    for (const int threads : {1, 2, 3}) {
      Tensor o1 = Tensor::zeros({rows, 48}, dt), o2 = Tensor::zeros({rows, 5}, dt), o3 = test::clone(start);
      test::with_threads(threads, [&] {
        cpu.linear_many({{o1, x1, w1, false}, {o2, x2, w2, false}, {o3, h, w3, true}});
      });
      if (rows > 16 && threads > 1) continue;  // OpenBLAS: summation order may follow threads
      for (const auto& [got, want] : {std::pair{&o1, &r1}, {&o2, &r2}, {&o3, &r3}})
        EXPECT_EQ(std::memcmp(got->raw(), want->raw(), want->nbytes()), 0)
            << dtype_name(dt) << " rows " << rows << " threads " << threads;
    }
  }
}

TEST(DecodeOps, LinearManyEqualsOneProductAtATimeBitForBit) {
  check_linear_many<float>(DType::f32);
  check_linear_many<double>(DType::f64);
}

// A product of many rows equals the same product one row at a time, bit for bit: the kernel
// runs blocks of several input rows (and weight rows) together, and each element keeps the
// summation order it has on its own. The sizes cover tails of every length (K mod 8), and rows
// and weight rows left over after the blocks (of the product, or of a thread's share of it).
template <class T>
void check_rows_together(DType dt) {
  CpuBackend cpu;
  Rng rng(13);
  for (const int64_t k : {1, 2, 7, 8, 13, 38, 772, 774})
    for (const int64_t n : {1, 7, 48})
      for (const int64_t rows : {3, 4, 9, 16})
        for (const bool accumulate : {false, true}) {
          const Tensor x = test::random_normal({rows, k}, dt, rng);
          const Tensor w = test::random_normal({n, k}, dt, rng);
          const Tensor start = test::random_normal({rows, n}, dt, rng);
          std::vector<Tensor> want;
          for (int64_t m = 0; m < rows; ++m) {
            want.push_back(test::clone(start.slice(0, m, 1)));
            const Tensor xm = test::clone(x.slice(0, m, 1));
            test::with_threads(1, [&] { cpu.linear_many({{want.back(), xm, w, accumulate}}); });
          }
          for (const int threads : {1, 2, 3}) {
            Tensor got = test::clone(start);
            test::with_threads(threads, [&] { cpu.linear_many({{got, x, w, accumulate}}); });
            for (int64_t m = 0; m < rows; ++m)
              EXPECT_EQ(std::memcmp(test::clone(got.slice(0, m, 1)).raw(), want[m].raw(),
                                    want[m].nbytes()), 0)
                  << dtype_name(dt) << " K " << k << " N " << n << " rows " << rows << " row " << m
                  << " accumulate " << accumulate << " threads " << threads;
          }
        }
}

TEST(DecodeOps, LinearManyRowsTogetherEqualOneRowAtATimeBitForBit) {
  check_rows_together<float>(DType::f32);
  check_rows_together<double>(DType::f64);
}

// A product with an input norm (a decode step's fused RMSNorm) = rmsnorm_forward, then the
// product, bit for bit; tasks sharing the scratch normalise once.
TEST(DecodeOps, LinearManyInputNormEqualsNormThenProduct) {
  CpuBackend cpu;
  Rng rng(12);
  const Tensor x = test::random_normal({2, 16}, DType::f32, rng), g = test::random_normal({16}, DType::f32, rng);
  const Tensor w1 = test::random_normal({5, 16}, DType::f32, rng), w2 = test::random_normal({3, 16}, DType::f32, rng);
  Tensor normed = Tensor::zeros({2, 16}), rstd = Tensor::zeros({2});
  cpu.rmsnorm_forward(normed, rstd, x, g, 1e-5);
  Tensor r1 = Tensor::zeros({2, 5}), r2 = Tensor::zeros({2, 3});
  cpu.matmul(r1, normed, false, w1, true, 1.0, 0.0);
  cpu.matmul(r2, normed, false, w2, true, 1.0, 0.0);
  const InputNorm norm{g, 1e-5, Tensor::zeros({2, 16}), Tensor::zeros({2})};
  Tensor o1 = Tensor::zeros({2, 5}), o2 = Tensor::zeros({2, 3});
  cpu.linear_many({{o1, x, w1, false, norm}, {o2, x, w2, false, norm}});
  EXPECT_EQ(std::memcmp(o1.raw(), r1.raw(), r1.nbytes()), 0);
  EXPECT_EQ(std::memcmp(o2.raw(), r2.raw(), r2.nbytes()), 0);
  EXPECT_EQ(std::memcmp(norm.out.raw(), normed.raw(), normed.nbytes()), 0);  // the scratch
  const InputNorm no_scratch{g, 1e-5, Tensor(), Tensor()};
  test::expect_error([&] { cpu.linear_many({{o1, x, w1, false, no_scratch}}); }, {"scratch"});
}

TEST(DecodeOps, LinearManyRejectsProductsThatDoNotConform) {
  CpuBackend cpu;
  Tensor out = Tensor::zeros({2, 4}), x = Tensor::zeros({2, 3}), w = Tensor::zeros({4, 5});
  test::expect_error([&] { cpu.linear_many({{out, x, w, false}}); }, {"linear_many", "does not conform"});
}

// ---- the prefill ------------------------------------------------------------------------------------

// The decoder's prefill (the stack pass without gradient buffers, bulk cache writes) leaves in
// its caches exactly the keys and values the teacher-forced forward computes: every self
// position, and the cross memory positions up to n - 2 (n - 1 is appended by the first step).
TEST(DecodePrefill, CachesHoldTheForwardsKeysAndValues) {
  std::vector<test::Variant> variants = test::tiny_variants();
  ModelConfig w3 = variants[1].config;
  w3.cross_window = 3;
  variants.push_back({"window3", w3});
  for (const test::Variant& v : variants) {
    ModelConfig c = v.config;
    c.max_seq_len = 12;
    c.validate(v.name);
    CpuBackend backend;
    Model model(c, backend, DType::f32);
    Rng rng(17);
    test::randomize_parameters(model, rng);
    Decoder decoder(model, 2, DecodeMode::sequential);
    for (const int64_t n : {1, 5, 12, 2}) {  // longest first too: views of one allocation
      std::vector<int32_t> prompt(static_cast<size_t>(n));
      for (auto& t : prompt) t = static_cast<int32_t>(rng.below(c.vocab_size));
      const int64_t b = n % 2;
      decoder.prefill(b, prompt);
      Tensor tokens = Tensor::zeros({1, n}, DType::i32);
      std::copy(prompt.begin(), prompt.end(), tokens.data<int32_t>());
      model.forward(tokens);
      const KvCache& cache = decoder.state().cache();
      const int64_t W = c.kv_dim();
      // Position j of sequence b in cache rows of one stack: slot j % slots.
      auto expect_positions = [&](const LayerKv& kv, const AttentionActivations& act,
                                  int64_t first, int64_t last, const std::string& what) {
        for (const auto& [cache_t, forward_t] : {std::pair{&kv.k, &act.k}, {&kv.v, &act.v}}) {
          const int64_t slots = cache_t->dim(1);
          for (int64_t j = first; j <= last; ++j) {
            const float* got = cache_t->data<float>() + (b * slots + j % slots) * W;
            const float* want = forward_t->data<float>() + j * W;
            EXPECT_EQ(std::memcmp(got, want, sizeof(float) * W), 0)
                << v.name << " " << what << " n " << n << " position " << j;
          }
        }
      };
      for (int64_t s = 0; s < c.n_stacks; ++s)
        for (int64_t l = 0; l < c.layers_per_stack; ++l) {
          expect_positions(cache.self(l, s, 1), model.self_attention(s, l), 0, n - 1,
                           fmt::format("self s{} l{}", s, l));
          if (s == 0) continue;
          const int64_t slots = cache.cross_slots();
          expect_positions(cache.cross(l, s, 1), model.cross_attention(s, l),
                           std::max<int64_t>(0, n - 1 - slots), n - 2, fmt::format("cross s{} l{}", s, l));
        }
      // The prediction after the prompt equals the forward's at its last position.
      const Tensor want = test::convert(model.logits().view({n, -1}).slice(0, n - 1, 1), DType::f64);
      EXPECT_LT(test::max_relative_error(decoder.logits().slice(0, b, 1), want), 1e-6) << v.name;
    }
  }
}

}  // namespace
}  // namespace sf
