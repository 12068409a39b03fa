// host_readback.cpp — the copying HostReadback and the argument checks all implementations share.
#include "core/host_readback.h"

#include "core/backend.h"
#include "core/error.h"

namespace sf {

void check_readback_start(const Tensor& values, bool pending) {
  SF_CHECK(!pending, "HostReadback::start: the previous read was not waited for");
  SF_CHECK(values.defined() && values.dtype() == DType::f64 && values.is_contiguous() &&
               values.numel() >= 1,
           "HostReadback::start: expected contiguous F64 values, got {}",
           values.defined() ? values.describe() : std::string("undefined"));
}

void CopyingReadback::start(const Tensor& values) {
  check_readback_start(values, pending_);
  Tensor host = Tensor::zeros({values.numel()}, DType::f64);
  backend_.copy(host, values.view({values.numel()}));
  values_.assign(host.data<double>(), host.data<double>() + values.numel());
  pending_ = true;
}

std::vector<double> CopyingReadback::wait() {
  SF_CHECK(pending_, "HostReadback::wait: no read was started");
  pending_ = false;
  return values_;
}

}  // namespace sf
