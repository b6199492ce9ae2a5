// PEFT adapter writing/reading. The safetensors layout: 8-byte little-endian
// header size N, N bytes of JSON {key: {dtype, shape, data_offsets: [begin,
// end]}, "__metadata__": {...}} (offsets relative to the data), then data.
#include "runtime/train/AdapterIO.h"

#include "compiler/hf/SafeTensors.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "AdapterIO assumes a little-endian host"
#endif

namespace tlc::train {

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



} // namespace

bool readWholeFile(const std::string &path, std::string *out,
                   std::string *error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path + ": cannot open: " + std::strerror(errno);
    return false;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) {
    *error = path + ": read error";
    return false;
  }
  *out = ss.str();
  return true;
}

bool readPeftConfig(const std::string &dir, AdapterConfig *cfg,
                    std::string *error) {
  std::string path = dir + "/adapter_config.json", text;
  auto fail = [&](const std::string &msg) {
    *error = path + ": " + msg;
    return false;
  };
  if (!readWholeFile(path, &text, error)) {
    *error += " (is this a PEFT adapter folder?)";
    return false;
  }
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    return fail("not a valid JSON object");
  auto str = [&](const char *k) {
    auto it = j.find(k);
    return it != j.end() && it->is_string() ? it->get<std::string>() : "";
  };
  if (j.contains("peft_type") && str("peft_type") != "LORA")
    return fail("peft_type is '" + str("peft_type") +
                "', only LORA is supported");
  auto r = j.find("r");
  if (r == j.end() || !r->is_number_integer() || r->get<int64_t>() <= 0 ||
      r->get<int64_t>() > INT32_MAX)
    return fail("'r' must be a positive integer");
  cfg->rank = (int)r->get<int64_t>();
  auto alpha = j.find("lora_alpha");
  if (alpha == j.end() || !alpha->is_number())
    return fail("'lora_alpha' must be a number");
  cfg->alpha = (float)alpha->get<double>();
  // Variants that change y = base(x) + scaling (x A^T) B^T are refused, at
  // compile time and at run time alike.
  auto flag = [&](const char *k) {
    auto it = j.find(k);
    return it != j.end() && it->is_boolean() && it->get<bool>();
  };
  if (flag("use_dora"))
    return fail("use_dora is not supported (DoRA is not plain LoRA)");
  if (flag("fan_in_fan_out"))
    return fail("fan_in_fan_out is not supported");
  if (str("bias") != "" && str("bias") != "none")
    return fail("bias must be \"none\"");
  for (const char *k : {"rank_pattern", "alpha_pattern"})
    if (auto it = j.find(k);
        it != j.end() && !it->is_null() && !(it->is_object() && it->empty()))
      return fail(std::string(k) + " is not supported");
  if (auto it = j.find("layers_to_transform"); it != j.end() && !it->is_null())
    return fail("layers_to_transform is not supported");
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

namespace {
bool readTensors(const std::string &dir, std::vector<AdapterTensor> *out,
                 std::string *error) {
  std::string path = dir + "/adapter_model.safetensors";
  std::unique_ptr<SafeTensorsFile> file = SafeTensorsFile::open(path, error);
  if (!file)
    return false;
  std::map<std::string, AdapterTensor> tensors;
  for (auto &[name, view] : file->tensors()) {
    std::string where = path + ": tensor '" + name + "': ";
    if (view.dtype != DType::F32 && view.dtype != DType::BF16 &&
        view.dtype != DType::F16) {
      *error = where + "dtype is " + dtypeName(view.dtype) +
               ", expected F32, BF16 or F16";
      return false;
    }
    AdapterTensor t;
    t.shape = view.shape;
    t.data.resize((size_t)view.numel());
    for (int64_t i = 0; i < view.numel(); ++i)
      t.data[(size_t)i] = view.at(i);
    // "x.lora_A.default.weight" -> "x.lora_A.weight".
    t.key = name;
    const std::string tail = ".default.weight";
    if (t.key.size() > tail.size() &&
        t.key.compare(t.key.size() - tail.size(), tail.size(), tail) == 0)
      t.key.erase(t.key.size() - tail.size(), 8);
    if (tensors.count(t.key)) {
      *error = where + "duplicates '" + t.key + "' once '.default' is dropped";
      return false;
    }
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
  return readPeftConfig(dir, cfg, error) && readTensors(dir, out, error);
}

} // namespace tlc::train
