// The one inference thread of a model: owns the Engine, runs jobs from a FIFO queue.
// Plain C++ (no N-API, no torch headers). Why one thread (docs/design.md#one-inference-thread-per-model):
// each thread that runs torch ops gets its own OpenMP team, and the extra teams made every
// forward 36-56 % slower. So load, optimise, warm-up, forward and the Engine's destruction
// (every tensor) all happen on this thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "engine.h"

namespace densenet {

class Job {
 public:
  virtual ~Job() = default;
  // On the worker thread; must not throw (a throw is swallowed and the job counts as done).
  virtual void run(std::unique_ptr<Engine>& engine) = 0;
  // The job will never run (shutdown): answer its caller. On the worker or a stopping thread.
  virtual void drop() = 0;
};

class Worker {
 public:
  // onExit runs last on the worker thread, after the engine is destroyed.
  explicit Worker(std::function<void()> onExit = {});
  ~Worker();  // shutdown() + join()
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // False (and the job is dropped by the caller's choice) once shutdown() was called.
  bool post(std::unique_ptr<Job> job);
  // Non-blocking: no new jobs; queued jobs are dropped; the running one finishes.
  void shutdown();
  // Waits for the thread (at most one running job). Idempotent.
  void join();

 private:
  void loop();

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Job>> queue_;
  bool stopping_ = false;
  std::function<void()> onExit_;
  std::unique_ptr<Engine> engine_;  // touched on the worker thread only
  std::thread thread_;
};

}  // namespace densenet
