// Reading Hugging Face checkpoints: safetensors files (single or sharded
// through model.safetensors.index.json), memory-mapped and validated.
#ifndef TLC_COMPILER_HF_SAFETENSORS_H
#define TLC_COMPILER_HF_SAFETENSORS_H

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tlc {

enum class DType { F32, F16, BF16, U8, I8, I32, I64, F64, Bool };

/// Bytes per element of `dtype`.
int64_t dtypeSize(DType dtype);
const char *dtypeName(DType dtype);

/// A tensor inside a mapped safetensors file.
struct TensorView {
  std::string name;
  std::string file; // for error messages
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t *data = nullptr;
  int64_t bytes = 0;
  int64_t numel() const;
  /// Element i converted to float (F32, F16, BF16, U8, I8 only).
  float at(int64_t i) const;
};

/// One mapped safetensors file.
class SafeTensorsFile {
public:
  ~SafeTensorsFile();
  /// Maps and validates `path`: header size, JSON, dtypes, shapes, offsets
  /// (inside the data, matching the shape, not overlapping).
  static std::unique_ptr<SafeTensorsFile> open(const std::string &path,
                                               std::string *error);
  /// Validates a safetensors image held in memory (borrowed: `bytes` must
  /// outlive the result). `name` is used in error messages.
  static std::unique_ptr<SafeTensorsFile> parse(const uint8_t *bytes,
                                                size_t size,
                                                const std::string &name,
                                                std::string *error);
  const std::map<std::string, TensorView> &tensors() const { return tensors_; }

private:
  std::string path_;
  void *map_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, TensorView> tensors_;
};

/// All tensors of a model folder.
class Checkpoint {
public:
  /// Opens model.safetensors or the shards listed in
  /// model.safetensors.index.json under `dir`.
  static std::unique_ptr<Checkpoint> open(const std::string &dir,
                                          std::string *error);
  const TensorView *find(const std::string &name) const;
  /// Makes the tensors of `file` findable too (e.g. a LoRA adapter's); the
  /// file must outlive the checkpoint. False if a name is taken already.
  bool add(const SafeTensorsFile &file, std::string *duplicate);
  /// The tensor `name`, checked to have `shape`; sets `error` otherwise.
  const TensorView *get(const std::string &name,
                        const std::vector<int64_t> &shape,
                        std::string *error) const;

private:
  std::string dir_;
  std::vector<std::unique_ptr<SafeTensorsFile>> files_;
  std::map<std::string, const TensorView *> index_;
};

} // namespace tlc

#endif // TLC_COMPILER_HF_SAFETENSORS_H
