// .tlm writer: the FlatBuffers header (entry points, memory plan, executables,
// tokenizer, metadata) followed by a 4096-aligned data section into which the
// parameters are streamed from the checkpoint, converted to the layouts the
// kernels read (bf16/f32 floats; gamma header + packed ternary codes).
#include "compiler/driver/ModuleWriter.h"

#include "compiler/hf/HFImporter.h"
#include "dialects/tlora/IR/TloraDialect.h"
#include "dialects/tlora/Transforms/Passes.h"
#include "runtime/drivers/local/SharedObject.h"
#include "runtime/src/module_generated.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"

#include <cerrno>
#include <optional>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sys/stat.h>
#include <unistd.h>

using namespace mlir;
using namespace mlir::tlora;

namespace tlc {

#define TLC_SAME_SPACE(name)                                                   \
  static_assert((int)mlir::tlora::Space::name == (int)fb::Space_##name,       \
                "the dialect's Space enum mirrors the module schema's")
TLC_SAME_SPACE(Arena);
TLC_SAME_SPACE(Param);
TLC_SAME_SPACE(KV);
TLC_SAME_SPACE(Input);
TLC_SAME_SPACE(Output);
TLC_SAME_SPACE(State);
TLC_SAME_SPACE(Hyper);
TLC_SAME_SPACE(Labels);
#undef TLC_SAME_SPACE

constexpr uint32_t kModuleVersion = 2;
// Parameters start 256-aligned: every GPU's storage buffer offset alignment.
constexpr uint64_t kParamAlign = 256, kDataAlign = 4096;

static uint64_t alignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

namespace {
struct ParamEntry {
  std::string name;
  bool ternary;
  std::string dtype;
  const TernaryEncoding *encoding; // ternary only
  const MatrixEncoding *matrix;    // quantized float dtypes only
  std::vector<int64_t> shape;
  uint64_t offset, size;
};

/// A temporary output file that disappears unless committed.
class PendingFile {
public:
  explicit PendingFile(const std::string &path) : path_(path) {
    tmp_ = path + ".tmp-XXXXXX";
    int fd = mkstemp(tmp_.data());
    if (fd < 0)
      return;
    // mkstemp creates 0600; give the module the usual 0666 & ~umask.
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    file_ = fdopen(fd, "wb");
  }
  ~PendingFile() {
    if (file_)
      fclose(file_);
    if (!committed_)
      unlink(tmp_.c_str());
  }
  bool ok() const { return file_ != nullptr; }
  bool write(const void *data, size_t n) {
    return fwrite(data, 1, n, file_) == n;
  }
  bool pad(uint64_t to) {
    static const char zeros[4096] = {};
    while (pos() < to)
      if (!write(zeros, std::min<uint64_t>(to - pos(), sizeof zeros)))
        return false;
    return true;
  }
  uint64_t pos() { return (uint64_t)ftell(file_); }
  bool commit() {
    bool ok = fflush(file_) == 0 && fsync(fileno(file_)) == 0;
    ok = fclose(file_) == 0 && ok;
    file_ = nullptr;
    if (ok && rename(tmp_.c_str(), path_.c_str()) == 0)
      committed_ = true;
    return committed_;
  }

private:
  std::string path_, tmp_;
  FILE *file_ = nullptr;
  bool committed_ = false;
};
} // namespace

/// The stored dtype of a float parameter.
static std::string floatDtype(WeightOp w) {
  Type et = w.getType().getElementType();
  return et.isInteger(6)   ? "q6"
         : et.isInteger(8) ? "i8"
         : et.isBF16()     ? "bf16"
                           : "f32";
}

/// The dedup keys of parameters: a weight is stored once per name, dtype
/// and the backend's encoding of it (none for bf16/f32).
static std::string floatKey(StringRef name, WeightOp w,
                            const TargetBackend &backend) {
  std::string dtype = floatDtype(w);
  const MatrixEncoding *m = backend.matrixEncoding(dtype);
  return name.str() + "#" + dtype + (m ? "#" + m->name : "");
}
static std::string ternaryKey(StringRef name, const TargetBackend &backend) {
  return name.str() + "#t2#" + backend.ternaryEncoding().name;
}

/// The entry points of one executable: its program's dispatch lists, with
/// kernels indexed into the executable and parameters into the module.
static std::optional<std::vector<flatbuffers::Offset<fb::EntryPoint>>>
buildEntryPoints(flatbuffers::FlatBufferBuilder &fbb,
                 const CompiledTarget &target, const ExecutableImage &exe,
                 const llvm::StringMap<uint64_t> &kvOffset,
                 const llvm::StringMap<int> &paramIndex,
                 const std::vector<ParamEntry> &params, std::string *error) {
  using namespace tlc::fb;
  llvm::StringMap<uint32_t> kernelIndex;
  for (size_t i = 0; i < exe.kernels.size(); ++i)
    kernelIndex[exe.kernels[i]] = (uint32_t)i;
  std::vector<flatbuffers::Offset<EntryPoint>> entries;
  ModuleOp program = target.program;
  for (auto func : program.getOps<func::FuncOp>()) {
    auto maxTokens = func->getAttrOfType<IntegerAttr>(mlir::tlora::attr::kMaxTokens);
    auto arena = func->getAttrOfType<IntegerAttr>(mlir::tlora::attr::kArenaSize);
    if (!maxTokens)
      continue;
    if (!arena) {
      *error = "internal error: entry point without a memory plan";
      return std::nullopt;
    }
    std::vector<flatbuffers::Offset<Dispatch>> dispatches;
    for (auto d : func.getOps<DispatchOp>()) {
      auto it = kernelIndex.find(d.getKernel().getLeafReference().getValue());
      if (it == kernelIndex.end() || !d.getBindings()) {
        *error = "internal error: dispatch of an unknown kernel";
        return std::nullopt;
      }
      std::vector<flatbuffers::Offset<Binding>> bindings;
      unsigned operandIndex = 0;
      for (Attribute a : d.getBindingsAttr()) {
        auto s = cast<SlotAttr>(a);
        Operation *def = operandIndex < d.getNumOperands()
                             ? d.getOperand(operandIndex).getDefiningOp()
                             : nullptr;
        ++operandIndex;
        tlc::fb::Space space;
        uint64_t offset = s.getOffset();
        int index = -1;
        bool rows = false; // a row range of a float parameter
        // The dialect's Space enum mirrors the schema's (static_asserts).
        space = (tlc::fb::Space)s.getSpace();
        if (s.getSpace() == mlir::tlora::Space::Param) {
          std::string name = s.getName().getValue().str();
          std::string key = ternaryKey(name, *target.backend);
          if (auto r = dyn_cast_or_null<WeightRowsOp>(def)) {
            rows = true;
            def = r.getSource().getDefiningOp();
          }
          if (auto w = dyn_cast_or_null<WeightOp>(def))
            key = floatKey(name, w, *target.backend);
          auto p = paramIndex.find(key);
          if (p == paramIndex.end()) {
            *error = "internal error: unplanned parameter " + key;
            return std::nullopt;
          }
          index = p->second;
        } else if (s.getSpace() == mlir::tlora::Space::KV) {
          offset = kvOffset.lookup(s.getName().getValue());
        }
        uint64_t size = s.getSize();
        if (space == tlc::fb::Space_Param && !rows)
          size = params[index].size; // a whole parameter, as stored
        bindings.push_back(CreateBinding(fbb, space, offset, size, index));
      }
      dispatches.push_back(CreateDispatch(fbb, it->second,
                                          fbb.CreateVector(bindings),
                                          d.getTokensFactor(), d.getConstant()));
    }
    entries.push_back(CreateEntryPoint(
        fbb, fbb.CreateString(func.getName().str()),
        (uint32_t)maxTokens.getInt(), (uint64_t)arena.getInt(),
        fbb.CreateVector(dispatches)));
  }
  return entries;
}

bool writeModule(const ModuleContents &c, const std::string &path,
                 std::string *error) {
  const ModelConfig &cfg = *c.config;
  if (c.targets.empty()) {
    *error = "internal error: no target";
    return false;
  }
  ModuleOp firstProgram = c.targets.front().program;
  std::vector<ParamEntry> params;
  llvm::StringMap<int> paramIndex; // name#dtype[#encoding]
  uint64_t dataSize = 0;
  int64_t parameterCount = 0;
  for (const CompiledTarget &target : c.targets)
    ModuleOp(target.program).walk([&](Operation *op) {
      ParamEntry e;
      std::string key;
      if (auto w = dyn_cast<WeightOp>(op)) {
        auto t = w.getType();
        std::string dtype = floatDtype(w);
        const MatrixEncoding *matrix = target.backend->matrixEncoding(dtype);
        e = {w.getName().str(),
             false,
             dtype,
             nullptr,
             matrix,
             std::vector<int64_t>(t.getShape().begin(), t.getShape().end()),
             0,
             (uint64_t)(t.getNumElements() * t.getElementTypeBitWidth() / 8)};
        if (matrix)
          e.size = (uint64_t)matrix->bytes(t.getShape()[0], t.getShape()[1]);
        key = floatKey(e.name, w, *target.backend);
      } else if (auto w = dyn_cast<TernaryWeightOp>(op)) {
        auto t = w.getType();
        e = {w.getName().str(),
             true,
             "t2",
             &target.backend->ternaryEncoding(),
             nullptr,
             {t.getOutFeatures(), t.getInFeatures()},
             0,
             (uint64_t)target.backend->ternaryEncoding().bytes(
                 t.getOutFeatures(), t.getInFeatures())};
        key = ternaryKey(e.name, *target.backend);
      } else {
        return;
      }
      if (paramIndex.count(key))
        return;
      e.offset = dataSize;
      dataSize = alignUp(dataSize + e.size, kParamAlign);
      paramIndex[key] = (int)params.size();
      params.push_back(std::move(e));
    });
  int64_t maxSeq = 0;
  firstProgram.walk([&](KVCacheOp kv) { maxSeq = kv.getType().getMaxSeq(); });

  llvm::StringSet<> counted; // an int8 head shares its name with the bf16 one
  for (auto &p : params) {
    if (!counted.insert(p.name).second)
      continue;
    int64_t n = 1;
    for (int64_t d : p.shape)
      n *= d;
    parameterCount += n;
  }

  auto build = [&](uint64_t dataOffset,
                   flatbuffers::FlatBufferBuilder &fbb) -> bool {
    using namespace tlc::fb;
    std::vector<flatbuffers::Offset<Executable>> exes;
    for (const CompiledTarget &target : c.targets) {
      // The KV cache layout of this program.
      llvm::StringMap<uint64_t> kvOffset;
      uint64_t kvSize = 0;
      ModuleOp(target.program).walk([&](KVCacheOp kv) {
        if (kvOffset.count(kv.getName()))
          return;
        auto t = kv.getType();
        kvOffset[kv.getName()] = kvSize;
        kvSize += alignUp(t.getMaxSeq() * t.getKvHeads() * t.getHeadDim() * 4,
                          kParamAlign);
      });
      for (const ExecutableImage &x : target.executables) {
        auto entries = buildEntryPoints(fbb, target, x, kvOffset, paramIndex,
                                        params, error);
        if (!entries)
          return false;
        exes.push_back(CreateExecutable(
            fbb, fbb.CreateString(x.target), fbb.CreateString(x.cpu),
            fbb.CreateVectorOfStrings(x.needs), fbb.CreateString(x.format),
            fbb.CreateVectorOfStrings(x.kernels),
            fbb.CreateVector((const uint8_t *)x.image.data(), x.image.size()),
            fnv1a64((const uint8_t *)x.image.data(), x.image.size()),
            fbb.CreateVector(*entries), kvSize,
            x.kernelOffsets.empty() ? 0 : fbb.CreateVector(x.kernelOffsets),
            x.workgroupSizes.empty() ? 0 : fbb.CreateVector(x.workgroupSizes)));
      }
    }
    std::vector<flatbuffers::Offset<Parameter>> paramDefs;
    for (auto &p : params)
      paramDefs.push_back(
          CreateParameter(fbb, fbb.CreateString(p.name),
                          p.ternary ? ParamKind_Ternary : ParamKind_Float,
                          fbb.CreateString(p.dtype), fbb.CreateVector(p.shape),
                          p.offset, p.size,
                          p.encoding ? fbb.CreateString(p.encoding->name)
                          : p.matrix ? fbb.CreateString(p.matrix->name)
                                     : 0));
    flatbuffers::Offset<fb::Tokenizer> tok = 0;
    if (c.tokenizer) {
      std::vector<int32_t> merges;
      for (auto &[l, r] : c.tokenizer->merges) {
        merges.push_back(l);
        merges.push_back(r);
      }
      std::vector<flatbuffers::Offset<AddedToken>> added;
      for (auto &a : c.tokenizer->added)
        added.push_back(CreateAddedToken(fbb, a.id, fbb.CreateString(a.content),
                                         a.special));
      tok = fb::CreateTokenizer(
          fbb, fbb.CreateVectorOfStrings(c.tokenizer->vocab),
          fbb.CreateVector(merges), fbb.CreateVector(added),
          c.tokenizer->ignore_merges);
    }
    auto info = CreateModelInfo(
        fbb, fbb.CreateString(c.modelName),
        fbb.CreateString(cfg.architecture.empty() ? "BitNetForCausalLM"
                                                  : cfg.architecture),
        fbb.CreateString(weightFormatName(cfg.format)), cfg.vocabSize,
        cfg.hiddenSize, cfg.intermediateSize, cfg.numLayers, cfg.numHeads,
        cfg.numKVHeads, cfg.headDim, maxSeq, cfg.ropeTheta, cfg.rmsNormEps,
        cfg.tiedEmbeddings, cfg.bosTokenId, cfg.eosTokenId, parameterCount);
    flatbuffers::Offset<TrainInfo> train = 0;
    if (c.train) {
      func::FuncOp step; // the layout is the same in every entry
      for (auto f : firstProgram.getOps<func::FuncOp>())
        if (f.getName() == (c.train->step ? "train_step" : "prefill"))
          step = f;
      if (!step) {
        *error = "internal error: adapter module without its entry point";
        return false;
      }
      int64_t total;
      std::vector<flatbuffers::Offset<TrainTensor>> tensors;
      for (const tlora::StateTensor &t : tlora::trainStateLayout(step, &total))
        tensors.push_back(CreateTrainTensor(
            fbb, fbb.CreateString(t.name),
            fbb.CreateVector(std::vector<int64_t>(t.shape.begin(), t.shape.end())),
            (uint64_t)t.offset));
      std::vector<std::string> targets(c.train->targets.begin(),
                                       c.train->targets.end());
      train = CreateTrainInfo(
          fbb, (uint32_t)c.train->seqLen, (uint32_t)c.train->batch,
          fbb.CreateString(c.train->optimizer), (int32_t)c.train->rank,
          c.train->alpha, fbb.CreateVectorOfStrings(targets),
          fbb.CreateVector(tensors), (uint64_t)total,
          4 * (uint64_t)tlora::trainStateElements(total, c.train->optimizer));
    }
    auto device = c.device.empty() ? 0 : fbb.CreateString(c.device);
    ModuleBuilder mb(fbb);
    mb.add_version(kModuleVersion);
    mb.add_info(info);
    mb.add_executables(fbb.CreateVector(exes));
    mb.add_parameters(fbb.CreateVector(paramDefs));
    if (c.tokenizer)
      mb.add_tokenizer(tok);
    mb.add_data_offset(dataOffset);
    mb.add_data_size(dataSize);
    if (c.train)
      mb.add_train(train);
    mb.add_default_threads((uint32_t)c.defaultThreads);
    if (!c.device.empty())
      mb.add_device(device);
    auto root = mb.Finish();
    fbb.FinishSizePrefixed(root, ModuleIdentifier());
    return true;
  };

  flatbuffers::FlatBufferBuilder probe;
  if (!build(kDataAlign, probe))
    return false;
  uint64_t dataOffset = alignUp(probe.GetSize(), kDataAlign);
  flatbuffers::FlatBufferBuilder fbb;
  if (!build(dataOffset, fbb))
    return false;
  if (fbb.GetSize() != probe.GetSize()) {
    *error = "internal error: module header size is unstable";
    return false;
  }

  PendingFile out(path);
  if (!out.ok()) {
    *error = path + ": cannot create: " + std::strerror(errno);
    return false;
  }
  auto writeFailed = [&] {
    *error = path + ": write failed: " + std::strerror(errno);
    return false;
  };
  if (!out.write(fbb.GetBufferPointer(), fbb.GetSize()) || !out.pad(dataOffset))
    return writeFailed();

  std::vector<uint8_t> buffer;
  for (auto &p : params) {
    if (!out.pad(dataOffset + p.offset))
      return writeFailed();
    buffer.assign(p.size, 0);
    if (p.ternary) {
      std::string prefix = p.name.substr(0, p.name.size() - strlen(".weight"));
      int64_t n = p.shape[0], k = p.shape[1];
      bool packed = cfg.format != WeightFormat::Master;
      const TensorView *w = c.checkpoint->find(p.name);
      const TensorView *scale =
          packed ? c.checkpoint->find(prefix + ".weight_scale") : nullptr;
      float gamma;
      std::vector<int8_t> codes;
      if (!w || (packed && !scale) ||
          !ternarize(*w, scale, cfg.format, n, k, &gamma, &codes, error)) {
        if (error->empty())
          *error = "missing tensor '" + p.name + "'";
        return false;
      }
      p.encoding->pack(codes.data(), n, k, gamma, buffer.data());
    } else {
      const TensorView *t = c.checkpoint->find(p.name);
      if (!t) {
        *error = "missing tensor '" + p.name + "'";
        return false;
      }
      if (p.dtype == "bf16") {
        std::memcpy(buffer.data(), t->data, p.size);
      } else if (p.matrix) { // the backend's quantized encoding
        std::vector<float> values(t->numel());
        for (int64_t i = 0, n = t->numel(); i < n; ++i)
          values[i] = t->at(i);
        p.matrix->pack(values.data(), p.shape[0], p.shape[1], buffer.data());
      } else {
        for (int64_t i = 0, n = t->numel(); i < n; ++i) {
          float v = t->at(i);
          std::memcpy(buffer.data() + 4 * i, &v, 4);
        }
      }
    }
    if (!out.write(buffer.data(), buffer.size()))
      return writeFailed();
  }
  if (!out.pad(dataOffset + dataSize))
    return writeFailed();
  if (!out.commit()) {
    *error = path + ": cannot finish writing: " + std::strerror(errno);
    return false;
  }
  return true;
}

} // namespace tlc
