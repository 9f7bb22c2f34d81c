// The storage cache of freed tensors; see src/internal/storage_cache.h.
#include "internal/storage_cache.h"

#include <algorithm>
#include <cstdlib>

#include <unistd.h>

namespace bnorm::detail {

std::size_t StorageCache::default_limit() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  const std::size_t physical =
      pages > 0 && page > 0 ? static_cast<std::size_t>(pages) * static_cast<std::size_t>(page) : 0;
  return std::max(std::size_t{256} << 20, physical / 8);
}

StorageCache::StorageCache() : limit_(kOffByDefault ? 0 : default_limit()) {}

StorageCache& StorageCache::instance() {
  static StorageCache* cache = new StorageCache;
  return *cache;
}

void* StorageCache::take(std::size_t bytes) {
  if (bytes < kMinBytes) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  for (std::size_t i = blocks_.size(); i-- > 0;) {  // the most recently freed first
    if (blocks_[i].bytes != bytes) continue;
    void* p = blocks_[i].p;
    blocks_.erase(blocks_.begin() + static_cast<std::ptrdiff_t>(i));
    cached_ -= bytes;
    return p;
  }
  return nullptr;
}

void StorageCache::evict_for(std::size_t incoming, std::vector<void*>& evicted) {
  std::size_t drop = 0;
  while (drop < blocks_.size() &&
         (cached_ + incoming > limit_ || blocks_.size() - drop + (incoming ? 1 : 0) > kMaxBlocks)) {
    cached_ -= blocks_[drop].bytes;
    evicted.push_back(blocks_[drop].p);
    ++drop;
  }
  blocks_.erase(blocks_.begin(), blocks_.begin() + static_cast<std::ptrdiff_t>(drop));
}

void StorageCache::release(void* block, std::size_t bytes) {
  if (!block) return;
  std::vector<void*> evicted;
  bool kept = false;
  if (bytes >= kMinBytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (bytes <= limit_) {
      evict_for(bytes, evicted);
      blocks_.push_back({block, bytes});
      cached_ += bytes;
      kept = true;
    }
  }
  for (void* p : evicted) std::free(p);
  if (!kept) std::free(block);
}

void StorageCache::set_limit(std::size_t bytes) {
  std::vector<void*> evicted;
  {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = bytes;
    evict_for(0, evicted);
  }
  for (void* p : evicted) std::free(p);
}

std::size_t StorageCache::limit() const {
  std::lock_guard<std::mutex> lock(mu_);
  return limit_;
}

std::size_t StorageCache::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

}  // namespace bnorm::detail
