# gpu_env.sh — sourced by the bench/gpu_*.sh scripts on a GPU machine: finds the CUDA libraries
# (the machine's CUDA install, CUPTI, PyTorch's bundled nvidia wheels) next to the ones
# scripts/devbin.sh packed into .devbin/lib, and keeps NVLink multicast off in NCCL.
for packed in .devbin/lib/*.gz; do [[ -f $packed ]] && gunzip -f "$packed"; done  # see devbin.sh
cuda_libs=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
  /usr/local/cuda/extras/CUPTI/lib64 2>/dev/null | tr '\n' ':')
py_nvidia=$(python3 -c 'import nvidia, os; print(":".join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p)))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$PWD/.devbin/lib:${cuda_libs}${py_nvidia}:${LD_LIBRARY_PATH:-}"
export NCCL_NVLS_ENABLE=0
