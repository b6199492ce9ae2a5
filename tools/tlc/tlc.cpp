// tlc: the compiler command line.
//   tlc compile MODEL_DIR -o OUT.tlm [--target host|x86-64[:FEATURES]]
//       [--compile-to=import|tlora|lowered|llvm] [--print-ir-after-all]
//       [--print-ir-after=PASS] [--dump-ir-dir=DIR] [--timing]
//       [--max-seq-len N] [--prefill-chunk N]
#include "compiler/driver/Compiler.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>

using namespace llvm;

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  if (argc < 2 || std::strcmp(argv[1], "compile") != 0) {
    errs() << "usage: tlc compile MODEL_DIR -o OUT.tlm [options]\n"
              "       tlc compile --help\n";
    return 1;
  }
  // Parse the options after the "compile" subcommand.
  argv[1] = argv[0];
  --argc;
  ++argv;
  cl::OptionCategory cat("tlc compile options");
  cl::opt<std::string> model(cl::Positional, cl::Required,
                             cl::desc("<model folder>"), cl::cat(cat));
  cl::opt<std::string> output("o", cl::desc("output module (.tlm)"),
                              cl::value_desc("file"), cl::cat(cat));
  cl::opt<std::string> target(
      "target", cl::init("host"),
      cl::desc(
          "host, or x86-64[:FEATURES] (e.g. x86-64:+avx512vnni,+avx512bw)"),
      cl::cat(cat));
  cl::opt<tlc::Phase> compileTo(
      "compile-to", cl::init(tlc::Phase::End),
      cl::desc("stop after a phase and print its IR"),
      cl::values(
          clEnumValN(tlc::Phase::Import, "import", "tlora ops as imported"),
          clEnumValN(tlc::Phase::Tlora, "tlora", "after tlora transforms"),
          clEnumValN(tlc::Phase::Lowered, "lowered",
                     "dispatches, kernels and memory plan"),
          clEnumValN(tlc::Phase::LLVM, "llvm", "kernels in the LLVM dialect")),
      cl::cat(cat));
  cl::opt<bool> printAll("print-ir-after-all",
                         cl::desc("print the IR after every pass (stderr)"),
                         cl::cat(cat));
  cl::opt<std::string> printAfter(
      "print-ir-after", cl::desc("print the IR after the pass named PASS"),
      cl::value_desc("PASS"), cl::cat(cat));
  cl::opt<std::string> dumpDir(
      "dump-ir-dir",
      cl::desc("write the IR after each pass to DIR/NN-pass.mlir"),
      cl::value_desc("DIR"), cl::cat(cat));
  cl::opt<bool> timing("timing",
                       cl::desc("print the time of each phase and pass"),
                       cl::cat(cat));
  cl::opt<int64_t> maxSeq("max-seq-len", cl::init(0),
                          cl::desc("KV cache capacity in tokens (default: "
                                   "min(max_position_embeddings, 2048))"),
                          cl::cat(cat));
  cl::opt<int64_t> chunk(
      "prefill-chunk", cl::init(128),
      cl::desc("tokens per prefill call (kernel batch size)"), cl::cat(cat));
  cl::opt<std::string> head(
      "lm-head", cl::init("exact"),
      cl::desc("LM head weights: exact (as in the checkpoint, default), int8 "
               "(per-row int8, lossy) or q6 (per-row 6-bit with int8 "
               "activations, lossy, as peers' Q6_K heads)"),
      cl::cat(cat));
  cl::opt<std::string> adapter(
      "adapter", cl::desc("bake a PEFT LoRA adapter folder into the module"),
      cl::value_desc("DIR"), cl::cat(cat));
  cl::HideUnrelatedOptions(cat);
  cl::ParseCommandLineOptions(argc, argv,
                              "tlc compile: BitNet model -> .tlm\n");

  tlc::CompileOptions o;
  o.modelDir = model;
  o.output = output;
  o.target = target;
  o.stopAfter = compileTo;
  o.printIRAfterAll = printAll;
  o.printIRAfter = printAfter;
  o.dumpIRDir = dumpDir;
  o.timing = timing;
  o.maxSeq = maxSeq;
  o.maxTokens = chunk;
  if (head != "exact" && head != "int8" && head != "q6") {
    errs() << "tlc: error: --lm-head must be exact, int8 or q6\n";
    return 1;
  }
  o.headBits = head == "int8" ? 8 : head == "q6" ? 6 : 16;
  o.adapterDir = adapter;
  if (o.output.empty() && o.stopAfter == tlc::Phase::End) {
    errs() << "tlc: error: no output file (-o OUT.tlm)\n";
    return 1;
  }
  if (o.maxTokens <= 0 || o.maxSeq < 0) {
    errs() << "tlc: error: --prefill-chunk must be positive and "
              "--max-seq-len non-negative\n";
    return 1;
  }
  return tlc::compile(o);
}
