// The inference threads of one model: N instances share one loaded Engine, each instance is a
// std::thread with its own OpenMP team, fed from a shared FIFO (any free instance takes the next
// job) or from its own FIFO (jobs aimed at one instance: warm-up). Plain C++ (no N-API).
// Why threads of our own: docs/design.md, "Inference threads".
//
// Lifetimes: instance 0 starts with the pool and runs the load job; the other instances start
// once the engine exists (start()). shutdown() drops queued jobs; running ones finish; instance 0
// joins the others, destroys the engine on its own thread, then calls onExit.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine.h"

namespace densenet {

class InstancePool;

// What a job sees of the instance that runs it.
struct InstanceContext {
  int index;                        // 0..instances-1
  std::unique_ptr<Engine>& engine;  // null until loaded; only the load job (instance 0) assigns it
  InstancePool& pool;
};

class Job {
 public:
  virtual ~Job() = default;
  // On an instance thread; must not throw (a throw is swallowed and the job counts as done).
  virtual void run(InstanceContext& ctx) = 0;
  // The job will never run (shutdown): answer its caller. On an instance thread or a stopping thread.
  virtual void drop() = 0;
};

class InstancePool {
 public:
  static constexpr int kAnyInstance = -1;

  // onExit runs last, on instance 0's thread, after the engine is destroyed.
  explicit InstancePool(std::function<void()> onExit = {});
  ~InstancePool();  // shutdown() + join()
  InstancePool(const InstancePool&) = delete;
  InstancePool& operator=(const InstancePool&) = delete;

  // False once shutdown() was called (the caller answers the job itself).
  bool post(std::unique_ptr<Job> job, int instance = kAnyInstance);
  // On instance 0, once the engine is loaded: starts instances 1..count-1, each calling
  // Engine::attachThread() before it takes work.
  void start(int count);
  int instances() const;
  // Non-blocking: no new jobs; queued jobs are dropped; running ones finish.
  void shutdown();
  // Waits for instance 0 (which joins the others). Idempotent; a no-op on an instance thread.
  void join();

 private:
  void loop(int index);
  std::unique_ptr<Job> next(int index, std::unique_lock<std::mutex>& lock);

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Job>> shared_;  // any instance
  using Queue = std::deque<std::unique_ptr<Job>>;
  std::vector<std::unique_ptr<Queue>> own_;  // one per instance
  bool stopping_ = false;
  int attached_ = 0;  // instances 1..N-1 that have run attachThread()
  std::function<void()> onExit_;
  std::unique_ptr<Engine> engine_;   // assigned and destroyed on instance 0 only
  std::vector<std::thread> others_;  // instances 1..N-1: started and joined by instance 0
  std::thread first_;                // instance 0: joined by join()
};

}  // namespace densenet
