/* The C API's status codes and argument checks, from C: every failure is a
 * status with the documented code, never a crash.
 * Usage: status_test GOOD.tlm TRUNCATED.tlm OLD_VERSION.tlm OTHER_CPU.tlm */
#include <tlc/tlc.h>

#include <stdio.h>

static int failures = 0;

/* Checks that `s` has `code`, then frees it. */
static void expect_code(tlc_status_t s, tlc_status_code_t code, const char *what) {
  if (tlc_status_code(s) != code) {
    printf("FAIL %s: code %d, expected %d (%s)\n", what, (int)tlc_status_code(s),
           (int)code, tlc_status_message(s));
    failures++;
  }
  tlc_status_free(s);
}

#define EXPECT(cond)                                                           \
  do {                                                                         \
    if (!(cond)) {                                                             \
      printf("FAIL line %d: %s\n", __LINE__, #cond);                           \
      failures++;                                                              \
    }                                                                          \
  } while (0)

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: status_test GOOD TRUNCATED OLD OTHER_CPU\n");
    return 2;
  }
  tlc_module_t *m = NULL;
  EXPECT(tlc_status_code(NULL) == TLC_STATUS_OK);
  expect_code(tlc_module_load_file(NULL, &m), TLC_STATUS_INVALID_ARGUMENT, "null path");
  expect_code(tlc_module_load_file("/nonexistent/x.tlm", &m), TLC_STATUS_NOT_FOUND,
              "missing file");
  expect_code(tlc_module_load_file(argv[2], &m), TLC_STATUS_INVALID_FILE, "truncated");
  expect_code(tlc_module_load_file(argv[3], &m), TLC_STATUS_INCOMPATIBLE, "old version");
  expect_code(tlc_module_load_file(argv[4], &m), TLC_STATUS_INCOMPATIBLE, "other CPU");
  EXPECT(m == NULL);

  tlc_status_t s = tlc_module_load_file(argv[1], &m);
  if (s) {
    printf("FAIL cannot load %s: %s\n", argv[1], tlc_status_message(s));
    return 1;
  }
  tlc_model_info_t info;
  expect_code(tlc_module_model_info(NULL, &info), TLC_STATUS_INVALID_ARGUMENT, "info null");
  expect_code(tlc_module_model_info(m, NULL), TLC_STATUS_INVALID_ARGUMENT, "info out");
  expect_code(tlc_module_model_info(m, &info), TLC_STATUS_OK, "info");
  size_t n = tlc_module_executable_count(m);
  EXPECT(n >= 1 && tlc_module_executable_count(NULL) == 0);
  tlc_executable_info_t e;
  expect_code(tlc_module_executable_info(m, n - 1, &e), TLC_STATUS_OK, "exe");
  expect_code(tlc_module_executable_info(m, n, &e), TLC_STATUS_INVALID_ARGUMENT, "exe n");
  tlc_entry_info_t entry;
  expect_code(tlc_module_entry_info(m, tlc_module_entry_count(m), &entry),
              TLC_STATUS_INVALID_ARGUMENT, "entry n");
  tlc_train_info_t ti;
  expect_code(tlc_module_train_info(m, &ti), TLC_STATUS_NOT_FOUND, "no adapters");
  const char *name;
  expect_code(tlc_module_train_target(m, 0, &name), TLC_STATUS_INVALID_ARGUMENT, "target");
  tlc_trainer_t *trainer;
  expect_code(tlc_trainer_create(m, NULL, &trainer), TLC_STATUS_NOT_FOUND, "trainer");
  int32_t *ids;
  size_t count;
  expect_code(tlc_tokenize(m, "hi", 2, &ids, &count), TLC_STATUS_NOT_FOUND, "tokenizer");

  tlc_session_t *session = NULL;
  expect_code(tlc_session_create(NULL, NULL, &session), TLC_STATUS_INVALID_ARGUMENT,
              "session null");
  expect_code(tlc_session_create(m, NULL, &session), TLC_STATUS_OK, "session");
  int32_t bad = (int32_t)info.vocab_size;
  expect_code(tlc_session_prefill(session, &bad, 1, false), TLC_STATUS_INVALID_ARGUMENT,
              "id outside the vocabulary");
  expect_code(tlc_session_prefill(session, NULL, 3, false), TLC_STATUS_INVALID_ARGUMENT,
              "null ids");
  expect_code(tlc_session_decode(NULL, 1), TLC_STATUS_INVALID_ARGUMENT, "decode null");
  size_t rows, vocab, floats;
  EXPECT(tlc_session_logits(NULL, &rows, &vocab) == NULL);
  EXPECT(tlc_session_adapters(session, &floats) == NULL && floats == 0);
  int32_t ok = 1;
  expect_code(tlc_session_prefill(session, &ok, 1, false), TLC_STATUS_OK, "prefill");
  EXPECT(tlc_session_logits(session, &rows, &vocab) != NULL && rows == 1);
  tlc_session_release(session);
  tlc_module_release(m);
  printf("status codes: %d failures\n", failures);
  return failures != 0;
}
