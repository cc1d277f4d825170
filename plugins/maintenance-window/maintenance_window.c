/*
 * maintenance-window: a nightcrier pre-triage plugin in C.
 *
 * Skips incidents of the listed namespaces while a daily maintenance window is open, and lets
 * every other incident proceed unchanged. Config (`[plugins.plugin.maintenance-window.config]`,
 * read through `get-config` as JSON):
 *
 *     namespaces = ["shop", "batch"]   # namespaces under maintenance
 *     start_hour = 22                   # window opens at this UTC hour (0-23)
 *     end_hour = 6                      # and closes at this one (0-24); may wrap past midnight;
 *                                       # equal to start_hour: the window is never open
 *
 * Built by plugins/build.sh: bindings from `wit-bindgen c`, Debian's clang and wasi-libc, and
 * `wasm-tools component new` with the WASI preview 1 reactor adapter.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pre_triage.h"

#define MAX_NAMESPACES 64
#define MAX_NAME 254

typedef struct {
    size_t count;
    char namespaces[MAX_NAMESPACES][MAX_NAME + 1];
    int start_hour;
    int end_hour;
} window_config;

/* A cursor over the config JSON; `error` is set on the first problem. */
typedef struct {
    const char *at;
    const char *end;
    const char *error;
} cursor;

static void skip_space(cursor *c) {
    while (c->at < c->end && (*c->at == ' ' || *c->at == '\n' || *c->at == '\r' || *c->at == '\t')) {
        c->at++;
    }
}

static bool expect(cursor *c, char wanted) {
    skip_space(c);
    if (c->at < c->end && *c->at == wanted) {
        c->at++;
        return true;
    }
    c->error = "malformed JSON";
    return false;
}

/* Reads a JSON string into `out` (NUL-terminated, at most `size - 1` bytes); `out` may be NULL to skip it. */
static bool read_string(cursor *c, char *out, size_t size) {
    if (!expect(c, '"')) {
        return false;
    }
    size_t length = 0;
    while (c->at < c->end && *c->at != '"') {
        char byte = *c->at++;
        if (byte == '\\') {
            if (c->at >= c->end) {
                break;
            }
            char escaped = *c->at++;
            switch (escaped) {
            case '"': case '\\': case '/': byte = escaped; break;
            case 'n': byte = '\n'; break;
            case 't': byte = '\t'; break;
            case 'r': byte = '\r'; break;
            case 'b': byte = '\b'; break;
            case 'f': byte = '\f'; break;
            case 'u':
                /* namespaces are DNS labels: a \u escape can only be skipped, not matched */
                if (c->end - c->at < 4) {
                    c->error = "malformed JSON";
                    return false;
                }
                c->at += 4;
                byte = '?';
                break;
            default:
                c->error = "malformed JSON";
                return false;
            }
        }
        if (out != NULL) {
            if (length + 1 >= size) {
                c->error = "a namespace is longer than 254 bytes";
                return false;
            }
            out[length] = byte;
        }
        length++;
    }
    if (c->at >= c->end) {
        c->error = "malformed JSON";
        return false;
    }
    c->at++;
    if (out != NULL) {
        out[length] = '\0';
    }
    return true;
}

static bool read_int(cursor *c, int *out) {
    skip_space(c);
    long value = 0;
    const char *start = c->at;
    while (c->at < c->end && *c->at >= '0' && *c->at <= '9' && value < 100000) {
        value = value * 10 + (*c->at - '0');
        c->at++;
    }
    if (c->at == start) {
        c->error = "start_hour and end_hour must be whole numbers";
        return false;
    }
    *out = (int)value;
    return true;
}

static bool skip_value(cursor *c, int depth);

static bool skip_container(cursor *c, char close, bool keys, int depth) {
    c->at++;
    skip_space(c);
    if (c->at < c->end && *c->at == close) {
        c->at++;
        return true;
    }
    for (;;) {
        if (keys && !(read_string(c, NULL, 0) && expect(c, ':'))) {
            return false;
        }
        if (!skip_value(c, depth + 1)) {
            return false;
        }
        skip_space(c);
        if (c->at < c->end && *c->at == ',') {
            c->at++;
            continue;
        }
        return expect(c, close);
    }
}

static bool skip_value(cursor *c, int depth) {
    skip_space(c);
    if (depth > 32 || c->at >= c->end) {
        c->error = "malformed JSON";
        return false;
    }
    switch (*c->at) {
    case '"': return read_string(c, NULL, 0);
    case '{': return skip_container(c, '}', true, depth);
    case '[': return skip_container(c, ']', false, depth);
    default:
        while (c->at < c->end && strchr(",}] \n\r\t", *c->at) == NULL) {
            c->at++;
        }
        return true;
    }
}

static bool read_namespaces(cursor *c, window_config *config) {
    if (!expect(c, '[')) {
        return false;
    }
    skip_space(c);
    if (c->at < c->end && *c->at == ']') {
        c->at++;
        return true;
    }
    for (;;) {
        if (config->count == MAX_NAMESPACES) {
            c->error = "more than 64 namespaces";
            return false;
        }
        if (!read_string(c, config->namespaces[config->count], MAX_NAME + 1)) {
            return false;
        }
        config->count++;
        skip_space(c);
        if (c->at < c->end && *c->at == ',') {
            c->at++;
            continue;
        }
        return expect(c, ']');
    }
}

/* Parses the config object; returns NULL or what is wrong with it. */
static const char *parse_config(const char *json, size_t length, window_config *config) {
    cursor c = {json, json + length, NULL};
    config->count = 0;
    config->start_hour = 0;
    config->end_hour = 0;
    if (!expect(&c, '{')) {
        return "the config is not a JSON object";
    }
    skip_space(&c);
    if (c.at < c.end && *c.at == '}') {
        return NULL;
    }
    for (;;) {
        char key[32];
        if (!read_string(&c, key, sizeof key) || !expect(&c, ':')) {
            return c.error;
        }
        bool ok;
        if (strcmp(key, "namespaces") == 0) {
            ok = read_namespaces(&c, config);
        } else if (strcmp(key, "start_hour") == 0) {
            ok = read_int(&c, &config->start_hour);
        } else if (strcmp(key, "end_hour") == 0) {
            ok = read_int(&c, &config->end_hour);
        } else {
            ok = skip_value(&c, 0);
        }
        if (!ok) {
            return c.error;
        }
        skip_space(&c);
        if (c.at < c.end && *c.at == ',') {
            c.at++;
            continue;
        }
        if (!expect(&c, '}')) {
            return c.error;
        }
        break;
    }
    if (config->start_hour > 23 || config->end_hour > 24) {
        return "start_hour must be 0-23 and end_hour 0-24";
    }
    return NULL;
}

static bool window_open(const window_config *config, int hour) {
    if (config->start_hour == config->end_hour) {
        return false;
    }
    if (config->start_hour < config->end_hour) {
        return hour >= config->start_hour && hour < config->end_hour;
    }
    return hour >= config->start_hour || hour < config->end_hour;
}

static bool listed(const window_config *config, const uint8_t *name, size_t length) {
    for (size_t index = 0; index < config->count; index++) {
        if (strlen(config->namespaces[index]) == length &&
            memcmp(config->namespaces[index], name, length) == 0) {
            return true;
        }
    }
    return false;
}

static void log_line(nightcrier_plugin_host_level_t level, const char *message,
                     nightcrier_plugin_host_pair_t *fields, size_t count) {
    pre_triage_string_t text;
    pre_triage_string_set(&text, message);
    nightcrier_plugin_host_list_pair_t list = {fields, count};
    nightcrier_plugin_host_log(level, &text, &list);
}

void exports_nightcrier_plugin_pre_triage_processor_describe(
    exports_nightcrier_plugin_pre_triage_processor_plugin_info_t *ret) {
    /* zeroed: no capabilities requested (empty lists) */
    memset(ret, 0, sizeof *ret);
    pre_triage_string_dup(&ret->name, "maintenance-window");
    pre_triage_string_dup(&ret->version, "0.1.0");
    pre_triage_string_dup(&ret->description,
                          "Skips incidents of listed namespaces during a daily maintenance window");
}

bool exports_nightcrier_plugin_pre_triage_processor_pre_triage(
    exports_nightcrier_plugin_pre_triage_processor_incident_t *incident,
    exports_nightcrier_plugin_pre_triage_processor_decision_t *ret,
    exports_nightcrier_plugin_pre_triage_processor_plugin_error_t *err) {
    /* static: 16 KiB of namespaces is better kept off the 64 KiB stack */
    static window_config config;
    pre_triage_string_t config_json;
    nightcrier_plugin_host_get_config(&config_json);
    const char *problem = parse_config((const char *)config_json.ptr, config_json.len, &config);
    pre_triage_string_free(&config_json);
    if (problem != NULL) {
        char message[160];
        snprintf(message, sizeof message, "invalid maintenance-window config: %s", problem);
        pre_triage_string_dup(&err->message, message);
        err->retryable = false;
        exports_nightcrier_plugin_pre_triage_processor_incident_free(incident);
        return false;
    }

    int hour = (int)((nightcrier_plugin_host_now_ms() / 3600000u) % 24u);
    const pre_triage_option_string_t *namespace_ = &incident->event.resource.namespace_;
    memset(ret, 0, sizeof *ret);
    if (namespace_->is_some && listed(&config, namespace_->val.ptr, namespace_->val.len) &&
        window_open(&config, hour)) {
        char reason[400];
        snprintf(reason, sizeof reason, "maintenance window %02d:00-%02d:00 UTC for namespace %.*s",
                 config.start_hour, config.end_hour, (int)namespace_->val.len,
                 (const char *)namespace_->val.ptr);
        char hour_text[4];
        snprintf(hour_text, sizeof hour_text, "%d", hour);
        nightcrier_plugin_host_pair_t fields[2];
        fields[0].f0 = (pre_triage_string_t){(uint8_t *)"namespace", 9};
        fields[0].f1 = namespace_->val;
        fields[1].f0 = (pre_triage_string_t){(uint8_t *)"utc_hour", 8};
        fields[1].f1 = (pre_triage_string_t){(uint8_t *)hour_text, strlen(hour_text)};
        log_line(NIGHTCRIER_PLUGIN_HOST_LEVEL_INFO, "skipped in a maintenance window", fields, 2);
        ret->tag = EXPORTS_NIGHTCRIER_PLUGIN_PRE_TRIAGE_PROCESSOR_DECISION_SKIP;
        pre_triage_string_dup(&ret->val.skip, reason);
    } else {
        /* an empty patch changes nothing */
        ret->tag = EXPORTS_NIGHTCRIER_PLUGIN_PRE_TRIAGE_PROCESSOR_DECISION_PROCEED;
    }
    exports_nightcrier_plugin_pre_triage_processor_incident_free(incident);
    return true;
}
