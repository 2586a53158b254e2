//! What a trigger's action may use: HTTP destinations and secret names.
//!
//! An HTTP grant is `[scheme://]host[:port][/path-prefix]`: scheme `https` when
//! omitted, the scheme's default port when omitted, `*.example.com` for any
//! subdomain (not `example.com` itself), and a path prefix that matches on
//! segment boundaries (`/api` allows `/api` and `/api/x`, not `/apix`).

use std::fmt;

/// Everything granted to one action.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Allowed HTTP destinations.
    pub http: Vec<HttpGrant>,
    /// Secret names the guest may read.
    pub secrets: Vec<String>,
    /// Kubernetes API calls the guest may make.
    pub kube: Vec<KubeGrant>,
}

/// A verb of the `kube` capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KubeVerb {
    /// Read one object.
    Get,
    /// List objects.
    List,
    /// Create an object.
    Create,
    /// Server-side apply.
    Apply,
    /// Patch an object.
    Patch,
    /// Delete an object.
    Delete,
}

impl KubeVerb {
    /// Name as in config.
    pub fn name(self) -> &'static str {
        match self {
            KubeVerb::Get => "get",
            KubeVerb::List => "list",
            KubeVerb::Create => "create",
            KubeVerb::Apply => "apply",
            KubeVerb::Patch => "patch",
            KubeVerb::Delete => "delete",
        }
    }
}

/// One `grants.kube` entry: verbs on a kind, in namespaces, optionally on names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeGrant {
    /// Allowed verbs.
    pub verbs: Vec<KubeVerb>,
    /// `v1`, `apps/v1`, ...
    pub api_version: String,
    /// `Deployment`, ...
    pub kind: String,
    /// Namespaces; `*` allows all; empty allows only cluster-scoped calls.
    pub namespaces: Vec<String>,
    /// Object names; empty allows any (and `list`; a names-limited grant does not allow `list`).
    pub names: Vec<String>,
}

impl KubeGrant {
    /// Whether this grant allows `verb` on `api_version`/`kind` in `namespace` for `name`.
    pub fn allows(
        &self,
        verb: KubeVerb,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> bool {
        let ns_ok = match namespace {
            None => self.namespaces.is_empty(),
            Some(ns) => self.namespaces.iter().any(|n| n == "*" || n == ns),
        };
        let name_ok = match name {
            _ if self.names.is_empty() => true,
            None => false,
            Some(n) => self.names.iter().any(|g| g == n),
        };
        self.verbs.contains(&verb)
            && self.api_version == api_version
            && self.kind == kind
            && ns_ok
            && name_ok
    }
}

/// Host part of an HTTP grant.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// Any subdomain of this domain.
    Subdomains(String),
}

/// One allowed HTTP destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpGrant {
    scheme: String,
    host: HostPattern,
    port: u16,
    path_prefix: String,
    text: String,
    /// Whether a host name may resolve to loopback or link-local addresses
    /// (`allowInternal: true`); an IP-literal grant names its address itself.
    internal: bool,
}

impl fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl HttpGrant {
    /// Parses a grant, explaining what was expected on error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let fail = |why: &str| {
            format!(
                "invalid HTTP grant `{text}`: {why}; expected [scheme://]host[:port][/path], like https://hooks.example.com, *.example.com or http://127.0.0.1:8080/api"
            )
        };
        let trimmed = text.trim();
        let (scheme, rest) = match trimmed.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("https".to_string(), trimmed),
        };
        if scheme != "http" && scheme != "https" {
            return Err(fail(&format!("scheme `{scheme}` is not http or https")));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(fail("a path prefix cannot hold a query or fragment"));
        }
        let (host, port) = split_host_port(authority).map_err(|why| fail(&why))?;
        let host = host.to_ascii_lowercase();
        let host = if let Some(domain) = host.strip_prefix("*.") {
            check_hostname(domain).map_err(|why| fail(&why))?;
            HostPattern::Subdomains(domain.to_string())
        } else if host.contains('*') {
            return Err(fail(
                "`*` is only allowed as a leading `*.` label (a lone `*` would allow every host)",
            ));
        } else {
            check_hostname(&host).map_err(|why| fail(&why))?;
            HostPattern::Exact(host)
        };
        let port = match port {
            Some(p) => p,
            None if scheme == "http" => 80,
            None => 443,
        };
        Ok(HttpGrant {
            scheme,
            host,
            port,
            path_prefix: path.trim_end_matches('/').to_string(),
            text: trimmed.to_string(),
            internal: false,
        })
    }

    /// The grant with `allowInternal` set as given.
    pub fn allowing_internal(mut self, internal: bool) -> Self {
        self.internal = internal;
        self
    }

    /// Whether the host name may resolve to internal addresses.
    pub fn allows_internal(&self) -> bool {
        self.internal
    }

    /// Whether everything this grant allows, `other` allows too (policy
    /// coverage: a Trigger object's grant must fall inside the operator's).
    pub fn within(&self, other: &HttpGrant) -> bool {
        let host_ok = match (&self.host, &other.host) {
            (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
            (HostPattern::Exact(a), HostPattern::Subdomains(d)) => {
                a.len() > d.len() + 1 && a.ends_with(&format!(".{d}"))
            }
            (HostPattern::Subdomains(a), HostPattern::Subdomains(d)) => {
                a == d || a.ends_with(&format!(".{d}"))
            }
            (HostPattern::Subdomains(_), HostPattern::Exact(_)) => false,
        };
        let path_ok = other.path_prefix.is_empty()
            || self.path_prefix == other.path_prefix
            || self
                .path_prefix
                .strip_prefix(&other.path_prefix)
                .is_some_and(|rest| rest.starts_with('/'));
        self.scheme == other.scheme
            && self.port == other.port
            && host_ok
            && path_ok
            && (!self.internal || other.internal)
    }

    /// Whether a URL falls under this grant.
    pub fn allows(&self, url: &url::Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let host_ok = match &self.host {
            HostPattern::Exact(h) => *h == host,
            HostPattern::Subdomains(d) => {
                host.len() > d.len() + 1 && host.ends_with(&format!(".{d}"))
            }
        };
        let path = url.path();
        let path_ok = self.path_prefix.is_empty()
            || path == self.path_prefix
            || path
                .strip_prefix(&self.path_prefix)
                .is_some_and(|rest| rest.starts_with('/'));
        url.scheme() == self.scheme
            && host_ok
            && url.port_or_known_default() == Some(self.port)
            && path_ok
    }
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    if authority.is_empty() {
        return Err("no host".into());
    }
    if authority.contains('@') {
        return Err("credentials do not belong in a grant".into());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        // An IPv6 literal: [::1]:8080
        let (addr, after) = rest
            .split_once(']')
            .ok_or("unclosed `[` in an IPv6 address")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected `:port` after `]`")?),
        };
        addr.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("`{addr}` is not an IPv6 address"))?;
        (format!("[{addr}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{p}` is not a port (1-65535)"))?,
        ),
    };
    Ok((host, port))
}

fn check_hostname(host: &str) -> Result<(), String> {
    if host.starts_with('[') {
        return Ok(()); // validated as IPv6 above
    }
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{host}` is not a valid host name"))
    }
}

impl KubeGrant {
    /// Whether everything this grant allows, `other` allows too.
    pub fn within(&self, other: &KubeGrant) -> bool {
        let verbs_ok = self.verbs.iter().all(|v| other.verbs.contains(v));
        let ns_ok = if other.namespaces.iter().any(|n| n == "*") {
            true
        } else if self.namespaces.is_empty() {
            other.namespaces.is_empty()
        } else {
            self.namespaces
                .iter()
                .all(|n| n != "*" && other.namespaces.contains(n))
        };
        let names_ok = other.names.is_empty()
            || (!self.names.is_empty() && self.names.iter().all(|n| other.names.contains(n)));
        self.api_version == other.api_version
            && self.kind == other.kind
            && verbs_ok
            && ns_ok
            && names_ok
    }
}

/// Checks a namespace: a DNS-1123 label (lowercase letters, digits, `-`).
pub fn check_namespace(ns: &str) -> Result<(), String> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid namespace `{}`: expected up to 63 lowercase letters, digits and `-`",
            shown(ns)
        ))
    }
}

/// Checks an object name as the API server would before it is put into a
/// request path: not `.` or `..`, no `/`, `%`, `?`, `#`, whitespace or
/// control characters, at most 253 bytes.
pub fn check_object_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && !name.contains("..")
        && !name.chars().any(|c| {
            matches!(c, '/' | '%' | '?' | '#' | '\\') || c.is_whitespace() || c.is_control()
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid object name `{}`: expected a Kubernetes name (no `/`, `%`, `?`, `#`, `..` or spaces)",
            shown(name)
        ))
    }
}

/// Checks a label selector (`a=b,c!=d,e in (f,g),h notin (i),j,!k`): keys
/// are qualified names, values label values.
pub fn check_label_selector(selector: &str) -> Result<(), String> {
    let fail = |why: &str| {
        format!(
            "invalid label selector `{}`: {why}; expected e.g. app=web,tier in (a,b),!canary",
            shown(selector)
        )
    };
    if selector.len() > 4096 {
        return Err(fail("longer than 4096 bytes"));
    }
    let mut rest = selector.trim();
    while !rest.is_empty() {
        // One requirement, up to the next comma outside parentheses.
        let end = {
            let mut depth = 0i32;
            rest.char_indices()
                .find(|(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    *c == ',' && depth == 0
                })
                .map_or(rest.len(), |(i, _)| i)
        };
        let req = rest[..end].trim();
        rest = rest.get(end + 1..).unwrap_or("").trim_start();
        if req.is_empty() {
            return Err(fail("an empty requirement"));
        }
        let words: Vec<&str> = req.split_whitespace().collect();
        let (key, values): (&str, Vec<&str>) = if let Some(key) = req.strip_prefix('!') {
            (key.trim(), Vec::new())
        } else if let Some((k, v)) = req
            .split_once("!=")
            .or_else(|| req.split_once("=="))
            .or_else(|| req.split_once('='))
        {
            (k.trim(), vec![v.trim()])
        } else if words.len() >= 2 && (words[1] == "in" || words[1] == "notin") {
            let set = req[req.find('(').ok_or_else(|| fail("`in` needs (values)"))?..].trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| fail("`in` needs (values)"))?;
            (words[0], inner.split(',').map(str::trim).collect())
        } else {
            (req, Vec::new())
        };
        if !label_key(key) {
            return Err(fail(&format!("`{}` is not a label key", shown(key))));
        }
        if let Some(bad) = values.iter().find(|v| !label_value(v)) {
            return Err(fail(&format!("`{}` is not a label value", shown(bad))));
        }
    }
    Ok(())
}

fn label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    }) && !name.is_empty()
        && label_value(name)
}

fn label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && (value.is_empty()
            || (value.starts_with(|c: char| c.is_ascii_alphanumeric())
                && value.ends_with(|c: char| c.is_ascii_alphanumeric())))
}

/// A guest-given string as quoted in an error: short, with control characters escaped.
fn shown(text: &str) -> String {
    let cut: String = text.chars().take(80).collect();
    let escaped = cut.escape_debug().to_string();
    if cut.len() < text.len() {
        format!("{escaped}…")
    } else {
        escaped
    }
}

/// Checks a secret name: what Kubernetes allows as a Secret key.
pub fn check_secret_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid secret name `{name}`: expected letters, digits, `-`, `_` or `.`, not starting with `.`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(grant: &str, url: &str) -> bool {
        HttpGrant::parse(grant)
            .unwrap()
            .allows(&url::Url::parse(url).unwrap())
    }

    #[test]
    fn scheme_host_and_port_must_match() {
        assert!(allows("hooks.example.com", "https://hooks.example.com/x"));
        assert!(allows(
            "hooks.example.com",
            "https://HOOKS.example.com:443/"
        ));
        assert!(!allows("hooks.example.com", "http://hooks.example.com/x"));
        assert!(!allows(
            "hooks.example.com",
            "https://hooks.example.com:8443/x"
        ));
        assert!(!allows(
            "hooks.example.com",
            "https://evil.com/?hooks.example.com"
        ));
        assert!(allows(
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/a?b=c"
        ));
        assert!(!allows("http://127.0.0.1:8080", "http://127.0.0.1:8081/"));
        assert!(allows("http://[::1]:9000", "http://[::1]:9000/"));
    }

    #[test]
    fn wildcards_cover_subdomains_only() {
        assert!(allows("*.example.com", "https://a.example.com/"));
        assert!(allows("*.example.com", "https://a.b.example.com/"));
        assert!(!allows("*.example.com", "https://example.com/"));
        assert!(!allows("*.example.com", "https://badexample.com/"));
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        assert!(allows(
            "https://api.example.com/v1",
            "https://api.example.com/v1"
        ));
        assert!(allows(
            "https://api.example.com/v1/",
            "https://api.example.com/v1/users"
        ));
        assert!(!allows(
            "https://api.example.com/v1",
            "https://api.example.com/v10"
        ));
        assert!(!allows(
            "https://api.example.com/v1",
            "https://api.example.com/v2/x"
        ));
    }

    #[test]
    fn malformed_grants_are_explained() {
        for (bad, why) in [
            ("ftp://x.com", "scheme `ftp`"),
            ("*", "lone `*`"),
            ("foo*.com", "lone `*`"),
            ("https://", "no host"),
            ("exa mple.com", "not a valid host name"),
            ("x.com:99999", "not a port"),
            ("x.com/path?q=1", "query or fragment"),
            ("user:pw@x.com", "credentials"),
            ("[::zz]:80", "not an IPv6 address"),
        ] {
            let e = HttpGrant::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn secret_names_follow_kubernetes_keys() {
        assert!(check_secret_name("slack-token").is_ok());
        assert!(check_secret_name("a.b_c").is_ok());
        assert!(check_secret_name("..data").is_err());
        assert!(check_secret_name("a/b").is_err());
        assert!(check_secret_name("").is_err());
    }
}
