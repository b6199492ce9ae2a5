/* A program with the kernels linked in (tlc compile --output-format=
 * static-lib): registers them, loads the module, prints 8 greedy tokens.
 * Built by static-lib.test with -DTLC_LIB_HEADER='"m.h"' -DREGISTER=... */
#include TLC_LIB_HEADER

#include <stdio.h>

static int fail(tlc_status_t s) {
  fprintf(stderr, "static_app: %s\n", tlc_status_message(s));
  tlc_status_free(s);
  return 1;
}

int main(int argc, char **argv) {
  if (argc != 2)
    return 2;
  tlc_status_t s;
  tlc_module_t *m;
  if (argc > 1 && (s = REGISTER()))
    return fail(s);
  if ((s = tlc_module_load_file(argv[1], &m)))
    return fail(s);
  tlc_session_t *session;
  if ((s = tlc_session_create(m, NULL, &session)))
    return fail(s);
  int32_t prompt[3] = {505, 325, 122};
  if ((s = tlc_session_prefill(session, prompt, 3, false)))
    return fail(s);
  for (int i = 0; i < 8; ++i) {
    size_t rows, vocab;
    const float *logits = tlc_session_logits(session, &rows, &vocab);
    int32_t best = 0;
    for (size_t v = 1; v < vocab; ++v)
      if (logits[v] > logits[best])
        best = (int32_t)v;
    printf(i ? " %d" : "%d", best);
    if ((s = tlc_session_decode(session, best)))
      return fail(s);
  }
  printf("\n");
  tlc_session_release(session);
  tlc_module_release(m);
  return 0;
}
