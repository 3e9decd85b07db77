//! The HTTPS listener: a certificate authority made at start, a server certificate for
//! 127.0.0.1 and localhost signed by it, and handshakes done off the accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::StartError;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's TLS identity: the CA certificate clients trust, and the server config.
pub struct Identity {
    /// PEM of the certificate authority (what a kubeconfig's `certificate-authority-data` holds).
    pub ca_pem: String,
    config: Arc<rustls::ServerConfig>,
}

fn cert_error(e: impl std::fmt::Display) -> StartError {
    StartError::Certificate(e.to_string())
}

impl Identity {
    /// Makes a fresh CA and a server certificate for `127.0.0.1`, `::1` and `localhost`.
    pub fn generate() -> Result<Identity, StartError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "shardvault API server CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(cert_error)?)
            .map_err(cert_error)?;
        let mut params = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ])
        .map_err(cert_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "shardvault API server");
        let key = KeyPair::generate().map_err(cert_error)?;
        let cert = params.signed_by(&key, &ca).map_err(cert_error)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(cert_error)?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), ca.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .map_err(cert_error)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Identity {
            ca_pem: ca.pem(),
            config: Arc::new(config),
        })
    }
}

/// A TCP listener whose connections come out TLS-terminated, for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    /// Binds `addr` and accepts in the background; a failed handshake drops that
    /// connection only.
    pub async fn bind(addr: SocketAddr, identity: &Identity) -> Result<TlsListener, StartError> {
        let listen_error = |source| StartError::Listen {
            what: addr.to_string(),
            cause: source,
        };
        let tcp = TcpListener::bind(addr).await.map_err(listen_error)?;
        let addr = tcp.local_addr().map_err(listen_error)?;
        let acceptor = TlsAcceptor::from(identity.config.clone());
        let (tx, ready) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    () = tx.closed() => return,
                    accepted = tcp.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!("the API server could not accept a connection: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only ends once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
