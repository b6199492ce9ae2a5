// The registry of target backends and the --target list parser.
#include "compiler/target/TargetBackend.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringSet.h"

namespace tlc {

TargetBackend::~TargetBackend() = default;

static std::vector<TargetBackendFactory> &factories() {
  static std::vector<TargetBackendFactory> list;
  return list;
}

void registerTargetBackend(TargetBackendFactory factory) {
  factories().push_back(std::move(factory));
}

static const TargetBackendFactory *factoryFor(llvm::StringRef spec) {
  llvm::StringRef name = spec.split(':').first.trim();
  for (const TargetBackendFactory &f : factories())
    if (f.matches(name))
      return &f;
  return nullptr;
}

mlir::FailureOr<std::vector<std::unique_ptr<TargetBackend>>>
parseTargetList(llvm::StringRef list, std::string *error) {
  llvm::SmallVector<llvm::StringRef> items;
  list.split(items, ',', -1, false);
  std::vector<std::string> specs;
  for (llvm::StringRef item : items) {
    item = item.trim();
    if (!specs.empty() && !factoryFor(item) && !item.contains(':'))
      specs.back() += "," + item.str(); // a feature of the previous spec
    else
      specs.push_back(item.str());
  }
  if (specs.empty()) {
    *error = "--target is empty";
    return mlir::failure();
  }
  std::vector<std::unique_ptr<TargetBackend>> out;
  llvm::StringSet<> seen;
  for (const std::string &spec : specs) {
    const TargetBackendFactory *f = factoryFor(spec);
    if (!f) {
      std::string known;
      for (const TargetBackendFactory &g : factories())
        known += (known.empty() ? "" : ", ") + g.help;
      *error = "unknown target '" + spec + "' (known: " + known + ")";
      return mlir::failure();
    }
    if (!seen.insert(spec).second) {
      *error = "target '" + spec + "' is listed twice";
      return mlir::failure();
    }
    std::unique_ptr<TargetBackend> backend = f->create(spec, error);
    if (!backend)
      return mlir::failure();
    out.push_back(std::move(backend));
  }
  return out;
}

} // namespace tlc
