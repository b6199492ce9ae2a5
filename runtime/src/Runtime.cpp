// The tlc runtime: module loading and verification, sessions, and the
// dispatch loop. It holds no model math: every computation is a kernel of the
// module's executable, called over ranges of its workload.
#include "tlc/tlc.h"
#include "tlc/train_abi.h"

#include "runtime/drivers/local/SharedObject.h"
#include "runtime/src/hal/Device.h"
#include "runtime/src/module_generated.h"
#include "runtime/src/tokenizer/Tokenizer.h"

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <new>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <vector>

struct tlc_status_s {
  tlc_status_code_t code;
  char message[1024];
};

/// Returned when a status itself cannot be allocated (never freed).
static tlc_status_s kOutOfMemory = {TLC_STATUS_OUT_OF_MEMORY, "out of memory"};

extern "C" tlc_status_t tlc_status_create(tlc_status_code_t code,
                                          const char *message) {
  auto *s = new (std::nothrow) tlc_status_s;
  if (!s)
    return &kOutOfMemory;
  s->code = code == TLC_STATUS_OK ? TLC_STATUS_INTERNAL : code;
  snprintf(s->message, sizeof s->message, "%s", message ? message : "error");
  return s;
}

static tlc_status_t makeStatus(tlc_status_code_t code, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return tlc_status_create(code, buf);
}

extern "C" tlc_status_code_t tlc_status_code(tlc_status_t s) {
  return s ? s->code : TLC_STATUS_OK;
}
extern "C" const char *tlc_status_message(tlc_status_t s) {
  return s ? s->message : "ok";
}
extern "C" void tlc_status_free(tlc_status_t s) {
  if (s != &kOutOfMemory)
    delete s;
}
extern "C" void tlc_free(void *p) { free(p); }

/// Argument checks of the C API: one INVALID_ARGUMENT status naming the call.
#define TLC_CHECK_ARG(cond, fn)                                                \
  do {                                                                         \
    if (!(cond))                                                               \
      return makeStatus(TLC_STATUS_INVALID_ARGUMENT, "%s: %s", fn,             \
                        "invalid argument (" #cond ")");                       \
  } while (0)

namespace {
constexpr uint32_t kModuleVersion = 2;

/// The root table's first field (`version`), read with bounds checks only,
/// so that older and newer modules get a version error instead of a
/// verification failure. Returns false when the root table is unreadable.
bool peekVersion(const uint8_t *buf, size_t size, uint32_t *version) {
  auto rd32 = [&](size_t at, uint32_t *v) {
    if (at > size || size - at < 4)
      return false;
    std::memcpy(v, buf + at, 4);
    return true;
  };
  uint32_t root, vtableBack;
  if (!rd32(4, &root) || (uint64_t)root + 4 > size)
    return false;
  size_t table = 4 + (size_t)root;
  if (!rd32(table, &vtableBack))
    return false;
  int64_t vtable = (int64_t)table - (int32_t)vtableBack;
  if (vtable < 0 || (uint64_t)vtable + 6 > size)
    return false;
  uint16_t vtSize, field;
  std::memcpy(&vtSize, buf + vtable, 2);
  if (vtSize < 6) { // no field 0: the default
    *version = 0;
    return true;
  }
  std::memcpy(&field, buf + vtable + 4, 2);
  if (field == 0) {
    *version = 0;
    return true;
  }
  return rd32(table + field, version);
}
static_assert(sizeof(tlc_train_hyper_t) == 64, "the hyper block is 64 bytes");

} // namespace

struct tlc_module_s {
  std::string path; // for messages
  const uint8_t *bytes = nullptr;
  size_t size = 0;
  void *map = nullptr; // when loaded from a file
  const tlc::fb::Module *def = nullptr;
  const tlc::fb::Executable *exe = nullptr;
  size_t exeIndex = 0;
  tlc::hal::Driver *driver = nullptr;
  std::unique_ptr<tlc::hal::Device> device;
  std::unique_ptr<tlc::hal::Executable> executable;
  std::unique_ptr<tlc::hal::Buffer> params; // the data section
  const tlc::fb::EntryPoint *prefill = nullptr, *decode = nullptr,
                           *trainStep = nullptr;
  std::unique_ptr<tlc::Tokenizer> tokenizer;
  std::vector<std::string> needs; // per executable, comma-joined
  std::vector<std::string> notRun; // per executable: a driver's reason
  std::vector<bool> notRunGpu;     // that driver is a GPU's

  ~tlc_module_s() {
    if (map)
      munmap(map, size);
  }
};

namespace {
/// Checks everything the dispatch loop relies on, so a bad module gives one
/// clear error instead of a crash.
tlc_status_t verifyModule(tlc_module_t *m) {
  const char *p = m->path.c_str();
  if (m->size < 8)
    return makeStatus(TLC_STATUS_INVALID_FILE, "%s: truncated module (%zu bytes)", p, m->size);
  uint32_t fbSize;
  std::memcpy(&fbSize, m->bytes, 4);
  if (fbSize < 16 || (uint64_t)fbSize + 4 > m->size)
    return makeStatus(TLC_STATUS_INVALID_FILE, "%s: truncated module: header of %u bytes, file of %zu",
                      p, fbSize, m->size);
  if (!flatbuffers::BufferHasIdentifier(m->bytes, tlc::fb::ModuleIdentifier(),
                                        /*size_prefixed=*/true))
    return makeStatus(TLC_STATUS_INVALID_FILE, "%s: not a tlc module (file identifier is not TLCM)", p);
  uint32_t version;
  if (peekVersion(m->bytes, (size_t)fbSize + 4, &version) &&
      version != kModuleVersion)
    return makeStatus(TLC_STATUS_INCOMPATIBLE, "%s: module version %u, this runtime reads version %u "
                      "(%s)",
                      p, version, kModuleVersion,
                      version < kModuleVersion
                          ? "recompile the model with this tlc"
                          : "update the runtime");
  flatbuffers::Verifier verifier(m->bytes, (size_t)fbSize + 4);
  if (!tlc::fb::VerifySizePrefixedModuleBuffer(verifier))
    return makeStatus(TLC_STATUS_INVALID_FILE, "%s: corrupt module header (FlatBuffers verification "
                      "failed)",
                      p);
  const tlc::fb::Module *def = tlc::fb::GetSizePrefixedModule(m->bytes);
  m->def = def;
  if (def->version() != kModuleVersion)
    return makeStatus(TLC_STATUS_INCOMPATIBLE, "%s: module version %u, this runtime reads version %u", p,
                      def->version(), kModuleVersion);
  if (!def->info() || !def->executables() || !def->parameters())
    return makeStatus(TLC_STATUS_INVALID_FILE, "%s: module lacks info, executables or parameters", p);
  uint64_t dataOffset = def->data_offset(), dataSize = def->data_size();
  if (dataOffset < (uint64_t)fbSize + 4 || dataOffset % 64 != 0 ||
      dataOffset > m->size || dataSize > m->size - dataOffset)
    return makeStatus(TLC_STATUS_INVALID_FILE,
        "%s: data section [%llu, +%llu) lies outside the %zu-byte "
        "file",
        p, (unsigned long long)dataOffset, (unsigned long long)dataSize,
        m->size);
  const auto *info = def->info();
  if (info->vocab_size() <= 0 || info->vocab_size() > (1 << 24))
    return makeStatus(TLC_STATUS_INVALID_FILE, "%s: bad vocab_size %lld", p,
                      (long long)info->vocab_size());
  const auto *params = def->parameters();
  for (uint32_t i = 0; i < params->size(); ++i) {
    const auto *prm = params->Get(i);
    if (prm->offset() % 64 != 0 || prm->offset() > dataSize ||
        prm->size() > dataSize - prm->offset())
      return makeStatus(TLC_STATUS_INVALID_FILE, "%s: parameter %u (%s) lies outside the data section",
                        p, i, prm->name() ? prm->name()->c_str() : "?");
  }

  // Executable for this host.
  const auto *exes = def->executables();
  m->exe = nullptr;
  m->needs.assign(exes->size(), std::string());
  m->notRun.assign(exes->size(), std::string());
  m->notRunGpu.assign(exes->size(), false);
  for (uint32_t i = 0; i < exes->size(); ++i)
    if (const auto *needs = exes->Get(i)->needs())
      for (const auto *f : *needs)
        m->needs[i] += (m->needs[i].empty() ? "" : ",") + f->str();
  // The first executable a driver of this runtime runs.
  std::string why = "the module has no executables";
  // Drivers in preference order (a GPU first), each trying the module's
  // executables in order; $TLC_DEVICE=cpu or gpu keeps one kind of driver.
  const char *want = getenv("TLC_DEVICE");
  std::string device = want ? want : "";
  if (!device.empty() && device != "cpu" && device != "gpu")
    return makeStatus(TLC_STATUS_INVALID_ARGUMENT,
                      "TLC_DEVICE must be cpu or gpu, got '%s'", device.c_str());
  for (tlc::hal::Driver *d : tlc::hal::drivers()) {
    if (m->exe || (device == "cpu" && d->isGpu()) ||
        (device == "gpu" && !d->isGpu()))
      continue;
    for (uint32_t i = 0; i < exes->size() && !m->exe; ++i) {
      const auto *e = exes->Get(i);
      if (!e->image() || !e->kernels() || !e->entry_points())
        continue;
      std::string reason; // empty: not this driver's kind of executable
      if (d->canRun(*e, &reason)) {
        m->exe = e;
        m->exeIndex = i;
        m->driver = d;
      } else if (!reason.empty()) {
        why = reason;
        m->notRun[i] = reason;
        m->notRunGpu[i] = d->isGpu();
      }
    }
  }
  if (!m->exe && device == "gpu" && why == "the module has no executables")
    why = "it has no GPU executable (TLC_DEVICE=gpu)";
  if (!m->exe && why == "the module has no executables" && exes->size()) {
    why = "this runtime has no driver for its executables (";
    for (uint32_t i = 0; i < exes->size(); ++i) {
      const auto *t = exes->Get(i)->target();
      why += (i ? ", " : "") + std::string(t ? t->c_str() : "?");
    }
    why += ")";
  }
  if (!m->exe)
    return makeStatus(TLC_STATUS_INCOMPATIBLE, "%s: no executable runs here: %s", p, why.c_str());
  uint32_t kernelCount = m->exe->kernels()->size();

  // The adapter table (checked before the bindings that depend on it).
  bool trainTableOk = false;
  if (const auto *train = def->train()) {
    uint64_t P = train->adapter_elements();
    if (!train->optimizer() || !train->tensors() || P > (1ull << 40))
      return makeStatus(TLC_STATUS_INVALID_FILE, "%s: malformed adapter table", p);
    for (const auto *t : *train->tensors()) {
      if (!t->name() || !t->shape() || t->shape()->size() != 2)
        return makeStatus(TLC_STATUS_INVALID_FILE, "%s: malformed training tensor", p);
      int64_t r = t->shape()->Get(0), c = t->shape()->Get(1);
      if (r <= 0 || c <= 0 || r > (1 << 24) || c > (1 << 24))
        return makeStatus(TLC_STATUS_INVALID_FILE, "%s: training tensor %s has a bad shape", p,
                          t->name()->c_str());
      uint64_t n = (uint64_t)r * (uint64_t)c;
      if (t->offset() > P || n > P - t->offset())
        return makeStatus(TLC_STATUS_INVALID_FILE, "%s: training tensor %s lies outside the state", p,
                          t->name()->c_str());
    }
    uint64_t parts = train->optimizer()->str() == "adamw" ? 4 : 2;
    if (train->state_size() != 4 * parts * P)
      return makeStatus(TLC_STATUS_INVALID_FILE, "%s: training state of %llu bytes, expected %llu", p,
                        (unsigned long long)train->state_size(),
                        (unsigned long long)(4 * parts * P));
    trainTableOk = true;
  }
  int64_t vocab = info->vocab_size();
  for (const auto *ep : *m->exe->entry_points()) {
    if (!ep->name() || !ep->dispatches() || ep->max_tokens() == 0 ||
        ep->max_tokens() > (1u << 20))
      return makeStatus(TLC_STATUS_INVALID_FILE, "%s: malformed entry point", p);
    if (ep->name()->str() == "prefill")
      m->prefill = ep;
    else if (ep->name()->str() == "decode")
      m->decode = ep;
    else if (ep->name()->str() == "train_step")
      m->trainStep = ep;
    const char *en = ep->name()->c_str();
    bool isTrainStep = ep->name()->str() == "train_step";
    for (uint32_t d = 0; d < ep->dispatches()->size(); ++d) {
      const auto *ds = ep->dispatches()->Get(d);
      if (ds->kernel() >= kernelCount || !ds->bindings())
        return makeStatus(TLC_STATUS_INVALID_FILE, "%s: %s dispatch %u names kernel %u of %u", p, en, d,
                          ds->kernel(), kernelCount);
      if (ds->tokens_factor() < 0 || ds->constant() < 0 ||
          ds->tokens_factor() > (1 << 20) || ds->constant() > (1ll << 40))
        return makeStatus(TLC_STATUS_INVALID_FILE, "%s: %s dispatch %u has a bad workload", p, en, d);
      if (ds->workgroups_y() != 1 || ds->workgroups_z() != 1)
        return makeStatus(TLC_STATUS_INVALID_FILE, "%s: %s dispatch %u has a 3-D grid, which the CPU "
                          "driver does not run",
                          p, en, d);
      for (const auto *b : *ds->bindings()) {
        uint64_t off = b->offset(), sz = b->size(), limit = 0;
        switch (b->space()) {
        case tlc::fb::Space_Arena:
          limit = ep->arena_size();
          break;
        case tlc::fb::Space_KV: // sessions only
          limit = isTrainStep ? 0 : m->exe->kv_size();
          break;
        case tlc::fb::Space_Param:
          if (b->index() < 0 || (uint32_t)b->index() >= params->size())
            return makeStatus(TLC_STATUS_INVALID_FILE, "%s: %s dispatch %u binds parameter %d of %u", p,
                              en, d, b->index(), params->size());
          limit = params->Get(b->index())->size(); // offset: a row range
          break;
        case tlc::fb::Space_Input:
          limit = 4ull * ep->max_tokens();
          break;
        case tlc::fb::Space_Output: // train_step: the loss
          limit = isTrainStep ? 4 : 4ull * ep->max_tokens() * (uint64_t)vocab;
          break;
        case tlc::fb::Space_State: // inference entries read the adapters
          limit = !trainTableOk ? 0
                  : isTrainStep ? def->train()->state_size()
                                : 4 * def->train()->adapter_elements();
          break;
        case tlc::fb::Space_Hyper: // trainers only
          limit = isTrainStep ? sizeof(tlc_train_hyper_t) : 0;
          break;
        case tlc::fb::Space_Labels:
          limit = isTrainStep ? 4ull * ep->max_tokens() : 0;
          break;
        default:
          return makeStatus(TLC_STATUS_INVALID_FILE, "%s: %s dispatch %u has an unknown binding space",
                            p, en, d);
        }
        if (off > limit || sz > limit - off)
          return makeStatus(TLC_STATUS_INVALID_FILE, "%s: %s dispatch %u binds [%llu, +%llu) outside "
                            "its %llu-byte space",
                            p, en, d, (unsigned long long)off,
                            (unsigned long long)sz, (unsigned long long)limit);
      }
    }
  }
  if (!m->prefill || !m->decode || m->decode->max_tokens() != 1)
    return makeStatus(TLC_STATUS_INVALID_FILE, "%s: module needs entry points prefill and decode", p);
  if (m->trainStep &&
      (!trainTableOk || (uint64_t)def->train()->seq_len() *
                                def->train()->batch() !=
                            m->trainStep->max_tokens()))
    return makeStatus(TLC_STATUS_INVALID_FILE, "%s: train_step needs an adapter table for batch x "
                      "seq_len tokens",
                      p);
  if (info->max_seq() <= 0)
    return makeStatus(TLC_STATUS_INVALID_FILE, "%s: bad max_seq", p);

  // Tokenizer (optional).
  if (const auto *tok = def->tokenizer()) {
    tlc::TokenizerData data;
    if (tok->vocab())
      for (const auto *s : *tok->vocab())
        data.vocab.push_back(s->str());
    if (tok->merges()) {
      if (tok->merges()->size() % 2)
        return makeStatus(TLC_STATUS_INVALID_FILE, "%s: tokenizer merges are not pairs", p);
      for (uint32_t i = 0; i + 1 < tok->merges()->size(); i += 2)
        data.merges.push_back(
            {tok->merges()->Get(i), tok->merges()->Get(i + 1)});
    }
    if (tok->added())
      for (const auto *a : *tok->added())
        data.added.push_back(
            {a->id(), a->content() ? a->content()->str() : "", a->special()});
    data.ignore_merges = tok->ignore_merges();
    auto t = std::make_unique<tlc::Tokenizer>();
    std::string err;
    if (!tlc::Tokenizer::create(data, t.get(), &err))
      return makeStatus(TLC_STATUS_INVALID_FILE, "%s: bad tokenizer: %s", p, err.c_str());
    m->tokenizer = std::move(t);
  }

  const auto *image = m->exe->image();
  if (tlc::fnv1a64(image->data(), image->size()) != m->exe->image_hash())
    return makeStatus(TLC_STATUS_INVALID_FILE, "%s: executable image is corrupt (hash mismatch)", p);
  tlc_status_t st = m->driver->createDevice(&m->device);
  if (!st)
    st = m->device->loadExecutable(*m->exe, &m->executable);
  if (!st)
    st = m->device->mapParameters(m->bytes + dataOffset, dataSize, &m->params);
  if (st) {
    std::string msg = m->path + ": " + tlc_status_message(st);
    tlc_status_code_t code = tlc_status_code(st);
    tlc_status_free(st);
    return makeStatus(code, "%s", msg.c_str());
  }
  return nullptr;
}
} // namespace

extern "C" tlc_status_t tlc_module_load_memory(const void *data, size_t size,
                                               tlc_module_t **out) {
  TLC_CHECK_ARG(out && (data || size == 0), "tlc_module_load_memory");
  *out = nullptr;
  auto m = std::unique_ptr<tlc_module_s>(new (std::nothrow) tlc_module_s);
  if (!m)
    return makeStatus(TLC_STATUS_OUT_OF_MEMORY, "out of memory");
  m->path = "<memory>";
  m->bytes = (const uint8_t *)data;
  m->size = size;
  if (((uintptr_t)data) % 64 != 0)
    return makeStatus(TLC_STATUS_INVALID_ARGUMENT, "<memory>: module bytes must be 64-byte aligned");
  if (tlc_status_t s = verifyModule(m.get()))
    return s;
  *out = m.release();
  return nullptr;
}

extern "C" tlc_status_t tlc_module_load_file(const char *path,
                                             tlc_module_t **out) {
  TLC_CHECK_ARG(path && out, "tlc_module_load_file");
  *out = nullptr;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return makeStatus(TLC_STATUS_NOT_FOUND, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return makeStatus(TLC_STATUS_INVALID_ARGUMENT, "%s: not a regular file", path);
  }
  auto m = std::make_unique<tlc_module_s>();
  m->path = path;
  m->size = (size_t)st.st_size;
  if (m->size == 0) {
    close(fd);
    return makeStatus(TLC_STATUS_INVALID_FILE, "%s: empty file", path);
  }
  m->map = mmap(nullptr, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (m->map == MAP_FAILED) {
    m->map = nullptr;
    return makeStatus(TLC_STATUS_IO_ERROR, "%s: cannot map: %s", path, strerror(errno));
  }
  m->bytes = (const uint8_t *)m->map;
  if (tlc_status_t s = verifyModule(m.get()))
    return s;
  *out = m.release();
  return nullptr;
}

extern "C" void tlc_module_release(tlc_module_t *m) { delete m; }

extern "C" tlc_status_t tlc_module_model_info(const tlc_module_t *m,
                                              tlc_model_info_t *out) {
  TLC_CHECK_ARG(m && out, "tlc_module_model_info");
  const auto *i = m->def->info();
  auto str = [](const flatbuffers::String *s) { return s ? s->c_str() : ""; };
  *out = tlc_model_info_t{};
  out->name = str(i->name());
  out->architecture = str(i->architecture());
  out->weight_format = str(i->weight_format());
  out->vocab_size = i->vocab_size();
  out->hidden_size = i->hidden_size();
  out->intermediate_size = i->intermediate_size();
  out->num_layers = i->num_layers();
  out->num_heads = i->num_heads();
  out->num_kv_heads = i->num_kv_heads();
  out->head_dim = i->head_dim();
  out->max_seq = i->max_seq();
  out->parameter_count = i->parameter_count();
  out->bos_token_id = i->bos_token_id();
  out->eos_token_id = i->eos_token_id();
  out->rope_theta = i->rope_theta();
  out->rms_norm_eps = i->rms_norm_eps();
  out->tied_embeddings = i->tied_embeddings();
  out->has_tokenizer = m->tokenizer != nullptr;
  out->file_size = m->size;
  out->data_size = m->def->data_size();
  out->kv_cache_size = m->exe->kv_size();
  out->default_threads = m->def->default_threads();
  out->device = m->def->device() ? m->def->device()->c_str() : "";
  return nullptr;
}

extern "C" size_t tlc_module_executable_count(const tlc_module_t *m) {
  return m ? m->def->executables()->size() : 0;
}

extern "C" tlc_status_t tlc_module_executable_info(const tlc_module_t *m,
                                                   size_t i,
                                                   tlc_executable_info_t *out) {
  TLC_CHECK_ARG(m && out && i < tlc_module_executable_count(m),
                "tlc_module_executable_info");
  const auto *e = m->def->executables()->Get((uint32_t)i);
  auto str = [](const flatbuffers::String *s) { return s ? s->c_str() : ""; };
  out->target = str(e->target());
  out->cpu = str(e->cpu());
  out->format = str(e->format());
  out->needs = i < m->needs.size() ? m->needs[i].c_str() : "";
  out->image_size = e->image() ? e->image()->size() : 0;
  out->kernel_count = e->kernels() ? e->kernels()->size() : 0;
  out->selected = i == m->exeIndex;
  out->not_run = i < m->notRun.size() ? m->notRun[i].c_str() : "";
  out->gpu = i < m->notRunGpu.size() && m->notRunGpu[i];
  return nullptr;
}

extern "C" size_t tlc_module_entry_count(const tlc_module_t *m) {
  return m ? m->exe->entry_points()->size() : 0;
}

extern "C" tlc_status_t tlc_module_entry_info(const tlc_module_t *m, size_t i,
                                              tlc_entry_info_t *out) {
  TLC_CHECK_ARG(m && out && i < tlc_module_entry_count(m),
                "tlc_module_entry_info");
  const auto *e = m->exe->entry_points()->Get((uint32_t)i);
  out->name = e->name()->c_str();
  out->max_tokens = e->max_tokens();
  out->arena_size = e->arena_size();
  out->dispatch_count = e->dispatches()->size();
  return nullptr;
}

//===----------------------------------------------------------------------===//
// Sessions
//===----------------------------------------------------------------------===//

namespace {
using tlc::hal::Buffer;
using tlc::hal::BufferRange;
using tlc::hal::DynamicSpace;

/// A device buffer (zeroed) and its host address (CPU drivers).
struct DeviceBuffer {
  std::unique_ptr<Buffer> buffer;
  void *ptr = nullptr;
  size_t size = 0;
  /// Host memory for what the host reads or writes (ids, logits, adapters,
  /// training state); device-local for what only kernels touch (arena, KV).
  tlc_status_t allocate(tlc::hal::Device &device, size_t n,
                        tlc::hal::MemoryKind kind = tlc::hal::MemoryKind::Host) {
    size = n;
    tlc_status_t st = device.allocator().allocate(kind, n, &buffer);
    ptr = st ? nullptr : buffer->hostPointer();
    return st;
  }
  BufferRange range() const { return {buffer.get(), 0, size}; }
};

/// One entry point recorded into a reusable command buffer.
struct BoundEntry {
  const tlc::fb::EntryPoint *def = nullptr;
  DeviceBuffer arena;
  std::unique_ptr<tlc::hal::CommandBuffer> commands;
};

/// Kernel time per kernel index (TLC_PROFILE=1).
struct Profile {
  bool enabled = false;
  tlc::hal::KernelProfile data;
  void init(const tlc_module_t *m) {
    const char *env = getenv("TLC_PROFILE");
    enabled = env && *env && *env != '0';
    data.seconds.assign(m->exe->kernels()->size(), 0.0);
    data.calls.assign(m->exe->kernels()->size(), 0);
  }
  void print(const tlc_module_t *m) const {
    if (!enabled)
      return;
    double total = 0;
    for (double t : data.seconds)
      total += t;
    fprintf(stderr, "tlc profile: %.3f s in kernels\n", total);
    if (data.submissions)
      fprintf(stderr, "  host: %.1f us recording and submitting each of %llu "
                      "calls\n",
              1e6 * data.recordSeconds / (double)data.submissions,
              (unsigned long long)data.submissions);
    for (size_t i = 0; i < data.seconds.size(); ++i)
      if (data.calls[i])
        fprintf(stderr, "  %9.5f s %5.1f%% %8llu calls %9.2f us/call  %s\n",
                data.seconds[i],
                100 * data.seconds[i] / (total > 0 ? total : 1),
                (unsigned long long)data.calls[i],
                1e6 * data.seconds[i] / (double)data.calls[i],
                m->exe->kernels()->Get((uint32_t)i)->c_str());
  }
};

/// Submits an entry point for T tokens at `pos` and waits for it.
tlc_status_t runDispatches(tlc::hal::Queue &queue, Profile *prof,
                           BoundEntry &e, const tlc::hal::CallArgs &args) {
  std::unique_ptr<tlc::hal::Fence> fence;
  tlc_status_t st = queue.submit(*e.commands, args,
                                 prof->enabled ? &prof->data : nullptr, &fence);
  return st ? st : fence->wait();
}
} // namespace

/// Threads of a session or trainer: as asked, else the module's default (a
/// device profile's big cores) up to the online CPUs, else every online CPU.
static int threadCount(const tlc_module_t *m,
                       const tlc_session_options_t *opts) {
  int threads = opts ? opts->num_threads : 0;
  int online = (int)std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  if (threads > 0)
    return threads;
  int preset = (int)m->def->default_threads();
  return preset > 0 ? std::min(preset, online) : online;
}

struct tlc_session_s {
  ~tlc_session_s();
  tlc_module_t *module;
  Profile prof; // TLC_PROFILE=1: printed at release
  std::unique_ptr<tlc::hal::Queue> queue;
  DeviceBuffer kv, ids, adapters, logits; // logits: grown on demand
  BoundEntry prefill, decode;
  size_t logitRows = 0, position = 0;
};

/// The session- or trainer-owned buffers an entry point binds.
struct SpaceBuffers {
  const DeviceBuffer *kv = nullptr, *state = nullptr, *hyper = nullptr;
};

/// Allocates the entry point's arena and records its dispatches.
static tlc_status_t bindEntry(tlc_module_t *m, const SpaceBuffers &spaces,
                              const tlc::fb::EntryPoint *def, BoundEntry *out) {
  out->def = def;
  tlc::hal::Device &device = *m->device;
  if (tlc_status_t st = out->arena.allocate(device, def->arena_size(),
                                             tlc::hal::MemoryKind::DeviceLocal))
    return st;
  if (tlc_status_t st =
          device.createCommandBuffer(*m->executable, &out->commands))
    return st;
  for (const auto *d : *def->dispatches()) {
    tlc::hal::DispatchDesc desc;
    desc.kernel = d->kernel();
    desc.tokensFactor = d->tokens_factor();
    desc.constant = d->constant();
    desc.groupsY = d->workgroups_y();
    desc.groupsZ = d->workgroups_z();
    for (const auto *b : *d->bindings()) {
      BufferRange r;
      DynamicSpace dyn = DynamicSpace::None;
      auto in = [&](const DeviceBuffer *buf) {
        if (buf)
          r = {buf->buffer.get(), b->offset(), b->size()};
      };
      switch (b->space()) {
      case tlc::fb::Space_Arena:
        in(&out->arena);
        break;
      case tlc::fb::Space_KV:
        in(spaces.kv);
        break;
      case tlc::fb::Space_State:
        in(spaces.state);
        break;
      case tlc::fb::Space_Hyper:
        in(spaces.hyper);
        break;
      case tlc::fb::Space_Param:
        r = {m->params.get(),
             m->def->parameters()->Get(b->index())->offset() + b->offset(),
             b->size()};
        break;
      case tlc::fb::Space_Input:
        dyn = DynamicSpace::Input;
        break;
      case tlc::fb::Space_Labels:
        dyn = DynamicSpace::Labels;
        break;
      default:
        dyn = DynamicSpace::Output;
        break;
      }
      desc.bindings.push_back(r);
      desc.dynamic.push_back(dyn);
    }
    if (tlc_status_t st = out->commands->dispatch(desc))
      return st;
  }
  return nullptr;
}

/// "PATH: out of memory ..." from a failed allocation status.
static tlc_status_t withPath(const tlc_module_t *m, tlc_status_t st,
                             const char *what) {
  std::string msg = m->path + ": " + what + ": " + tlc_status_message(st);
  tlc_status_code_t code = tlc_status_code(st);
  tlc_status_free(st);
  return makeStatus(code, "%s", msg.c_str());
}

extern "C" tlc_status_t tlc_session_create(tlc_module_t *m,
                                           const tlc_session_options_t *opts,
                                           tlc_session_t **out) {
  if (!out)
    return makeStatus(TLC_STATUS_INVALID_ARGUMENT, "tlc_session_create: out is null");
  *out = nullptr;
  if (!m)
    return makeStatus(TLC_STATUS_INVALID_ARGUMENT, "tlc_session_create: module is null");
  auto s = std::unique_ptr<tlc_session_s>(new (std::nothrow) tlc_session_s);
  if (!s)
    return makeStatus(TLC_STATUS_OUT_OF_MEMORY, "out of memory creating a session");
  s->module = m;
  tlc::hal::Device &device = *m->device;
  int64_t vocab = m->def->info()->vocab_size();
  SpaceBuffers spaces;
  if (tlc_status_t st = s->kv.allocate(device, m->exe->kv_size(),
                                        tlc::hal::MemoryKind::DeviceLocal))
    return withPath(m, st, "KV cache");
  spaces.kv = &s->kv;
  if (const auto *train = m->def->train()) { // zero adapters: the base model
    if (tlc_status_t st =
            s->adapters.allocate(device, 4 * train->adapter_elements()))
      return withPath(m, st, "adapters");
    spaces.state = &s->adapters;
  }
  size_t maxTokens = m->prefill->max_tokens();
  if (tlc_status_t st = s->ids.allocate(device, 4 * maxTokens))
    return withPath(m, st, "token ids");
  if (tlc_status_t st = s->logits.allocate(device, 4 * (size_t)vocab))
    return withPath(m, st, "logits");
  if (tlc_status_t st = bindEntry(m, spaces, m->prefill, &s->prefill))
    return withPath(m, st, "prefill");
  if (tlc_status_t st = bindEntry(m, spaces, m->decode, &s->decode))
    return withPath(m, st, "decode");
  if (tlc_status_t st =
          device.createQueue({threadCount(m, opts)}, &s->queue))
    return withPath(m, st, "queue");
  s->prof.init(m);
  *out = s.release();
  return nullptr;
}

tlc_session_s::~tlc_session_s() { prof.print(module); }

extern "C" void tlc_session_release(tlc_session_t *s) { delete s; }

extern "C" float *tlc_session_adapters(tlc_session_t *s, size_t *out_floats) {
  if (!s || !out_floats) {
    if (out_floats)
      *out_floats = 0;
    return nullptr;
  }
  *out_floats = s->adapters.ptr ? s->adapters.size / 4 : 0;
  return (float *)s->adapters.ptr;
}
extern "C" void tlc_session_reset(tlc_session_t *s) {
  if (!s)
    return;
  s->position = 0;
  s->logitRows = 0;
}
extern "C" size_t tlc_session_position(const tlc_session_t *s) {
  if (!s)
    return 0;
  return s->position;
}


/// Runs one call of an entry point on T tokens already in s->ids, writing
/// `rows` logit rows at row `row0` of s->logits.
static tlc_status_t runEntry(tlc_session_t *s, BoundEntry &e, int64_t T,
                             int64_t rows, size_t row0) {
  int64_t vocab = s->module->def->info()->vocab_size();
  tlc::hal::CallArgs args;
  args.T = T;
  args.pos = (int64_t)s->position;
  args.rows = rows;
  args.input = s->ids.range();
  args.output = {s->logits.buffer.get(), 4 * row0 * (uint64_t)vocab,
                 4 * (uint64_t)rows * (uint64_t)vocab};
  if (tlc_status_t st = runDispatches(*s->queue, &s->prof, e, args))
    return st;
  s->position += (size_t)T;
  return nullptr;
}

/// Makes room for `floats` logits (host-visible; zeroed when grown).
static tlc_status_t growLogits(tlc_session_t *s, size_t floats) {
  if (4 * floats <= s->logits.size)
    return nullptr;
  DeviceBuffer bigger;
  if (tlc_status_t st = bigger.allocate(*s->module->device, 4 * floats))
    return withPath(s->module, st, "logits");
  s->logits = std::move(bigger);
  return nullptr;
}

static tlc_status_t checkIds(tlc_session_t *s, const int32_t *ids, size_t n) {
  int64_t vocab = s->module->def->info()->vocab_size();
  for (size_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= vocab)
      return makeStatus(TLC_STATUS_INVALID_ARGUMENT, "token id %d at index %zu is outside the vocabulary "
                        "[0, %lld)",
                        ids[i], i, (long long)vocab);
  if (s->position + n > (size_t)s->module->def->info()->max_seq())
    return makeStatus(TLC_STATUS_INVALID_ARGUMENT, "sequence of %zu tokens exceeds the module's context of "
                      "%lld (compile with --max-seq-len)",
                      s->position + n,
                      (long long)s->module->def->info()->max_seq());
  return nullptr;
}

extern "C" tlc_status_t tlc_session_prefill(tlc_session_t *s,
                                            const int32_t *ids, size_t n,
                                            bool allLogits) {
  TLC_CHECK_ARG(s && (ids || n == 0), "tlc_session_prefill");
  if (n == 0)
    return makeStatus(TLC_STATUS_INVALID_ARGUMENT, "prefill needs at least one token");
  if (tlc_status_t st = checkIds(s, ids, n))
    return st;
  int64_t vocab = s->module->def->info()->vocab_size();
  size_t rows = allLogits ? n : 1;
  if (tlc_status_t st = growLogits(s, rows * (size_t)vocab))
    return st;
  s->logitRows = rows;
  size_t chunk = s->module->prefill->max_tokens(), row = 0;
  for (size_t at = 0; at < n; at += chunk) {
    size_t T = std::min(chunk, n - at);
    bool last = at + T == n;
    int64_t want = allLogits ? (int64_t)T : (last ? 1 : 0);
    if (tlc_status_t st = s->queue->write(ids + at, {s->ids.buffer.get(), 0, 4 * T}))
      return st;
    BoundEntry &e = T == 1 ? s->decode : s->prefill;
    if (tlc_status_t st = runEntry(s, e, (int64_t)T, want, row))
      return st;
    row += (size_t)want;
  }
  return nullptr;
}

extern "C" tlc_status_t tlc_session_decode(tlc_session_t *s, int32_t id) {
  TLC_CHECK_ARG(s, "tlc_session_decode");
  if (tlc_status_t st = checkIds(s, &id, 1))
    return st;
  s->logitRows = 1;
  if (tlc_status_t st = s->queue->write(&id, {s->ids.buffer.get(), 0, 4}))
    return st;
  return runEntry(s, s->decode, 1, 1, 0);
}

extern "C" const float *tlc_session_logits(const tlc_session_t *s, size_t *rows,
                                           size_t *vocab) {
  if (!s || !rows || !vocab)
    return nullptr;
  *rows = s->logitRows;
  *vocab = (size_t)s->module->def->info()->vocab_size();
  return (const float *)s->logits.ptr;
}

//===----------------------------------------------------------------------===//
// Training
//===----------------------------------------------------------------------===//

struct tlc_trainer_s {
  ~tlc_trainer_s() { prof.print(module); }
  tlc_module_t *module;
  Profile prof;
  std::unique_ptr<tlc::hal::Queue> queue;
  DeviceBuffer state, hyper, ids, labels, loss;
  BoundEntry step;
};

extern "C" tlc_status_t tlc_module_train_info(const tlc_module_t *m,
                                              tlc_train_info_t *out) {
  TLC_CHECK_ARG(m && out, "tlc_module_train_info");
  *out = tlc_train_info_t{};
  const auto *t = m->def->train();
  if (!t)
    return makeStatus(TLC_STATUS_NOT_FOUND, "%s: the module has no LoRA adapters (compile it with "
                      "tlc compile --train, or --lora-rank for adapter slots)",
                      m->path.c_str());
  out->seq_len = t->seq_len();
  out->batch = t->batch();
  out->optimizer = t->optimizer()->c_str();
  out->lora_rank = t->lora_rank();
  out->lora_alpha = t->lora_alpha();
  out->target_count = t->targets() ? t->targets()->size() : 0;
  out->tensor_count = t->tensors()->size();
  out->adapter_elements = t->adapter_elements();
  out->state_size = t->state_size();
  out->arena_size = m->trainStep ? m->trainStep->arena_size() : 0;
  out->has_train_step = m->trainStep != nullptr;
  return nullptr;
}

extern "C" tlc_status_t tlc_module_train_target(const tlc_module_t *m,
                                                size_t i, const char **out) {
  TLC_CHECK_ARG(m && out && m->def->train() && m->def->train()->targets() &&
                    i < m->def->train()->targets()->size(),
                "tlc_module_train_target");
  *out = m->def->train()->targets()->Get((uint32_t)i)->c_str();
  return nullptr;
}

extern "C" tlc_status_t tlc_module_train_tensor(const tlc_module_t *m,
                                                size_t i,
                                                tlc_train_tensor_info_t *out) {
  TLC_CHECK_ARG(m && out && m->def->train() &&
                    i < m->def->train()->tensors()->size(),
                "tlc_module_train_tensor");
  const auto *t = m->def->train()->tensors()->Get((uint32_t)i);
  out->name = t->name()->c_str();
  out->rows = t->shape()->Get(0);
  out->cols = t->shape()->Get(1);
  out->offset = t->offset();
  return nullptr;
}

extern "C" tlc_status_t tlc_trainer_create(tlc_module_t *m,
                                           const tlc_session_options_t *opts,
                                           tlc_trainer_t **out) {
  TLC_CHECK_ARG(m && out, "tlc_trainer_create");
  *out = nullptr;
  if (!m->trainStep)
    return makeStatus(TLC_STATUS_NOT_FOUND, "%s: not a training module (compile it with tlc "
                      "compile --train)",
                      m->path.c_str());
  auto t = std::unique_ptr<tlc_trainer_s>(new (std::nothrow) tlc_trainer_s);
  if (!t)
    return makeStatus(TLC_STATUS_OUT_OF_MEMORY, "out of memory creating a trainer");
  t->module = m;
  tlc::hal::Device &device = *m->device;
  size_t tokens = m->trainStep->max_tokens();
  SpaceBuffers spaces;
  tlc_status_t st = t->state.allocate(device, m->def->train()->state_size());
  if (!st)
    st = t->hyper.allocate(device, sizeof(tlc_train_hyper_t));
  if (!st)
    st = t->ids.allocate(device, 4 * tokens);
  if (!st)
    st = t->labels.allocate(device, 4 * tokens);
  if (!st)
    st = t->loss.allocate(device, 64);
  if (st)
    return withPath(m, st, "training state");
  spaces.state = &t->state;
  spaces.hyper = &t->hyper;
  if ((st = bindEntry(m, spaces, m->trainStep, &t->step)))
    return withPath(m, st, "train_step");
  if ((st = device.createQueue({threadCount(m, opts)}, &t->queue)))
    return withPath(m, st, "queue");
  t->prof.init(m);
  *out = t.release();
  return nullptr;
}

extern "C" void tlc_trainer_release(tlc_trainer_t *t) { delete t; }

extern "C" float *tlc_trainer_state(tlc_trainer_t *t, size_t *out_floats) {
  if (!t || !out_floats) {
    if (out_floats)
      *out_floats = 0;
    return nullptr;
  }
  *out_floats = t->state.size / 4;
  return (float *)t->state.ptr;
}

extern "C" tlc_status_t tlc_trainer_step(tlc_trainer_t *t, const int32_t *ids,
                                         const int32_t *labels, void *hyper,
                                         float *out_loss) {
  TLC_CHECK_ARG(t && ids && labels && hyper && out_loss, "tlc_trainer_step");
  int64_t vocab = t->module->def->info()->vocab_size();
  size_t n = t->module->trainStep->max_tokens();
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab)
      return makeStatus(TLC_STATUS_INVALID_ARGUMENT, "token id %d at index %zu is outside the vocabulary "
                        "[0, %lld)",
                        ids[i], i, (long long)vocab);
    if (labels[i] >= vocab)
      return makeStatus(TLC_STATUS_INVALID_ARGUMENT, "label %d at index %zu is outside the vocabulary "
                        "[0, %lld)",
                        labels[i], i, (long long)vocab);
  }
  tlc::hal::Queue &q = *t->queue;
  tlc_status_t st = q.write(ids, {t->ids.buffer.get(), 0, 4 * n});
  if (!st)
    st = q.write(labels, {t->labels.buffer.get(), 0, 4 * n});
  if (!st)
    st = q.write(hyper, t->hyper.range());
  tlc::hal::CallArgs args;
  args.T = (int64_t)n;
  args.input = t->ids.range();
  args.labels = t->labels.range();
  args.output = t->loss.range();
  if (!st)
    st = runDispatches(q, &t->prof, t->step, args);
  if (!st)
    st = q.read(t->hyper.range(), hyper);
  if (!st)
    st = q.read({t->loss.buffer.get(), 0, sizeof(float)}, out_loss);
  return st;
}

//===----------------------------------------------------------------------===//
// Tokenizer
//===----------------------------------------------------------------------===//

extern "C" tlc_status_t tlc_tokenize(const tlc_module_t *m, const char *text,
                                     size_t length, int32_t **outIds,
                                     size_t *outCount) {
  TLC_CHECK_ARG(m && (text || length == 0) && outIds && outCount,
                "tlc_tokenize");
  *outIds = nullptr;
  *outCount = 0;
  if (!m->tokenizer)
    return makeStatus(TLC_STATUS_NOT_FOUND, "%s: module has no tokenizer (the model folder had no "
                      "tokenizer.json)",
                      m->path.c_str());
  std::vector<int32_t> ids =
      m->tokenizer->encode(std::string_view(text, length));
  *outIds = (int32_t *)malloc(std::max<size_t>(1, ids.size()) * 4);
  if (!*outIds)
    return makeStatus(TLC_STATUS_OUT_OF_MEMORY, "out of memory");
  std::memcpy(*outIds, ids.data(), ids.size() * 4);
  *outCount = ids.size();
  return nullptr;
}

extern "C" tlc_status_t tlc_detokenize(const tlc_module_t *m,
                                       const int32_t *ids, size_t count,
                                       char **outText, size_t *outLength) {
  TLC_CHECK_ARG(m && (ids || count == 0) && outText && outLength,
                "tlc_detokenize");
  *outText = nullptr;
  *outLength = 0;
  if (!m->tokenizer)
    return makeStatus(TLC_STATUS_NOT_FOUND, "%s: module has no tokenizer", m->path.c_str());
  for (size_t i = 0; i < count; ++i)
    if (ids[i] < 0 || (size_t)ids[i] >= m->tokenizer->idSpaceSize())
      return makeStatus(TLC_STATUS_INVALID_ARGUMENT, "token id %d at index %zu is outside the tokenizer's "
                        "%zu ids",
                        ids[i], i, (size_t)m->tokenizer->idSpaceSize());
  std::string text = m->tokenizer->decode(ids, count);
  *outText = (char *)malloc(text.size() + 1);
  if (!*outText)
    return makeStatus(TLC_STATUS_OUT_OF_MEMORY, "out of memory");
  std::memcpy(*outText, text.data(), text.size());
  (*outText)[text.size()] = 0;
  *outLength = text.size();
  return nullptr;
}
