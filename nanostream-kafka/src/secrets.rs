//! Keeping secrets out of `Debug` output.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::config::ClientConfig;

/// Whether a librdkafka setting holds a secret: passwords, client secrets,
/// tokens, private keys (inline PEM) and SASL/OAuth configuration strings.
pub(crate) fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key.contains("token")
        || key.ends_with(".key.pem")
        || key.ends_with("key.pem")
        || key == "ssl_key"
        || key.starts_with("sasl.oauthbearer.config")
        || key == "sasl.jaas.config"
}

/// A client configuration as `Debug` shows it: every setting, with the
/// values of secrets replaced.
pub(crate) struct Redacted<'a>(pub(crate) &'a ClientConfig);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: BTreeMap<&str, &str> = self
            .0
            .config_map()
            .into_iter()
            .map(|(key, value)| (key, if is_secret(key) { "[redacted]" } else { value }))
            .collect();
        f.debug_map().entries(shown).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_keeps_every_setting_but_no_secret() {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", "broker:9093")
            .set("sasl.username", "alice")
            .set("sasl.password", "hunter2-sasl")
            .set("ssl.key.password", "hunter2-key")
            .set("ssl.key.pem", "-----BEGIN PRIVATE KEY-----hunter2-pem")
            .set("sasl.oauthbearer.client.secret", "hunter2-oauth")
            .set("sasl.oauthbearer.config", "principal=x secret=hunter2-conf");
        let shown = format!("{:?}", Redacted(&config));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("broker:9093") && shown.contains("alice") && shown.contains("[redacted]"), "{shown}");
    }

    #[test]
    fn the_builders_debug_output_has_no_secret() {
        let source = crate::KafkaSource::builder("broker:9093", "group")
            .topic("orders")
            .set("sasl.password", "hunter2-source")
            .set("ssl.key.pem", "hunter2-pem");
        let sink = crate::KafkaSink::builder("broker:9093").set("sasl.password", "hunter2-sink");
        for shown in [format!("{source:?}"), format!("{sink:?}"), format!("{source:#?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("broker:9093"), "{shown}");
        }
    }
}
