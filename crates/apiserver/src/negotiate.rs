//! Output media type negotiation for resource requests, as upstream's `negotiation` package does
//! it: the `Accept` header's clauses in preference order (q, then specificity), each matched
//! against the serializers the server has (JSON, YAML, protobuf) with its parameters checked —
//! `as`/`g`/`v` (a Table, only as JSON or YAML; PartialObjectMetadata(List), in any of them; of
//! meta.k8s.io v1 or v1beta1), `stream` (only `watch`, only for serializers that stream), `pretty`.
//! The first clause that fits wins; none fitting is `406 NotAcceptable`. No header means JSON.
//! Pretty printing: the `pretty` query parameter (Go's `ParseBool`) decides when given, else a
//! `curl`, `Wget` or `Mozilla/5.0` user agent turns it on; only JSON has a pretty form.

use http::HeaderMap;

use crate::protobuf::MEDIA_TYPE as PROTOBUF;
use crate::status::ApiError;

/// The serialization of a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
    Protobuf,
}

/// What the response's objects are turned into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Convert {
    /// The object as stored.
    None,
    /// A meta.k8s.io Table of the given version.
    Table(String),
    /// `PartialObjectMetadata` of the given version.
    Partial(String),
    /// `PartialObjectMetadataList` of the given version.
    PartialList(String),
}

/// The negotiated output of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub format: Format,
    pub convert: Convert,
    pub pretty: bool,
}

impl Output {
    /// Whether the response is the plain JSON the handlers write.
    pub fn is_plain_json(&self) -> bool {
        self.format == Format::Json && self.convert == Convert::None && !self.pretty
    }
    /// The media type a response body in this format carries.
    pub fn content_type(&self, watch: bool) -> &'static str {
        match (self.format, watch) {
            (Format::Json, _) => "application/json",
            (Format::Yaml, _) => "application/yaml",
            (Format::Protobuf, false) => PROTOBUF,
            (Format::Protobuf, true) => "application/vnd.kubernetes.protobuf;stream=watch",
        }
    }
}

/// The serializers in upstream's order (the order of the 406 message).
const SERIALIZERS: [(&str, &str, Format); 3] = [
    ("application", "json", Format::Json),
    ("application", "yaml", Format::Yaml),
    ("application", "vnd.kubernetes.protobuf", Format::Protobuf),
];

/// One clause of an Accept header.
#[derive(Debug)]
struct Clause {
    ty: String,
    sub: String,
    q: f64,
    params: Vec<(String, String)>,
}

/// Parse an Accept header as goautoneg does: comma-separated `type/subtype;k=v` clauses, sorted
/// by q (default 1) and then by specificity, keeping the header's order among equals.
fn parse_accept(header: &str) -> Vec<Clause> {
    let mut out = Vec::new();
    for part in header.split(',') {
        let mut pieces = part.split(';');
        let media = pieces.next().unwrap_or("").trim();
        let (ty, sub) = match media.split_once('/') {
            Some((t, s)) => (t.trim().to_string(), s.trim().to_string()),
            None if media == "*" => ("*".to_string(), "*".to_string()),
            None => continue,
        };
        let mut q = 1.0;
        let mut params = Vec::new();
        for p in pieces {
            let Some((k, v)) = p.split_once('=') else { continue };
            let (k, v) = (k.trim(), v.trim());
            if k == "q" {
                q = v.parse().unwrap_or(0.0);
            } else {
                params.push((k.to_string(), v.to_string()));
            }
        }
        out.push(Clause { ty, sub, q, params });
    }
    let rank = |c: &Clause| match (c.ty.as_str(), c.sub.as_str()) {
        ("*", _) => 2,
        (_, "*") => 1,
        _ => 0,
    };
    out.sort_by(|a, b| b.q.partial_cmp(&a.q).unwrap_or(std::cmp::Ordering::Equal).then(rank(a).cmp(&rank(b))));
    out
}

/// `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Whether the request asks for pretty output outside its media type.
fn pretty_by_request(headers: &HeaderMap, query: &str) -> bool {
    if query.contains("pretty") {
        if let Some((_, v)) = crate::rest::form_urlencoded(query).into_iter().find(|(k, _)| k == "pretty") {
            if !v.is_empty() {
                return parse_bool(&v).unwrap_or(false);
            }
        }
    }
    let ua = headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    ua.starts_with("curl") || ua.starts_with("Wget") || ua.starts_with("Mozilla/5.0")
}

/// The options of `clause` for the serializer `format`, or None when it cannot be served.
fn accept_options(clause: &Clause, format: Format, watch: bool) -> Option<(Convert, bool)> {
    let (mut kind, mut group, mut version) = (None, None, None);
    let mut pretty = false;
    for (k, v) in &clause.params {
        match k.as_str() {
            "as" => kind = Some(v.as_str()),
            "g" => group = Some(v.as_str()),
            "v" => version = Some(v.as_str()),
            "stream" if !v.is_empty() && (format == Format::Yaml || v != "watch") => return None,
            // Server versions other than the group's are not served (`sv`).
            "sv" if !v.is_empty() => return None,
            "pretty" => pretty = v == "1",
            _ => {}
        }
    }
    if kind.is_none() && group.is_none() && version.is_none() {
        return Some((Convert::None, pretty));
    }
    let (kind, group, version) = (kind.unwrap_or(""), group.unwrap_or(""), version.unwrap_or(""));
    if group != "meta.k8s.io" || !matches!(version, "v1" | "v1beta1") {
        return None;
    }
    let convert = match kind {
        "Table" if format != Format::Protobuf => Convert::Table(version.to_string()),
        "PartialObjectMetadata" => Convert::Partial(version.to_string()),
        "PartialObjectMetadataList" => Convert::PartialList(version.to_string()),
        _ => return None,
    };
    let _ = watch;
    Some((convert, pretty))
}

/// Negotiate the output of a request on a resource path; `watch` for a watch.
pub fn negotiate(headers: &HeaderMap, query: &str, watch: bool) -> Result<Output, ApiError> {
    let header: Vec<&str> = headers.get_all(http::header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect();
    let header = header.join(",");
    let pick = if header.trim().is_empty() {
        Some((Format::Json, Convert::None, false))
    } else {
        parse_accept(&header).iter().find_map(|c| {
            SERIALIZERS.iter().find_map(|&(ty, sub, format)| {
                let matches = (c.ty == ty && (c.sub == sub || c.sub == "*")) || (c.ty == "*" && c.sub == "*");
                if !matches || (watch && format == Format::Yaml) {
                    return None;
                }
                accept_options(c, format, watch).map(|(convert, pretty)| (format, convert, pretty))
            })
        })
    };
    let Some((format, convert, pretty)) = pick else {
        let accepted = if watch {
            "application/json;stream=watch, application/vnd.kubernetes.protobuf;stream=watch"
        } else {
            "application/json, application/yaml, application/vnd.kubernetes.protobuf"
        };
        return Err(ApiError::new(
            406,
            "NotAcceptable",
            format!("only the following media types are accepted: {accepted}"),
        ));
    };
    let pretty = format == Format::Json && !watch && (pretty || pretty_by_request(headers, query));
    Ok(Output { format, convert, pretty })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neg(accept: &str, query: &str, watch: bool) -> Result<Output, ApiError> {
        let mut h = HeaderMap::new();
        if !accept.is_empty() {
            h.insert(http::header::ACCEPT, accept.parse().unwrap());
        }
        negotiate(&h, query, watch)
    }

    fn out(format: Format, convert: Convert, pretty: bool) -> Output {
        Output { format, convert, pretty }
    }

    #[test]
    fn picks_the_first_servable_clause() {
        assert_eq!(neg("", "", false).unwrap(), out(Format::Json, Convert::None, false));
        assert_eq!(neg("*/*", "", false).unwrap(), out(Format::Json, Convert::None, false));
        assert_eq!(neg("application/yaml", "", false).unwrap(), out(Format::Yaml, Convert::None, false));
        assert_eq!(
            neg("application/vnd.kubernetes.protobuf, application/json", "", false).unwrap(),
            out(Format::Protobuf, Convert::None, false)
        );
        assert_eq!(
            neg("application/json;q=0.5, application/vnd.kubernetes.protobuf", "", false).unwrap().format,
            Format::Protobuf
        );
        // kubectl get's header: Table as JSON, then plain JSON.
        assert_eq!(
            neg("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json", "", false)
                .unwrap(),
            out(Format::Json, Convert::Table("v1".into()), false)
        );
        // A Table is never protobuf: the next clause wins.
        assert_eq!(
            neg("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json", "", false)
                .unwrap(),
            out(Format::Json, Convert::None, false)
        );
        assert_eq!(
            neg("application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1", "", false)
                .unwrap(),
            out(Format::Protobuf, Convert::PartialList("v1".into()), false)
        );
        assert_eq!(
            neg("application/vnd.kubernetes.protobuf;stream=watch", "", true).unwrap(),
            out(Format::Protobuf, Convert::None, false)
        );
    }

    #[test]
    fn unservable_requests_are_not_acceptable() {
        for (accept, watch) in [
            ("text/html", false),
            ("application/xml, text/plain", false),
            ("application/json;as=Table;g=meta.k8s.io;v=v2", false),
            ("application/json;as=Pod;g=;v=v1", false),
            ("application/vnd.kubernetes.protobuf;as=Table;g=meta.k8s.io;v=v1", false),
            ("application/json;stream=other", false),
            ("application/yaml", true),
        ] {
            let e = neg(accept, "", watch).expect_err(accept);
            let s = e.to_status();
            assert_eq!(s["code"], 406, "{accept}");
            assert_eq!(s["reason"], "NotAcceptable");
        }
        assert_eq!(
            neg("text/html", "", false).unwrap_err().to_status()["message"],
            "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf"
        );
        assert_eq!(
            neg("application/yaml", "", true).unwrap_err().to_status()["message"],
            "only the following media types are accepted: application/json;stream=watch, application/vnd.kubernetes.protobuf;stream=watch"
        );
    }

    #[test]
    fn pretty_follows_the_query_then_the_user_agent() {
        assert!(neg("", "pretty=true", false).unwrap().pretty);
        assert!(neg("", "pretty=1", false).unwrap().pretty);
        assert!(neg("", "pretty=T", false).unwrap().pretty);
        assert!(!neg("", "pretty=false", false).unwrap().pretty);
        assert!(!neg("", "pretty=yes", false).unwrap().pretty);
        assert!(neg("application/json;pretty=1", "", false).unwrap().pretty);
        // Only JSON has a pretty form; watches never pretty-print.
        assert!(!neg("application/yaml", "pretty=true", false).unwrap().pretty);
        assert!(!neg("", "pretty=true", true).unwrap().pretty);
        let mut h = HeaderMap::new();
        h.insert(http::header::USER_AGENT, "curl/8.5.0".parse().unwrap());
        assert!(negotiate(&h, "", false).unwrap().pretty);
        assert!(!negotiate(&h, "pretty=0", false).unwrap().pretty);
        h.insert(http::header::USER_AGENT, "kubectl/v1.37.1".parse().unwrap());
        assert!(!negotiate(&h, "", false).unwrap().pretty);
    }
}
