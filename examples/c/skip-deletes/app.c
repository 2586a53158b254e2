/* A minimal wasmtrigger filter in C, on the raw bindings wit-bindgen
 * generates (no JSON library): passes every event except deletions (`kind`
 * "delete", as kube-watch sends them), logs each one it drops and counts
 * them in kv under "dropped".
 *
 * Build: scripts/build-guests --lang c
 */

#include <string.h>

#include "filter.h"

static filter_string_t view(const char *s) {
  filter_string_t out = {(uint8_t *)s, strlen(s)};
  return out;
}

bool exports_filter_filter(filter_event_t *event, bool *ret, filter_string_t *err) {
  /* The function owns `event` and frees it; `ret` and `err` are its answers. */
  static const char deletion[] = "delete";
  bool is_delete = event->kind.len == sizeof deletion - 1 &&
                   memcmp(event->kind.ptr, deletion, sizeof deletion - 1) == 0;
  bool ok = true;
  if (is_delete) {
    filter_string_t key = view("dropped");
    int64_t dropped = 0;
    wasmtrigger_plugin_kv_error_t kv_error;
    if (wasmtrigger_plugin_kv_increment(&key, 1, &dropped, &kv_error)) {
      filter_string_t message = view("dropping a delete event");
      wasmtrigger_plugin_log_log(WASMTRIGGER_PLUGIN_LOG_LEVEL_INFO, &message);
    } else {
      wasmtrigger_plugin_kv_error_free(&kv_error);
      filter_string_dup(err, "kv increment failed");
      ok = false;
    }
  }
  *ret = !is_delete;
  filter_event_free(event);
  return ok;
}
