//! The API server's identity: a CA and a serving certificate generated into the data dir on first
//! start, a bearer token, and the kubeconfig that carries both to clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::Error;

/// Everything a server or client needs to trust this cluster.
#[derive(Clone)]
pub struct Identity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub token: String,
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Setup(format!("{}: {e}", path.display()))
}

fn read(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

fn write_private(path: &Path, data: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    f.write_all(data.as_bytes()).map_err(|e| io_err(path, e))
}

/// The CA's parameters; the issuer is rebuilt from these and the stored key on every start.
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, "yard-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2035, 1, 1);
    Ok(params)
}

/// Load the identity from `dir/pki`, generating it on first start. `sans` are the extra names and
/// addresses the serving certificate must carry (127.0.0.1, localhost and the service IP always are).
pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<Identity, Error> {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).map_err(|e| io_err(&pki, e))?;
    let p = |n: &str| -> PathBuf { pki.join(n) };
    let rc = |e: rcgen::Error| Error::Setup(format!("certificate generation: {e}"));
    let (ca_pem, ca_key_pem) = match (read(&p("ca.crt"))?, read(&p("ca.key"))?) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let key = KeyPair::generate().map_err(rc)?;
            let params = ca_params().map_err(rc)?;
            let cert = params.self_signed(&key).map_err(rc)?;
            let (c, k) = (cert.pem(), key.serialize_pem());
            write_private(&p("ca.key"), &k)?;
            write_private(&p("ca.crt"), &c)?;
            (c, k)
        }
    };
    let mut want: Vec<String> = vec![
        "127.0.0.1".into(),
        "localhost".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
    ];
    for s in sans {
        if !want.contains(s) {
            want.push(s.clone());
        }
    }
    let sans_file = p("server.sans");
    let existing_sans = read(&sans_file)?.unwrap_or_default();
    let (cert_pem, key_pem) = match (read(&p("server.crt"))?, read(&p("server.key"))?) {
        (Some(c), Some(k)) if existing_sans == want.join(",") => (c, k),
        _ => {
            let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(rc)?;
            let issuer = Issuer::new(ca_params().map_err(rc)?, ca_key);
            let key = KeyPair::generate().map_err(rc)?;
            let mut params = CertificateParams::new(want.clone()).map_err(rc)?;
            params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
            params.not_before = rcgen::date_time_ymd(2025, 1, 1);
            params.not_after = rcgen::date_time_ymd(2035, 1, 1);
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            let cert = params.signed_by(&key, &issuer).map_err(rc)?;
            let (c, k) = (cert.pem(), key.serialize_pem());
            write_private(&p("server.key"), &k)?;
            write_private(&p("server.crt"), &c)?;
            write_private(&sans_file, &want.join(","))?;
            (c, k)
        }
    };
    let token = match read(&p("token"))? {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let bytes: [u8; 24] = rand::random();
            let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            write_private(&p("token"), &t)?;
            t
        }
    };
    Ok(Identity { ca_pem, cert_pem, key_pem, token })
}

/// A rustls server config for the serving certificate, offering HTTP/2 and HTTP/1.1.
pub fn server_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>, Error> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut id.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Setup(format!("serving cert: {e}")))?;
    let key = rustls_pemfile::private_key(&mut id.key_pem.as_bytes())
        .map_err(|e| Error::Setup(format!("serving key: {e}")))?
        .ok_or_else(|| Error::Setup("serving key: none in PEM".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Setup(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Setup(format!("tls: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The kubeconfig text for `server` (e.g. `https://127.0.0.1:6443`), cluster/context named `name`.
pub fn kubeconfig(id: &Identity, server: &str, name: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(id.ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: {name}\n  context:\n    cluster: {name}\n    user: {name}-admin\n    namespace: default\ncurrent-context: {name}\nusers:\n- name: {name}-admin\n  user:\n    token: {token}\npreferences: {{}}\n",
        token = id.token
    )
}

/// Write the kubeconfig atomically (write then rename) with mode 0600.
pub fn write_kubeconfig(path: &Path, text: &str) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    write_private(&tmp, text)?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}
