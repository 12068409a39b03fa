// step_projection.cpp — see step_projection.h.
#include "cuda/step_projection.h"

namespace sf::cuda {

namespace {

// Whether `t` is rows [first, first + count) of the contiguous `whole` viewed as [N, width].
bool is_rows_of(const Tensor& t, const Tensor& whole, int64_t first, int64_t count) {
  if (!t.defined() || !t.is_contiguous() || !whole.is_contiguous() || t.ndim() != 2 ||
      t.dtype() != whole.dtype())
    return false;
  const int64_t width = whole.numel() / whole.dim(0);
  const auto* base = static_cast<const char*>(whole.raw());
  return t.dim(0) == count && t.dim(1) == width &&
         t.raw() == base + first * width * static_cast<int64_t>(dtype_size(whole.dtype()));
}

}  // namespace

bool read_step_projection(const std::vector<LinearTask>& tasks, const Tensor& q, const Tensor& k,
                          const Tensor& v, StepProjection& out) {
  if (tasks.empty() || tasks.size() % 3 != 0) return false;
  const int groups = static_cast<int>(tasks.size() / 3);
  const int64_t N = q.dim(0);
  if (groups > kMaxProjectionGroups || N % groups != 0 || k.dim(0) != N || v.dim(0) != N) return false;
  out = StepProjection{};
  out.groups = groups;
  out.rows_per_group = N / groups;
  const DType dtype = q.dtype();
  for (int g = 0; g < groups; ++g) {
    const LinearTask& tq = tasks[3 * g];
    const LinearTask& tk = tasks[3 * g + 1];
    const LinearTask& tv = tasks[3 * g + 2];
    const int64_t first = g * out.rows_per_group;
    for (const LinearTask* t : {&tq, &tk, &tv}) {
      if (t->accumulate || t->gate.gate.defined() || !t->x.is_contiguous() || !t->w.is_contiguous() ||
          t->x.ndim() != 2 || t->x.dtype() != dtype || t->w.dtype() != dtype ||
          t->x.dim(0) != out.rows_per_group || t->w.dim(1) != t->x.dim(1) || !t->out.defined() ||
          t->out.ndim() != 2 || t->w.dim(0) != t->out.dim(1))
        return false;
      if (t->norm.weight.defined() &&
          (t->norm.weight.dtype() != dtype || t->norm.weight.numel() != t->x.dim(1)))
        return false;
    }
    if (!is_rows_of(tq.out, q, first, out.rows_per_group) ||
        !is_rows_of(tk.out, k, first, out.rows_per_group) ||
        !is_rows_of(tv.out, v, first, out.rows_per_group))
      return false;
    // k and v: one input; with a norm only as q's (the same rows normalised once).
    if (tk.x.raw() != tv.x.raw() || tk.norm.weight.defined() != tv.norm.weight.defined() ||
        (tk.norm.weight.defined() && tk.norm.weight.raw() != tv.norm.weight.raw()))
      return false;
    const bool kv_normalised = tk.norm.weight.defined();
    if (kv_normalised && (tk.x.raw() != tq.x.raw() || !tq.norm.weight.defined() ||
                          tk.norm.weight.raw() != tq.norm.weight.raw() || tk.norm.eps != tq.norm.eps))
      return false;
    const int64_t D = tq.x.dim(1);
    if (tk.x.dim(1) != D || (g > 0 && D != out.d_model)) return false;
    const float eps = static_cast<float>(tq.norm.weight.defined() ? tq.norm.eps : 0.0);
    if (g > 0 && tq.norm.weight.defined() && eps != out.eps) return false;
    out.d_model = D;
    if (tq.norm.weight.defined()) out.eps = eps;
    out.x[g] = tq.x.raw();
    out.norm[g] = tq.norm.weight.defined() ? tq.norm.weight.raw() : nullptr;
    // k and v from q's normalised rows (nullptr), or from their own rows as they are; when q
    // has no norm either, its rows as they are serve both.
    out.kv_x[g] = kv_normalised || (!tq.norm.weight.defined() && tk.x.raw() == tq.x.raw()) ? nullptr : tk.x.raw();
    out.wq[g] = tq.w.raw();
    out.wk[g] = tk.w.raw();
    out.wv[g] = tv.w.raw();
  }
  return true;
}

}  // namespace sf::cuda
