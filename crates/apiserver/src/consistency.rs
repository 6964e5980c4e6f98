//! Which revision a read is served at, as upstream decides it: continue tokens (upstream's
//! `meta.k8s.io/v1` encoding, carrying the first page's revision so every later page reads that
//! same snapshot), `resourceVersion` with `resourceVersionMatch` on lists and gets (most recent,
//! any, not older than, exact), the wait for a revision the store has not reached yet (upstream's
//! watch cache waits 3 s, then answers 504 "Too large resource version"), and the 410s for a
//! snapshot that was compacted away.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use yard_store::{ListPage, Store, StoreError};

use crate::rest::Params;
use crate::status::{ApiError, ApiResult};

/// How long a read for a revision above the store's waits for it (upstream's `blockTimeout`).
const FRESHNESS_WAIT: Duration = Duration::from_secs(3);

const LIST_EXPIRED: &str = "The resourceVersion for the provided list is too old.";
const INCONSISTENT_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";
const TOKEN_VERSION: &str = "meta.k8s.io/v1";

/// Where a list starts and which snapshot it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRead {
    /// Keys after this one (from a continue token).
    pub start_after: Option<String>,
    /// The revision to read at; None: the latest (and later pages of this response read at the
    /// first page's revision).
    pub at: Option<i64>,
    /// The token's start key, relative to the prefix, when continuing (for the 410's new token).
    continued_from: Option<String>,
}

/// A continue token for the page that ends at `last_key` (under `prefix`), read at `revision`.
pub fn encode_continue(prefix: &str, last_key: &str, revision: i64) -> String {
    let start = format!("{}\u{0}", last_key.strip_prefix(prefix).unwrap_or(last_key));
    raw_token(&start, revision)
}

fn raw_token(start: &str, revision: i64) -> String {
    let body = json!({"v": TOKEN_VERSION, "rv": revision, "start": start}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
}

fn invalid_token(why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("invalid continue token: continue key is not valid{why}"))
}

/// Decode a continue token for a list of `prefix`: the key to start after, the revision (-1: the
/// latest) and the start key as the token spells it. Errors read as upstream's.
pub fn decode_continue(tok: &str, prefix: &str) -> ApiResult<(String, i64, String)> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
    );
    let raw = engine.decode(tok).map_err(|e| {
        let at = match e {
            base64::DecodeError::InvalidByte(at, _) | base64::DecodeError::InvalidLastSymbol(at, _) => at,
            base64::DecodeError::InvalidLength(n) => n.saturating_sub(1),
            base64::DecodeError::InvalidPadding => tok.find('=').unwrap_or(0),
        };
        invalid_token(format!(": illegal base64 data at input byte {at}"))
    })?;
    let v: Value = serde_json::from_slice(&raw).map_err(|e| invalid_token(format!(": {}", json_error(&raw, &e))))?;
    let Value::Object(m) = &v else {
        return Err(invalid_token(format!(
            ": json: cannot unmarshal {} into Go value of type storage.continueToken",
            go_type(&v)
        )));
    };
    let field = |name: &str, want: &str| -> ApiResult<()> {
        Err(invalid_token(format!(
            ": json: cannot unmarshal {} into Go struct field continueToken.{name} of type {want}",
            go_type(&m[name])
        )))
    };
    let version = match m.get("v") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return field("v", "string").map(|_| unreachable!()),
    };
    let rv = match m.get("rv") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or(0),
        Some(_) => return field("rv", "int64").map(|_| unreachable!()),
    };
    let start = match m.get("start") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return field("start", "string").map(|_| unreachable!()),
    };
    if version != TOKEN_VERSION {
        return Err(invalid_token(format!(": server does not recognize this encoded version {version}")));
    }
    if rv == 0 {
        return Err(invalid_token(": incorrect encoded start resourceVersion (version meta.k8s.io/v1)"));
    }
    if start.is_empty() {
        return Err(invalid_token(": encoded start key empty (version meta.k8s.io/v1)"));
    }
    // The key may not climb out of the listed prefix: it must be a clean path, as upstream checks.
    let rooted = if start.starts_with('/') { start.to_string() } else { format!("/{start}") };
    if !is_clean_path(&rooted) {
        return Err(invalid_token(format!(": {start}")));
    }
    let full = format!("{prefix}{}", &rooted[1..]);
    // Upstream's start key is inclusive: ours end in NUL, just after the last key returned.
    let after = full.strip_suffix('\u{0}').map(str::to_string).unwrap_or(full);
    Ok((after, rv, start.to_string()))
}

/// Whether `p` (starting with '/') is what Go's `path.Clean` leaves unchanged.
fn is_clean_path(p: &str) -> bool {
    if p == "/" {
        return true;
    }
    p[1..].split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's encoding/json wording for the common syntax errors.
fn json_error(raw: &[u8], e: &serde_json::Error) -> String {
    if e.is_eof() {
        return "unexpected end of JSON input".into();
    }
    match raw.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(&c) if !b"{[\"-0123456789tfn".contains(&c) => {
            format!("invalid character {} looking for beginning of value", go_quote_byte(c))
        }
        _ => e.to_string(),
    }
}

fn go_quote_byte(c: u8) -> String {
    match c {
        b'\'' => "'\\''".into(),
        b'"' => "'\"'".into(),
        0x20..=0x7e => format!("'{}'", c as char),
        _ => format!("'\\x{c:02x}'"),
    }
}

fn parse_rv(rv: &str) -> ApiResult<i64> {
    rv.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {rv}")))
}

/// 504 for a revision the store did not reach in time, as upstream's watch cache answers.
pub fn too_large(requested: i64, current: i64) -> ApiError {
    ApiError::new(504, "Timeout", format!("Timeout: Too large resource version: {requested}, current: {current}"))
        .with_details(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1
        }))
}

/// Wait (up to 3 s) until the store has reached `rv`.
pub async fn wait_for(store: &dyn Store, rv: i64) -> ApiResult<()> {
    let deadline = tokio::time::Instant::now() + FRESHNESS_WAIT;
    loop {
        let current = store.revision().await?;
        if current >= rv {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(too_large(rv, current));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The snapshot a list request reads (waiting for the store first when it asks for a revision
/// not reached yet). Upstream's table: no resourceVersion -> most recent; "0" -> any (here: the
/// latest too); a revision with `Exact`, or with a limit and no match -> exactly it; with
/// `NotOlderThan`, or without limit and match -> at least it.
pub async fn list_read(store: &dyn Store, p: &Params, prefix: &str) -> ApiResult<ListRead> {
    let rv = p.resource_version.as_deref().filter(|s| !s.is_empty());
    if let Some(tok) = &p.continue_token {
        let (after, at, start) = decode_continue(tok, prefix)?;
        if rv.is_some_and(|v| v != "0") {
            return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
        }
        return Ok(ListRead { start_after: Some(after), at: (at > 0).then_some(at), continued_from: Some(start) });
    }
    let latest = ListRead { start_after: None, at: None, continued_from: None };
    let Some(rv) = rv else { return Ok(latest) };
    let n = parse_rv(rv)?;
    if n == 0 {
        return Ok(latest);
    }
    wait_for(store, n).await?;
    let exact = match p.resource_version_match.as_deref() {
        Some("Exact") => true,
        Some("NotOlderThan") => false,
        _ => p.limit.is_some(),
    };
    Ok(if exact { ListRead { at: Some(n), ..latest } } else { latest })
}

/// A get with a resourceVersion other than "0" is served not older than it.
pub async fn get_read(store: &dyn Store, p: &Params) -> ApiResult<()> {
    match p.resource_version.as_deref().filter(|s| !s.is_empty()) {
        None => Ok(()),
        Some(rv) => match parse_rv(rv)? {
            0 => Ok(()),
            n => wait_for(store, n).await,
        },
    }
}

impl ListRead {
    /// One store page of this read; `pinned` is the revision earlier pages of the same response
    /// were read at.
    pub async fn page(
        &self,
        store: &dyn Store,
        prefix: &str,
        start_after: Option<&str>,
        limit: Option<usize>,
        pinned: Option<i64>,
    ) -> ApiResult<ListPage> {
        let res = match self.at.or(pinned) {
            Some(at) => store.list_at(prefix, start_after, limit, at).await,
            None => store.list(prefix, start_after, limit).await,
        };
        res.map_err(|e| self.error(e))
    }

    fn error(&self, e: StoreError) -> ApiError {
        match e {
            StoreError::Expired { .. } => match &self.continued_from {
                // Upstream hands back a token to go on at the latest revision, inconsistently.
                Some(start) => ApiError::gone(INCONSISTENT_CONTINUE).with_list_continue(raw_token(start, -1)),
                None => ApiError::gone(LIST_EXPIRED),
            },
            StoreError::FutureRevision { requested, current } => too_large(requested, current),
            other => other.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_read_as_upstream_encodes_them() {
        let t = encode_continue("/registry/pods/ns/", "/registry/pods/ns/web-1", 42);
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&t).unwrap();
        let v: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v, json!({"v": "meta.k8s.io/v1", "rv": 42, "start": "web-1\u{0}"}));
        let (after, rv, start) = decode_continue(&t, "/registry/pods/ns/").unwrap();
        assert_eq!((after.as_str(), rv, start.as_str()), ("/registry/pods/ns/web-1", 42, "web-1\u{0}"));
    }

    fn msg(tok: &str) -> String {
        decode_continue(tok, "/registry/pods/").unwrap_err().message
    }

    #[test]
    fn malformed_tokens_are_refused_with_upstreams_words() {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        assert_eq!(
            msg("a!bc"),
            "invalid continue token: continue key is not valid: illegal base64 data at input byte 1"
        );
        assert_eq!(
            msg("abcde"),
            "invalid continue token: continue key is not valid: illegal base64 data at input byte 4"
        );
        assert_eq!(
            msg(&b("junk")),
            "invalid continue token: continue key is not valid: invalid character 'j' looking for beginning of value"
        );
        assert_eq!(
            msg(&b("{\"v\":")),
            "invalid continue token: continue key is not valid: unexpected end of JSON input"
        );
        assert_eq!(
            msg(&b(r#"{"v":"x","rv":1,"start":"a"}"#)),
            "invalid continue token: continue key is not valid: server does not recognize this encoded version x"
        );
        assert_eq!(
            msg(&b(r#"{"v":"meta.k8s.io/v1","start":"a"}"#)),
            "invalid continue token: continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
        );
        assert_eq!(
            msg(&b(r#"{"v":"meta.k8s.io/v1","rv":3}"#)),
            "invalid continue token: continue key is not valid: encoded start key empty (version meta.k8s.io/v1)"
        );
        assert_eq!(
            msg(&b(r#"{"v":"meta.k8s.io/v1","rv":"3","start":"a"}"#)),
            "invalid continue token: continue key is not valid: json: cannot unmarshal string into Go struct field continueToken.rv of type int64"
        );
        // No climbing out of the listed prefix.
        assert_eq!(
            msg(&b(r#"{"v":"meta.k8s.io/v1","rv":3,"start":"../secrets/x"}"#)),
            "invalid continue token: continue key is not valid: ../secrets/x"
        );
        assert_eq!(
            decode_continue(&b(r#"{"v":"meta.k8s.io/v1","rv":-1,"start":"ns/a"}"#), "/registry/pods/").unwrap(),
            ("/registry/pods/ns/a".to_string(), -1, "ns/a".to_string())
        );
    }

    #[test]
    fn too_large_reads_as_upstreams_timeout() {
        let s = too_large(500, 400).to_status();
        assert_eq!(s["code"], 504);
        assert_eq!(s["reason"], "Timeout");
        assert_eq!(s["message"], "Timeout: Too large resource version: 500, current: 400");
        assert_eq!(s["details"]["retryAfterSeconds"], 1);
        assert_eq!(s["details"]["causes"][0]["reason"], "ResourceVersionTooLarge");
    }
}
