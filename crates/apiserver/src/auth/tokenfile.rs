//! `--token-auth-file`: upstream's static token file, a CSV of `token,user,uid` with an optional
//! fourth column of comma-separated groups (quoted when it holds more than one:
//! `t0k3n,alice,1001,"dev,ops"`). Read once at startup.

use std::collections::HashMap;
use std::path::Path;

use super::{constant_time_eq, Authenticator, UserInfo};

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading token file '{path}': {source}")]
    Io { path: String, source: std::io::Error },
    #[error("token file '{path}' must have at least 3 columns (token, user name, user uid), found {found}")]
    Columns { path: String, found: usize },
    #[error("token file '{path}': line {line}: unterminated quoted field")]
    Quote { path: String, line: usize },
}

/// The users of a token file, by token.
#[derive(Debug, Default)]
pub struct TokenFile {
    users: HashMap<String, UserInfo>,
}

/// One CSV record (RFC 4180 quoting: `"a,b"`, `""` for a quote inside a quoted field).
fn record(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.is_empty() => quoted = true,
            (false, ',') => out.push(std::mem::take(&mut cur)),
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return None;
    }
    out.push(cur);
    Some(out)
}

impl TokenFile {
    pub fn parse(path: &str, text: &str) -> Result<Self, TokenFileError> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let rec = record(line).ok_or_else(|| TokenFileError::Quote { path: path.into(), line: i + 1 })?;
            if rec.len() < 3 {
                return Err(TokenFileError::Columns { path: path.into(), found: rec.len() });
            }
            if rec[0].is_empty() {
                tracing::warn!(path, line = i + 1, "empty token in token file");
                continue;
            }
            let groups = rec
                .get(3)
                .map(|g| g.split(',').map(str::trim).filter(|g| !g.is_empty()).map(String::from).collect())
                .unwrap_or_default();
            let user = UserInfo { username: rec[1].clone(), uid: rec[2].clone(), groups, ..Default::default() };
            if users.insert(rec[0].clone(), user).is_some() {
                tracing::warn!(path, line = i + 1, "duplicate token in token file");
            }
        }
        Ok(TokenFile { users })
    }

    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Io { path: p.clone(), source })?;
        Self::parse(&p, &text)
    }
}

impl Authenticator for TokenFile {
    fn authenticate_token(&self, token: &str) -> Option<UserInfo> {
        let token = token.trim();
        // Compared in constant time against each (the file is small).
        self.users.iter().find(|(t, _)| constant_time_eq(t.as_bytes(), token.as_bytes())).map(|(_, u)| u.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstreams_csv() {
        let f = TokenFile::parse("f", "t1,alice,1001,\"dev,ops\"\nt2,bob,1002\n\nt3,carol,1003,solo\n").unwrap();
        let a = f.authenticate_token("t1").unwrap();
        assert_eq!((a.username.as_str(), a.uid.as_str()), ("alice", "1001"));
        assert_eq!(a.groups, ["dev", "ops"]);
        assert!(f.authenticate_token("t2").unwrap().groups.is_empty());
        assert_eq!(f.authenticate_token("t3").unwrap().groups, ["solo"]);
        assert!(f.authenticate_token("t4").is_none());
        assert_eq!(
            TokenFile::parse("f", "t1,alice\n").unwrap_err().to_string(),
            "token file 'f' must have at least 3 columns (token, user name, user uid), found 2"
        );
    }
}
