/* {{name}}: a wasmtrigger action in C, on the raw bindings wit-bindgen
 * generates. Do the work for an event and set *ret to the run's output
 * (handed to chained triggers); return false with a message in *err to fail
 * the run. `params` is the trigger's `params` as JSON text. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "action.h"

static action_string_t view(const char *s) {
  action_string_t out = {(uint8_t *)s, strlen(s)};
  return out;
}

bool exports_action_run(action_event_t *event, action_string_t *params, action_string_t *ret,
                        action_string_t *err) {
  /* Per-trigger state that survives restarts; increment is atomic. */
  action_string_t key = view("runs");
  int64_t runs = 0;
  wasmtrigger_plugin_kv_error_t kv_error;
  bool ok = wasmtrigger_plugin_kv_increment(&key, 1, &runs, &kv_error);
  if (!ok) {
    wasmtrigger_plugin_kv_error_free(&kv_error);
    action_string_dup(err, "kv increment failed");
  } else {
    /* {"runs": N, "kind": KIND, "params": PARAMS}: the kind is a plain
     * word for every built-in source, and params are JSON already. */
    size_t size = 64 + event->kind.len + params->len;
    char *output = malloc(size);
    int n = snprintf(output, size, "{\"runs\":%" PRId64 ",\"kind\":\"%.*s\",\"params\":%.*s}", runs,
                     (int)event->kind.len, (const char *)event->kind.ptr,
                     (int)(params->len ? params->len : 4), params->len ? (const char *)params->ptr : "null");
    action_string_dup_n(ret, output, (size_t)n);
    free(output);
    action_string_t message = view("counted a run");
    wasmtrigger_plugin_log_log(WASMTRIGGER_PLUGIN_LOG_LEVEL_INFO, &message);
  }
  /* Exports own their arguments. */
  action_event_free(event);
  action_string_free(params);
  return ok;
}
