//! ServiceAccount tokens: the cluster's signing key (ES256, generated into `DATA_DIR/pki/sa.key`
//! on first start and reused after), issuing bound tokens with upstream's claims, verifying them
//! (signature, issuer, `exp`/`nbf`/`iat` with upstream's one-minute leeway, audiences), and the
//! [`ServiceAccountAuthenticator`] that also checks the token's ServiceAccount and bound object
//! still exist with the uids it names. The OIDC discovery documents come from the same key.
//!
//! Several API servers sharing one store must share the key too (the same `pki/sa.key`, e.g. by
//! sharing or copying the data dir's `pki/`), or each accepts only its own tokens.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{json, Map, Value};
use yard_store::DynStore;

use super::UserInfo;
use crate::registry;

/// The issuer (and default audience) of upstream's in-cluster tokens.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// go-jose's default leeway for `exp`, `nbf` and `iat`, and upstream's grace for a bound object
/// being deleted.
pub const LEEWAY_SECONDS: i64 = 60;
/// The lifetime the ServiceAccount admission plugin asks for; such pod-bound tokens are issued
/// for [`EXTENDED_EXPIRATION_SECONDS`] with a `warnafter` claim (upstream's
/// `--service-account-extend-token-expiration`, on by default).
pub const WARN_ONLY_EXPIRATION_SECONDS: i64 = 3607;
pub const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 3600;
/// How long a looked-up ServiceAccount or bound object is trusted before it is read again.
const LOOKUP_TTL: Duration = Duration::from_secs(1);

/// Why a token was not accepted. `NotOurs` means another authenticator may know it (upstream
/// answers those without an error); the rest are this issuer's tokens that failed a check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a token of this issuer")]
    NotOurs,
    #[error("go-jose/go-jose: error in cryptographic primitive")]
    Signature,
    #[error("unexpected signing algorithm {0:?}")]
    Algorithm(String),
    #[error("service account token has expired")]
    Expired,
    #[error("service account token is not valid yet")]
    NotValidYet,
    #[error("service account token is issued in the future")]
    IssuedInTheFuture,
    #[error("token audiences {token} is invalid for the target audiences {requested}")]
    Audience { token: String, requested: String },
    #[error("service account token claims are invalid: {0}")]
    Claims(&'static str),
    #[error("serviceaccount {0:?} not found")]
    ServiceAccountNotFound(String),
    #[error("service account UID ({0}) does not match claim ({1})")]
    ServiceAccountUid(String, String),
    #[error("{0} UID ({1}) does not match claim ({2})")]
    BoundUid(&'static str, String, String),
    #[error("service account token has been invalidated")]
    Invalidated,
    #[error("reading the store: {0}")]
    Store(String),
}

/// The object a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundRef {
    /// Pod, Secret or Node.
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// What a token says about its holder: the `kubernetes.io` claim and the registered claims.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenClaims {
    pub namespace: String,
    pub sa_name: String,
    pub sa_uid: String,
    pub pod: Option<BoundRef>,
    pub secret: Option<BoundRef>,
    /// Bound directly to a node, or the node of a bound pod.
    pub node: Option<BoundRef>,
    pub audiences: Vec<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// Set for extended tokens: when the requested lifetime ended.
    pub warn_after: Option<i64>,
}

impl TokenClaims {
    /// The user a valid token stands for, as upstream's serviceaccount.UserInfo builds it.
    pub fn user(&self) -> UserInfo {
        let mut extra = std::collections::BTreeMap::new();
        if let Some(p) = &self.pod {
            extra.insert("authentication.kubernetes.io/pod-name".into(), vec![p.name.clone()]);
            extra.insert("authentication.kubernetes.io/pod-uid".into(), vec![p.uid.clone()]);
        }
        if let Some(n) = &self.node {
            extra.insert("authentication.kubernetes.io/node-name".into(), vec![n.name.clone()]);
            if !n.uid.is_empty() {
                extra.insert("authentication.kubernetes.io/node-uid".into(), vec![n.uid.clone()]);
            }
        }
        if !self.jti.is_empty() {
            extra.insert("authentication.kubernetes.io/credential-id".into(), vec![format!("JTI={}", self.jti)]);
        }
        UserInfo {
            username: format!("system:serviceaccount:{}:{}", self.namespace, self.sa_name),
            uid: self.sa_uid.clone(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", self.namespace),
                "system:authenticated".into(),
            ],
            extra,
        }
    }
}

/// The cluster's token signing key.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    /// The public key as an uncompressed P-256 point (0x04 || X || Y).
    public: Vec<u8>,
    /// Upstream's key id: unpadded base64url of the SHA-256 of the public key's PKIX DER.
    pub kid: String,
}

/// The PKIX SubjectPublicKeyInfo prefix of a P-256 public key (ecPublicKey, prime256v1), before
/// the 65-byte point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self, String> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "generating the service account key".to_string())?;
        Self::from_pkcs8(doc.as_ref())
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| format!("service account key: {e}"))?;
        let public = pair.public_key().as_ref().to_vec();
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&public);
        let kid = B64.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        Ok(SigningKey { pair, public, kid })
    }

    /// Load `dir/pki/sa.key` (PKCS#8 PEM), creating it on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, String> {
        let path = dir.join("pki").join("sa.key");
        match std::fs::read_to_string(&path) {
            Ok(pem) => {
                let der = pem_body(&pem).ok_or_else(|| format!("{}: no PRIVATE KEY block", path.display()))?;
                Self::from_pkcs8(&der)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = SystemRandom::new();
                let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| "generating the service account key".to_string())?;
                let b64 = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
                let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
                for chunk in b64.as_bytes().chunks(64) {
                    pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
                    pem.push('\n');
                }
                pem.push_str("-----END PRIVATE KEY-----\n");
                std::fs::create_dir_all(dir.join("pki")).map_err(|e| format!("{}: {e}", path.display()))?;
                let tmp = path.with_extension("tmp");
                write_private(&tmp, &pem).map_err(|e| format!("{}: {e}", tmp.display()))?;
                std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
                Self::from_pkcs8(doc.as_ref())
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        // Signing with a valid key and the system RNG does not fail in practice; an empty
        // signature would only make the token fail verification.
        self.pair.sign(&rng, input).map(|s| s.as_ref().to_vec()).unwrap_or_default()
    }

    fn verify(&self, input: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.public).verify(input, sig).is_ok()
    }

    /// The public key as a JWK (upstream's JWKS entry).
    pub fn jwk(&self) -> Value {
        let (x, y) = self.public[1..].split_at(32);
        json!({"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256", "x": B64.encode(x), "y": B64.encode(y)})
    }
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN PRIVATE KEY-----")? + "-----BEGIN PRIVATE KEY-----".len();
    let end = pem[start..].find("-----END PRIVATE KEY-----")? + start;
    let b64: String = pem[start..end].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

fn write_private(path: &Path, data: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(data.as_bytes())?;
    f.sync_all()
}

/// Issues and verifies this cluster's tokens (no store access; see [`ServiceAccountAuthenticator`]).
pub struct Issuer {
    pub key: SigningKey,
    pub issuer: String,
    /// The API server's own audiences (`--api-audiences`; default the issuer).
    pub api_audiences: Vec<String>,
}

fn bound_json(b: &BoundRef) -> Value {
    json!({"name": b.name, "uid": b.uid})
}

fn go_q_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| yard_api::validation::go_quote(s)).collect();
    format!("[{}]", items.join(" "))
}

impl Issuer {
    pub fn new(key: SigningKey, issuer: &str, api_audiences: Vec<String>) -> Self {
        let api_audiences = if api_audiences.is_empty() { vec![issuer.to_string()] } else { api_audiences };
        Issuer { key, issuer: issuer.to_string(), api_audiences }
    }

    /// A signed JWT carrying `c` (claims in the order upstream's tokens print them).
    pub fn issue(&self, c: &TokenClaims) -> String {
        let header = json!({"alg": "ES256", "kid": self.key.kid});
        let mut k8s = Map::new();
        k8s.insert("namespace".into(), json!(c.namespace));
        if let Some(n) = &c.node {
            k8s.insert("node".into(), bound_json(n));
        }
        if let Some(p) = &c.pod {
            k8s.insert("pod".into(), bound_json(p));
        }
        if let Some(s) = &c.secret {
            k8s.insert("secret".into(), bound_json(s));
        }
        k8s.insert("serviceaccount".into(), json!({"name": c.sa_name, "uid": c.sa_uid}));
        if let Some(w) = c.warn_after {
            k8s.insert("warnafter".into(), json!(w));
        }
        let payload = json!({
            "aud": c.audiences,
            "exp": c.exp,
            "iat": c.iat,
            "iss": self.issuer,
            "jti": c.jti,
            "kubernetes.io": Value::Object(k8s),
            "nbf": c.nbf,
            "sub": format!("system:serviceaccount:{}:{}", c.namespace, c.sa_name),
        });
        let input = format!(
            "{}.{}",
            B64.encode(serde_json::to_vec(&header).unwrap_or_default()),
            B64.encode(serde_json::to_vec(&payload).unwrap_or_default())
        );
        let sig = self.key.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(sig))
    }

    /// Check a token's form, issuer, signature, times (at `now`, Unix seconds) and audiences
    /// (against `requested`, or the API audiences when empty); returns its claims and the
    /// audiences it is valid for.
    pub fn verify(
        &self,
        token: &str,
        requested: &[String],
        now: i64,
    ) -> Result<(TokenClaims, Vec<String>), TokenError> {
        let mut parts = token.trim().split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::NotOurs);
        };
        let decode = |x: &str| B64.decode(x.trim_end_matches('=')).ok();
        let (Some(hb), Some(pb), Some(sig)) = (decode(h), decode(p), decode(s)) else {
            return Err(TokenError::NotOurs);
        };
        let (Ok(header), Ok(payload)) = (serde_json::from_slice::<Value>(&hb), serde_json::from_slice::<Value>(&pb))
        else {
            return Err(TokenError::NotOurs);
        };
        // Upstream's JWT authenticator leaves tokens of other issuers to the next one.
        if payload.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(TokenError::NotOurs);
        }
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        if alg != "ES256" {
            return Err(TokenError::Algorithm(alg.to_string()));
        }
        if !self.key.verify(format!("{h}.{p}").as_bytes(), &sig) {
            return Err(TokenError::Signature);
        }
        let num = |k: &str| payload.get(k).and_then(Value::as_i64);
        let (exp, nbf, iat) = (num("exp"), num("nbf"), num("iat"));
        if exp.is_some_and(|e| now > e + LEEWAY_SECONDS) {
            return Err(TokenError::Expired);
        }
        if nbf.is_some_and(|n| now + LEEWAY_SECONDS < n) {
            return Err(TokenError::NotValidYet);
        }
        if iat.is_some_and(|i| now + LEEWAY_SECONDS < i) {
            return Err(TokenError::IssuedInTheFuture);
        }
        let Some(exp) = exp else { return Err(TokenError::Claims("exp is required")) };
        let token_auds: Vec<String> = match payload.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            _ => Vec::new(),
        };
        let token_auds = if token_auds.is_empty() { self.api_audiences.clone() } else { token_auds };
        let requested = if requested.is_empty() { self.api_audiences.clone() } else { requested.to_vec() };
        let auds: Vec<String> = requested.iter().filter(|a| token_auds.contains(a)).cloned().collect();
        if auds.is_empty() {
            return Err(TokenError::Audience { token: go_q_list(&token_auds), requested: go_q_list(&requested) });
        }
        let k = payload.get("kubernetes.io").filter(|v| v.is_object()).ok_or(TokenError::Claims("kubernetes.io"))?;
        let s = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_string();
        let bound = |kind: &str, key: &str| {
            k.get(key).filter(|v| v.is_object()).map(|v| BoundRef {
                kind: kind.into(),
                name: s(v, "name"),
                uid: s(v, "uid"),
            })
        };
        let sa = k.get("serviceaccount").filter(|v| v.is_object()).ok_or(TokenError::Claims("serviceaccount"))?;
        let claims = TokenClaims {
            namespace: s(k, "namespace"),
            sa_name: s(sa, "name"),
            sa_uid: s(sa, "uid"),
            pod: bound("Pod", "pod"),
            secret: bound("Secret", "secret"),
            node: bound("Node", "node"),
            audiences: token_auds,
            iat: iat.unwrap_or(0),
            nbf: nbf.unwrap_or(0),
            exp,
            jti: s(&payload, "jti"),
            warn_after: k.get("warnafter").and_then(Value::as_i64),
        };
        if claims.namespace.is_empty() || claims.sa_name.is_empty() || claims.sa_uid.is_empty() {
            return Err(TokenError::Claims("namespace and serviceaccount are required"));
        }
        let sub = format!("system:serviceaccount:{}:{}", claims.namespace, claims.sa_name);
        if payload.get("sub").and_then(Value::as_str) != Some(sub.as_str()) {
            return Err(TokenError::Claims("sub does not match kubernetes.io"));
        }
        if claims.pod.is_some() && claims.secret.is_some() {
            return Err(TokenError::Claims("pod and secret are both bound"));
        }
        Ok((claims, auds))
    }

    /// `/.well-known/openid-configuration`, as upstream serves it.
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// `/openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.key.jwk()]})
    }
}

/// A looked-up object: its uid and, if its deletion started, when (Unix seconds).
#[derive(Clone, Debug)]
struct Looked {
    uid: String,
    deleting_since: Option<i64>,
}

/// Authenticates this cluster's ServiceAccount tokens: [`Issuer::verify`], then the
/// ServiceAccount and bound object read from the store (each read cached for a second).
pub struct ServiceAccountAuthenticator {
    pub issuer: Issuer,
    store: DynStore,
    cache: Mutex<HashMap<String, (Instant, Option<Looked>)>>,
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl ServiceAccountAuthenticator {
    pub fn new(issuer: Issuer, store: DynStore) -> Self {
        Self { issuer, store, cache: Mutex::new(HashMap::new()) }
    }

    async fn lookup(&self, plural: &str, ns: Option<&str>, name: &str) -> Result<Option<Looked>, TokenError> {
        let r = registry::find("", "v1", plural).ok_or(TokenError::Invalidated)?;
        let key = r.key(ns, name);
        if let Some((at, v)) = self.cache.lock().expect("cache").get(&key) {
            if at.elapsed() < LOOKUP_TTL {
                return Ok(v.clone());
            }
        }
        let kv = self.store.get(&key).await.map_err(|e| TokenError::Store(e.to_string()))?;
        let looked = kv.and_then(|kv| serde_json::from_slice::<Value>(&kv.value).ok()).map(|v| Looked {
            uid: v.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("").to_string(),
            deleting_since: v
                .pointer("/metadata/deletionTimestamp")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_second()),
        });
        let mut c = self.cache.lock().expect("cache");
        if c.len() > 10_000 {
            c.retain(|_, (at, _)| at.elapsed() < LOOKUP_TTL);
        }
        c.insert(key, (Instant::now(), looked.clone()));
        Ok(looked)
    }

    /// The user of `token` for `requested` audiences (empty: the API server's) and the
    /// audiences it is valid for.
    pub async fn authenticate(&self, token: &str, requested: &[String]) -> Result<(UserInfo, Vec<String>), TokenError> {
        let now = unix_now();
        let (claims, auds) = self.issuer.verify(token, requested, now)?;
        self.check_objects(&claims, now).await?;
        Ok((claims.user(), auds))
    }

    /// Upstream's `Validate` of the private claims: the ServiceAccount and the bound object exist
    /// with the claimed uids and were not deleted more than the leeway ago.
    async fn check_objects(&self, c: &TokenClaims, now: i64) -> Result<(), TokenError> {
        let ns = Some(c.namespace.as_str());
        let deleted_long_ago = |l: &Looked| l.deleting_since.is_some_and(|d| d < now - LEEWAY_SECONDS);
        let sa = self
            .lookup("serviceaccounts", ns, &c.sa_name)
            .await?
            .ok_or_else(|| TokenError::ServiceAccountNotFound(c.sa_name.clone()))?;
        if sa.uid != c.sa_uid {
            return Err(TokenError::ServiceAccountUid(sa.uid, c.sa_uid.clone()));
        }
        if deleted_long_ago(&sa) {
            return Err(TokenError::Invalidated);
        }
        for (b, plural, what, scoped) in [(&c.pod, "pods", "Pod", true), (&c.secret, "secrets", "Secret", true)] {
            let Some(b) = b else { continue };
            let got = self.lookup(plural, scoped.then_some(c.namespace.as_str()), &b.name).await?;
            let Some(got) = got else { return Err(TokenError::Invalidated) };
            if got.uid != b.uid {
                return Err(TokenError::BoundUid(what, got.uid, b.uid.clone()));
            }
            if deleted_long_ago(&got) {
                return Err(TokenError::Invalidated);
            }
        }
        // A node named only as the bound pod's node is not checked (as upstream); a token bound
        // to the node itself is.
        if let (Some(n), None) = (&c.node, &c.pod) {
            let got = self.lookup("nodes", None, &n.name).await?.ok_or(TokenError::Invalidated)?;
            if got.uid != n.uid {
                return Err(TokenError::BoundUid("Node", got.uid, n.uid.clone()));
            }
            if deleted_long_ago(&got) {
                return Err(TokenError::Invalidated);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> Issuer {
        Issuer::new(SigningKey::generate().expect("key"), DEFAULT_ISSUER, vec![])
    }

    fn claims(now: i64) -> TokenClaims {
        TokenClaims {
            namespace: "default".into(),
            sa_name: "default".into(),
            sa_uid: "sa-uid".into(),
            pod: Some(BoundRef { kind: "Pod".into(), name: "web".into(), uid: "pod-uid".into() }),
            node: Some(BoundRef { kind: "Node".into(), name: "n1".into(), uid: "node-uid".into() }),
            audiences: vec![DEFAULT_ISSUER.into()],
            iat: now,
            nbf: now,
            exp: now + 600,
            jti: "j1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn issued_tokens_verify_and_name_the_service_account() {
        let i = issuer();
        let now = 1_800_000_000;
        let t = i.issue(&claims(now));
        let (c, auds) = i.verify(&t, &[], now).expect("valid");
        assert_eq!(c, claims(now));
        assert_eq!(auds, vec![DEFAULT_ISSUER.to_string()]);
        let u = c.user();
        assert_eq!(u.username, "system:serviceaccount:default:default");
        assert_eq!(u.uid, "sa-uid");
        assert_eq!(u.groups, ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"]);
        assert_eq!(u.extra["authentication.kubernetes.io/pod-name"], ["web"]);
        assert_eq!(u.extra["authentication.kubernetes.io/pod-uid"], ["pod-uid"]);
        assert_eq!(u.extra["authentication.kubernetes.io/node-name"], ["n1"]);
        assert_eq!(u.extra["authentication.kubernetes.io/credential-id"], ["JTI=j1"]);
        // The payload is upstream's shape.
        let p: Value = serde_json::from_slice(&B64.decode(t.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert_eq!(p["sub"], "system:serviceaccount:default:default");
        assert_eq!(p["kubernetes.io"]["pod"]["name"], "web");
        assert_eq!(p["kubernetes.io"]["serviceaccount"]["uid"], "sa-uid");
    }

    #[test]
    fn times_are_checked_with_a_minute_of_leeway() {
        let i = issuer();
        let now = 1_800_000_000;
        let t = i.issue(&claims(now));
        assert!(i.verify(&t, &[], now + 600 + 60).is_ok(), "within the leeway");
        assert_eq!(i.verify(&t, &[], now + 600 + 61).unwrap_err(), TokenError::Expired);
        assert!(i.verify(&t, &[], now - 60).is_ok());
        assert_eq!(i.verify(&t, &[], now - 61).unwrap_err(), TokenError::NotValidYet);
        let mut c = claims(now);
        c.nbf = now - 100;
        c.iat = now + 100;
        assert_eq!(i.verify(&i.issue(&c), &[], now).unwrap_err(), TokenError::IssuedInTheFuture);
    }

    #[test]
    fn audiences_must_meet() {
        let i = issuer();
        let now = 1_800_000_000;
        let mut c = claims(now);
        c.audiences = vec!["vault".into()];
        let t = i.issue(&c);
        let e = i.verify(&t, &[], now).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"token audiences ["vault"] is invalid for the target audiences ["https://kubernetes.default.svc.cluster.local"]"#
        );
        let (_, auds) = i.verify(&t, &["vault".into(), "x".into()], now).expect("vault audience");
        assert_eq!(auds, ["vault"]);
    }

    #[test]
    fn forged_malformed_and_foreign_tokens_are_refused() {
        let i = issuer();
        let other = issuer();
        let now = 1_800_000_000;
        let t = i.issue(&claims(now));
        assert_eq!(other.verify(&t, &[], now).unwrap_err(), TokenError::Signature, "another key");
        // A changed payload under the old signature.
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        let mut c = claims(now);
        c.sa_name = "admin".into();
        let forged = i.issue(&c);
        parts[1] = forged.split('.').nth(1).unwrap().to_string();
        assert_eq!(i.verify(&parts.join("."), &[], now).unwrap_err(), TokenError::Signature);
        // alg none / HS256 are not accepted.
        let none = format!("{}.{}.", B64.encode(br#"{"alg":"none"}"#), t.split('.').nth(1).unwrap());
        assert_eq!(i.verify(&none, &[], now).unwrap_err(), TokenError::Algorithm("none".into()));
        for junk in ["", "a", "a.b", "a.b.c", "a.b.c.d", "....", "eyJ.eyJ.x", "\u{0}.\u{1}.\u{2}", "ä.ö.ü"] {
            assert_eq!(i.verify(junk, &[], now).unwrap_err(), TokenError::NotOurs, "{junk:?}");
        }
        // Another issuer's token is not ours.
        let foreign = Issuer::new(SigningKey::generate().unwrap(), "https://elsewhere", vec![]);
        assert_eq!(i.verify(&foreign.issue(&claims(now)), &[], now).unwrap_err(), TokenError::NotOurs);
        // Random bytes never panic.
        for n in 0..500 {
            let b: Vec<u8> = (0..(n % 97)).map(|_| rand::random::<u8>()).collect();
            let s = String::from_utf8_lossy(&b).to_string();
            assert!(i.verify(&s, &[], now).is_err());
            let dotted = format!("{}.{}.{}", B64.encode(&b), B64.encode(&b[..b.len() / 2]), B64.encode(&b));
            assert!(i.verify(&dotted, &[], now).is_err());
        }
    }

    #[tokio::test]
    async fn the_service_account_and_bound_pod_must_still_exist_with_their_uids() {
        use yard_store::Op;
        let t = crate::testutil::TempStore::new("satoken-auth");
        let put = |key: &str, uid: &str| Op::Create {
            key: key.into(),
            value: serde_json::to_vec(&json!({"metadata": {"uid": uid}})).unwrap().into(),
        };
        let sa_key = registry::find("", "v1", "serviceaccounts").unwrap().key(Some("default"), "default");
        let pod_key = registry::find("", "v1", "pods").unwrap().key(Some("default"), "web");
        t.store.write(put(&sa_key, "sa-uid")).await.unwrap();
        t.store.write(put(&pod_key, "pod-uid")).await.unwrap();
        let a = ServiceAccountAuthenticator::new(issuer(), t.store.clone());
        let now = unix_now();
        let mut c = claims(now);
        c.node = None;
        let tok = a.issuer.issue(&c);
        let (u, _) = a.authenticate(&tok, &[]).await.expect("valid");
        assert_eq!(u.username, "system:serviceaccount:default:default");
        // Another uid for the ServiceAccount (deleted and re-created).
        let mut other = c.clone();
        other.sa_uid = "old-uid".into();
        let e = a.authenticate(&a.issuer.issue(&other), &[]).await.unwrap_err();
        assert_eq!(e.to_string(), "service account UID (sa-uid) does not match claim (old-uid)");
        // The bound pod deleted: refused once the cached lookup is older than its TTL.
        t.store.write(Op::Delete { key: pod_key, expect: None }).await.unwrap();
        tokio::time::sleep(LOOKUP_TTL + Duration::from_millis(100)).await;
        assert_eq!(a.authenticate(&tok, &[]).await.unwrap_err(), TokenError::Invalidated);
        // An unbound token of a deleted ServiceAccount.
        let mut unbound = c.clone();
        unbound.pod = None;
        let ut = a.issuer.issue(&unbound);
        assert!(a.authenticate(&ut, &[]).await.is_ok());
        t.store.write(Op::Delete { key: sa_key, expect: None }).await.unwrap();
        tokio::time::sleep(LOOKUP_TTL + Duration::from_millis(100)).await;
        assert_eq!(a.authenticate(&ut, &[]).await.unwrap_err(), TokenError::ServiceAccountNotFound("default".into()));
    }

    #[test]
    fn the_key_is_kept_in_the_data_dir_and_published_as_a_jwk() {
        let dir = std::env::temp_dir().join(format!("yard-sakey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = SigningKey::load_or_create(&dir).expect("create");
        let b = SigningKey::load_or_create(&dir).expect("load");
        assert_eq!(a.kid, b.kid);
        assert_eq!(a.public, b.public);
        let j = a.jwk();
        assert_eq!(j["kty"], "EC");
        assert_eq!(j["crv"], "P-256");
        assert_eq!(B64.decode(j["x"].as_str().unwrap()).unwrap().len(), 32);
        let i = Issuer::new(b, DEFAULT_ISSUER, vec![]);
        let d = i.openid_configuration();
        assert_eq!(d["jwks_uri"], "https://kubernetes.default.svc.cluster.local/openid/v1/jwks");
        assert_eq!(i.jwks()["keys"][0]["kid"], a.kid.as_str());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
