// {{name}}: a wasmtrigger filter in C++. Set *ret to true to run the trigger's
// action for this event, false to drop it; return false with a message in
// *err to fail the run. Exceptions are off: check JSON before reading it.
#include <string>

#include <nlohmann/json.hpp>

#include "filter.h"

using json = nlohmann::json;

static std::string text(const filter_string_t &s) {
  return std::string(reinterpret_cast<const char *>(s.ptr), s.len);
}

static void log_info(const std::string &message) {
  // Imports borrow their arguments.
  filter_string_t m{reinterpret_cast<uint8_t *>(const_cast<char *>(message.data())), message.size()};
  wasmtrigger_plugin_log_log(WASMTRIGGER_PLUGIN_LOG_LEVEL_INFO, &m);
}

extern "C" bool exports_filter_filter(filter_event_t *event, bool *ret, filter_string_t *err) {
  // Exports own their arguments: copy what is needed, then free them.
  std::string kind = text(event->kind), source = text(event->source);
  json data = json::parse(text(event->data), nullptr, false);  // `data` is JSON text
  filter_event_free(event);
  if (data.is_discarded()) {
    filter_string_dup(err, "the event data is not JSON");
    return false;
  }
  // A webhook's data is {body, headers, contentType}; a kube-watch's is the object change.
  json object = data.value(source == "webhook" ? "body" : "object", json::object());
  std::string name = "?";
  if (object.is_object() && object.contains("metadata") && object["metadata"].is_object() &&
      object["metadata"].contains("name") && object["metadata"]["name"].is_string()) {
    name = object["metadata"]["name"].get<std::string>();
  }
  log_info(kind + " event for " + name);
  // Replace with your own rule: here, pass objects that have a name.
  *ret = name != "?";
  return true;
}
