//! `redact-secrets`: masks tokens, keys, passwords and kubeconfig credentials in the triage report.

use nightcrier_plugin_sdk::{
    AgentResult, Incident, Outcome, PluginError, PluginInfo, PostTriage, export_post_triage,
};
use regex_lite::Regex;

/// The replacement text.
pub const MASK: &str = "[REDACTED]";

struct Rule {
    pattern: &'static str,
    /// Replacement; `$1` keeps the key part of `key: value` matches.
    replacement: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        pattern: r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        replacement: "[REDACTED PRIVATE KEY]",
    },
    Rule {
        pattern: r"(?i)((?:client-certificate-data|client-key-data|certificate-authority-data|id-token|refresh-token|access-token)\s*:\s*)\S+",
        replacement: "${1}[REDACTED]",
    },
    Rule {
        pattern: r"(?i)(authorization\s*:\s*(?:bearer|basic)\s+)\S+",
        replacement: "${1}[REDACTED]",
    },
    Rule {
        pattern: r"(?i)(bearer\s+)[a-z0-9\-._~+/]{8,}=*",
        replacement: "${1}[REDACTED]",
    },
    Rule {
        pattern: r#"(?i)((?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key(?:[_-]?id)?|secret[_-]?access[_-]?key|client[_-]?secret|private[_-]?key)["']?\s*[:=]\s*["']?)[^\s"',}]+"#,
        replacement: "${1}[REDACTED]",
    },
    Rule {
        pattern: r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+",
        replacement: "[REDACTED]",
    },
    Rule {
        pattern: r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        replacement: "[REDACTED]",
    },
    // LLM providers' API keys, by their documented prefixes: Anthropic (`sk-ant-api03-…`,
    // `sk-ant-admin01-…`), OpenAI (`sk-proj-…`, `sk-svcacct-…`, `sk-admin-…`, legacy `sk-…`),
    // OpenRouter (`sk-or-v1-…`) and DeepSeek (`sk-…`) share the `sk-` form.
    Rule {
        pattern: r"\bsk-[A-Za-z0-9_-]{20,}",
        replacement: "[REDACTED]",
    },
    // Google (Gemini, Vertex, Maps) API keys, OAuth client secrets and access tokens.
    Rule {
        pattern: r"\bAIza[0-9A-Za-z_-]{35}",
        replacement: "[REDACTED]",
    },
    Rule {
        pattern: r"\bGOCSPX-[A-Za-z0-9_-]{20,}",
        replacement: "[REDACTED]",
    },
    Rule {
        pattern: r"\bya29\.[0-9A-Za-z_-]{20,}",
        replacement: "[REDACTED]",
    },
    // Hugging Face, Groq, xAI, Replicate, Perplexity.
    Rule {
        pattern: r"\b(?:hf_[A-Za-z0-9]{30,}|gsk_[A-Za-z0-9]{40,}|xai-[A-Za-z0-9]{40,}|r8_[A-Za-z0-9]{30,}|pplx-[A-Za-z0-9]{40,})",
        replacement: "[REDACTED]",
    },
    // Stripe secret and restricted keys.
    Rule {
        pattern: r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{20,}",
        replacement: "[REDACTED]",
    },
    Rule {
        pattern: r"\bgh[pousr]_[A-Za-z0-9]{20,}\b",
        replacement: "[REDACTED]",
    },
    Rule {
        pattern: r"\bgithub_pat_[A-Za-z0-9_]{40,}",
        replacement: "[REDACTED]",
    },
    Rule {
        pattern: r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b",
        replacement: "[REDACTED]",
    },
    Rule {
        pattern: r"\bglpat-[A-Za-z0-9_-]{20,}\b",
        replacement: "[REDACTED]",
    },
    Rule {
        pattern: r"(?i)(://[^\s:/@]+:)[^\s@/]+@",
        replacement: "${1}[REDACTED]@",
    },
];

/// Redact `text`, returning the new text and the number of replacements.
pub fn redact(text: &str) -> (String, usize) {
    let mut current = text.to_owned();
    let mut count = 0;
    for rule in RULES {
        // The patterns are constants; a bad one is a bug caught by the unit tests.
        let Ok(regex) = Regex::new(rule.pattern) else {
            continue;
        };
        let found = regex.find_iter(&current).count();
        if found > 0 {
            count += found;
            current = regex.replace_all(&current, rule.replacement).into_owned();
        }
    }
    (current, count)
}

struct RedactSecrets;

impl PostTriage for RedactSecrets {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "redact-secrets",
            env!("CARGO_PKG_VERSION"),
            "Masks credentials in the triage report",
        )
    }

    fn post_triage(_incident: Incident, agent_result: AgentResult) -> Result<Outcome, PluginError> {
        let (report, count) = redact(&agent_result.report_markdown);
        Ok(Outcome {
            report_markdown: if count > 0 { Some(report) } else { None },
            fields: vec![("redactions".to_owned(), count.to_string())],
        })
    }
}

export_post_triage!(RedactSecrets);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_compiles() {
        for rule in RULES {
            assert!(Regex::new(rule.pattern).is_ok(), "{}", rule.pattern);
        }
    }

    #[test]
    fn masks_common_credentials() {
        let report = "password: hunter2\nAuthorization: Bearer abcdefghijklmnop\nclient-key-data: LS0tLS1CRUdJTg==\nkey AKIAIOSFODNN7EXAMPLE\nurl postgres://app:s3cret@db:5432/x\nplain text stays";
        let (redacted, count) = redact(report);
        assert!(!redacted.contains("hunter2"), "{redacted}");
        assert!(!redacted.contains("abcdefghijklmnop"), "{redacted}");
        assert!(!redacted.contains("LS0tLS1CRUdJTg=="), "{redacted}");
        assert!(!redacted.contains("AKIAIOSFODNN7EXAMPLE"), "{redacted}");
        assert!(!redacted.contains("s3cret"), "{redacted}");
        assert!(redacted.contains("plain text stays"));
        assert!(count >= 5);
    }

    #[test]
    fn masks_llm_provider_and_other_well_known_keys() {
        let keys = [
            "sk-ant-api03-Zx9_Qw8-Er7Ty6Ui5Op4As3Df2Gh1Jk0LzXcVbNmQwErTyUiOpAs-AbCdEfGhAA",
            "sk-ant-admin01-Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LzXcVbNm",
            "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-AbCdEf",
            "sk-svcacct-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            "sk-AbCdEfGhIjKlMnOpQrStT3BlbkFJAbCdEfGhIjKlMnOpQrSt",
            "sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
            "GOCSPX-AbCdEfGhIjKlMnOpQrStUvWxYz01",
            "ya29.a0AfH6SMBxAbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
            "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567",
            "gsk_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKl",
            "xai-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOp",
            "r8_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789a",
            "pplx-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGh",
            "sk_live_AbCdEfGhIjKlMnOpQrStUvWx",
            "github_pat_11ABCDEFG0AbCdEfGhIjKl_MnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQr",
            "ASIAIOSFODNN7EXAMPLE",
        ];
        for key in keys {
            let report = format!("the agent ran `env` and saw {key} in the output\n");
            let (redacted, count) = redact(&report);
            assert!(!redacted.contains(key), "{key}: {redacted}");
            assert!(count >= 1, "{key}");
            assert!(
                redacted.contains("the agent ran `env` and saw"),
                "{redacted}"
            );
        }
        // Words that merely look alike stay.
        let plain = "disk-usage-is-high-on-the-node, sk-learn, the task-runner-2 pod, AIza";
        assert_eq!(redact(plain), (plain.to_owned(), 0));
    }
}
