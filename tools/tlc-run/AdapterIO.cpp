// PEFT adapter writing/reading. The safetensors layout: 8-byte little-endian
// header size N, N bytes of JSON {key: {dtype, shape, data_offsets: [begin,
// end]}, "__metadata__": {...}} (offsets relative to the data), then data.
#include "tools/tlc-run/AdapterIO.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "AdapterIO assumes a little-endian host"
#endif

namespace tlc::run {

namespace {

std::string errnoText() { return std::strerror(errno); }

// mkdir -p.
bool makeDirs(const std::string &dir, std::string *error) {
  std::string cur;
  size_t pos = 0;
  while (pos <= dir.size()) {
    size_t next = dir.find('/', pos);
    if (next == std::string::npos)
      next = dir.size();
    cur = dir.substr(0, next);
    pos = next + 1;
    if (cur.empty() || cur == "." || cur == "..")
      continue;
    if (mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) {
      *error = cur + ": cannot create folder: " + errnoText();
      return false;
    }
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    *error = dir + ": not a folder";
    return false;
  }
  return true;
}

bool readWhole(const std::string &path, std::string *out, std::string *error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path + ": cannot open: " + errnoText();
    return false;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

float halfToFloat(uint16_t h) {
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

bool readConfig(const std::string &dir, AdapterConfig *cfg,
                std::string *error) {
  std::string path = dir + "/adapter_config.json", text;
  auto fail = [&](const std::string &msg) {
    *error = path + ": " + msg;
    return false;
  };
  if (!readWhole(path, &text, error))
    return false;
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return fail("not a valid JSON object");
  if (auto it = j.find("peft_type");
      it != j.end() && !(it->is_string() && *it == "LORA"))
    return fail("'peft_type' must be \"LORA\"");
  auto r = j.find("r");
  if (r == j.end() || !r->is_number_integer() || r->get<int64_t>() <= 0 ||
      r->get<int64_t>() > INT32_MAX)
    return fail("'r' must be a positive integer");
  cfg->rank = (int)r->get<int64_t>();
  auto alpha = j.find("lora_alpha");
  if (alpha == j.end() || !alpha->is_number())
    return fail("'lora_alpha' must be a number");
  cfg->alpha = (float)alpha->get<double>();
  cfg->targets.clear();
  auto t = j.find("target_modules");
  if (t != j.end() && t->is_string()) {
    cfg->targets.push_back(t->get<std::string>());
  } else if (t != j.end() && t->is_array()) {
    for (auto &m : *t) {
      if (!m.is_string())
        return fail("'target_modules' must be a name or a list of names");
      cfg->targets.push_back(m.get<std::string>());
    }
  } else {
    return fail("'target_modules' must be a name or a list of names");
  }
  cfg->use_rslora = false;
  if (auto it = j.find("use_rslora"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean())
      return fail("'use_rslora' must be true or false");
    cfg->use_rslora = it->get<bool>();
  }
  cfg->base_model.clear();
  if (auto it = j.find("base_model_name_or_path");
      it != j.end() && !it->is_null()) {
    if (!it->is_string())
      return fail("'base_model_name_or_path' must be a string");
    cfg->base_model = it->get<std::string>();
  }
  return true;
}

bool readTensors(const std::string &dir, std::vector<AdapterTensor> *out,
                 std::string *error) {
  std::string path = dir + "/adapter_model.safetensors", bytes;
  auto fail = [&](const std::string &msg) {
    *error = path + ": " + msg;
    return false;
  };
  if (!readWhole(path, &bytes, error))
    return false;
  if (bytes.size() < 8)
    return fail("truncated: " + std::to_string(bytes.size()) +
                " bytes, shorter than the 8-byte header size");
  const auto *b = (const unsigned char *)bytes.data();
  uint64_t headerSize = 0;
  for (int i = 7; i >= 0; --i)
    headerSize = (headerSize << 8) | b[i];
  if (headerSize > bytes.size() - 8)
    return fail("header size " + std::to_string(headerSize) +
                " exceeds the file (" + std::to_string(bytes.size()) +
                " bytes; truncated?)");
  auto header = nlohmann::json::parse(b + 8, b + 8 + headerSize, nullptr,
                                      /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object())
    return fail("header is not a JSON object");
  const unsigned char *data = b + 8 + headerSize;
  uint64_t dataSize = bytes.size() - 8 - headerSize;

  std::map<std::string, AdapterTensor> tensors;
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
    std::string dtype = dt->get<std::string>();
    int item = dtype == "F32" ? 4 : dtype == "BF16" || dtype == "F16" ? 2 : 0;
    if (!item)
      return fail(where + "'dtype' is " + dtype +
                  ", expected F32, BF16 or F16");
    if (sh == entry.end() || !sh->is_array())
      return fail(where + "missing or non-array 'shape'");
    if (off == entry.end() || !off->is_array() || off->size() != 2 ||
        !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
      return fail(where + "'data_offsets' must be two non-negative integers");
    AdapterTensor t;
    uint64_t numel = 1;
    for (auto &d : *sh) {
      if (!d.is_number_unsigned())
        return fail(where + "'shape' entries must be non-negative integers");
      uint64_t v = d.get<uint64_t>();
      if (v > (1ull << 40) || (v && numel > (1ull << 40) / v))
        return fail(where + "'shape' is too large");
      numel *= v;
      t.shape.push_back((int64_t)v);
    }
    uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
    if (begin > end || end > dataSize)
      return fail(where + "'data_offsets' [" + std::to_string(begin) + ", " +
                  std::to_string(end) + "] outside the " +
                  std::to_string(dataSize) + " data bytes");
    if (end - begin != numel * item)
      return fail(where + "'data_offsets' span " +
                  std::to_string(end - begin) + " bytes but dtype and shape "
                  "need " + std::to_string(numel * item));
    const unsigned char *p = data + begin;
    t.data.resize(numel);
    for (uint64_t i = 0; i < numel; ++i) {
      if (item == 4) {
        std::memcpy(&t.data[i], p + 4 * i, 4);
      } else {
        uint16_t h = (uint16_t)(p[2 * i] | (p[2 * i + 1] << 8));
        if (dtype == "F16") {
          t.data[i] = halfToFloat(h);
        } else {
          uint32_t bits = (uint32_t)h << 16;
          std::memcpy(&t.data[i], &bits, 4);
        }
      }
    }
    // "x.lora_A.default.weight" -> "x.lora_A.weight".
    t.key = name;
    const std::string tail = ".default.weight";
    if (t.key.size() > tail.size() &&
        t.key.compare(t.key.size() - tail.size(), tail.size(), tail) == 0)
      t.key.erase(t.key.size() - tail.size(), 8);
    if (tensors.count(t.key))
      return fail(where + "duplicates '" + t.key + "' once '.default' is "
                  "dropped");
    std::string key = t.key;
    tensors.emplace(key, std::move(t));
  }
  out->clear();
  for (auto &[key, t] : tensors)
    out->push_back(std::move(t));
  return true;
}

} // namespace

bool writeFileAtomic(const std::string &path, const void *data, size_t size,
                     std::string *error) {
  return writeFileAtomic(path, {{data, size}}, error);
}

bool writeFileAtomic(const std::string &path,
                     const std::vector<FilePiece> &pieces,
                     std::string *error) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (dir.empty())
    dir = "/";
  std::string tmp = dir + "/." + base + ".tmpXXXXXX";
  std::vector<char> name(tmp.begin(), tmp.end());
  name.push_back('\0');
  int fd = mkstemp(name.data());
  if (fd < 0) {
    *error = path + ": cannot create a temporary file in " + dir + ": " +
             errnoText();
    return false;
  }
  tmp = name.data();
  auto fail = [&](const std::string &what) {
    *error = path + ": " + what + ": " + errnoText();
    if (fd >= 0)
      ::close(fd);
    unlink(tmp.c_str());
    return false;
  };
  if (fchmod(fd, 0644) != 0)
    return fail("cannot set permissions");
  for (const FilePiece &piece : pieces) {
    const char *p = (const char *)piece.data;
    size_t left = piece.size;
    while (left > 0) {
      ssize_t n = ::write(fd, p, left);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0) {
        if (n == 0)
          errno = EIO;
        return fail("write failed");
      }
      p += n;
      left -= (size_t)n;
    }
  }
  if (fsync(fd) != 0)
    return fail("fsync failed");
  int rc = ::close(fd);
  fd = -1;
  if (rc != 0)
    return fail("close failed");
  if (rename(tmp.c_str(), path.c_str()) != 0)
    return fail("cannot rename the temporary file into place");
  // Make the rename durable; failure here does not undo the write.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    ::close(dfd);
  }
  return true;
}

bool writePeftAdapter(const std::string &dir, const AdapterConfig &cfg,
                      const std::vector<AdapterTensor> &tensors,
                      std::string *error) {
  std::string weights = dir + "/adapter_model.safetensors";
  // Validate and sort.
  std::map<std::string, const AdapterTensor *> sorted;
  for (const AdapterTensor &t : tensors) {
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) {
        *error = weights + ": tensor '" + t.key + "' has a negative dimension";
        return false;
      }
      numel *= (uint64_t)d;
    }
    if (!t.external && numel != t.data.size()) {
      *error = weights + ": tensor '" + t.key + "' has " +
               std::to_string(t.data.size()) + " values but its shape needs " +
               std::to_string(numel);
      return false;
    }
    if (t.key.empty() || t.key == "__metadata__" ||
        !sorted.emplace(t.key, &t).second) {
      *error = weights + ": empty, reserved or duplicate key '" + t.key + "'";
      return false;
    }
  }
  if (cfg.rank <= 0) {
    *error = dir + "/adapter_config.json: 'r' must be positive";
    return false;
  }
  if (!makeDirs(dir, error))
    return false;

  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  auto numel = [](const AdapterTensor *t) {
    uint64_t n = 1;
    for (int64_t d : t->shape)
      n *= (uint64_t)d;
    return n;
  };
  for (auto &[key, t] : sorted) {
    uint64_t bytes = numel(t) * 4;
    header[key] = {{"dtype", "F32"},
                   {"shape", t->shape},
                   {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump(-1, ' ', false,
                              nlohmann::json::error_handler_t::replace);
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string file(8, '\0');
  uint64_t hs = h.size();
  for (int i = 0; i < 8; ++i)
    file[i] = (char)((hs >> (8 * i)) & 0xff);
  file += h;
  std::vector<FilePiece> pieces = {{file.data(), file.size()}};
  for (auto &[key, t] : sorted)
    pieces.push_back(
        {t->external ? t->external : t->data.data(), numel(t) * 4});
  if (!writeFileAtomic(weights, pieces, error))
    return false;

  nlohmann::ordered_json c;
  c["peft_type"] = "LORA";
  c["task_type"] = "CAUSAL_LM";
  c["r"] = cfg.rank;
  if (std::floor(cfg.alpha) == cfg.alpha && std::fabs(cfg.alpha) < 1e9f)
    c["lora_alpha"] = (int64_t)cfg.alpha; // PEFT writes an int usually
  else
    c["lora_alpha"] = cfg.alpha;
  c["target_modules"] = cfg.targets;
  c["lora_dropout"] = 0.0;
  c["bias"] = "none";
  c["fan_in_fan_out"] = false;
  c["init_lora_weights"] = true;
  c["inference_mode"] = true;
  c["base_model_name_or_path"] = cfg.base_model;
  c["use_rslora"] = cfg.use_rslora;
  c["use_dora"] = false;
  c["modules_to_save"] = nullptr;
  c["layers_to_transform"] = nullptr;
  c["layers_pattern"] = nullptr;
  c["rank_pattern"] = nlohmann::ordered_json::object();
  c["alpha_pattern"] = nlohmann::ordered_json::object();
  c["revision"] = nullptr;
  std::string text =
      c.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  return writeFileAtomic(dir + "/adapter_config.json", text.data(),
                         text.size(), error);
}

bool readPeftAdapterTensors(const std::string &dir,
                            std::vector<AdapterTensor> *out,
                            AdapterConfig *cfg, std::string *error) {
  return readConfig(dir, cfg, error) && readTensors(dir, out, error);
}

} // namespace tlc::run
