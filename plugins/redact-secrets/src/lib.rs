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
        pattern: r"\bAKIA[0-9A-Z]{16}\b",
        replacement: "[REDACTED]",
    },
    Rule {
        pattern: r"\bgh[pousr]_[A-Za-z0-9]{20,}\b",
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
}
