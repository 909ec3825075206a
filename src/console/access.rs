//! Who may see the console. The console shows ticket text, which is sensitive: it is open
//! without a login only when runlink listens on loopback (whoever reaches it is on the
//! host), needs `server.ui_token` otherwise, and is off entirely with `server.ui = false`.
//! A login sets a signed, expiring, HttpOnly and SameSite=Strict cookie that any replica with
//! the same token accepts; every state-changing form carries a CSRF token bound to it.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::Secret;

pub(crate) const COOKIE: &str = "runlink_ui";

/// How long a login lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, Clone)]
pub(crate) enum Access {
    /// Loopback, no token: no login. CSRF tokens are signed with a key of this process.
    Open { key: Vec<u8> },
    /// A login with the token.
    Token { token: Secret },
}

impl Access {
    /// The console's access for this configuration, or why it is off.
    pub(crate) fn from_config(config: &crate::config::Config) -> Result<Access, &'static str> {
        if !config.ui {
            return Err("server.ui = false");
        }
        match &config.ui_token {
            Some(token) => Ok(Access::Token {
                token: token.clone(),
            }),
            None if config.listen.ip().is_loopback() => Ok(Access::Open {
                key: rand::random::<[u8; 32]>().to_vec(),
            }),
            None => Err("runlink listens beyond loopback and server.ui_token is not set"),
        }
    }

    fn key(&self) -> &[u8] {
        match self {
            Access::Open { key } => key,
            Access::Token { token } => token.expose().as_bytes(),
        }
    }

    fn sign(&self, what: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.key()).expect("any key");
        mac.update(what.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    pub(crate) fn needs_login(&self) -> bool {
        matches!(self, Access::Token { .. })
    }

    /// Whether `token` is the console token (a login attempt).
    pub(crate) fn accepts(&self, token: &str) -> bool {
        match self {
            Access::Open { .. } => true,
            Access::Token { token: expected } => {
                crate::ingest::constant_time_eq(token.as_bytes(), expected.expose().as_bytes())
            }
        }
    }

    /// A fresh session cookie value: its expiry and a signature over it.
    pub(crate) fn session(&self, now_ms: i64) -> String {
        let expires = now_ms + SESSION.as_millis() as i64;
        format!("{expires}.{}", self.sign(&format!("session:{expires}")))
    }

    /// Whether a cookie value is a session this key signed that has not expired.
    pub(crate) fn valid_session(&self, value: &str, now_ms: i64) -> bool {
        let Some((expires, signature)) = value.split_once('.') else {
            return false;
        };
        let Ok(at) = expires.parse::<i64>() else {
            return false;
        };
        at > now_ms
            && crate::ingest::constant_time_eq(
                signature.as_bytes(),
                self.sign(&format!("session:{expires}")).as_bytes(),
            )
    }

    /// The CSRF token of a session (`""` when there is no login).
    pub(crate) fn csrf(&self, session: &str) -> String {
        self.sign(&format!("csrf:{session}"))
    }

    pub(crate) fn valid_csrf(&self, session: &str, given: &str) -> bool {
        crate::ingest::constant_time_eq(given.as_bytes(), self.csrf(session).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> crate::config::Config {
        crate::config::Config::from_toml_layers(&[extra]).unwrap()
    }

    #[test]
    fn open_on_loopback_token_elsewhere_off_on_request() {
        assert!(matches!(
            Access::from_config(&config("[server]\nlisten = \"127.0.0.1:0\"\n")),
            Ok(Access::Open { .. })
        ));
        assert!(Access::from_config(&config("[server]\nlisten = \"0.0.0.0:8080\"\n")).is_err());
        assert!(matches!(
            Access::from_config(&config(
                "[server]\nlisten = \"0.0.0.0:8080\"\nui_token = \"t\"\n"
            )),
            Ok(Access::Token { .. })
        ));
        assert!(Access::from_config(&config("[server]\nui = false\n")).is_err());
    }

    #[test]
    fn sessions_expire_and_only_this_key_signs_them() {
        let access = Access::Token {
            token: Secret::new("t0k"),
        };
        let session = access.session(1_000);
        assert!(access.valid_session(&session, 2_000));
        assert!(!access.valid_session(&session, 1_000 + SESSION.as_millis() as i64 + 1));
        let other = Access::Token {
            token: Secret::new("other"),
        };
        assert!(!other.valid_session(&session, 2_000));
        let forged = format!("9999999999999.{}", session.split_once('.').unwrap().1);
        assert!(!access.valid_session(&forged, 2_000));
        assert!(access.valid_csrf(&session, &access.csrf(&session)));
        assert!(!access.valid_csrf(&session, &access.csrf("another session")));
        assert!(access.accepts("t0k") && !access.accepts("t0"));
    }
}
