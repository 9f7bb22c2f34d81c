// A progress bar for long work: on a terminal one line redrawn in place (step, loss, accuracy,
// rate, ETA); otherwise a plain log line every 10%.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace bnorm::cli {

class Progress {
 public:
  Progress(std::string label, int64_t total, bool quiet = false);
  /// Reports that `done` of `total` units are finished, with a free-form status ("loss 0.41").
  void update(int64_t done, const std::string& status);
  /// Ends the line.
  void finish(const std::string& status);

 private:
  std::string label_;
  int64_t total_;
  bool tty_, quiet_;
  int last_decile_ = -1;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace bnorm::cli
