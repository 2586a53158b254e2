// A wasmtrigger filter in C++: passes a Deployment whose ready replicas equal
// its desired replicas (absent spec.replicas means 1, absent
// status.readyReplicas means 0), and counts the events it has seen in kv.
// The same rules as the Rust, Python and JavaScript versions.
//
// Build: scripts/build-guests --lang cpp (wit-bindgen c, clang++ for
// wasm32-wasi, wasm-tools component new with the WASI adapter).

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "filter.h"

using json = nlohmann::json;

namespace {

std::string text(const filter_string_t &s) {
  return std::string(reinterpret_cast<const char *>(s.ptr), s.len);
}

// A borrowed view of `s` for an import call (imports do not take ownership).
filter_string_t view(const std::string &s) {
  return filter_string_t{reinterpret_cast<uint8_t *>(const_cast<char *>(s.data())), s.size()};
}

void log(wasmtrigger_plugin_log_level_t level, const std::string &message) {
  filter_string_t m = view(message);
  wasmtrigger_plugin_log_log(level, &m);
}

// The member `key` of `j` when `j` is an object that has it, else null
// (exceptions are off: every access is checked first).
const json *member(const json &j, const char *key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

int64_t integer_or(const json *j, int64_t fallback) {
  return j != nullptr && j->is_number_integer() ? j->get<int64_t>() : fallback;
}

bool fail(filter_string_t *err, const std::string &message) {
  filter_string_dup_n(err, message.data(), message.size());
  return false;
}

}  // namespace

extern "C" bool exports_filter_filter(filter_event_t *event, bool *ret, filter_string_t *err) {
  // Exported functions own their arguments.
  json data = json::parse(text(event->data), nullptr, false);
  filter_event_free(event);
  if (data.is_discarded()) return fail(err, "the event data is not JSON");
  const json *object = member(data, "object");
  const json &deployment = object != nullptr ? *object : data;
  const json *kind = member(deployment, "kind");
  std::string kind_name = kind != nullptr && kind->is_string() ? kind->get<std::string>() : "Deployment";
  if (kind_name != "Deployment") return fail(err, "expected a Deployment, got a " + kind_name);

  const json *spec = member(deployment, "spec");
  const json *status = member(deployment, "status");
  int64_t desired = integer_or(spec ? member(*spec, "replicas") : nullptr, 1);
  int64_t ready = integer_or(status ? member(*status, "readyReplicas") : nullptr, 0);

  std::string key = "seen";
  filter_string_t k = view(key);
  int64_t seen = 0;
  wasmtrigger_plugin_kv_error_t kv_error;
  if (!wasmtrigger_plugin_kv_increment(&k, 1, &seen, &kv_error)) {
    wasmtrigger_plugin_kv_error_free(&kv_error);
    return fail(err, "kv increment failed");
  }
  const json *metadata = member(deployment, "metadata");
  const json *name = metadata ? member(*metadata, "name") : nullptr;
  log(WASMTRIGGER_PLUGIN_LOG_LEVEL_DEBUG,
      "deployment " + (name && name->is_string() ? name->get<std::string>() : std::string("?")) + ": " +
          std::to_string(ready) + "/" + std::to_string(desired) + " ready (event " + std::to_string(seen) + ")");
  *ret = ready == desired;
  return true;
}
