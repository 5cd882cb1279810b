#include "worker.h"

namespace densenet {

InstancePool::InstancePool(std::function<void()> onExit) : onExit_(std::move(onExit)) {
  own_.push_back(std::make_unique<Queue>());
  first_ = std::thread([this] { loop(0); });
}

InstancePool::~InstancePool() {
  shutdown();
  join();
}

bool InstancePool::post(std::unique_ptr<Job> job, int instance) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ || instance >= static_cast<int>(own_.size())) return false;
    if (instance == kAnyInstance) shared_.push_back(std::move(job));
    else own_[static_cast<size_t>(instance)]->push_back(std::move(job));
  }
  cv_.notify_all();
  return true;
}

void InstancePool::start(int count) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (stopping_ || own_.size() > 1 || count <= 1) return;
  for (int i = 1; i < count; ++i) own_.push_back(std::make_unique<Queue>());
  for (int i = 1; i < count; ++i) others_.emplace_back([this, i] { loop(i); });
  // attachThread() may clear libtorch's oneDNN caches: let every instance do it before any warm-up.
  cv_.wait(lock, [&] { return attached_ == count - 1; });
}

int InstancePool::instances() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int>(own_.size());
}

void InstancePool::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
}

void InstancePool::join() {
  if (first_.joinable() && first_.get_id() != std::this_thread::get_id()) first_.join();
}

std::unique_ptr<Job> InstancePool::next(int index, std::unique_lock<std::mutex>& lock) {
  Queue& own = *own_[static_cast<size_t>(index)];
  cv_.wait(lock, [&] { return stopping_ || !own.empty() || !shared_.empty(); });
  if (stopping_) return nullptr;
  auto& from = own.empty() ? shared_ : own;
  std::unique_ptr<Job> job = std::move(from.front());
  from.pop_front();
  return job;
}

void InstancePool::loop(int index) {
  if (index > 0) {
    try {
      engine_->attachThread();
    } catch (...) {
      // set_num_threads cannot fail with a valid count; a failure only leaves libtorch's default.
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++attached_;
    }
    cv_.notify_all();
  }
  InstanceContext ctx{index, engine_, *this};
  for (;;) {
    std::unique_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      job = next(index, lock);
    }
    if (!job) break;
    try {
      job->run(ctx);
    } catch (...) {
      // Jobs answer their own errors; nothing may escape the thread.
    }
  }
  if (index > 0) return;
  // Instance 0: wait for the others (each finishes its running job), then drop what is queued.
  for (std::thread& t : others_)
    if (t.joinable()) t.join();
  std::deque<std::unique_ptr<Job>> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    dropped.swap(shared_);
    for (auto& own : own_) {
      for (auto& job : *own) dropped.push_back(std::move(job));
      own->clear();
    }
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
