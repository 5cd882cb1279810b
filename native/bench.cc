// Plain C++ driver over engine.{h,cc} (no Node, no N-API): the benchmark's "plain libtorch
// loop" and the accelerator check. Two modes:
//   densenet_bench --model m.pt [opts] --batches 1,8 --iters 20     timed loop, prints medians
//   densenet_bench --model m.pt [opts] --serve                       line protocol on stdin:
//       "forward B ITERS" -> "TIMES ms1 ms2 ... CPU cpu_ms1 cpu_ms2 ..." ; "quit"
// Options: --device D --threads T --precision fp32|bf16 --no-channels-last --no-freeze
//          --optimize-for-inference --profiling-executor --no-dense-executor --input-shape C,H,W --warmup W
//          --profile-ops (after the timed loop: the DenseNet executor's per-step times, "OP b<N> <ms> <share> <step>")
//          --dump PREFIX (writes PREFIX.b<N>.f32: logits of the deterministic input, and
//          PREFIX.b<N>.in.f32: that input; raw float32)
// RESULT lines: wall-clock medians, and cpu_ms = the median CPU time of the process per forward
// (with --threads 1 a load-robust measure of the work on a busy machine).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "engine.h"

using densenet::Engine;
using densenet::EngineOptions;

namespace {

std::vector<int64_t> parseList(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoll(item));
  return out;
}

// Deterministic input in [-2, 2): same values in every run and on every machine.
std::vector<float> makeInput(size_t n, uint64_t seed) {
  std::vector<float> v(n);
  uint64_t x = seed;
  for (size_t i = 0; i < n; ++i) {
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    v[i] = static_cast<float>((z >> 40) * (1.0 / 16777216.0) * 4.0 - 2.0);
  }
  return v;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n == 0 ? 0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + v[i];
  return s;
}

// CPU time of the whole process (all threads), ms.
double cpuMs() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e3 + static_cast<double>(t.tv_nsec) * 1e-6;
}

double timeForward(Engine& e, const std::vector<float>& in, const std::vector<int64_t>& shape, std::vector<float>& out,
                   std::vector<double>* cpu = nullptr) {
  const double c0 = cpuMs();
  auto t0 = std::chrono::steady_clock::now();
  e.forward(in.data(), shape, out);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (cpu) cpu->push_back(cpuMs() - c0);
  return ms;
}

int usage(const char* msg) {
  std::cerr << "densenet_bench: " << msg << "\n(see the header of native/bench.cc for usage)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  EngineOptions opts;
  std::string model, dump;
  std::vector<int64_t> batches{1, 8};
  int iters = 20, warmup = 3;
  bool serve = false, profileOps = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&](const char* what) -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(std::string("missing value for ") + what);
      return argv[++i];
    };
    try {
      if (a == "--model") model = next("--model");
      else if (a == "--device") opts.device = next("--device");
      else if (a == "--threads") opts.threads = std::stoi(next("--threads"));
      else if (a == "--precision") opts.precision = next("--precision");
      else if (a == "--no-channels-last") opts.channelsLast = false;
      else if (a == "--no-freeze") opts.freeze = false;
      else if (a == "--optimize-for-inference") opts.optimizeForInference = true;
      else if (a == "--profiling-executor") opts.profilingExecutor = true;
      else if (a == "--no-dense-executor") opts.denseExecutor = false;
      else if (a == "--profile-ops") profileOps = true;
      else if (a == "--input-shape") opts.inputShape = parseList(next("--input-shape"));
      else if (a == "--batches") batches = parseList(next("--batches"));
      else if (a == "--iters") iters = std::stoi(next("--iters"));
      else if (a == "--warmup") warmup = std::stoi(next("--warmup"));
      else if (a == "--dump") dump = next("--dump");
      else if (a == "--serve") serve = true;
      else return usage(("unknown argument " + a).c_str());
    } catch (const std::exception& e) {
      return usage(e.what());
    }
  }
  if (model.empty()) return usage("--model is required");

  std::unique_ptr<Engine> engine;
  try {
    engine = Engine::load(model, opts);
  } catch (const std::exception& e) {
    std::cerr << "densenet_bench: load failed: " << e.what() << "\n";
    return 1;
  }
  const auto& info = engine->info();
  std::printf("INFO device=%s cuda_available=%d torch=%s threads=%d precision=%s classes=%lld load_s=%.3f optimizations=%s\n",
              info.device.c_str(), info.cudaAvailable ? 1 : 0, info.torchVersion.c_str(), info.threads, info.precision.c_str(),
              static_cast<long long>(info.numClasses), info.loadSeconds, join(info.optimizations).c_str());
  std::fflush(stdout);

  const int64_t C = info.inputShape[0], H = info.inputShape[1], W = info.inputShape[2];
  std::vector<float> out;
  try {
    if (serve) {
      std::printf("READY\n");
      std::fflush(stdout);
      std::string line;
      while (std::getline(std::cin, line)) {
        std::istringstream ls(line);
        std::string cmd;
        ls >> cmd;
        if (cmd == "quit") break;
        if (cmd != "forward") {
          std::printf("ERROR unknown command\n");
          std::fflush(stdout);
          continue;
        }
        int64_t b = 1;
        int n = 1;
        ls >> b >> n;
        std::vector<int64_t> shape{b, C, H, W};
        std::vector<float> in = makeInput(static_cast<size_t>(b * C * H * W), 42);
        std::vector<double> cpu;
        std::printf("TIMES");
        for (int k = 0; k < n; ++k) std::printf(" %.3f", timeForward(*engine, in, shape, out, &cpu));
        std::printf(" CPU");
        for (double c : cpu) std::printf(" %.3f", c);
        std::printf("\n");
        std::fflush(stdout);
      }
      return 0;
    }
    for (int64_t b : batches) {
      std::vector<int64_t> shape{b, C, H, W};
      std::vector<float> in = makeInput(static_cast<size_t>(b * C * H * W), 42);
      std::vector<double> warm, times, cpu;
      for (int k = 0; k < warmup; ++k) warm.push_back(timeForward(*engine, in, shape, out));
      for (int k = 0; k < iters; ++k) times.push_back(timeForward(*engine, in, shape, out, &cpu));
      const int64_t K = info.numClasses;
      double sum = 0, sumAbs = 0;
      for (float v : out) sum += v, sumAbs += std::fabs(v);
      std::vector<int> idx(static_cast<size_t>(K));
      for (int64_t k = 0; k < K; ++k) idx[static_cast<size_t>(k)] = static_cast<int>(k);
      std::partial_sort(idx.begin(), idx.begin() + std::min<int64_t>(5, K), idx.end(),
                        [&](int x, int y) { return out[static_cast<size_t>(x)] > out[static_cast<size_t>(y)]; });
      std::string top5;
      for (int64_t k = 0; k < std::min<int64_t>(5, K); ++k) top5 += (k ? "," : "") + std::to_string(idx[static_cast<size_t>(k)]);
      std::printf(
          "RESULT batch=%lld median_ms=%.3f per_image_ms=%.3f cpu_ms=%.3f min_ms=%.3f first_ms=%.3f iters=%d checksum=%.6f abs_sum=%.6f "
          "top5_row0=%s\n",
          static_cast<long long>(b), median(times), median(times) / static_cast<double>(b), median(cpu),
          *std::min_element(times.begin(), times.end()), warm.empty() ? 0.0 : warm[0], iters, sum, sumAbs, top5.c_str());
      std::fflush(stdout);
      if (profileOps) {
        auto ops = engine->profile(in.data(), shape, iters);
        double total = 0;
        for (const auto& op : ops) total += op.second;
        for (const auto& op : ops)
          std::printf("OP b%lld %8.3f ms %5.1f %% %s\n", static_cast<long long>(b), op.second / iters, 100.0 * op.second / total,
                      op.first.c_str());
        std::fflush(stdout);
      }
      if (!dump.empty()) {
        std::ofstream f(dump + ".b" + std::to_string(b) + ".f32", std::ios::binary);
        f.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size() * sizeof(float)));
        std::ofstream fi(dump + ".b" + std::to_string(b) + ".in.f32", std::ios::binary);
        fi.write(reinterpret_cast<const char*>(in.data()), static_cast<std::streamsize>(in.size() * sizeof(float)));
        if (!f || !fi) throw std::runtime_error("cannot write " + dump);
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "densenet_bench: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
