// dtype.cpp — sizes and names of the element types.
#include "core/dtype.h"

#include "core/error.h"

namespace sf {

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::u16: return 2;
    case DType::u32: return 4;
    case DType::i64: return 8;
  }
  fail("dtype_size: invalid dtype");
}

std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::i32: return "I32";
    case DType::u16: return "U16";
    case DType::u32: return "U32";
    case DType::i64: return "I64";
  }
  fail("dtype_name: invalid dtype");
}

DType dtype_from_name(std::string_view name) {
  for (DType d : {DType::f32, DType::f64, DType::bf16, DType::i32, DType::u16, DType::u32, DType::i64})
    if (dtype_name(d) == name) return d;
  fail(fmt::format("unknown dtype '{}'", name));
}

std::string_view device_name(Device device) { return device == Device::cpu ? "cpu" : "cuda"; }

}  // namespace sf
