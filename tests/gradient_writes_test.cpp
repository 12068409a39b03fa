// gradient_writes_test.cpp — GradientWrites on plain tensors: which gradient ranges the first
// pass finds product-written, what an overwriting pass zeroes, the betas it hands out, and the
// errors when a later pass writes in another order. (Whole models: model_step_test.cpp.)
#include <gtest/gtest.h>

#include "model/gradient_writes.h"
#include "support/test_util.h"

namespace sf {
namespace {

// A gradient buffer of 12 floats and three "parameters" of 4 in it, plus two on their own.
struct Gradients {
  Tensor group = Tensor::zeros({12});
  Tensor a = group.slice(0, 0, 4), b = group.slice(0, 4, 4), c = group.slice(0, 8, 4);
  Tensor norm = Tensor::zeros({3});
  Tensor embedding = Tensor::zeros({5});
  std::vector<Tensor> all() const { return {a, b, c, norm, embedding}; }
};

// The pass every test observes first: one product over the group, an addition into the norm,
// the embedding added to before a product writes it.
void first_pass(GradientWrites& w, const Gradients& g, GradientStart start) {
  const std::vector<Tensor> zero = w.begin(g.all(), start);
  EXPECT_EQ(zero.size(), start == GradientStart::overwrite ? 5u : 0u) << "the first pass zeroes all";
  EXPECT_EQ(w.product_beta(g.group), 1.0);
  w.addition(g.norm);
  w.addition(g.embedding);
  EXPECT_EQ(w.product_beta(g.embedding), 1.0);
  EXPECT_EQ(w.product_beta(g.group), 1.0);  // a second product into it (shared weights)
  w.finish();
}

TEST(GradientWrites, FirstProductOfARangeWritesItAndTheRestIsZeroed) {
  Gradients g;
  GradientWrites w;
  first_pass(w, g, GradientStart::accumulate);
  ASSERT_TRUE(w.observed());
  EXPECT_EQ(w.product_written_ranges(), 1u) << "the group; the embedding was added to first";
  for (int pass = 0; pass < 2; ++pass) {
    const std::vector<Tensor> zero = w.begin(g.all(), GradientStart::overwrite);
    ASSERT_EQ(zero.size(), 2u) << "a, b, c lie in the product-written group";
    EXPECT_EQ(zero[0].raw(), g.norm.raw());
    EXPECT_EQ(zero[1].raw(), g.embedding.raw());
    EXPECT_EQ(w.product_beta(g.group), 0.0) << "the first product writes";
    w.addition(g.norm);
    w.addition(g.embedding);
    EXPECT_EQ(w.product_beta(g.embedding), 1.0);
    EXPECT_EQ(w.product_beta(g.group), 1.0) << "the second adds";
    w.finish();
  }
  EXPECT_TRUE(w.begin(g.all(), GradientStart::accumulate).empty());
  EXPECT_EQ(w.product_beta(g.group), 1.0) << "accumulating: every product adds";
  w.finish();
}

TEST(GradientWrites, APartialProductIsNoProductWrittenRange) {
  Gradients g;
  GradientWrites w;
  w.begin(g.all(), GradientStart::overwrite);
  w.product_beta(g.a);      // a alone first: a qualifies
  w.product_beta(g.group);  // then the group, which a already touched: it does not
  w.finish();
  EXPECT_EQ(w.product_written_ranges(), 1u);
  const std::vector<Tensor> zero = w.begin(g.all(), GradientStart::overwrite);
  EXPECT_EQ(zero.size(), 4u) << "b and c are zeroed (their first write was the larger product)";
  EXPECT_EQ(w.product_beta(g.a), 0.0);
  EXPECT_EQ(w.product_beta(g.group), 1.0);
  w.finish();
}

TEST(GradientWrites, AChangedWriteOrderIsAnError) {
  Gradients g;
  GradientWrites w;
  first_pass(w, g, GradientStart::overwrite);
  w.begin(g.all(), GradientStart::overwrite);
  test::expect_error([&] { w.addition(g.b); }, {"write order changed"});
  w.begin(g.all(), GradientStart::overwrite);
  test::expect_error([&] { w.product_beta(g.c); }, {"write order changed"});
  w.begin(g.all(), GradientStart::overwrite);
  w.addition(g.norm);
  test::expect_error([&] { w.finish(); }, {"1 of 1 gradients", "were not written"});
}

TEST(GradientWrites, AnUnfinishedFirstPassIsObservedAgain) {
  Gradients g;
  GradientWrites w;
  w.begin(g.all(), GradientStart::overwrite);
  w.addition(g.group);  // the pass stops here (an error, an aborted recording)
  EXPECT_FALSE(w.observed());
  first_pass(w, g, GradientStart::overwrite);
  EXPECT_EQ(w.product_written_ranges(), 1u);
}

}  // namespace
}  // namespace sf
