//! A server whose certificate the client cannot trust.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use scrapewell::{Error, TransportError};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use common::{fast_client, read_head};

/// The self-signed certificate for 127.0.0.1 (`tests/tls/`, valid for a century), and its key.
const CERTIFICATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tls/self-signed.crt");
const KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tls/self-signed.key");

/// A TLS server on loopback with [`CERTIFICATE`], answering `ok` to a client that trusts it;
/// it counts the connections it accepted.
async fn self_signed_server() -> (String, Arc<AtomicUsize>) {
    let certificate = CertificateDer::from_pem_file(CERTIFICATE).expect("certificate");
    let key = PrivateKeyDer::from_pem_file(KEY).expect("key");
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .expect("server configuration");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("https://{}/page", listener.local_addr().expect("address"));
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let Ok(mut stream) = acceptor.accept(socket).await else {
                    return;
                };
                read_head(&mut stream).await;
                let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
                let _ = stream.write_all(answer).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (url, connections)
}

#[tokio::test]
async fn a_certificate_the_client_does_not_trust_fails_once_as_a_tls_error() {
    let (url, connections) = self_signed_server().await;
    let client = fast_client().build().unwrap();
    for method in [http::Method::GET, http::Method::POST] {
        let error = client
            .request(method.clone(), &url)
            .send()
            .await
            .unwrap_err();
        match &error {
            Error::Transport {
                source: TransportError::Tls(_),
                attempts,
            } => assert_eq!(attempts.count(), 1, "{method}"),
            other => panic!("{method}: expected a TLS error, got {other:?}"),
        }
        // What was wrong with the certificate is in the chain, for the log.
        let chain = std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(": ");
        assert!(chain.contains("invalid peer certificate"), "{chain}");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "one connection a request"
    );
}

#[tokio::test]
async fn a_certificate_authority_added_to_the_client_is_trusted() {
    let (url, _) = self_signed_server().await;
    let pem = std::fs::read(CERTIFICATE).expect("certificate");
    let client = fast_client().add_root_certificates(&pem).build().unwrap();
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.attempts().count(), 1);

    let error = fast_client()
        .add_root_certificates(b"not a certificate")
        .build()
        .unwrap_err();
    assert!(matches!(error, Error::Config { .. }), "{error:?}");
}

#[tokio::test]
async fn a_client_told_to_accept_any_certificate_does() {
    let (url, _) = self_signed_server().await;
    let client = fast_client()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let response = client.post(&url).body("x").send().await.unwrap();
    assert_eq!(response.status(), 200);
}
