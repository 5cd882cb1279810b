#include "worker.h"

namespace densenet {

Worker::Worker(std::function<void()> onExit) : onExit_(std::move(onExit)), thread_([this] { loop(); }) {}

Worker::~Worker() {
  shutdown();
  join();
}

bool Worker::post(std::unique_ptr<Job> job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) return false;
    queue_.push_back(std::move(job));
  }
  cv_.notify_one();
  return true;
}

void Worker::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_one();
}

void Worker::join() {
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void Worker::loop() {
  for (;;) {
    std::unique_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) break;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    try {
      job->run(engine_);
    } catch (...) {
      // Jobs answer their own errors; nothing may escape the thread.
    }
  }
  std::deque<std::unique_ptr<Job>> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    dropped.swap(queue_);
  }
  for (auto& job : dropped) {
    try {
      job->drop();
    } catch (...) {
    }
  }
  dropped.clear();
  try {
    engine_.reset();  // every tensor dies on this thread
  } catch (...) {
  }
  if (onExit_) onExit_();
}

}  // namespace densenet
