//! The session's half of certificate renewal ([`crate::renew`]): each
//! connection reads the certificate and key from their files, so a
//! renewed pair is used from the next connection on; a request goes out
//! when one is due, and the server's answer is installed or logged.

use rollcall_proto::timestamp::Timestamp;
use rollcall_proto::v1::{self, agent_message};
use tokio::sync::mpsc;
use tonic::transport::Endpoint;

use super::{Session, SessionError};
use crate::renew::CertFiles;

impl Session {
    /// The endpoint of the next connection, to the current target: with
    /// the certificate and key files as they are now when the agent
    /// renews, else with the PEM it was given. Every server, listed or
    /// named by a follower, gets the same CA and the same certificate.
    pub(super) fn connector(&mut self) -> Result<Endpoint, SessionError> {
        let Some(renewal) = &mut self.renewal else {
            return rollcall_proto::connect::endpoint(
                &self.target.url,
                &self.settings.ca_pem,
                &self.settings.cert_pem,
                &self.settings.key_pem,
            )
            .map_err(SessionError::Connect);
        };
        let files = renewal.files().clone();
        let (cert_pem, key_pem) = files
            .read()
            .map_err(|e| SessionError::Connect(e.to_string()))?;
        let info = CertFiles::info(&cert_pem, &files.cert)
            .map_err(|e| SessionError::Connect(e.to_string()))?;
        if info.identity.name != self.settings.node {
            // The name is the node's for the life of the process: a
            // certificate for another node needs a restart, not a silent switch.
            return Err(SessionError::Connect(format!(
                "{} now names {}, but this agent started as {}; restart the agent",
                files.cert.display(),
                info.identity,
                self.settings.node
            )));
        }
        renewal.connected_with(info);
        rollcall_proto::connect::endpoint(
            &self.target.url,
            &self.settings.ca_pem,
            &cert_pem,
            &key_pem,
        )
        .map_err(SessionError::Connect)
    }

    /// When the next renewal step is due, if this agent renews.
    pub(super) fn renewal_due(&self) -> Option<Timestamp> {
        self.renewal.as_ref().and_then(|r| r.due())
    }

    /// Sends a certificate request, or notes why there is none this time.
    pub(super) fn renew_now(&mut self, tx: &mpsc::Sender<v1::AgentMessage>) {
        let Some(renewal) = &mut self.renewal else {
            return;
        };
        match renewal.start(Timestamp::now()) {
            Ok(csr_pem) => {
                tracing::info!(node = %self.settings.node, "Asking the server to renew this agent's certificate.");
                let msg = v1::AgentMessage {
                    msg: Some(agent_message::Msg::CertificateRequest(
                        v1::CertificateRequest { csr_pem },
                    )),
                };
                // A full queue loses the request; its deadline retries it.
                let _ = tx.try_send(msg);
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_at = %retry(renewal.retry_at()), "Certificate renewal failed; will try again.");
            }
        }
    }

    pub(super) fn certificate_issued(&mut self, answer: v1::CertificateIssued) {
        let Some(renewal) = &mut self.renewal else {
            return;
        };
        match renewal.answer(&answer.certificate_pem, &answer.refused, Timestamp::now()) {
            Ok(info) => {
                tracing::info!(not_after = %info.not_after, renew_at = %retry(renewal.due()), "Renewed this agent's certificate; the next connection uses it.");
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_at = %retry(renewal.retry_at()), "Certificate renewal failed; will try again.");
            }
        }
    }

    /// A session that ended with a request unanswered counts it as failed.
    pub(super) fn renewal_session_ended(&mut self) {
        if let Some(renewal) = &mut self.renewal {
            renewal.session_ended(Timestamp::now());
        }
    }
}

fn retry(at: Option<Timestamp>) -> String {
    at.map_or_else(|| "-".to_owned(), |t| t.to_string())
}
