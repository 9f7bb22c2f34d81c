// Module helpers shared by every layer. Checked by tests/nn/*.
#include "bnorm/nn/module.h"

namespace bnorm::nn {

void Module::zero_grad() {
  for (auto& [name, p] : named_parameters()) {
    if (p->grad.defined()) p->grad.fill(0.0);
  }
}

}  // namespace bnorm::nn
