//! A small token issuer for docker-registry's `auth: token`: it checks Basic
//! credentials and signs ES256 JWTs whose `x5c` header carries a self-signed
//! certificate that the registry trusts through `rootcertbundle`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

pub const SERVICE: &str = "mirror-test-registry";
pub const ISSUER: &str = "mirror-test-issuer";

pub struct TokenIssuer {
    pub addr: SocketAddr,
    pub cert_pem: String,
    /// Tokens issued so far.
    pub issued: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

struct Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    user: String,
    password: String,
    issued: Arc<AtomicUsize>,
}

impl Signer {
    fn token(&self, scopes: &[String]) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|scope| {
                let mut parts = scope.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(serde_json::json!({ "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>() }))
            })
            .collect();
        let header = serde_json::json!({ "typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&self.cert_der)] });
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": self.user, "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("t{now}-{}", self.issued.load(Ordering::SeqCst)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .expect("sign");
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }

    fn handle(&self, request: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let expected = format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.user, self.password))
        );
        let authorized = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected.as_bytes());
        if !authorized {
            let mut response = Response::new(Full::new(Bytes::from_static(
                b"{\"details\":\"bad credentials\"}",
            )));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            return response;
        }
        let scopes: Vec<String> = request
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|pair| pair.strip_prefix("scope="))
            .map(|s| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect();
        self.issued.fetch_add(1, Ordering::SeqCst);
        let token = self.token(&scopes);
        let body = serde_json::json!({ "token": token, "access_token": token, "expires_in": 300 });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        response
    }
}

impl TokenIssuer {
    /// Starts the issuer on 127.0.0.1:0; it accepts only `user`/`password`.
    pub async fn start(user: &str, password: &str) -> TokenIssuer {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["token-issuer".to_owned()]).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("self-signed cert");
        let signing =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &key.serialize_der())
                .expect("pkcs8");
        let issued = Arc::new(AtomicUsize::new(0));
        let signer = Arc::new(Signer {
            key: signing,
            cert_der: cert.der().to_vec(),
            user: user.to_owned(),
            password: password.to_owned(),
            issued: issued.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let signer = signer.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let response = signer.handle(&request);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TokenIssuer {
            addr,
            cert_pem: cert.pem(),
            issued,
            task,
        }
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
