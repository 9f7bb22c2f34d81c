// The umbrella header: everything public in bnorm.
#pragma once

#include "bnorm/error.h"
#include "bnorm/functional/batch_norm.h"
#include "bnorm/nn/batchnorm.h"
#include "bnorm/nn/module.h"
#include "bnorm/parallel.h"
#include "bnorm/tensor.h"
