// {{name}}: a wasmtrigger action in C++. Do the work for an event and set
// *ret to the run's output (handed to chained triggers); return false with a
// message in *err to fail the run. Exceptions are off: check JSON first.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "action.h"

using json = nlohmann::json;

static std::string text(const action_string_t &s) {
  return std::string(reinterpret_cast<const char *>(s.ptr), s.len);
}

// A borrowed view for an import call (imports do not take ownership).
static action_string_t view(const std::string &s) {
  return action_string_t{reinterpret_cast<uint8_t *>(const_cast<char *>(s.data())), s.size()};
}

extern "C" bool exports_action_run(action_event_t *event, action_string_t *params, action_string_t *ret,
                                   action_string_t *err) {
  // Exports own their arguments: copy what is needed, then free them.
  std::string id = text(event->id), kind = text(event->kind);
  json p = json::parse(text(*params), nullptr, false);  // the trigger's `params` as JSON text
  action_event_free(event);
  action_string_free(params);
  if (p.is_discarded()) {
    action_string_dup(err, "params are not JSON");
    return false;
  }
  // Per-trigger state that survives restarts; increment is atomic.
  std::string key = "runs";
  action_string_t k = view(key);
  int64_t runs = 0;
  wasmtrigger_plugin_kv_error_t kv_error;
  if (!wasmtrigger_plugin_kv_increment(&k, 1, &runs, &kv_error)) {
    wasmtrigger_plugin_kv_error_free(&kv_error);
    action_string_dup(err, "kv increment failed");
    return false;
  }
  std::string line = "run " + std::to_string(runs) + " for " + kind + " event " + id;
  action_string_t l = view(line);
  wasmtrigger_plugin_log_log(WASMTRIGGER_PLUGIN_LOG_LEVEL_INFO, &l);
  std::string output = json{{"runs", runs}, {"kind", kind}, {"params", p}}.dump();
  action_string_dup_n(ret, output.data(), output.size());
  return true;
}
