// The training loop.
#include "trainer.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>

#include "bnorm/data/dataloader.h"
#include "bnorm/nn/loss.h"
#include "bnorm/optim/adam.h"
#include "bnorm/optim/lr_scheduler.h"
#include "bnorm/optim/sgd.h"
#include "progress.h"

namespace bnorm::cli {

namespace {
Tensor as_input(const Tensor& rows, bool as_images) {
  if (!as_images) return rows;
  const int64_t side =
      static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(rows.size(1)))));
  return rows.reshape({rows.size(0), 1, side, side});
}
}  // namespace

std::pair<double, double> evaluate(nn::Sequential& net, const data::ImageSet& set, int64_t limit,
                                   bool as_images) {
  const bool was_training = net.is_training();
  net.eval();
  const int64_t n = std::min<int64_t>(limit, set.images.size(0));
  const int64_t f = set.images.size(1);
  const int64_t chunk = 1000;
  int64_t correct = 0;
  double loss_sum = 0;
  nn::CrossEntropyLoss ce;
  for (int64_t b = 0; b < n; b += chunk) {
    const int64_t m = std::min(chunk, n - b);
    Tensor x = Tensor::from_vector<float>(
        {m, f}, std::vector<float>(set.images.data<float>() + b * f,
                                   set.images.data<float>() + (b + m) * f));
    std::vector<int64_t> y(set.labels.begin() + b, set.labels.begin() + b + m);
    Tensor logits = net.forward(as_input(x, as_images));
    loss_sum += ce.forward(logits, y) * static_cast<double>(m);
    correct += ce.correct();
  }
  net.train(was_training);
  return {static_cast<double>(correct) / static_cast<double>(n), loss_sum / static_cast<double>(n)};
}

TrainResult train_classifier(nn::Sequential& net, const data::ImageSet& train,
                             const data::ImageSet& test, const TrainConfig& cfg, bool as_images,
                             const std::function<void(int64_t)>& probe) {
  TrainResult r;
  data::DataLoaderOptions lo;
  lo.batch_size = cfg.batch_size;
  lo.shuffle = true;
  lo.drop_last = true;  // BN needs > 1 sample; equal batches keep statistics comparable
  lo.seed = cfg.seed;
  data::DataLoader loader(train.images, train.labels, Tensor(), lo);
  std::vector<nn::Parameter*> params;
  for (auto& [name, p] : net.named_parameters()) params.push_back(p);
  std::unique_ptr<optim::Optimizer> opt;
  if (cfg.optimizer == "adam") {
    optim::AdamOptions ao;
    ao.weight_decay = cfg.weight_decay;
    opt = std::make_unique<optim::Adam>(params, cfg.lr, ao);
  } else if (cfg.optimizer == "sgd") {
    optim::SGDOptions so;
    so.momentum = cfg.momentum;
    so.weight_decay = cfg.weight_decay;
    opt = std::make_unique<optim::SGD>(params, cfg.lr, so);
  } else {
    throw ValueError(fmt::format("--optimizer must be sgd or adam, got '{}'", cfg.optimizer));
  }
  if (cfg.start_step > 0) opt->load_state(cfg.optimizer_state);
  std::unique_ptr<optim::CosineAnnealingLR> cosine;
  if (cfg.schedule == "cosine") {
    cosine = std::make_unique<optim::CosineAnnealingLR>(*opt, cfg.steps);
    for (int64_t i = 0; i < cfg.start_step; ++i) cosine->step();
  }
  const double base_lr = cfg.lr;

  net.train();
  nn::CrossEntropyLoss ce;
  Progress progress(cfg.label, cfg.steps, cfg.quiet);
  const auto t0 = std::chrono::steady_clock::now();
  double loss_acc = 0;
  int64_t loss_n = 0, epoch = cfg.start_step / loader.size(),
          in_epoch = cfg.start_step % loader.size();
  int64_t train_correct = 0, train_seen = 0;
  loader.start_epoch(epoch);
  if (probe && cfg.start_step == 0) probe(0);
  double last_acc = -1;     // no evaluation yet: the progress line shows "–", not a false 0.000
  double eval_seconds = 0;  // excluded from steps/s: a rate of training, not of evaluation
  for (int64_t step = cfg.start_step + 1; step <= cfg.steps; ++step) {
    if (in_epoch == loader.size()) {
      loader.start_epoch(++epoch);
      in_epoch = 0;
    }
    data::Batch b = loader.batch(in_epoch++);
    opt->zero_grad();
    Tensor logits = net.forward(as_input(b.x, as_images));
    const double loss = ce.forward(logits, b.labels);
    if (!std::isfinite(loss) || loss > 1e4) {
      r.diverged = true;
      r.diverged_at = step;
      break;
    }
    net.backward(ce.backward());
    opt->step();
    if (cosine) cosine->step();
    if (cfg.schedule == "step") {
      opt->set_lr(base_lr * (step >= cfg.steps * 3 / 4 ? 0.01 : step >= cfg.steps / 2 ? 0.1 : 1.0));
    }
    loss_acc += loss;
    ++loss_n;
    if (step > cfg.steps - loader.size()) {
      train_correct += ce.correct();
      train_seen += b.x.size(0);
    }
    const bool eval_now = (cfg.eval_every > 0 && step % cfg.eval_every == 0) || step == cfg.steps;
    if (eval_now) {
      const auto e0 = std::chrono::steady_clock::now();
      auto [acc, tl] = evaluate(net, test, cfg.eval_samples, as_images);
      r.curve.push_back({step, loss_acc / static_cast<double>(loss_n), acc, tl});
      last_acc = acc;
      loss_acc = 0;
      loss_n = 0;
      if (probe) probe(step);
      eval_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - e0).count();
    }
    progress.update(step, last_acc < 0
                              ? fmt::format("loss {:.3f} test acc –", loss)
                              : fmt::format("loss {:.3f} test acc {:.3f}", loss, last_acc));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.seconds = secs;
  r.optimizer_state = opt->state();
  if (r.diverged) {
    progress.finish(fmt::format("DIVERGED at step {} (loss not finite or > 1e4)", r.diverged_at));
    r.final_test_acc = 0.1;
    return r;
  }
  r.steps_per_second =
      static_cast<double>(cfg.steps - cfg.start_step) / std::max(secs - eval_seconds, 1e-9);
  r.final_test_acc = r.curve.empty() ? 0 : r.curve.back().test_acc;
  r.final_test_loss = r.curve.empty() ? 0 : r.curve.back().test_loss;
  r.final_train_acc =
      train_seen ? static_cast<double>(train_correct) / static_cast<double>(train_seen) : 0;
  progress.finish(fmt::format("test acc {:.4f}", r.final_test_acc));
  return r;
}

}  // namespace bnorm::cli
