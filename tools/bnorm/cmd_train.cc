// `bnorm train` and `bnorm eval`: train a network on Fashion-MNIST (or any IDX data) with or
// without BatchNorm; write metrics.csv and a safetensors checkpoint; evaluate a checkpoint.
#include <fmt/format.h>

#include <filesystem>
#include <map>

#include "bnorm/data/csv.h"
#include "bnorm/io/safetensors.h"
#include "bnorm/parallel.h"
#include "bnorm/random.h"
#include "commands.h"
#include "models.h"
#include "trainer.h"

namespace bnorm::cli {

namespace {

struct TrainArgs {
  ModelSpec spec;
  TrainConfig cfg;
  bool no_bn = false;
  bool no_bias = false;
  int64_t epochs = 0;
  uint64_t init_seed = 1;
  std::string data_dir = data::kFashionMnistDir;
  std::string out = "out/train";
  int threads = 0;
  std::string resume;
};

std::map<std::string, std::string> spec_metadata(const ModelSpec& s) {
  return {{"bnorm.model", s.model},
          {"bnorm.batch_norm", s.batch_norm ? "1" : "0"},
          {"bnorm.activation", s.activation},
          {"bnorm.bias", s.bias ? "1" : "0"},
          {"bnorm.dropout", fmt::format("{}", s.dropout)}};
}

ModelSpec spec_from_metadata(const std::map<std::string, std::string>& m, const std::string& path) {
  ModelSpec s;
  auto get = [&](const char* key) {
    auto it = m.find(key);
    if (it == m.end()) {
      throw IoError(
          fmt::format("{}: metadata lacks '{}': pass --model/--no-bn/--activation to "
                      "describe the network",
                      path, key));
    }
    return it->second;
  };
  s.model = get("bnorm.model");
  s.batch_norm = get("bnorm.batch_norm") == "1";
  s.activation = get("bnorm.activation");
  s.bias = get("bnorm.bias") == "1";
  s.dropout = std::stod(get("bnorm.dropout"));
  return s;
}

void run_train(TrainArgs& a) {
  if (a.threads > 0) set_num_threads(a.threads);
  a.spec.batch_norm = !a.no_bn;
  a.spec.bias = !a.no_bias;
  data::TrainTest d = data::load_fashion_mnist(a.data_dir);
  if (a.epochs > 0) a.cfg.steps = a.epochs * (d.train.images.size(0) / a.cfg.batch_size);
  manual_seed(a.init_seed);
  if (!a.resume.empty()) {
    const std::string ckpt = a.resume + "/model.safetensors";
    const auto meta = io::read_safetensors_metadata(ckpt);
    a.spec = spec_from_metadata(meta, ckpt);
    a.cfg.start_step = std::stoll(meta.at("bnorm.steps"));
    if (meta.count("bnorm.optimizer") && meta.at("bnorm.optimizer") != a.cfg.optimizer) {
      throw ValueError(
          fmt::format("--resume {}: the checkpoint was trained with --optimizer {}, got {}",
                      a.resume, meta.at("bnorm.optimizer"), a.cfg.optimizer));
    }
    if (a.cfg.start_step >= a.cfg.steps) {
      throw ValueError(
          fmt::format("--resume {}: the checkpoint is at step {}; --steps must be larger, got {}",
                      a.resume, a.cfg.start_step, a.cfg.steps));
    }
    const std::string opt_path = a.resume + "/optimizer.safetensors";
    const auto opt_meta = io::read_safetensors_metadata(opt_path);
    if (!opt_meta.count("bnorm.steps") || opt_meta.at("bnorm.steps") != meta.at("bnorm.steps")) {
      throw IoError(
          fmt::format("{}: its step does not match {} (an interrupted save?)", opt_path, ckpt));
    }
    a.cfg.optimizer_state = io::load_safetensors_tensors(opt_path);
  }
  auto net = build_model(a.spec);
  if (!a.resume.empty()) {
    io::load_safetensors(*net, a.resume + "/model.safetensors");
    fmt::print("resuming {} from step {}\n", a.resume, a.cfg.start_step);
  }
  const bool images = a.spec.model == "cnn";
  fmt::print("model: {}\n{}\n", describe(a.spec), net->repr());
  fmt::print("optimizer {} lr {} momentum {} batch {} steps {} ({:.1f} epochs), threads {}\n",
             a.cfg.optimizer, a.cfg.lr, a.cfg.momentum, a.cfg.batch_size, a.cfg.steps,
             static_cast<double>(a.cfg.steps * a.cfg.batch_size) /
                 static_cast<double>(d.train.images.size(0)),
             get_num_threads());
  a.cfg.label = describe(a.spec);
  TrainResult r = train_classifier(*net, d.train, d.test, a.cfg, images);
  std::filesystem::create_directories(a.out);
  std::string csv = "step,train_loss,test_loss,test_acc\n";
  for (const CurvePoint& p : r.curve)
    csv += fmt::format("{},{},{},{}\n", p.step, p.train_loss, p.test_loss, p.test_acc);
  data::write_file_atomic(a.out + "/metrics.csv", csv);
  auto meta = spec_metadata(a.spec);
  meta["bnorm.steps"] = std::to_string(a.cfg.steps);
  meta["bnorm.test_acc"] = fmt::format("{}", r.final_test_acc);
  meta["bnorm.optimizer"] = a.cfg.optimizer;
  // Optimizer first: a crash between the two writes leaves a model whose optimizer file is newer,
  // which --resume would detect by the step stored in both.
  io::save_safetensors(r.optimizer_state, a.out + "/optimizer.safetensors",
                       {{"bnorm.steps", std::to_string(a.cfg.steps)}});
  io::save_safetensors(*net, a.out + "/model.safetensors", meta);
  if (r.diverged) {
    fmt::print("DIVERGED at step {} (loss NaN/Inf or > 1e4): lower --lr or add BN\n",
               r.diverged_at);
  }
  fmt::print("test accuracy {:.4f}, test loss {:.4f}, last-epoch train accuracy {:.4f}\n",
             r.final_test_acc, r.final_test_loss, r.final_train_acc);
  fmt::print("{:.0f} steps/s ({:.1f}s); wrote {}/metrics.csv and {}/model.safetensors\n",
             r.steps_per_second, r.seconds, a.out, a.out);
}

void add_model_options(CLI::App* c, ModelSpec& s, bool* no_bn, bool* no_bias) {
  c->add_option("--model", s.model,
                "mlp (784-100-100-100-10), cnn, linear, or hidden widths like 256,128")
      ->capture_default_str();
  c->add_flag("--no-bn", *no_bn, "train without BatchNorm (the baseline)");
  c->add_flag("--no-bias", *no_bias, "no biases in any layer (they stay zero)");
  c->add_option("--activation", s.activation, "sigmoid, relu, tanh or none")->capture_default_str();
  c->add_option("--init-std", s.init_std, "weights ~ N(0, std²); 0 = PyTorch's default init")
      ->check(at_least(0))
      ->capture_default_str();
  c->add_option("--dropout", s.dropout, "dropout after each hidden activation")
      ->capture_default_str();
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* c =
      app.add_subcommand("train", "train a network on Fashion-MNIST with or without BatchNorm");
  add_model_options(c, a->spec, &a->no_bn, &a->no_bias);
  c->add_option("--optimizer", a->cfg.optimizer, "sgd or adam")->capture_default_str();
  c->add_option("--lr", a->cfg.lr, "learning rate")->capture_default_str();
  c->add_option("--momentum", a->cfg.momentum, "SGD momentum")->capture_default_str();
  c->add_option("--weight-decay", a->cfg.weight_decay, "L2 weight decay")->capture_default_str();
  c->add_option("--schedule", a->cfg.schedule, "none, step or cosine")->capture_default_str();
  c->add_option("--steps", a->cfg.steps, "training steps (mini-batches)")
      ->check(at_least(1))
      ->capture_default_str();
  c->add_option("--epochs", a->epochs, "epochs (overrides --steps)")->check(at_least(1));
  c->add_option("--batch-size", a->cfg.batch_size, "mini-batch size")
      ->check(at_least(1))
      ->capture_default_str();
  c->add_option("--eval-every", a->cfg.eval_every,
                "steps between test evaluations (0: only after the last step)")
      ->check(at_least(0))
      ->capture_default_str();
  c->add_option("--seed", a->init_seed, "seed of the initial weights")->capture_default_str();
  c->add_option("--data-seed", a->cfg.seed, "seed of the batch order")->capture_default_str();
  c->add_option("--data", a->data_dir, "directory with the Fashion-MNIST IDX files")
      ->capture_default_str();
  c->add_option("--out", a->out, "output directory")->capture_default_str();
  c->add_option("--threads", a->threads, "threads (default: all cores)")->check(at_least(1));
  c->add_option(
      "--resume", a->resume,
      "continue the run saved in this directory (model and optimizer state) up to --steps; "
      "the result is identical to an uninterrupted run (without dropout)");
  c->callback([a] { run_train(*a); });
}

void add_eval_command(CLI::App& app) {
  struct EvalArgs {
    std::string checkpoint, data_dir = data::kFashionMnistDir;
  };
  auto a = std::make_shared<EvalArgs>();
  CLI::App* c = app.add_subcommand("eval", "evaluate a checkpoint on the Fashion-MNIST test set");
  c->add_option("checkpoint", a->checkpoint, "model.safetensors written by bnorm train")
      ->required();
  c->add_option("--data", a->data_dir, "directory with the Fashion-MNIST IDX files")
      ->capture_default_str();
  c->callback([a] {
    const ModelSpec spec =
        spec_from_metadata(io::read_safetensors_metadata(a->checkpoint), a->checkpoint);
    auto net = build_model(spec);
    io::load_safetensors(*net, a->checkpoint);
    data::TrainTest d = data::load_fashion_mnist(a->data_dir);
    auto [acc, loss] = evaluate(*net, d.test, d.test.images.size(0), spec.model == "cnn");
    fmt::print("{}: {} on {} test images: accuracy {:.4f}, loss {:.4f}\n", a->checkpoint,
               describe(spec), d.test.images.size(0), acc, loss);
  });
}

}  // namespace bnorm::cli
