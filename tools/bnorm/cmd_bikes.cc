// `bnorm bikes`: the seed article's bike-price example. A small regression network learns the
// price from age (0–20 years) and distance (0–300,000 km) four ways: raw features, min-max
// scaled, standardized, and raw with BatchNorm; the losses are compared side by side.
#include <fmt/format.h>

#include <cmath>
#include <filesystem>

#include "bnorm/data/bikes.h"
#include "bnorm/data/csv.h"
#include "bnorm/data/dataloader.h"
#include "bnorm/data/scaler.h"
#include "bnorm/nn/activation.h"
#include "bnorm/nn/batchnorm.h"
#include "bnorm/nn/linear.h"
#include "bnorm/nn/loss.h"
#include "bnorm/nn/sequential.h"
#include "bnorm/optim/sgd.h"
#include "bnorm/random.h"
#include "commands.h"
#include "plot.h"

namespace bnorm::cli {

namespace {

struct BikeRun {
  std::string name;
  std::vector<std::pair<double, double>> curve;  // epoch, test RMSE in EUR
  double rmse = 0;
  bool diverged = false;
};

BikeRun train_bikes(const std::string& name, const Tensor& xtr, const Tensor& ytr,
                    const Tensor& xte, const Tensor& yte, bool bn, double lr, int64_t epochs,
                    double price_std) {
  manual_seed(3);
  nn::Sequential net;
  if (bn) net.add(std::make_unique<nn::BatchNorm1d>(2));
  net.add(std::make_unique<nn::Linear>(2, 32));
  net.add(std::make_unique<nn::ReLU>());
  net.add(std::make_unique<nn::Linear>(32, 32));
  net.add(std::make_unique<nn::ReLU>());
  net.add(std::make_unique<nn::Linear>(32, 1));
  std::vector<nn::Parameter*> params;
  for (auto& [n, p] : net.named_parameters()) params.push_back(p);
  optim::SGD opt(params, lr, {.momentum = 0.9});
  data::DataLoader loader(xtr, {}, ytr,
                          {.batch_size = 32, .shuffle = true, .drop_last = true, .seed = 5});
  nn::MSELoss mse;
  BikeRun r{name, {}, 0, false};
  for (int64_t e = 0; e < epochs && !r.diverged; ++e) {
    loader.start_epoch(e);
    net.train();
    for (int64_t i = 0; i < loader.size(); ++i) {
      data::Batch b = loader.batch(i);
      opt.zero_grad();
      const double loss = mse.forward(net.forward(b.x), b.y);
      if (!std::isfinite(loss) || loss > 1e6) {
        r.diverged = true;
        break;
      }
      net.backward(mse.backward());
      opt.step();
    }
    net.eval();
    const double test = r.diverged ? NAN : mse.forward(net.forward(xte), yte);
    r.rmse = std::sqrt(test) * price_std;
    if (!std::isfinite(r.rmse)) r.diverged = true;
    r.curve.emplace_back(static_cast<double>(e + 1), r.diverged ? NAN : r.rmse);
  }
  return r;
}

}  // namespace

void add_bikes_command(CLI::App& app) {
  struct BikesArgs {
    int64_t n = 2000, epochs = 30;
    double lr = 0.01;
    std::string csv, out = "out/bikes";
    uint64_t seed = 7;
  };
  auto a = std::make_shared<BikesArgs>();
  CLI::App* c =
      app.add_subcommand("bikes", "the bike-price example: raw vs min-max vs z-score vs BatchNorm");
  c->add_option("--n", a->n, "bikes to generate (80% train, 20% test)")
      ->check(at_least(10))
      ->capture_default_str();
  c->add_option("--epochs", a->epochs, "training epochs")
      ->check(at_least(1))
      ->capture_default_str();
  c->add_option("--lr", a->lr, "SGD learning rate (momentum 0.9), the same for every variant")
      ->capture_default_str();
  c->add_option("--seed", a->seed, "data seed")->capture_default_str();
  c->add_option("--csv", a->csv, "also write the generated bikes to this CSV file");
  c->add_option("--out", a->out, "output directory for the plot")->capture_default_str();
  c->callback([a] {
    data::Bikes all = data::make_bikes(a->n, a->seed);
    if (!a->csv.empty()) {
      Tensor table = Tensor::empty({a->n, 3});
      for (int64_t i = 0; i < a->n; ++i) {
        table.set_item({i, 0}, all.features.item({i, 0}));
        table.set_item({i, 1}, all.features.item({i, 1}));
        table.set_item({i, 2}, all.price.item({i, 0}));
      }
      data::write_csv(a->csv, {"age_years", "distance_km", "price_eur"}, table);
      fmt::print("wrote {} bikes to {}\n", a->n, a->csv);
    }
    const int64_t ntr = a->n * 4 / 5;
    auto rows = [](const Tensor& t, int64_t b, int64_t e) {
      const int64_t f = t.size(1);
      return Tensor::from_vector<float>(
          {e - b, f}, std::vector<float>(t.data<float>() + b * f, t.data<float>() + e * f));
    };
    Tensor xtr = rows(all.features, 0, ntr), xte = rows(all.features, ntr, a->n);
    // The target is standardized for every variant (fitted on train), so the comparison is about
    // the input features only, as in the article.
    data::StandardScaler ys;
    Tensor ytr = ys.fit_transform(rows(all.price, 0, ntr)),
           yte = ys.transform(rows(all.price, ntr, a->n));
    const double price_std = ys.scale()[0];
    data::StandardScaler raw_stats;
    raw_stats.fit(xtr);
    fmt::print(
        "{} training bikes: age mean {:.2f} std {:.2f} years; distance mean {:.0f} std {:.0f} km "
        "(ranges differ by ~10^4)\n",
        ntr, raw_stats.mean()[0], raw_stats.scale()[0], raw_stats.mean()[1], raw_stats.scale()[1]);
    data::MinMaxScaler mm;
    data::StandardScaler zs;
    mm.fit(xtr);
    zs.fit(xtr);
    std::vector<BikeRun> runs;
    runs.push_back(
        train_bikes("raw features", xtr, ytr, xte, yte, false, a->lr, a->epochs, price_std));
    runs.push_back(train_bikes("min-max [0,1]", mm.transform(xtr), ytr, mm.transform(xte), yte,
                               false, a->lr, a->epochs, price_std));
    runs.push_back(train_bikes("z-score", zs.transform(xtr), ytr, zs.transform(xte), yte, false,
                               a->lr, a->epochs, price_std));
    runs.push_back(train_bikes("raw + BatchNorm1d input", xtr, ytr, xte, yte, true, a->lr,
                               a->epochs, price_std));
    fmt::print("\n{:<26} {:>16}\n", "features", "test RMSE [EUR]");
    std::vector<Series> series;
    for (const BikeRun& r : runs) {
      fmt::print("{:<26} {:>16}\n", r.name,
                 r.diverged ? "diverged" : fmt::format("{:.1f}", r.rmse));
      Series s{r.name, {}};
      for (auto [e, v] : r.curve)
        if (std::isfinite(v)) s.points.emplace_back(e, v);
      series.push_back(s);
    }
    fmt::print(
        "(price std {:.1f} EUR: an RMSE near it means nothing was learned; noise floor ~60 EUR)\n",
        price_std);
    std::filesystem::create_directories(a->out);
    if (plot_lines(a->out + "/bikes",
                   {"Bike prices: test RMSE by preprocessing", "epoch", "test RMSE [EUR]", false,
                    "set logscale y"},
                   series)) {
      fmt::print("plot: {}/bikes.png\n", a->out);
    }
  });
}

}  // namespace bnorm::cli
