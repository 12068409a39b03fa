// run_compare.h — comparing two training runs within a tolerance: their metrics logs step by
// step and their final weights tensor by tensor (used where runs differ only in reduction
// order, e.g. data parallel against one process with the same global batch).
#pragma once

#include <string>

namespace sf::test {

// Every "loss", "grad_norm" and "val_loss" of run folder `a` matches run folder `b`'s at the
// same step within `relative` (|x - y| <= relative * |y|), and both logs have the same steps.
void expect_metrics_close(const std::string& run_a, const std::string& run_b, double relative);

// Both safetensors files hold the same F32 tensors (names, shapes) and each tensor differs by at
// most `relative` in norm: ||x - y||_2 <= relative * ||y||_2.
void expect_weights_close(const std::string& file_a, const std::string& file_b, double relative);

}  // namespace sf::test
