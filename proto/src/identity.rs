//! How a certificate says who holds it.
//!
//! The CA signs one URI subject alternative name into every client
//! certificate it issues: `urn:rollcall:agent:NODE` for a node's agent;
//! `urn:rollcall:viewer:NAME`, `urn:rollcall:operator:NAME` or
//! `urn:rollcall:admin:NAME` for a person, whose [`Role`] is the URI's
//! kind (certificates from before roles carry `operator`, and keep it).
//! The subject common name repeats the name for people reading the
//! certificate, but only the signed URI decides what the holder may do. What a client says about itself (a
//! node name in Hello, say) is checked against this, never trusted instead.
//!
//! A client certificate carries exactly that one URI: any other URI beside
//! it (a second rollcall identity, an unknown `urn:rollcall:` kind, an
//! `https://` name) makes the certificate unusable, so that what a
//! certificate means never depends on which of its URIs a reader looks at.

use std::fmt;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The URI prefix of an agent identity.
pub const AGENT_URI_PREFIX: &str = "urn:rollcall:agent:";
/// What every rollcall identity URI starts with; the kind or role follows.
const URI_PREFIX: &str = "urn:rollcall:";

/// A certificate for a machine (an agent) or for a person (an operator of
/// any [`Role`]): code that asks "is this a person?" looks at the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Agent,
    Operator,
}

/// What a person's certificate allows, in increasing order: a viewer
/// reads and watches everything; an operator also plans, starts and steers
/// campaigns; an admin also manages certificates and nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

crate::names!(Role, "operator role" {
    Viewer => "viewer", Operator => "operator", Admin => "admin",
});

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Agent => "agent",
            Kind::Operator => "operator",
        })
    }
}

/// Who a verified client certificate names. `role` is `Some` exactly for
/// [`Kind::Operator`] (the constructors keep it so).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub kind: Kind,
    pub name: String,
    pub role: Option<Role>,
}

impl Identity {
    pub fn agent(name: impl Into<String>) -> Self {
        Identity {
            kind: Kind::Agent,
            name: name.into(),
            role: None,
        }
    }

    pub fn operator(name: impl Into<String>, role: Role) -> Self {
        Identity {
            kind: Kind::Operator,
            name: name.into(),
            role: Some(role),
        }
    }

    /// `agent`, or the operator's role: the word between `urn:rollcall:`
    /// and the name.
    pub fn role_name(&self) -> &'static str {
        match (self.kind, self.role) {
            (Kind::Agent, _) => "agent",
            // An operator without a role is what certificates said before
            // roles: `operator`.
            (Kind::Operator, role) => role.unwrap_or(Role::Operator).as_str(),
        }
    }

    pub fn uri(&self) -> String {
        format!("{URI_PREFIX}{}:{}", self.role_name(), self.name)
    }
}

/// `agent cmp1`, `viewer alice`, `admin bob`: what refusals and logs say.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role_name(), self.name)
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("certificate cannot be parsed: {0}")]
    Malformed(String),
    #[error(
        "certificate carries no rollcall identity (no urn:rollcall:agent:, viewer:, operator: or admin: URI)"
    )]
    Missing,
    /// A URI subject alternative name besides the one rollcall identity.
    /// The URI is escaped and shortened: it is the certificate holder's text.
    #[error(
        "certificate carries the URI {0} besides its rollcall identity; a client certificate must carry exactly one URI (urn:rollcall:agent:NODE, or urn:rollcall:ROLE:NAME with ROLE viewer, operator or admin)"
    )]
    ExtraUri(String),
    #[error("certificate names an invalid node or operator name {0}")]
    InvalidName(String),
    /// The server revoked this certificate (the text says which, when, by
    /// whom and why; the server writes it).
    #[error("certificate revoked: {0}")]
    Revoked(String),
}

/// Reads the rollcall identity out of a DER certificate. The caller must have
/// verified the certificate's chain already (rustls does, during the
/// handshake).
pub fn from_der(der: &[u8]) -> Result<Identity, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Malformed(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Malformed(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let Some((at, (role, name))) = uris
        .iter()
        .enumerate()
        .find_map(|(i, uri)| parse_uri(uri).map(|p| (i, p)))
    else {
        return Err(IdentityError::Missing);
    };
    if let Some(extra) = uris
        .iter()
        .enumerate()
        .find_map(|(i, uri)| (i != at).then_some(uri))
    {
        return Err(IdentityError::ExtraUri(escape_uri(extra)));
    }
    validate_name(name).map_err(|_| IdentityError::InvalidName(escape_uri(name)))?;
    Ok(match role {
        None => Identity::agent(name),
        Some(role) => Identity::operator(name, role),
    })
}

/// A rollcall identity URI's role (`None`: an agent) and name; `None` for
/// any other URI.
fn parse_uri(uri: &str) -> Option<(Option<Role>, &str)> {
    let (kind, name) = uri.strip_prefix(URI_PREFIX)?.split_once(':')?;
    match kind {
        "agent" => Some((None, name)),
        role => role.parse().ok().map(|r| (Some(r), name)),
    }
}

/// At most this many characters of a foreign URI are quoted in an error.
const QUOTED_URI_MAX: usize = 120;

/// A certificate's URI as it may appear in an error and a log line: printable
/// ASCII as is, everything else (control characters, escapes, bidi
/// overrides) as `\u{..}`, quotes and backslashes escaped, cut after
/// [`QUOTED_URI_MAX`] characters, in double quotes.
fn escape_uri(uri: &str) -> String {
    let mut out = String::from("\"");
    for (i, c) in uri.chars().enumerate() {
        if i == QUOTED_URI_MAX {
            out.push_str("...");
            break;
        }
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// Reads the identity from the first certificate of a PEM file's text.
pub fn from_pem(pem: &str) -> Result<Identity, IdentityError> {
    let der =
        pem_to_der(pem).ok_or_else(|| IdentityError::Malformed("no CERTIFICATE block".into()))?;
    from_der(&der)
}

pub(crate) fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let (_, rest) = pem.split_once("-----BEGIN CERTIFICATE-----")?;
    let (body, _) = rest.split_once("-----END CERTIFICATE-----")?;
    let text: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64_decode(&text)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().take_while(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// A node or operator name: 1..=253 characters of `A-Z a-z 0-9 . _ -`,
/// starting with a letter or digit (what a hostname or an inventory name
/// holds, and safe in a URI, a file name and a log line).
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: use 1 to 253 letters, digits, '.', '_' or '-', starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["compute-01", "ctl1.example.org", "a", "node_7"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "ä", &"x".repeat(254)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_round_trip_of_known_text() {
        assert_eq!(
            base64_decode("aGVsbG8gd29ybGQ=").as_deref(),
            Some(&b"hello world"[..])
        );
        assert_eq!(base64_decode("a$b"), None);
    }

    #[test]
    fn foreign_uris_are_quoted_escaped_and_cut() {
        assert_eq!(escape_uri("https://example"), "\"https://example\"");
        assert_eq!(
            escape_uri("urn:x\u{1b}]52;c;\u{202e}\"\\"),
            "\"urn:x\\u{1b}]52;c;\\u{202e}\\\"\\\\\""
        );
        let long = escape_uri(&"a".repeat(10_000));
        assert_eq!(long.len(), QUOTED_URI_MAX + 5, "{long}");
        assert!(long.ends_with("...\""));
    }

    #[test]
    fn uris_name_the_kind_or_the_role_and_read_back() {
        let cases = [
            (
                Identity::agent("cmp1"),
                "urn:rollcall:agent:cmp1",
                "agent cmp1",
            ),
            (
                Identity::operator("alice", Role::Viewer),
                "urn:rollcall:viewer:alice",
                "viewer alice",
            ),
            (
                Identity::operator("bob", Role::Operator),
                "urn:rollcall:operator:bob",
                "operator bob",
            ),
            (
                Identity::operator("carol", Role::Admin),
                "urn:rollcall:admin:carol",
                "admin carol",
            ),
        ];
        for (who, uri, shown) in cases {
            assert_eq!(who.uri(), uri);
            assert_eq!(who.to_string(), shown);
            assert_eq!(parse_uri(uri), Some((who.role, who.name.as_str())));
        }
        for foreign in [
            "urn:rollcall:root:x",
            "urn:rollcall:agent",
            "https://example",
            "urn:rollcall:Admin:x",
        ] {
            assert_eq!(parse_uri(foreign), None, "{foreign}");
        }
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            from_der(b"not a cert"),
            Err(IdentityError::Malformed(_))
        ));
        assert!(matches!(
            from_pem("nothing"),
            Err(IdentityError::Malformed(_))
        ));
    }
}
