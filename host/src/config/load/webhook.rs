//! `type: webhook` sources: authentication, copied headers, the body cap.

use std::path::Path;

use super::super::schema::{AuthSpec, WebhookSpec};
use super::super::*;
use super::Loader;
use super::engine::out_of_bounds;
use crate::config::grants::check_secret_name;

impl Loader<'_> {
    pub(super) fn webhook(
        &mut self,
        file: &Path,
        label: &str,
        spec: WebhookSpec,
    ) -> Option<WebhookConfig> {
        let before = self.errors.len();
        let auth = match spec.auth {
            None => {
                let message = "a webhook needs `auth`: `{bearer: {secret: NAME}}`, `{hmac: {secret: NAME}}`, or `none` to accept anyone".to_string();
                self.error(file, Some(label), Some("source.auth"), message);
                WebhookAuth::None
            }
            Some(AuthSpec::None) => WebhookAuth::None,
            Some(AuthSpec::Bearer { secret }) => {
                if let Err(message) = check_secret_name(&secret) {
                    self.error(
                        file,
                        Some(label),
                        Some("source.auth.bearer.secret"),
                        message,
                    );
                }
                WebhookAuth::Bearer { secret }
            }
            Some(AuthSpec::Hmac {
                secret,
                header,
                prefix,
            }) => {
                if let Err(message) = check_secret_name(&secret) {
                    self.error(file, Some(label), Some("source.auth.hmac.secret"), message);
                }
                WebhookAuth::Hmac {
                    secret,
                    header: header
                        .unwrap_or_else(|| "x-hub-signature-256".into())
                        .to_ascii_lowercase(),
                    prefix: prefix.unwrap_or_else(|| "sha256=".into()),
                }
            }
        };
        let mut headers = Vec::new();
        for (i, h) in spec.headers.unwrap_or_default().into_iter().enumerate() {
            let lower = h.to_ascii_lowercase();
            let valid = !lower.is_empty()
                && lower
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                let message = format!("`{h}` is not a header name");
                self.error(
                    file,
                    Some(label),
                    Some(&format!("source.headers[{i}]")),
                    message,
                );
            }
            headers.push(h);
        }
        let max_body_bytes = spec.max_body_size.map(|b| b.0).unwrap_or(1 << 20);
        for (field, message) in out_of_bounds(&[(
            "source.maxBodySize".to_string(),
            max_body_bytes,
            1,
            64 << 20,
            " bytes",
        )]) {
            self.error(file, Some(label), Some(&field), message);
        }
        (self.errors.len() == before).then_some(WebhookConfig {
            auth,
            headers,
            max_body_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn auth_is_required_and_bodies_are_bounded() {
        assert_problem(
            &with_source("{ type: webhook }"),
            "source.auth",
            "`none` to accept anyone",
        );
        assert_problem(
            &with_source("{ type: webhook, auth: { bearer: { secret: '../x' } } }"),
            "source.auth.bearer.secret",
            "invalid secret name",
        );
        assert_problem(
            &with_source("{ type: webhook, auth: none, maxBodySize: 1Gi }"),
            "source.maxBodySize",
            "out of range",
        );
        loaded(&with_source(
            "{ type: webhook, auth: { hmac: { secret: gh } }, headers: [X-A] }",
        ));
    }
}
