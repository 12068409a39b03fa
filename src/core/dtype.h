// dtype.h — element types a tensor can hold, their sizes and their safetensors names.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sf {

enum class DType : uint8_t { f32, f64, bf16, i32, u16, u32, i64 };

size_t dtype_size(DType dtype);
// Name as written in safetensors headers ("F32", "BF16", ...).
std::string_view dtype_name(DType dtype);
// Parses a safetensors dtype name; throws sf::Error naming the unknown string.
DType dtype_from_name(std::string_view name);

// Maps a C++ element type to its DType (used by Tensor::data<T>() to check access).
template <class T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<uint16_t>() { return DType::u16; }
template <> constexpr DType dtype_of<uint32_t>() { return DType::u32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }

enum class Device : uint8_t { cpu, cuda };
std::string_view device_name(Device device);

}  // namespace sf
