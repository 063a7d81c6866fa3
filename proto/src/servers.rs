//! Where clients find rollcall-server when it runs as several replicas:
//! the list of URLs an agent or an operator gives, each checked and written
//! one way, and the leader a follower names when it refuses a call.
//!
//! A follower answers every rollcall.v1 call with UNAVAILABLE and the
//! leader's URL in the [`LEADER_METADATA`] metadata; while no replica leads
//! it answers UNAVAILABLE without it. Clients go to the named leader, or on
//! to the next URL of their list.

/// The metadata key (header or trailer) in which a follower names the leader.
pub const LEADER_METADATA: &str = "rollcall-leader";

/// At most this many URLs in a list: a handful of replicas, with room to
/// spare, and a bound on how long one pass over the list takes.
pub const MAX_SERVERS: usize = 16;

/// Longer URLs are refused, a leader hint among them.
const MAX_URL_BYTES: usize = 256;

/// One server URL, checked and written as `https://host:port` (host in
/// lower case), so that two spellings of one server compare equal. A URL
/// without a scheme (`host:port`) is taken as https, as it always was;
/// any other scheme, a path, a query or user info is refused. The error
/// names the URL and says what to write instead.
pub fn normalize(url: &str) -> Result<String, String> {
    let url = url.trim();
    if url.is_empty() {
        return Err("a server URL is empty: give https://HOST:PORT".into());
    }
    let shown = crate::text::for_terminal(url);
    if url.len() > MAX_URL_BYTES {
        return Err(format!(
            "server URL {shown:?} is longer than {MAX_URL_BYTES} bytes"
        ));
    }
    let full = match url.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => url.to_owned(),
        Some((scheme, _)) => {
            return Err(format!(
                "server URL {shown:?}: rollcall-server speaks only https, not {}; give https://HOST:PORT",
                crate::text::for_terminal(scheme)
            ));
        }
        None => format!("https://{url}"),
    };
    let uri: tonic::transport::Uri = full
        .parse()
        .map_err(|e| format!("server URL {shown:?} is not a URL ({e}); give https://HOST:PORT"))?;
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| format!("server URL {shown:?} has no host; give https://HOST:PORT"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "server URL {shown:?} carries user info; give https://HOST:PORT"
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "server URL {shown:?} has a path or a query; give https://HOST:PORT"
        ));
    }
    Ok(format!(
        "https://{}",
        authority.as_str().to_ascii_lowercase()
    ))
}

/// A list of server URLs, each [`normalize`]d: not empty, at most
/// [`MAX_SERVERS`], none twice. The error is one line naming the bad entry.
pub fn normalize_list(urls: &[String]) -> Result<Vec<String>, String> {
    if urls.is_empty() {
        return Err("no server URL given: name at least one, e.g. https://HOST:7443".into());
    }
    if urls.len() > MAX_SERVERS {
        return Err(format!(
            "{} server URLs given; at most {MAX_SERVERS}",
            urls.len()
        ));
    }
    let mut list: Vec<String> = Vec::with_capacity(urls.len());
    for url in urls {
        let url = normalize(url)?;
        if list.contains(&url) {
            return Err(format!(
                "server URL {url:?} is given twice; name each server once"
            ));
        }
        list.push(url);
    }
    Ok(list)
}

/// The leader a follower named in refusing a call, as it wrote it (check
/// it with [`normalize`] before use): `None` for any other answer, and for
/// UNAVAILABLE without a leader (no replica leads at the moment).
pub fn leader_hint(status: &tonic::Status) -> Option<&str> {
    if status.code() != tonic::Code::Unavailable {
        return None;
    }
    status.metadata().get(LEADER_METADATA)?.to_str().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_written_one_way_and_bad_ones_are_named() {
        for (given, written) in [
            ("https://ctl1:7443", "https://ctl1:7443"),
            (
                "  https://CTL1.Example.org:7443/ ",
                "https://ctl1.example.org:7443",
            ),
            ("HTTPS://ctl1:7443", "https://ctl1:7443"),
            ("ctl1:7443", "https://ctl1:7443"),
            ("https://[::1]:7443", "https://[::1]:7443"),
        ] {
            assert_eq!(normalize(given).as_deref(), Ok(written), "{given}");
        }
        for (given, needle) in [
            ("", "empty"),
            ("http://ctl1:7443", "only https, not http"),
            ("https://ctl1:7443/rollcall", "path"),
            ("https://ctl1:7443?x=1", "query"),
            ("https://admin@ctl1:7443", "user info"),
            ("https://", "\"https://\""),
            ("https://ctl 1:7443", "not a URL"),
        ] {
            let err = normalize(given).expect_err(given);
            assert!(
                err.contains(needle) && !err.contains('\n'),
                "{given}: {err}"
            );
        }
        let long = format!("https://{}:7443", "a".repeat(300));
        assert!(
            normalize(&long)
                .expect_err("long")
                .contains("longer than 256")
        );
        // What a person reads is what was given, controls escaped.
        let err = normalize("http://ctl1\x1b[2J:7443").expect_err("escape");
        assert!(err.contains("\\x1b") && !err.contains('\x1b'), "{err}");
    }

    #[test]
    fn a_list_is_one_to_sixteen_distinct_urls() {
        let list = |urls: &[&str]| {
            normalize_list(&urls.iter().map(|u| (*u).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(
            list(&["https://ctl1:7443", "ctl2:7443"]),
            Ok(vec![
                "https://ctl1:7443".to_owned(),
                "https://ctl2:7443".to_owned()
            ])
        );
        assert!(list(&[]).expect_err("empty").contains("no server URL"));
        let err = list(&["https://ctl1:7443", "https://CTL1:7443/"]).expect_err("twice");
        assert!(
            err.contains("\"https://ctl1:7443\" is given twice"),
            "{err}"
        );
        let err = list(&["https://ctl1:7443", "http://ctl2:7443"]).expect_err("http");
        assert!(err.contains("\"http://ctl2:7443\""), "{err}");
        let many: Vec<String> = (0..17).map(|i| format!("https://ctl{i}:7443")).collect();
        assert!(
            normalize_list(&many)
                .expect_err("17")
                .contains("17 server URLs given; at most 16")
        );
        assert_eq!(normalize_list(&many[..16]).map(|l| l.len()), Ok(16));
    }

    #[test]
    fn only_unavailable_with_the_metadata_names_a_leader() {
        let mut follower = tonic::Status::unavailable(
            "this rollcall-server is a follower; the leader is at https://ctl2:7443",
        );
        follower
            .metadata_mut()
            .insert(LEADER_METADATA, "https://ctl2:7443".parse().expect("ascii"));
        assert_eq!(leader_hint(&follower), Some("https://ctl2:7443"));
        let no_leader = tonic::Status::unavailable(
            "no rollcall-server leads at the moment (a failover is under way); try again in a few seconds",
        );
        assert_eq!(leader_hint(&no_leader), None);
        let mut other = tonic::Status::permission_denied("viewer");
        other
            .metadata_mut()
            .insert(LEADER_METADATA, "https://ctl2:7443".parse().expect("ascii"));
        assert_eq!(
            leader_hint(&other),
            None,
            "only a refusal as follower counts"
        );
    }
}
