// The narrow C ABI pretune needs from libtorch beyond what tch exposes:
//   * c10d process groups (Gloo on CPU; NCCL when built with PRETUNE_NCCL) over a TCPStore
//     rendezvous: all-reduce (sum), broadcast, barrier;
//   * the autocast dtype and per-device enable flag (tch only toggles CUDA autocast, at fp16).
// Tensors come in as tch's `C_tensor*`, which is an `at::Tensor*`. Every entry point catches
// C++ exceptions and turns them into a return code plus a message for `pt_last_error`, so
// nothing aborts the process: Rust turns the message into an error with context.

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#ifdef PRETUNE_C10D
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef PRETUNE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#endif

namespace {
thread_local std::string last_error;

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return 1;
}
}  // namespace

extern "C" {

const char* pt_last_error() { return last_error.c_str(); }

// device_type: 0 CPU, 1 CUDA. dtype: 0 bfloat16, 1 float16.
int pt_autocast_set(int device_type, int enabled, int dtype) {
  return guarded([&] {
    auto dev = device_type == 1 ? at::kCUDA : at::kCPU;
    auto kind = dtype == 1 ? at::kHalf : at::kBFloat16;
    at::autocast::set_autocast_dtype(dev, kind);
    at::autocast::set_autocast_enabled(dev, enabled != 0);
    if (!enabled) at::autocast::clear_cache();
  });
}

int pt_autocast_is_enabled(int device_type) {
  return at::autocast::is_autocast_enabled(device_type == 1 ? at::kCUDA : at::kCPU) ? 1 : 0;
}

// libtorch's profiler (what torch.profiler drives), CPU activities, on the calling thread.
int pt_profiler_start() {
  return guarded([&] {
    using namespace torch::profiler::impl;
    // report_input_shapes off, profile_memory on: every allocation and free shows in the trace
    // with the allocator's running total (the tensor part of a step's memory).
    ProfilerConfig cfg(ProfilerState::KINETO, false, true);
    std::set<ActivityType> acts{ActivityType::CPU};
    torch::autograd::profiler::prepareProfiler(cfg, acts);
    torch::autograd::profiler::enableProfiler(cfg, acts);
  });
}

// Stops the profiler and writes its Chrome trace (JSON) to `path`.
int pt_profiler_stop(const char* path) {
  return guarded([&] {
    auto result = torch::autograd::profiler::disableProfiler();
    if (!result) throw std::runtime_error("the profiler was not running");
    result->save(path);
  });
}

// A named scope in the trace (torch.profiler.record_function): ops inside it nest under it.
void* pt_scope_enter(const char* name) {
  auto* rf = new at::RecordFunction(at::RecordScope::USER_SCOPE);
  if (rf->isActive()) rf->before(name);
  return rf;
}

void pt_scope_exit(void* scope) { delete static_cast<at::RecordFunction*>(scope); }

// torch.optim.AdamW(fused=True)'s kernel over n parameters sharing one learning rate and weight
// decay: one pass over each parameter, gradient and both moments.
int pt_fused_adamw(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs, at::Tensor** exp_avg_sqs, int n,
                   double step, double lr, double beta1, double beta2, double weight_decay, double eps) {
  return guarded([&] {
    std::vector<at::Tensor> p, g, m, v, steps;
    for (int i = 0; i < n; ++i) {
      p.push_back(*params[i]);
      g.push_back(*grads[i]);
      m.push_back(*exp_avgs[i]);
      v.push_back(*exp_avg_sqs[i]);
      steps.push_back(at::full({}, step, params[i]->options().dtype(at::kFloat)));
    }
    at::_fused_adamw_(p, g, m, v, {}, steps, lr, beta1, beta2, weight_decay, eps, false, false, std::nullopt, std::nullopt);
  });
}

int pt_c10d_available() {
#ifdef PRETUNE_C10D
#ifdef PRETUNE_NCCL
  return 3;
#else
  return 1;
#endif
#else
  return 0;
#endif
}

#ifdef PRETUNE_C10D
struct PtGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
  std::chrono::milliseconds timeout;
};

// backend: 0 Gloo, 1 NCCL. Rank 0 serves the TCPStore at host:port; every rank connects.
// Gloo's transport binds `gloo_ifnames` (comma-separated interfaces, GLOO_SOCKET_IFNAME) when
// not empty, else the local address `gloo_local` (the one facing rank 0's host: binding the
// master's own address only works on the master's machine).
void* pt_pg_new(int backend, const char* host, int port, int rank, int world, int timeout_ms, const char* gloo_local, const char* gloo_ifnames) {
  PtGroup* out = nullptr;
  int rc = guarded([&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(port);
    opts.isServer = rank == 0;
    opts.numWorkers = world;
    opts.waitWorkers = true;
    opts.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    auto g = std::make_unique<PtGroup>();
    g->store = store;
    g->timeout = timeout;
    if (backend == 1) {
#ifdef PRETUNE_NCCL
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      g->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, o);
#else
      throw std::runtime_error("this build has no NCCL backend (CUDA headers were missing at build time)");
#endif
    } else {
      auto o = c10d::ProcessGroupGloo::Options::create();
      o->timeout = timeout;
      std::string ifnames(gloo_ifnames);
      if (ifnames.empty()) {
        o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(std::string(gloo_local)));
      } else {
        size_t start = 0;
        while (start <= ifnames.size()) {
          size_t end = ifnames.find(',', start);
          if (end == std::string::npos) end = ifnames.size();
          if (end > start) o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifnames.substr(start, end - start)));
          start = end + 1;
        }
      }
      g->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, o);
    }
    out = g.release();
  });
  return rc == 0 ? out : nullptr;
}

int pt_pg_allreduce_sum(void* pg, at::Tensor* t) {
  return guarded([&] {
    auto* g = static_cast<PtGroup*>(pg);
    std::vector<at::Tensor> v{*t};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    auto work = g->pg->allreduce(v, o);
    if (!work->wait(g->timeout)) throw std::runtime_error("all-reduce timed out");
  });
}

int pt_pg_broadcast(void* pg, at::Tensor* t, int root) {
  return guarded([&] {
    auto* g = static_cast<PtGroup*>(pg);
    std::vector<at::Tensor> v{*t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    auto work = g->pg->broadcast(v, o);
    if (!work->wait(g->timeout)) throw std::runtime_error("broadcast timed out");
  });
}

int pt_pg_barrier(void* pg) {
  return guarded([&] {
    auto* g = static_cast<PtGroup*>(pg);
    auto work = g->pg->barrier();
    if (!work->wait(g->timeout)) throw std::runtime_error("barrier timed out");
  });
}

void pt_pg_free(void* pg) {
  guarded([&] { delete static_cast<PtGroup*>(pg); });
}
#else
void* pt_pg_new(int, const char*, int, int, int, int, const char*, const char*) {
  last_error = "pretune was built without c10d (install Debian's libgloo-dev and rebuild)";
  return nullptr;
}
int pt_pg_allreduce_sum(void*, at::Tensor*) { return 1; }
int pt_pg_broadcast(void*, at::Tensor*, int) { return 1; }
int pt_pg_barrier(void*) { return 1; }
void pt_pg_free(void*) {}
#endif

}  // extern "C"
