// model.h — the StagFormer model: p stacks over the same token embeddings, staggered
// cross-attention between consecutive stacks, output combination, LM head and loss.
//
// The model's wiring above the layers (spec §3), for training; it runs on any Backend. The layers
// of a stack are wired once, in model/stack_pass.h, for this forward, its recomputation, the
// prefill and every decode schedule (model/decoding.h). Training uses the teacher-forced forward
// over whole sequences: stacks run in order, stack s >= 1 cross-attends to the normalised output
// of stack s-1 at positions i-w..i-1 (never i). n_stacks = 1 is the ordinary pre-norm Transformer.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "core/backend.h"
#include "model/block.h"
#include "model/config.h"
#include "model/parameters.h"
#include "model/stack_pass.h"
#include "model/weights.h"

namespace sf {

// Optional observation/intervention points of a forward pass (tests, analysis).
struct ForwardHooks {
  // Called with stack s's output a^(s) [B*T, D] right after the stack runs, before the next
  // stack reads it; the hook may modify it in place.
  std::function<void(int64_t stack, Tensor& output)> after_stack;
};

class Model {
 public:
  // Registers the parameters (zero until initialize() or a load). dtype: the parameters' (master)
  // dtype, F32, or F64 for finite-difference checks on the CPU backend. compute_dtype: the dtype
  // of activations and of the weights the kernels read; F32/F64 = dtype (the default), or BF16
  // for mixed precision on the CUDA backend (F32 master weights, gradients and optimizer state;
  // BF16 working copies of the weights; F32 statistics).
  Model(const ModelConfig& config, Backend& backend, DType dtype = DType::f32,
        std::optional<DType> compute_dtype = std::nullopt);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  Backend& backend() { return backend_; }
  DType dtype() const { return dtype_; }
  DType compute_dtype() const { return compute_dtype_; }
  bool mixed_precision() const { return compute_dtype_ != dtype_; }
  // In mixed precision, refreshes the working copies from the master weights. forward() does
  // this itself (one cast pass over all masters) unless the optimizer step just before it wrote
  // the copies in its own pass (AdamW::step; ParameterSet::consume_working_current), so stale
  // working weights after a load, an initialisation or an edit cannot happen. Code that edits
  // master values between an optimizer step and the next forward calls
  // params().invalidate_working_copies() (the contract in parameters.h); code that reads
  // weights() without a forward (the decoder) calls this after changing the master weights.
  void sync_compute_weights();
  ParameterSet& params() { return params_; }
  const ParameterSet& params() const { return params_; }
  // The weights as the kernels read them (working copies in mixed precision) with the master
  // gradients.
  const ModelWeights& weights() const { return weights_; }

  void initialize();  // weights_initialize with config.seed

  // combine.alpha as host values (combine = linear; empty otherwise).
  std::vector<double> combine_alpha() const;

  // How self- and cross-attention attend (masks and RoPE flags; model/stack_pass.h).
  AttentionSpec self_spec() const { return self_attention_spec(config_); }
  AttentionSpec cross_spec() const { return cross_attention_spec(config_); }

  // Teacher-forced forward. tokens, targets: CPU I32 [B, T] (targets may be undefined: no loss;
  // -1 marks an ignored position). Returns the mean cross-entropy over counted targets (0 when
  // there are none or no targets). Token ids and T are validated with clear errors. With
  // targets it also keeps the loss's gradient w.r.t. the logits for backward(): the cross-entropy
  // reads the logits once for both (an evaluation pays one extra write of [B*T, V]).
  double forward(const Tensor& tokens, const Tensor& targets = Tensor(),
                 const ForwardHooks* hooks = nullptr);
  // The same without reading the loss back: on an asynchronous backend (CUDA) the host can go on
  // queueing backward() while the device computes. loss() reads the mean loss of the last
  // forward (waiting for the device); a training step calls it after backward().
  void forward_async(const Tensor& tokens, const Tensor& targets = Tensor(),
                     const ForwardHooks* hooks = nullptr);
  double loss();
  // scale * the mean loss of the last forward, written into `total` (an F64 tensor of one
  // element on the backend) or added to it, without waiting for the device: a training step
  // sums its micro-batches' losses there and reads the sum back once (core/host_readback.h).
  // With no counted targets the mean loss is 0, as loss() says.
  void write_loss_into(Tensor& total, double scale);
  void add_loss_into(Tensor& total, double scale);
  // Backward of the last forward (which must have had targets): the gradient of loss_scale *
  // mean loss, added to the parameter gradients (accumulate: call params().zero_grad() between
  // steps) or written over whatever they hold (overwrite: a step's first micro-batch, no
  // zero_grad needed). Overwriting lets most weight-gradient products write their gradient
  // instead of adding to zeros, and the zeroing skip those gradients (GradientWrites).
  void backward(double loss_scale = 1.0, GradientStart start = GradientStart::accumulate);
  // forward_async(tokens, targets) then backward(loss_scale): a training micro-batch. Where the
  // backend can record (CUDA graphs), the device work of the two is recorded per (batch, seq,
  // loss scale, counted targets, start) and replayed from then on, which removes most of the
  // launch overhead of ~700 kernels; the results are those of the two calls. Each start runs
  // directly on a new shape until one such call ran with the gradient writes already learned
  // (lazy allocations and cuBLASLt tuning happen then): the start of the model's very first
  // call (which learns them) is recorded at its third run, the other start at its second.
  // Linear-combine models, which read alpha on the host, always run directly.
  void forward_backward_async(const Tensor& tokens, const Tensor& targets, double loss_scale = 1.0,
                              GradientStart start = GradientStart::accumulate);
  // Recording on (the default) or off (every call runs directly; for comparisons).
  void set_step_recording(bool on);
  // forward_backward_async calls that replayed a recording (for tests and diagnostics).
  int64_t replayed_steps() const { return replayed_steps_; }

  const Tensor& logits() const;                   // [B, T, V] of the last forward
  const Tensor& stack_output(int64_t stack) const;  // a^(stack) [B*T, D] of the last forward
  int64_t counted_targets() const { return counted_targets_; }
  // Which gradients the backward writes with a product (learned in the first backward).
  const GradientWrites& gradient_writes() const { return grad_writes_; }
  // Attention activations of the last forward (keys after RoPE), for tests and analysis (the
  // decoder's prefill is checked against them). cross_attention needs stack >= 1.
  const AttentionActivations& self_attention(int64_t stack, int64_t layer) const;
  const AttentionActivations& cross_attention(int64_t stack, int64_t layer) const;

  // Activation recomputation (gradient checkpointing per layer), for sequences whose activations
  // do not fit: forward keeps only each layer's input (the residual stream) and one set of
  // per-layer activations per stack, which every layer overwrites; backward recomputes a layer's
  // activations from its input just before that layer's backward. Gradients are the same as
  // without (the same operations on the same inputs); a step costs about one more forward.
  // Memory for the layers falls from ~(8 + 3 F/D) x [B*T, D] per layer (more with
  // cross-attention) to one [B*T, D] per layer. self_attention()/cross_attention() are not
  // available then. Takes effect at the next forward.
  void set_activation_recomputation(bool on);
  bool activation_recomputation() const { return recompute_; }
  // Device bytes of the planned activations and their gradient scratch (0 before a forward).
  int64_t activation_bytes() const { return act_.bytes; }

 private:
  struct StackActivations {
    std::vector<Tensor> residual;  // residual[l] enters layer l; residual[h] = stack output
    std::vector<LayerActivations> layers;
    Tensor mem, mem_rstd;  // RMSNorm_mem(previous stack's output), stacks >= 1
  };
  struct Activations {
    int64_t batch = 0, seq = 0;
    Tensor tokens, targets;  // on the backend's device
    Tensor embedded;         // E[tokens], [B*T, D]
    std::vector<StackActivations> stacks;
    Tensor combined;         // h = combination of stack outputs [B*T, D]
    Tensor final_norm_out, final_rstd, logits, losses;
    Tensor ones;             // [B*T] of 1: the loss sum is dot(losses, ones)
    // gradients
    Tensor d_combined, d_final_norm_out, d_logits, d_embedded;
    std::vector<Tensor> d_stack_output, d_mem;
    BlockScratch scratch;
    Tensor recompute_out;    // recomputation: the recomputed layer output goes here
    int64_t bytes = 0;       // what plan() allocated
    // A training micro-batch of that GradientStart already ran directly on these buffers, with
    // the gradient writes known (forward_backward_async records only then).
    bool warm_accumulate = false, warm_overwrite = false;
  };

  void plan(int64_t batch, int64_t seq);  // allocates activations once per shape
  double loss_weight(double scale, const char* op) const;  // write_loss_into / add_loss_into
  // Ids must lie in [lowest, vocab_size).
  void check_tokens(const Tensor& tokens, const char* what, int32_t lowest) const;
  // forward_async in two parts: the host's checks, planning, weight refresh and uploads, then the
  // device work (which a recording captures).
  void prepare_forward(const Tensor& tokens, const Tensor& targets);
  void run_forward(const ForwardHooks* hooks);
  void drop_recordings();
  void stack_forward(int64_t s);
  StackPass stack_pass_of(int64_t s) const;  // the training pass of stack s (no caches)
  void stack_backward(int64_t s);
  // Layer l of stack s forward from residual[l] into its activations, the output into x_out.
  void layer_forward(int64_t s, int64_t l, Tensor& x_out);
  // The activations layer l of stack s uses: its own, or the stack's one shared set when
  // recomputing.
  LayerActivations& layer_activations(int64_t s, int64_t l);

  ModelConfig config_;
  Backend& backend_;
  DType dtype_;          // master parameters and their gradients
  DType compute_dtype_;  // activations and working weights
  DType stat_dtype_;     // rstd, lse, losses: F32 when compute is BF16
  ParameterSet params_;
  ModelWeights weights_;  // .value = working copy in mixed precision; .grad = master gradient
  Activations act_;
  bool recompute_ = false;
  // Recordings of forward_backward_async's device work, valid for the planned buffers.
  struct StepRecording {
    double loss_scale;
    int64_t counted_targets;
    GradientStart start;
    int id;
  };
  std::vector<StepRecording> recordings_;
  bool step_recording_ = true;
  int64_t replayed_steps_ = 0;
  GradientWrites grad_writes_;  // which gradient products write, which add (learned once)
  bool have_targets_ = false;
  int64_t counted_targets_ = 0;
};

}  // namespace sf
