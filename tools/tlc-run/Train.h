// tlc-run train: the fine-tuning loop over a training module's train_step.
#ifndef TLC_TOOLS_TLC_RUN_TRAIN_H
#define TLC_TOOLS_TLC_RUN_TRAIN_H

#include "tlc/tlc.h"

#include <map>
#include <string>

namespace tlc::run {

/// Reads the PEFT adapter folder `dir` into `params` (the module's adapter
/// layout, tlc_module_train_tensor): every tensor the module has, with the
/// module's rank and scaling, and nothing else.
bool loadAdapter(tlc_module_t *module, const std::string &dir, float *params,
                 std::string *error);

/// Runs `tlc-run train MODULE ...` with the parsed --options; returns the
/// process exit code (errors are printed).
int trainCommand(tlc_module_t *module, const std::string &modulePath,
                 const std::map<std::string, std::string> &options);

} // namespace tlc::run

#endif // TLC_TOOLS_TLC_RUN_TRAIN_H
