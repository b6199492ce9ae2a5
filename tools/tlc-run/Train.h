// tlc-run train: the command line over the fine-tuning library
// (tlc/finetune.h).
#ifndef TLC_TOOLS_TLC_RUN_TRAIN_H
#define TLC_TOOLS_TLC_RUN_TRAIN_H

#include "tlc/tlc.h"

#include <map>
#include <string>

namespace tlc::run {

/// Runs `tlc-run train MODULE ...` with the parsed --options; returns the
/// process exit code (errors are printed).
int trainCommand(tlc_module_t *module, const std::string &modulePath,
                 const std::map<std::string, std::string> &options);

} // namespace tlc::run

#endif // TLC_TOOLS_TLC_RUN_TRAIN_H
