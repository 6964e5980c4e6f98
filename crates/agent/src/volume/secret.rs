//! `secret` volumes: the keys of a Secret as files (also a source of `projected`).

use k8s_openapi::api::core::v1::{KeyToPath, Volume};

use super::files::object_files;
use super::{atomic, Ctx, Objects, VolumeError, VolumePlugin};

pub(super) struct Secret;

impl VolumePlugin for Secret {
    fn name(&self) -> &'static str {
        "secret"
    }

    fn is_of(&self, v: &Volume) -> bool {
        v.secret.is_some()
    }

    fn references(&self, v: &Volume, _config_maps: &mut Vec<String>, secrets: &mut Vec<String>) {
        if let Some(s) = &v.secret {
            secrets.extend(s.secret_name.clone());
        }
    }

    fn refreshes(&self) -> bool {
        true
    }

    fn files(&self, ctx: &Ctx, v: &Volume) -> Option<Result<atomic::Payload, VolumeError>> {
        let s = v.secret.as_ref()?;
        let name = s.secret_name.clone().unwrap_or_default();
        let mut out = atomic::Payload::new();
        let res = secret_files(ctx.objects, &name, s.items.as_ref(), s.optional, s.default_mode, &mut out);
        Some(res.map(|()| out).map_err(VolumeError))
    }
}

fn secret_missing_key(k: &str) -> String {
    format!("references non-existent secret key: {k}")
}

pub(super) fn secret_files(
    objs: &Objects,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    optional: Option<bool>,
    mode: Option<i32>,
    out: &mut atomic::Payload,
) -> Result<(), String> {
    let found = objs.secrets.get(name).cloned().flatten();
    object_files(found, &format!("secret {name:?}"), items, optional, mode, &secret_missing_key, out)
}
