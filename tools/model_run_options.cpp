// model_run_options.cpp — see model_run_options.h.
#include "model_run_options.h"

namespace sf::cli {

void add_model_run_options(CLI::App* cmd, ModelRunArgs& a) {
  cmd->add_option("-m,--model", a.model_path,
                  "MODEL: a run folder or model folder (model.safetensors, config.json, "
                  "tokenizer.json), or a .safetensors file with config.json beside it")
      ->required();
  cmd->add_option("--device", a.device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--precision", a.precision,
                  "bf16 or f32: the dtype of the weights the kernels read, the caches and the "
                  "activations (default: bf16 on cuda, f32 on cpu)");
  cmd->add_option("-t,--threads", a.threads, "CPU threads (default: the cores not busy with other work)");
  cmd->add_option("--tokenizer", a.tokenizer,
                  "tokenizer to use instead of the model's tokenizer.json: byte, gpt2, or a "
                  "tokenizer.json file");
  cmd->add_option("--vocab", a.vocab,
                  "GPT-2 ranks file (r50k_base.tiktoken; default: third_party_data or "
                  "$STAGFORMER_GPT2_RANKS)");
}

ModelToRun load_model_to_run(const ModelRunArgs& a) {
  ModelToRun m;
  m.threads = set_threads(a.threads);
  m.backend = make_backend(a.device);
  m.loaded = load_model_for_inference(a.model_path, *m.backend, a.tokenizer, a.vocab,
                                      compute_dtype_for(a.device, a.precision));
  return m;
}

}  // namespace sf::cli
