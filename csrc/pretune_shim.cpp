// The narrow C ABI pretune needs from libtorch beyond what tch exposes:
//   * c10d process groups (Gloo on CPU; NCCL when built with PRETUNE_NCCL) over a TCPStore
//     rendezvous: all-reduce (sum), broadcast, barrier;
//   * c10d's Reducer, the engine of DistributedDataParallel: autograd hooks on the
//     parameters' gradient accumulators launch each bucket's all-reduce as soon as its
//     gradients are ready, overlapping communication with the rest of the backward pass;
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
#include <mutex>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
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

// 1 enabled, 0 not, -1 an exception (pt_last_error says which).
int pt_autocast_is_enabled(int device_type) {
  int on = 0;
  if (guarded([&] { on = at::autocast::is_autocast_enabled(device_type == 1 ? at::kCUDA : at::kCPU) ? 1 : 0; })) return -1;
  return on;
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
// A null scope when opening it threw (pt_last_error says why): the caller goes on unscoped.
void* pt_scope_enter(const char* name) {
  at::RecordFunction* rf = nullptr;
  if (guarded([&] {
        rf = new at::RecordFunction(at::RecordScope::USER_SCOPE);
        if (rf->isActive()) rf->before(name);
      })) {
    delete rf;
    return nullptr;
  }
  return rf;
}

// Closing runs the profiler's end callbacks, which may throw: the scope is freed either way,
// and 1 says an exception was caught.
int pt_scope_exit(void* scope) {
  auto* rf = static_cast<at::RecordFunction*>(scope);
  int rc = guarded([&] { rf->end(); });
  delete rf;
  return rc;
}

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

// The steady clock the Reducer's bucket times use, in ns.
int64_t pt_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
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
  int rank = 0;
  int world = 1;
  int backend = 0;
  // The ProcessGroup front the Reducer takes, over the same backend (made on first use).
  c10::intrusive_ptr<c10d::ProcessGroup> group;
};

// When each bucket's all-reduce was launched and finished in the last backward pass.
struct BucketTimes {
  std::mutex m;
  std::vector<int64_t> launched, done;
  void record(std::vector<int64_t>& v, size_t i) {
    std::lock_guard<std::mutex> g(m);
    if (v.size() <= i) v.resize(i + 1, 0);
    v[i] = pt_now_ns();
  }
};

// Sums each bucket over the ranks (DDP's default divides by the world size; pretune's losses
// are already normalised by the global counts, so the sum is the global batch's gradient) and
// records when it started and ended.
class SumHook : public c10d::CppCommHookInterface<c10::intrusive_ptr<c10d::ProcessGroup>> {
 public:
  SumHook(const c10::intrusive_ptr<c10d::ProcessGroup>& pg, std::shared_ptr<BucketTimes> times)
      : c10d::CppCommHookInterface<c10::intrusive_ptr<c10d::ProcessGroup>>(pg), times_(std::move(times)) {}

  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override {
    size_t idx = bucket.getIndex();
    times_->record(times_->launched, idx);
    std::vector<at::Tensor> tensors = {bucket.getBufferRef()};
    auto fut = state_->allreduce(tensors)->getFuture();
    auto times = times_;
    // A chained future, so the reducer (which waits on what the hook returns) sees the bucket
    // done only after its completion time is recorded.
    return fut->then(
        [times, idx](c10::ivalue::Future& f) {
          times->record(times->done, idx);
          return f.value();
        },
        fut->elementType());
  }

 private:
  std::shared_ptr<BucketTimes> times_;
};

struct PtReducer {
  std::unique_ptr<c10d::Reducer> reducer;
  std::shared_ptr<BucketTimes> times;
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
    g->rank = rank;
    g->world = world;
    g->backend = backend;
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

// A Reducer over `params` (the trainable parameters, the same order on every rank), as
// DistributedDataParallel builds it. Without `find_unused` the first backward pass reduces one
// bucket after all gradients are ready, and `pt_reducer_prepare` then rebuilds the buckets in
// the order the gradients became ready: a first bucket of `first_bucket_bytes`, then
// `bucket_bytes` each. With `find_unused` (parameters that may get no gradient in an update)
// the buckets are fixed from the start, in reverse parameter order, and every update walks the
// autograd graph from the loss to mark the parameters it does not reach.
void* pt_reducer_new(void* pg, at::Tensor** params, int n, int64_t bucket_bytes, int64_t first_bucket_bytes, int find_unused) {
  PtReducer* out = nullptr;
  int rc = guarded([&] {
    auto* g = static_cast<PtGroup*>(pg);
    if (!g->group) {
      auto group = c10::make_intrusive<c10d::ProcessGroup>(g->store, g->rank, g->world);
      auto type = g->backend == 1 ? c10d::ProcessGroup::BackendType::NCCL : c10d::ProcessGroup::BackendType::GLOO;
      auto device = g->backend == 1 ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
      group->setBackend(device, type, g->pg);
      group->setDefaultBackend(type);
      g->group = group;
    }
    std::vector<at::Tensor> ps;
    for (int i = 0; i < n; ++i) ps.push_back(*params[i]);
    std::vector<size_t> limits_in = find_unused
        ? std::vector<size_t>{static_cast<size_t>(first_bucket_bytes), static_cast<size_t>(bucket_bytes)}
        : std::vector<size_t>{std::numeric_limits<size_t>::max()};
    auto [indices, limits] = c10d::compute_bucket_assignment_by_size(ps, limits_in, std::vector<bool>(ps.size(), false));
    // Parameters are created in forward order; gradients arrive roughly in reverse.
    std::reverse(indices.begin(), indices.end());
    auto r = std::make_unique<PtReducer>();
    r->times = std::make_shared<BucketTimes>();
    r->reducer = std::make_unique<c10d::Reducer>(
        ps, indices, g->group, std::vector<bool>(ps.size(), false), bucket_bytes,
        /*find_unused_parameters=*/find_unused != 0, /*gradient_as_bucket_view=*/false,
        std::unordered_map<size_t, std::string>{}, first_bucket_bytes,
        /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false, std::vector<int64_t>{});
    r->reducer->register_comm_hook(std::make_unique<SumHook>(g->group, r->times));
    out = r.release();
  });
  return rc == 0 ? out : nullptr;
}

// After the forward pass of an update's last micro-batch, before its backward: rebuild the
// buckets once (after the first update; a collective: every rank calls it), then arm the hooks
// for the backward of `outputs` (the loss; used to find unused parameters). Micro-batches
// before it run their backward with the hooks idle, accumulating locally (DDP's no_sync).
int pt_reducer_prepare(void* r, at::Tensor** outputs, int n) {
  return guarded([&] {
    auto* red = static_cast<PtReducer*>(r);
    red->reducer->rebuild_buckets();
    {
      std::lock_guard<std::mutex> g(red->times->m);
      red->times->launched.clear();
      red->times->done.clear();
    }
    std::vector<at::Tensor> outs;
    for (int i = 0; i < n; ++i) outs.push_back(*outputs[i]);
    red->reducer->prepare_for_backward(outs);
  });
}

// The last backward's bucket times (steady clock, ns): up to `cap` of each; returns the count
// (a cap of 0 only asks for it).
int pt_reducer_times(void* r, int64_t* launched, int64_t* done, int cap) {
  int count = 0;
  guarded([&] {
    auto* red = static_cast<PtReducer*>(r);
    std::lock_guard<std::mutex> g(red->times->m);
    count = static_cast<int>(red->times->launched.size());
    for (int i = 0; i < count && i < cap; ++i) {
      launched[i] = red->times->launched[i];
      done[i] = i < static_cast<int>(red->times->done.size()) ? red->times->done[i] : 0;
    }
  });
  return count;
}

void pt_reducer_free(void* r) {
  guarded([&] { delete static_cast<PtReducer*>(r); });
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
void* pt_reducer_new(void*, at::Tensor**, int, int64_t, int64_t, int) {
  last_error = "pretune was built without c10d (install Debian's libgloo-dev and rebuild)";
  return nullptr;
}
int pt_reducer_prepare(void*, at::Tensor**, int) { return 1; }
int pt_reducer_times(void*, int64_t*, int64_t*, int) { return 0; }
void pt_reducer_free(void*) {}
#endif

}  // extern "C"
