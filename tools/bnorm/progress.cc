// The progress bar.
#include "progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace bnorm::cli {

Progress::Progress(std::string label, int64_t total, bool quiet)
    : label_(std::move(label)),
      total_(total > 0 ? total : 1),
      tty_(isatty(STDERR_FILENO) != 0),
      quiet_(quiet),
      start_(std::chrono::steady_clock::now()),
      last_draw_() {}

void Progress::update(int64_t done, const std::string& status) {
  if (quiet_) return;
  const auto now = std::chrono::steady_clock::now();
  const double secs = std::chrono::duration<double>(now - start_).count();
  const double rate = secs > 0 ? static_cast<double>(done) / secs : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : 0.0;
  if (tty_) {
    if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const int width = 24;
    const int filled = static_cast<int>(width * done / total_);
    fmt::print(stderr, "\r{:<28} [{}{}] {}/{} {} {:.0f}/s ETA {:.0f}s\033[K", label_,
               std::string(filled, '#'), std::string(width - filled, '.'), done, total_, status,
               rate, eta);
    std::fflush(stderr);
  } else {
    const int decile = static_cast<int>(10 * done / total_);
    if (decile == last_decile_) return;
    last_decile_ = decile;
    fmt::print(stderr, "{}: {}/{} ({}%) {} {:.0f}/s ETA {:.0f}s\n", label_, done, total_,
               10 * decile, status, rate, eta);
  }
}

void Progress::finish(const std::string& status) {
  if (quiet_) return;
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (tty_) {
    fmt::print(stderr, "\r{:<28} done in {:.1f}s {}\033[K\n", label_, secs, status);
  } else {
    fmt::print(stderr, "{}: done in {:.1f}s {}\n", label_, secs, status);
  }
}

}  // namespace bnorm::cli
