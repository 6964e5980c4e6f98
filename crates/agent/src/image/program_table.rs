//! The image table: what program a container runs when there is no container engine. Images with
//! an explicit `command` run it from the host filesystem; well-known images map to built-in
//! programs or host binaries; the table is extendable from a file. It is the node's
//! [`ImageService`].

use std::path::{Path, PathBuf};

use super::{find_in_path, repository, ImageError, ImageRequest, ImageService, Program, ResolvedImage};

/// One extra table entry: an image prefix and the argv it runs (container args are appended).
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub prefix: String,
    pub argv: Vec<String>,
}

/// The resolved mapping state shared by all pods of a node.
#[derive(Clone, Debug)]
pub struct ImageTable {
    /// Executable that understands `builtin <name> [args]` (normally `/proc/self/exe`).
    pub exe: PathBuf,
    /// Where busybox applet links and per-pod nginx configs live.
    pub state_dir: PathBuf,
    pub extra: Vec<Entry>,
}

/// Parse an image table file: one entry per line, `<image prefix> <argv...>` (whitespace
/// separated, `#` comments), e.g. `docker.io/library/redis redis-server --port 6379`.
pub fn parse_table(text: &str) -> Vec<Entry> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(str::to_string);
            let prefix = f.next()?;
            let argv: Vec<String> = f.collect();
            (!argv.is_empty()).then_some(Entry { prefix, argv })
        })
        .collect()
}

fn is_busybox(repo: &str) -> bool {
    let last = repo.rsplit('/').next().unwrap_or(repo);
    last.starts_with("busybox")
}

fn is_nginx(repo: &str) -> bool {
    let last = repo.rsplit('/').next().unwrap_or(repo);
    last.starts_with("nginx")
}

/// The first line a program prints about its version (`busybox`, `nginx -v`), once per path.
fn version_line(prog: &Path, args: &[&str]) -> Option<String> {
    static CACHE: std::sync::Mutex<Vec<(PathBuf, Option<String>)>> = std::sync::Mutex::new(Vec::new());
    let mut c = CACHE.lock().ok()?;
    if let Some((_, v)) = c.iter().find(|(p, _)| p == prog) {
        return v.clone();
    }
    let v = std::process::Command::new(prog).args(args).output().ok().and_then(|o| {
        let text = [o.stdout, o.stderr].concat();
        String::from_utf8_lossy(&text).lines().next().map(|l| l.trim().to_string()).filter(|l| !l.is_empty())
    });
    c.push((prog.to_path_buf(), v.clone()));
    v
}

impl ImageTable {
    pub fn busybox_dir(&self) -> PathBuf {
        self.state_dir.join("busybox-bin")
    }

    /// Create the busybox applet directory (idempotent).
    pub fn ensure_busybox(&self) -> std::io::Result<PathBuf> {
        let dir = self.busybox_dir();
        if dir.join("sh").exists() {
            self.ensure_wget(&dir)?;
            return Ok(dir);
        }
        std::fs::create_dir_all(&dir)?;
        let bb = find_in_path("busybox", &std::env::var("PATH").unwrap_or_default())
            .ok_or_else(|| std::io::Error::other("busybox not found on the host"))?;
        let out = std::process::Command::new(&bb).arg("--list").output()?;
        for applet in String::from_utf8_lossy(&out.stdout).lines() {
            let applet = applet.trim();
            if applet.is_empty() || applet.contains('/') {
                continue;
            }
            let link = dir.join(applet);
            if !link.exists() {
                let _ = std::os::unix::fs::symlink(&bb, &link);
            }
        }
        self.ensure_wget(&dir)?;
        Ok(dir)
    }

    /// Applets that are Yard's rather than the host busybox's: `wget` (Debian's busybox 1.35 wget
    /// dies with SIGSEGV on `-T SEC`, see [`crate::wget`]) and `nc` for `-z`/`-v` (Debian builds
    /// the small nc, see [`crate::nc`]). A small script in the applet directory execs the agent's
    /// binary by its real path (`/proc/self/exe` would name the shell).
    fn ensure_wget(&self, dir: &Path) -> std::io::Result<()> {
        let exe = std::fs::canonicalize(&self.exe).unwrap_or_else(|_| self.exe.clone());
        let quoted = exe.to_string_lossy().replace('\'', "'\\''");
        for applet in ["wget", "nc"] {
            let script = format!("#!/bin/sh\nexec '{quoted}' builtin {applet} \"$@\"\n");
            let path = dir.join(applet);
            if std::fs::read_to_string(&path).ok().as_deref() == Some(script.as_str()) {
                continue;
            }
            // Write beside and rename: a pod may be running the old one right now.
            let tmp = dir.join(format!(".{applet}.{}", std::process::id()));
            std::fs::write(&tmp, &script)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(())
    }

    fn builtin(&self, name: &str, args: &[String]) -> Program {
        let mut argv = vec![self.exe.to_string_lossy().into_owned(), "builtin".into(), name.into()];
        argv.extend(args.iter().cloned());
        Program { argv, path_prefix: None, binds: vec![] }
    }

    /// What really runs for `program`, for the events: a built-in of this binary, the host's
    /// busybox or nginx with its version, or a host program by path.
    pub fn describe(&self, program: &Program, env_path: &str) -> String {
        let argv0 = program.argv.first().map(String::as_str).unwrap_or("");
        if Path::new(argv0) == self.exe && program.argv.get(1).map(String::as_str) == Some("builtin") {
            let name = program.argv.get(2).map(String::as_str).unwrap_or("");
            return format!("Yard's built-in {name} (no image content)");
        }
        let Some(path) = find_in_path(argv0, env_path).filter(|p| p.exists()) else {
            return format!("the host program {argv0:?}");
        };
        let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        let name = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let version = match name.as_str() {
            "busybox" => version_line(&real, &[]).map(|l| l.split(" multi-call").next().unwrap_or(&l).to_string()),
            "nginx" => version_line(&real, &["-v"]).map(|l| l.trim_start_matches("nginx version: ").to_string()),
            _ => None,
        };
        match version {
            Some(v) => format!("the host's {v} ({})", real.display()),
            None => format!("the host program {}", real.display()),
        }
    }

    /// Decide what to run. `pod_dir` is a per-pod directory for generated config.
    pub fn program(
        &self,
        image: &str,
        command: &[String],
        args: &[String],
        container: &str,
        pod_dir: &Path,
    ) -> Result<Program, ImageError> {
        let repo = repository(image);
        let busybox = is_busybox(&repo);
        let path_prefix = if busybox { self.ensure_busybox().ok() } else { None };
        if !command.is_empty() {
            let mut argv = command.to_vec();
            argv.extend(args.iter().cloned());
            return Ok(Program { argv, path_prefix, binds: vec![] });
        }
        for e in &self.extra {
            if image.starts_with(&e.prefix) || repo.starts_with(&e.prefix) {
                let mut argv = e.argv.clone();
                argv.extend(args.iter().cloned());
                return Ok(Program { argv, path_prefix, binds: vec![] });
            }
        }
        let last = repo.rsplit('/').next().unwrap_or(&repo);
        if last == "serve_hostname" || last == "serve-hostname" {
            return Ok(self.builtin("serve_hostname", args));
        }
        if last == "pause" {
            return Ok(self.builtin("pause", &[]));
        }
        if last == "agnhost" {
            let sub = args.first().map(String::as_str).unwrap_or("");
            return match sub {
                "netexec" | "pause" => Ok(self.builtin(sub, &args[1..])),
                "serve-hostname" => Ok(self.builtin("serve_hostname", &args[1..])),
                _ => Err(ImageError::Unavailable(format!("agnhost subcommand {sub:?} is not available"))),
            };
        }
        if busybox {
            let argv = if args.is_empty() { vec!["sh".to_string()] } else { args.to_vec() };
            return Ok(Program { argv, path_prefix, binds: vec![] });
        }
        if is_nginx(&repo) {
            let dir = pod_dir.join(format!("nginx-{container}"));
            write_nginx_conf(&dir).map_err(|e| ImageError::Unavailable(format!("nginx config: {e}")))?;
            let mut argv = vec![
                "nginx".to_string(),
                "-p".into(),
                dir.to_string_lossy().into_owned(),
                "-c".into(),
                dir.join("nginx.conf").to_string_lossy().into_owned(),
            ];
            if args.is_empty() {
                argv.extend(["-g".to_string(), "daemon off;".to_string()]);
            } else {
                argv.extend(args.iter().cloned());
            }
            // The generated prefix at its own path, and its html directory where the image has it.
            let binds = vec![
                crate::sandbox::rootfs::Bind { host: dir.clone(), inner: dir.clone(), read_only: false },
                crate::sandbox::rootfs::Bind {
                    host: dir.join("html"),
                    inner: PathBuf::from(NGINX_HTML),
                    read_only: false,
                },
            ];
            return Ok(Program { argv, path_prefix: None, binds });
        }
        Err(ImageError::Unavailable(format!("image {image:?} has no local mapping and no command")))
    }
}

/// Where the nginx image serves from.
const NGINX_HTML: &str = "/usr/share/nginx/html";

fn write_nginx_conf(dir: &Path) -> std::io::Result<()> {
    let html = dir.join("html");
    std::fs::create_dir_all(&html)?;
    for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(dir.join("tmp").join(t))?;
    }
    let index = ["/usr/share/nginx/html/index.html", "/var/www/html/index.nginx-debian.html"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_else(|| {
            "<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n<body>\n<h1>Welcome to nginx!</h1>\n</body>\n</html>\n"
                .to_string()
        });
    std::fs::write(html.join("index.html"), index)?;
    let d = dir.display();
    let conf = format!(
        "user root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log /dev/stderr notice;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n  access_log /dev/stdout;\n\
         \x20 client_body_temp_path {d}/tmp/client_body;\n  proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n\
         \x20 uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
         \x20 server {{\n    listen 80;\n    listen [::]:80;\n    server_name localhost;\n\
         \x20   location / {{ root {NGINX_HTML}; index index.html index.htm; }}\n  }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf)
}

impl ImageService for ImageTable {
    fn resolve(&self, req: &ImageRequest<'_>) -> Result<ResolvedImage, ImageError> {
        let program = self.program(req.image, req.command, req.args, req.container, req.pod_dir)?;
        let path = match &program.path_prefix {
            Some(pre) => format!("{}:{}", pre.display(), req.env_path),
            None => req.env_path.to_string(),
        };
        let description = self.describe(&program, &path);
        Ok(ResolvedImage { program, description })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let dir = std::env::temp_dir().join(format!("yard-agent-img-{}", std::process::id()));
        let t = ImageTable {
            exe: "/bin/yard".into(),
            state_dir: dir.clone(),
            extra: parse_table("# comment\nexample.com/redis redis-server --port 6379\n"),
        };
        let pd = dir.join("pod");
        let p = t.program("k8s.gcr.io/serve_hostname:1.1", &[], &[], "c", &pd).unwrap();
        assert_eq!(p.argv, vec!["/bin/yard", "builtin", "serve_hostname"]);
        let p = t
            .program(
                "registry.k8s.io/e2e-test-images/agnhost:2.40",
                &[],
                &["netexec".into(), "--http-port=8080".into()],
                "c",
                &pd,
            )
            .unwrap();
        assert_eq!(p.argv, vec!["/bin/yard", "builtin", "netexec", "--http-port=8080"]);
        let p = t.program("example.com/redis:7", &[], &[], "c", &pd).unwrap();
        assert_eq!(p.argv, vec!["redis-server", "--port", "6379"]);
        let p = t.program("busybox:1.36", &[], &[], "c", &pd).unwrap();
        assert_eq!(p.argv, vec!["sh"]);
        let bb = p.path_prefix.unwrap();
        assert!(bb.join("nslookup").exists());
        // wget is Yard's, not the host busybox's (which crashes on -T).
        let w = std::fs::read_to_string(bb.join("wget")).unwrap();
        assert_eq!(w, "#!/bin/sh\nexec '/bin/yard' builtin wget \"$@\"\n");
        let p = t.program("nginx:1.25", &[], &[], "web", &pd).unwrap();
        assert_eq!(p.argv[0], "nginx");
        assert!(pd.join("nginx-web/nginx.conf").exists());
        assert!(t.program("quay.io/unknown/thing:1", &[], &[], "c", &pd).is_err());
        let p = t.program("quay.io/unknown/thing:1", &["/bin/true".into()], &["x".into()], "c", &pd).unwrap();
        assert_eq!(p.argv, vec!["/bin/true", "x"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn service() {
        let dir = std::env::temp_dir().join(format!("yard-agent-imgsvc-{}", std::process::id()));
        let t = ImageTable { exe: "/bin/yard".into(), state_dir: dir.clone(), extra: vec![] };
        let svc: &dyn ImageService = &t;
        let pd = dir.join("pod");
        fn req<'a>(image: &'a str, command: &'a [String], pod_dir: &'a Path) -> ImageRequest<'a> {
            ImageRequest { image, command, args: &[], container: "c", pod_dir, env_path: "/usr/bin:/bin" }
        }
        let r = svc.resolve(&req("registry.k8s.io/pause:3.9", &[], &pd)).unwrap();
        assert_eq!(r.program.argv, vec!["/bin/yard", "builtin", "pause"]);
        assert_eq!(r.description, "Yard's built-in pause (no image content)");
        let e = svc.resolve(&req("quay.io/unknown/thing:1", &[], &pd)).unwrap_err();
        assert_eq!(e.to_string(), "image \"quay.io/unknown/thing:1\" has no local mapping and no command");
        let missing = ["/nonexistent/prog".to_string()];
        let r = svc.resolve(&req("quay.io/unknown/thing:1", &missing, &pd)).unwrap();
        assert_eq!(r.description, "the host program \"/nonexistent/prog\"");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
