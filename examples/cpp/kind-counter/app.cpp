// A wasmtrigger action in C++: counts events per kind in kv, logs, and (if
// params name a `url`) POSTs the count there through the host's http
// capability. Returns {"kind", "count"[, "status"]} as JSON.
//
// Params: {"url": "...", "fail": "message", "crash": "abort" | "out-of-bounds"}
// (all optional): `fail` ends the run as failed with that message; `crash`
// shows that a crashing module is a contained trap, not a crashed engine.
//
// Build: scripts/build-guests --lang cpp

#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "action.h"

using json = nlohmann::json;

namespace {

std::string text(const action_string_t &s) {
  return std::string(reinterpret_cast<const char *>(s.ptr), s.len);
}

action_string_t view(const std::string &s) {
  return action_string_t{reinterpret_cast<uint8_t *>(const_cast<char *>(s.data())), s.size()};
}

std::string error_text(const wasmtrigger_plugin_types_error_t &e) {
  switch (e.tag) {
    case WASMTRIGGER_PLUGIN_TYPES_ERROR_DENIED: return "denied: " + text(e.val.denied);
    case WASMTRIGGER_PLUGIN_TYPES_ERROR_NOT_FOUND: return "not found";
    case WASMTRIGGER_PLUGIN_TYPES_ERROR_INVALID: return "invalid: " + text(e.val.invalid);
    default: return "failed: " + text(e.val.failed);
  }
}

const json *member(const json &j, const char *key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}

bool finish(action_string_t *out, const std::string &value) {
  action_string_dup_n(out, value.data(), value.size());
  return true;
}

// Writes far past the end of linear memory: the runtime stops it with a trap.
[[gnu::noinline]] void write_out_of_bounds() {
  volatile uint32_t *beyond = reinterpret_cast<volatile uint32_t *>(uintptr_t{0xFFFFFFF0u});
  *beyond = 1;
}

}  // namespace

extern "C" bool exports_action_run(action_event_t *event, action_string_t *params, action_string_t *ret,
                                   action_string_t *err) {
  std::string trigger = text(event->trigger), kind = text(event->kind), raw = text(*params);
  action_event_free(event);
  action_string_free(params);
  json p = raw.empty() ? json::object() : json::parse(raw, nullptr, false);
  if (!p.is_object()) return !finish(err, "params must be a JSON object");
  if (const json *message = member(p, "fail")) {
    return !finish(err, message->is_string() ? message->get<std::string>() : message->dump());
  }
  if (const json *crash = member(p, "crash")) {
    if (*crash == "abort") std::abort();
    if (*crash == "out-of-bounds") write_out_of_bounds();
  }

  std::string key = "kind/" + kind;
  action_string_t k = view(key);
  int64_t count = 0;
  wasmtrigger_plugin_kv_error_t kv_error;
  if (!wasmtrigger_plugin_kv_increment(&k, 1, &count, &kv_error)) {
    std::string why = "kv: " + error_text(kv_error);
    wasmtrigger_plugin_kv_error_free(&kv_error);
    return !finish(err, why);
  }
  std::string line = trigger + ": " + kind + " number " + std::to_string(count);
  action_string_t l = view(line);
  wasmtrigger_plugin_log_log(WASMTRIGGER_PLUGIN_LOG_LEVEL_INFO, &l);

  json result = {{"kind", kind}, {"count", count}};
  if (const json *url = member(p, "url"); url != nullptr && url->is_string()) {
    std::string method = "POST", target = url->get<std::string>(), body = result.dump();
    std::string header_name = "content-type", header_value = "application/json";
    wasmtrigger_plugin_http_header_t header{view(header_name), view(header_value)};
    wasmtrigger_plugin_http_request_t request{};
    request.method = view(method);
    request.url = view(target);
    request.headers = wasmtrigger_plugin_http_list_header_t{&header, 1};
    request.body.is_some = true;
    request.body.val = action_list_u8_t{reinterpret_cast<uint8_t *>(body.data()), body.size()};
    wasmtrigger_plugin_http_response_t response;
    wasmtrigger_plugin_http_error_t http_error;
    if (!wasmtrigger_plugin_http_send(&request, &response, &http_error)) {
      std::string why = "http: " + error_text(http_error);
      wasmtrigger_plugin_http_error_free(&http_error);
      return !finish(err, why);
    }
    result["status"] = response.status;
    wasmtrigger_plugin_http_response_free(&response);
  }
  return finish(ret, result.dump());
}
