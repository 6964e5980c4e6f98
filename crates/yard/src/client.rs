//! The one way from a kubeconfig path (or the usual inference: KUBECONFIG, ~/.kube/config,
//! in-cluster) to a `kube::Client`, for every component the binary runs. Each component's client
//! names itself in `User-Agent` as upstream's binaries do (`kube-controller-manager/v...`,
//! `kubelet/v...`): the API server takes a write's field manager from the agent's first token
//! when the request names none, so managedFields say who wrote what.

use std::path::Path;

use anyhow::Context;
use http::{HeaderName, HeaderValue};

/// Upstream's component names, which become the field managers of their writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    ControllerManager,
    Kubelet,
    Proxy,
    Dns,
    /// `yard up` itself (bootstrap objects such as kube-dns).
    Up,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::ControllerManager => "kube-controller-manager",
            Component::Kubelet => "kubelet",
            Component::Proxy => "kube-proxy",
            Component::Dns => "yard-dns",
            Component::Up => "yard-up",
        }
    }

    /// `<name>/v<version> (<os>/<arch>) yard`, the shape of upstream's `<binary>/<version> (<os>/<arch>) kubernetes/<commit>`.
    pub fn user_agent(self) -> String {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        format!("{}/v{} ({}/{arch}) yard", self.name(), env!("CARGO_PKG_VERSION"), std::env::consts::OS)
    }
}

/// The client configuration from `kubeconfig`, or inferred when it is `None`.
pub async fn config(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Config> {
    Ok(match kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).with_context(|| format!("kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context("kubernetes client configuration")?,
    })
}

/// A client for `component` over `config`.
pub fn client(mut config: kube::Config, component: Component) -> anyhow::Result<kube::Client> {
    let ua = HeaderValue::from_str(&component.user_agent()).context("user agent")?;
    config.headers.retain(|(n, _)| n != http::header::USER_AGENT);
    config.headers.push((HeaderName::from_static("user-agent"), ua));
    Ok(kube::Client::try_from(config)?)
}

/// `config` then `client`.
pub async fn client_for(kubeconfig: Option<&Path>, component: Component) -> anyhow::Result<kube::Client> {
    client(config(kubeconfig).await?, component)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_lead_with_upstreams_component_names() {
        let ua = Component::ControllerManager.user_agent();
        assert!(ua.starts_with("kube-controller-manager/v"), "{ua}");
        assert_eq!(ua.split('/').next(), Some("kube-controller-manager"));
        assert_eq!(Component::Kubelet.user_agent().split('/').next(), Some("kubelet"));
        assert!(HeaderValue::from_str(&ua).is_ok());
    }
}
