/* {{name}}: a wasmtrigger filter in C, on the raw bindings wit-bindgen
 * generates. Set *ret to true to run the trigger's action for this event,
 * false to drop it; return false with a message in *err to fail the run.
 * `event->data` is JSON text: for rules on its content, compile a JSON
 * parser in (or write the module in C++ with nlohmann/json). */
#include <string.h>

#include "filter.h"

/* A borrowed view of a C string for an import call. */
static filter_string_t view(const char *s) {
  filter_string_t out = {(uint8_t *)s, strlen(s)};
  return out;
}

static bool equals(const filter_string_t *s, const char *literal) {
  return s->len == strlen(literal) && memcmp(s->ptr, literal, s->len) == 0;
}

bool exports_filter_filter(filter_event_t *event, bool *ret, filter_string_t *err) {
  (void)err;
  /* Replace with your own rule: here, pass every event but deletions. */
  *ret = !equals(&event->kind, "delete");
  filter_string_t message = view(*ret ? "passing an event" : "dropping a deletion");
  wasmtrigger_plugin_log_log(WASMTRIGGER_PLUGIN_LOG_LEVEL_INFO, &message);
  /* Exports own their arguments. */
  filter_event_free(event);
  return true;
}
