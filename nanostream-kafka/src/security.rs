//! Encrypted and authenticated connections: TLS and SASL settings, and what
//! a client does when the brokers refuse them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nanostream::Context;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::error::Error;

/// How a client encrypts its connections to the brokers and logs in: TLS
/// (with a CA to trust and, for mutual TLS, a client certificate) and SASL
/// (`PLAIN` or `SCRAM-SHA-256/512`). Give the same value to the source,
/// the sink and the dead-letter sink with their `security` methods
/// ([`KafkaSourceBuilder::security`](crate::KafkaSourceBuilder::security),
/// [`KafkaSinkBuilder::security`](crate::KafkaSinkBuilder::security)).
///
/// It sets librdkafka's `security.protocol`, `ssl.*` and `sasl.*`
/// properties; anything it does not cover (OAUTHBEARER, Kerberos with the
/// `gssapi` feature, a CRL, ...) can be set on the builders with `set`.
/// Its `Debug` output never shows a password.
///
/// A TLS handshake the brokers' certificate fails (an untrusted CA, a
/// host name it is not valid for), a client certificate the brokers reject,
/// or a failed SASL login fails the source or sink at once with
/// [`Error::Security`] naming the problem, instead of retrying forever:
/// trying again cannot fix settings (Kafka's Java clients do the same).
///
/// # Examples
///
/// TLS with the cluster's CA, and a SCRAM login:
///
/// ```no_run
/// use nanostream_kafka::{Json, KafkaSink, KafkaSource, Scram, Security};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let password = std::env::var("KAFKA_PASSWORD")?;
/// let security = Security::tls("/etc/kafka/ca.pem").sasl_scram(Scram::Sha512, "orders-app", password);
/// let source = KafkaSource::builder("broker-1:9093", "orders-app")
///     .security(&security)
///     .topic("orders")
///     .build::<serde_json::Value, _>(Json)?;
/// let sink = KafkaSink::builder("broker-1:9093").security(&security).default_topic("totals").build::<serde_json::Value, _>(Json)?;
/// # Ok(()) }
/// ```
///
/// Mutual TLS, with a private key encrypted by a password:
///
/// ```
/// use nanostream_kafka::Security;
///
/// let security = Security::tls("ca.pem").client_certificate("client.pem", "client.key").key_password("from a vault");
/// assert!(!format!("{security:?}").contains("from a vault"));
/// ```
#[derive(Clone, Default)]
pub struct Security {
    tls: Option<Tls>,
    sasl: Option<Sasl>,
}

#[derive(Clone, Debug)]
struct Tls {
    /// `None`: the system's trusted roots.
    ca: Option<PathBuf>,
    client: Option<(PathBuf, PathBuf)>,
    key_password: Option<String>,
}

#[derive(Clone)]
struct Sasl {
    mechanism: &'static str,
    username: String,
    password: String,
}

/// A SCRAM mechanism, for [`Security::sasl_scram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scram {
    /// `SCRAM-SHA-256`.
    Sha256,
    /// `SCRAM-SHA-512`.
    Sha512,
}

impl Security {
    /// No encryption and no login (librdkafka's default, `plaintext`): add
    /// a login with [`sasl_plain`](Self::sasl_plain) or
    /// [`sasl_scram`](Self::sasl_scram) for `sasl_plaintext`.
    pub fn plaintext() -> Self {
        Self::default()
    }

    /// TLS, trusting the brokers' certificates if the CA certificates in
    /// `ca_file` (PEM) signed them; the brokers' host names are checked
    /// against their certificates.
    pub fn tls(ca_file: impl AsRef<Path>) -> Self {
        Self { tls: Some(Tls { ca: Some(ca_file.as_ref().to_owned()), client: None, key_password: None }), sasl: None }
    }

    /// TLS, trusting the certificate authorities the system trusts (for
    /// clusters whose certificates a public CA signed).
    pub fn tls_with_system_roots() -> Self {
        Self { tls: Some(Tls { ca: None, client: None, key_password: None }), sasl: None }
    }

    /// Mutual TLS: the client shows the certificate in `cert_file` (PEM),
    /// whose private key is in `key_file` (PEM; see
    /// [`key_password`](Self::key_password) if it is encrypted). Turns TLS
    /// on, with the system's roots, if it was not.
    pub fn client_certificate(mut self, cert_file: impl AsRef<Path>, key_file: impl AsRef<Path>) -> Self {
        self.tls_mut().client = Some((cert_file.as_ref().to_owned(), key_file.as_ref().to_owned()));
        self
    }

    /// The password of the client's encrypted private key.
    pub fn key_password(mut self, password: impl Into<String>) -> Self {
        self.tls_mut().key_password = Some(password.into());
        self
    }

    /// Logs in with SASL `PLAIN`. Without TLS the password crosses the
    /// network in the clear: combine it with [`tls`](Self::tls).
    pub fn sasl_plain(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.sasl = Some(Sasl { mechanism: "PLAIN", username: username.into(), password: password.into() });
        self
    }

    /// Logs in with SASL `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub fn sasl_scram(mut self, mechanism: Scram, username: impl Into<String>, password: impl Into<String>) -> Self {
        let mechanism = match mechanism {
            Scram::Sha256 => "SCRAM-SHA-256",
            Scram::Sha512 => "SCRAM-SHA-512",
        };
        self.sasl = Some(Sasl { mechanism, username: username.into(), password: password.into() });
        self
    }

    fn tls_mut(&mut self) -> &mut Tls {
        self.tls.get_or_insert(Tls { ca: None, client: None, key_password: None })
    }

    /// librdkafka's `security.protocol` for these settings.
    fn protocol(&self) -> &'static str {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }

    /// Writes these settings into a client's configuration.
    pub(crate) fn apply(&self, config: &mut ClientConfig) {
        config.set("security.protocol", self.protocol());
        if let Some(tls) = &self.tls {
            match &tls.ca {
                Some(ca) => config.set("ssl.ca.location", ca.display().to_string()),
                None => config.set("ssl.ca.location", "probe"),
            };
            if let Some((cert, key)) = &tls.client {
                config.set("ssl.certificate.location", cert.display().to_string());
                config.set("ssl.key.location", key.display().to_string());
            }
            if let Some(password) = &tls.key_password {
                config.set("ssl.key.password", password);
            }
        }
        if let Some(sasl) = &self.sasl {
            config.set("sasl.mechanisms", sasl.mechanism);
            config.set("sasl.username", &sasl.username);
            config.set("sasl.password", &sasl.password);
        }
    }
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Security");
        s.field("protocol", &self.protocol());
        if let Some(tls) = &self.tls {
            s.field("ca", &tls.ca).field("client_certificate", &tls.client);
            if tls.key_password.is_some() {
                s.field("key_password", &"[redacted]");
            }
        }
        if let Some(sasl) = &self.sasl {
            s.field("sasl_mechanism", &sasl.mechanism)
                .field("sasl_username", &sasl.username)
                .field("sasl_password", &"[redacted]");
        }
        s.finish()
    }
}

/// What a client has heard about its connections: the first refusal at the
/// security checks (fatal), and its latest error (for the start-up error).
#[derive(Debug, Default)]
pub(crate) struct Connection {
    /// The first refusal, and where one that comes while the pipeline runs
    /// goes: under one lock, so that a refusal heard while the pipeline is
    /// being set up is never missed by both sides.
    state: Mutex<Refusal>,
    latest: Mutex<Option<String>>,
    /// The client connects with TLS.
    tls: bool,
}

#[derive(Debug, Default)]
struct Refusal {
    reason: Option<String>,
    ctx: Option<Context>,
}

impl Connection {
    pub(crate) fn new(config: &ClientConfig) -> Self {
        let protocol = config.get("security.protocol").unwrap_or("plaintext").to_ascii_lowercase();
        Self { tls: protocol.contains("ssl"), ..Self::default() }
    }

    /// The client's error callback (served only while the client is
    /// polled).
    pub(crate) fn client_error(&self, error: &KafkaError, reason: &str) {
        let code = match error {
            KafkaError::Global(code) => Some(*code),
            other => other.rdkafka_error_code(),
        };
        self.heard(reason, refused(code, reason));
    }

    /// The client's log callback, called on librdkafka's threads whether
    /// or not anyone polls: a connection's failure is logged (facility
    /// `FAIL`) with the text its error has.
    pub(crate) fn client_log(&self, facility: &str, message: &str) {
        if facility == "FAIL" {
            self.heard(message, refused(None, message));
        }
    }

    /// A refusal at the security checks fails the pipeline (once it runs)
    /// or the start-up.
    fn heard(&self, reason: &str, refusal: bool) {
        let reason = reason.strip_prefix("[thrd:").and_then(|r| r.split_once("]: ")).map_or(reason, |(_, r)| r);
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
        if !refusal {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.reason.is_some() {
            return;
        }
        tracing::error!("the brokers refused the connection at its security checks; not retrying: {reason}");
        state.reason = Some(reason.to_owned());
        if let Some(ctx) = &state.ctx {
            ctx.fail(Error::Security { reason: reason.to_owned() });
        }
    }

    /// The pipeline runs: a refusal fails it at once (one heard before
    /// now is returned by [`check`](Self::check)).
    pub(crate) fn set_context(&self, ctx: &Context) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).ctx = Some(ctx.clone());
    }

    /// [`Error::Security`] once the brokers refused the connection.
    pub(crate) fn check(&self) -> Result<(), Error> {
        match &self.state.lock().unwrap_or_else(PoisonError::into_inner).reason {
            Some(reason) => Err(Error::Security { reason: reason.clone() }),
            None => Ok(()),
        }
    }

    /// What the start-up error says about why no broker answered.
    pub(crate) fn why_unreachable(&self) -> Option<String> {
        let latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match latest {
            // A plaintext client whose connections to a TLS listener are
            // closed during its first request: librdkafka logs no failure
            // for it, and reports only that every broker is down.
            None if !self.tls => Some(
                "the connections were closed without an answer: if the brokers expect TLS, connect with \
                 Security::tls"
                    .to_owned(),
            ),
            Some(latest) if !self.tls && latest.contains("brokers are down") => Some(format!(
                "{latest}; the connections were closed without an answer: if the brokers expect TLS, connect \
                 with Security::tls"
            )),
            latest => latest,
        }
    }
}

/// Whether a client error is the brokers (or the client itself) refusing
/// the connection at its security checks, which retrying cannot fix: a
/// failed TLS handshake or certificate check, a TLS alert from the peer
/// (a client certificate missing or rejected), a failed SASL login.
///
/// Told by the error code when there is one, else by librdkafka's text for
/// these failures (log lines carry no code). A failure the network may
/// have caused is never one, whatever its code: librdkafka reports a
/// handshake cut short by a disconnect or a timeout with the same codes
/// (a broker restarting, a load balancer resetting connections), and
/// retries it.
fn refused(code: Option<RDKafkaErrorCode>, reason: &str) -> bool {
    const NETWORK: [&str; 7] = [
        "Disconnected",
        "disconnected",
        "transport error",
        "Timed out",
        "timed out",
        "Connection reset",
        "Connection refused",
    ];
    if NETWORK.iter().any(|text| reason.contains(text)) {
        return false;
    }
    match code {
        Some(RDKafkaErrorCode::SSL | RDKafkaErrorCode::Authentication) => true,
        _ => {
            reason.contains("SSL handshake failed")
                || reason.contains("Failed to verify broker certificate")
                || reason.contains("Broker did not provide a certificate")
                // The peer ended the handshake with an alert (TLS 1.3
                // sends a rejected client certificate's alert after it).
                || (reason.contains("SSL routines") && reason.contains("alert"))
                || (reason.contains("SASL") && (reason.contains("failed") || reason.contains("error")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_librdkafka_properties() {
        let mut config = ClientConfig::new();
        Security::tls("ca.pem")
            .client_certificate("client.pem", "client.key")
            .key_password("kp")
            .sasl_scram(Scram::Sha256, "alice", "pw")
            .apply(&mut config);
        let get = |key| config.get(key).unwrap_or_default().to_owned();
        assert_eq!(get("security.protocol"), "sasl_ssl");
        assert_eq!(get("ssl.ca.location"), "ca.pem");
        assert_eq!(get("ssl.certificate.location"), "client.pem");
        assert_eq!(get("ssl.key.location"), "client.key");
        assert_eq!(get("ssl.key.password"), "kp");
        assert_eq!(get("sasl.mechanisms"), "SCRAM-SHA-256");
        assert_eq!((get("sasl.username"), get("sasl.password")), ("alice".into(), "pw".into()));

        let mut config = ClientConfig::new();
        Security::plaintext().sasl_plain("bob", "pw").apply(&mut config);
        assert_eq!(config.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(config.get("sasl.mechanisms"), Some("PLAIN"));
        assert_eq!(config.get("ssl.ca.location"), None);

        let mut config = ClientConfig::new();
        Security::tls_with_system_roots().apply(&mut config);
        assert_eq!(config.get("security.protocol"), Some("ssl"));
        assert_eq!(config.get("ssl.ca.location"), Some("probe"));
    }

    #[test]
    fn debug_output_has_no_password() {
        let security = Security::tls("ca.pem").key_password("hunter2-key").sasl_plain("alice", "hunter2-sasl");
        let shown = format!("{security:?} {security:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("alice") && shown.contains("sasl_ssl") && shown.contains("ca.pem"), "{shown}");
    }

    #[test]
    fn only_security_refusals_are_fatal() {
        assert!(refused(Some(RDKafkaErrorCode::SSL), "anything"));
        assert!(refused(Some(RDKafkaErrorCode::Authentication), "anything"));
        // librdkafka's texts, as its log lines (no code) carry them.
        for refusal in [
            "ssl://127.0.0.1:1/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify \
             failed: broker certificate could not be verified (after 2ms in state SSL_HANDSHAKE)",
            "ssl://127.0.0.1:1/bootstrap: Receive failed: error:0A00045C:SSL routines::tlsv13 alert certificate \
             required: SSL alert number 116 (after 0ms in state APIVERSION_QUERY)",
            "sasl_ssl://127.0.0.1:1/bootstrap: SASL SCRAM-SHA-512 mechanism handshake failed: Broker: Unsupported \
             SASL mechanism (after 0ms in state AUTH_HANDSHAKE)",
        ] {
            assert!(refused(None, refusal), "{refusal}");
            assert!(refused(Some(RDKafkaErrorCode::BrokerTransportFailure), refusal), "{refusal}");
        }
        for transient in [
            "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused (after 0ms in state CONNECT)",
            "127.0.0.1:9/bootstrap: Disconnected (after 12ms in state UP)",
            "1/1 brokers are down",
        ] {
            assert!(!refused(None, transient), "{transient}");
            assert!(!refused(Some(RDKafkaErrorCode::AllBrokersDown), transient), "{transient}");
        }
        // What a broker restarting or a connection reset looks like during
        // a handshake: librdkafka's texts, which come with SSL and
        // authentication codes.
        for transient in [
            "ssl://b:9093/1: SSL handshake failed: Disconnected: connection reset by peer: connecting to a PLAINTEXT \
             broker listener? (after 3ms in state SSL_HANDSHAKE)",
            "ssl://b:9093/1: SSL handshake failed: SSL transport error: Connection timed out (after 30000ms in state \
             SSL_HANDSHAKE)",
            "sasl_ssl://b:9093/1: SASL authentication error: SaslAuthenticateRequest failed: Local: Timed out",
            "sasl_ssl://b:9093/1: SASL SCRAM-SHA-512 mechanism handshake failed: Local: Timed out",
        ] {
            assert!(!refused(None, transient), "{transient}");
            assert!(!refused(Some(RDKafkaErrorCode::SSL), transient), "{transient}");
            assert!(!refused(Some(RDKafkaErrorCode::Authentication), transient), "{transient}");
        }
    }
}
