// safetensors reader: 8-byte little-endian header size, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, __metadata__: {...}},
// then the data. No C++ package exists for it (see docs/architecture.md), so
// this is a small reader over nlohmann/json that trusts nothing in the file.
#include "compiler/hf/SafeTensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace tlc {

int64_t dtypeSize(DType d) {
  switch (d) {
  case DType::F64:
  case DType::I64:
    return 8;
  case DType::F32:
  case DType::I32:
    return 4;
  case DType::F16:
  case DType::BF16:
    return 2;
  case DType::U8:
  case DType::I8:
  case DType::Bool:
    return 1;
  }
  return 1;
}

const char *dtypeName(DType d) {
  switch (d) {
  case DType::F32:
    return "F32";
  case DType::F16:
    return "F16";
  case DType::BF16:
    return "BF16";
  case DType::U8:
    return "U8";
  case DType::I8:
    return "I8";
  case DType::I32:
    return "I32";
  case DType::I64:
    return "I64";
  case DType::F64:
    return "F64";
  case DType::Bool:
    return "BOOL";
  }
  return "?";
}

static bool parseDType(const std::string &s, DType *out) {
  static const std::pair<const char *, DType> table[] = {
      {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"U8", DType::U8},   {"I8", DType::I8},   {"I32", DType::I32},
      {"I64", DType::I64}, {"F64", DType::F64}, {"BOOL", DType::Bool}};
  for (auto &[name, d] : table)
    if (s == name) {
      *out = d;
      return true;
    }
  return false;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

static float halfToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else { // subnormal: renormalize
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) {
        man <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float TensorView::at(int64_t i) const {
  switch (dtype) {
  case DType::F32: {
    float f;
    std::memcpy(&f, data + 4 * i, 4);
    return f;
  }
  case DType::BF16: {
    uint32_t bits = (uint32_t)(data[2 * i] | (data[2 * i + 1] << 8)) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  case DType::F16:
    return halfToFloat((uint16_t)(data[2 * i] | (data[2 * i + 1] << 8)));
  case DType::U8:
    return (float)data[i];
  case DType::I8:
    return (float)(int8_t)data[i];
  default:
    return 0.0f;
  }
}

SafeTensorsFile::~SafeTensorsFile() {
  if (map_)
    munmap(map_, size_);
}

std::unique_ptr<SafeTensorsFile> SafeTensorsFile::open(const std::string &path,
                                                       std::string *error) {
  auto fail = [&](const std::string &msg) {
    *error = path + ": " + msg;
    return nullptr;
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return fail(std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail("not a regular file");
  }
  size_t size = (size_t)st.st_size;
  if (size == 0) {
    ::close(fd);
    return fail("empty file");
  }
  void *map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED)
    return fail(std::string("cannot map: ") + std::strerror(errno));
  auto parsed = parse((const uint8_t *)map, size, path, error);
  if (!parsed) {
    munmap(map, size);
    return nullptr;
  }
  parsed->map_ = map;
  return parsed;
}

std::unique_ptr<SafeTensorsFile> SafeTensorsFile::parse(const uint8_t *bytes,
                                                        size_t size,
                                                        const std::string &path,
                                                        std::string *error) {
  auto fail = [&](const std::string &msg) {
    *error = path + ": " + msg;
    return nullptr;
  };
  auto file = std::unique_ptr<SafeTensorsFile>(new SafeTensorsFile);
  file->path_ = path;
  file->size_ = size;
  if (size < 8)
    return fail("truncated: " + std::to_string(size) +
                " bytes, shorter than the 8-byte header size");
  uint64_t headerSize = 0;
  for (int i = 7; i >= 0; --i)
    headerSize = (headerSize << 8) | bytes[i];
  if (headerSize > file->size_ - 8)
    return fail("header size " + std::to_string(headerSize) +
                " exceeds the file (" + std::to_string(file->size_) +
                " bytes)");
  auto header = nlohmann::json::parse(bytes + 8, bytes + 8 + headerSize,
                                      nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object())
    return fail("header is not a JSON object");
  const uint8_t *data = bytes + 8 + headerSize;
  uint64_t dataSize = file->size_ - 8 - headerSize;

  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::vector<std::string> rangeNames;
  for (auto &[name, entry] : header.items()) {
    if (name == "__metadata__")
      continue;
    std::string where = "tensor '" + name + "': ";
    if (!entry.is_object())
      return fail(where + "entry is not an object");
    auto dt = entry.find("dtype");
    auto sh = entry.find("shape");
    auto off = entry.find("data_offsets");
    if (dt == entry.end() || !dt->is_string())
      return fail(where + "missing or non-string 'dtype'");
    if (sh == entry.end() || !sh->is_array())
      return fail(where + "missing or non-array 'shape'");
    if (off == entry.end() || !off->is_array() || off->size() != 2 ||
        !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
      return fail(where + "'data_offsets' must be two non-negative integers");
    TensorView view;
    view.name = name;
    view.file = path;
    if (!parseDType(dt->get<std::string>(), &view.dtype))
      return fail(where + "unsupported dtype '" + dt->get<std::string>() + "'");
    uint64_t numel = 1;
    for (auto &d : *sh) {
      if (!d.is_number_unsigned())
        return fail(where + "shape entries must be non-negative integers");
      uint64_t v = d.get<uint64_t>();
      if (v > (1ull << 40) || (v && numel > (1ull << 40) / v))
        return fail(where + "shape is too large");
      numel *= v;
      view.shape.push_back((int64_t)v);
    }
    uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
    if (begin > end || end > dataSize)
      return fail(where + "data_offsets [" + std::to_string(begin) + ", " +
                  std::to_string(end) + "] outside the " +
                  std::to_string(dataSize) + " data bytes");
    uint64_t expect = numel * (uint64_t)dtypeSize(view.dtype);
    if (end - begin != expect)
      return fail(where + "data_offsets span " + std::to_string(end - begin) +
                  " bytes but dtype and shape need " + std::to_string(expect));
    view.data = data + begin;
    view.bytes = (int64_t)(end - begin);
    ranges.push_back({begin, end});
    rangeNames.push_back(name);
    file->tensors_.emplace(name, std::move(view));
  }
  std::vector<size_t> order(ranges.size());
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  for (size_t i = 1; i < order.size(); ++i) {
    auto &prev = ranges[order[i - 1]], &cur = ranges[order[i]];
    if (cur.first < prev.second && cur.first != cur.second &&
        prev.first != prev.second)
      return fail("tensors '" + rangeNames[order[i - 1]] + "' and '" +
                  rangeNames[order[i]] + "' overlap");
  }
  return file;
}

static bool readFile(const std::string &path, std::string *out) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

std::unique_ptr<Checkpoint> Checkpoint::open(const std::string &dir,
                                             std::string *error) {
  auto ckpt = std::unique_ptr<Checkpoint>(new Checkpoint);
  ckpt->dir_ = dir;
  std::vector<std::string> shards;
  std::string indexPath = dir + "/model.safetensors.index.json", text;
  std::map<std::string, std::string> weightMap;
  if (readFile(indexPath, &text)) {
    auto index = nlohmann::json::parse(text, nullptr, false);
    if (index.is_discarded() || !index.is_object())
      return *error = indexPath + ": not valid JSON", nullptr;
    auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object())
      return *error = indexPath + ": missing object 'weight_map'", nullptr;
    for (auto &[name, file] : wm->items()) {
      if (!file.is_string())
        return *error = indexPath + ": weight_map['" + name +
                        "'] is not a file name",
               nullptr;
      std::string f = file.get<std::string>();
      if (f.find('/') != std::string::npos || f.empty() || f[0] == '.')
        return *error = indexPath + ": weight_map['" + name +
                        "'] names a file outside the model folder: " + f,
               nullptr;
      weightMap[name] = f;
      if (std::find(shards.begin(), shards.end(), f) == shards.end())
        shards.push_back(f);
    }
  } else {
    shards.push_back("model.safetensors");
  }
  for (const std::string &shard : shards) {
    auto file = SafeTensorsFile::open(dir + "/" + shard, error);
    if (!file)
      return nullptr;
    for (auto &[name, view] : file->tensors()) {
      if (ckpt->index_.count(name))
        return *error = dir + "/" + shard + ": tensor '" + name +
                        "' appears in more than one file",
               nullptr;
      auto it = weightMap.find(name);
      if (!weightMap.empty() && it != weightMap.end() && it->second != shard)
        return *error = indexPath + ": weight_map puts '" + name + "' in " +
                        it->second + " but it is in " + shard,
               nullptr;
      ckpt->index_[name] = &view;
    }
    ckpt->files_.push_back(std::move(file));
  }
  for (auto &[name, shard] : weightMap)
    if (!ckpt->index_.count(name))
      return *error = dir + "/" + shard + ": missing tensor '" + name +
                      "' listed in model.safetensors.index.json",
             nullptr;
  return ckpt;
}

bool Checkpoint::add(const SafeTensorsFile &file, std::string *duplicate) {
  for (auto &[name, view] : file.tensors()) {
    if (index_.count(name)) {
      *duplicate = name;
      return false;
    }
    index_[name] = &view;
  }
  return true;
}

const TensorView *Checkpoint::find(const std::string &name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

static std::string shapeString(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

const TensorView *Checkpoint::get(const std::string &name,
                                  const std::vector<int64_t> &shape,
                                  std::string *error) const {
  const TensorView *t = find(name);
  if (!t) {
    *error = dir_ + ": missing tensor '" + name + "' in the checkpoint";
    return nullptr;
  }
  if (t->shape != shape) {
    *error = t->file + ": tensor '" + name + "' has shape " +
             shapeString(t->shape) + ", expected " + shapeString(shape);
    return nullptr;
  }
  return t;
}

} // namespace tlc
