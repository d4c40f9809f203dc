//! Certificates of a TLS export destination (`ca=`, `cert=`, `key=`), read and parsed at
//! start so that a missing or broken file is a start-up error, then handed to the syslog
//! client (rustls) and the OTLP client (tonic) in the form each needs.

use std::{path::Path, sync::Arc};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
};

use super::config::TlsOptions;

/// The PEM files of one destination, checked.
#[derive(Clone)]
pub struct TlsFiles {
    /// `ca=`: the receiver's CA certificates; `None`: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// `cert=`, `key=`: the client certificate chain and its key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// `server-name=`.
    pub server_name: Option<String>,
    /// Without `ca=`: whether the system has root certificates (else the bundled Mozilla
    /// roots are used).
    pub system_roots: bool,
}

/// The private key stays out of logs and panics.
impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca_pem.as_ref().map(|_| "PEM"))
            .field(
                "identity",
                &self.identity.as_ref().map(|_| "PEM, key redacted"),
            )
            .field("server_name", &self.server_name)
            .field("system_roots", &self.system_roots)
            .finish()
    }
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

fn certificates(
    what: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(certs)
}

impl TlsFiles {
    pub fn load(options: &TlsOptions) -> Result<Self, String> {
        let ca_pem = match &options.ca {
            Some(path) => {
                let pem = read("ca", path)?;
                certificates("ca", path, &pem)?;
                Some(pem)
            }
            None => None,
        };
        let identity = match (&options.cert, &options.key) {
            (Some(cert), Some(key)) => {
                let cert_pem = read("cert", cert)?;
                certificates("cert", cert, &cert_pem)?;
                let key_pem = read("key", key)?;
                PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|e| format!("key {}: {e}", key.display()))?;
                Some((cert_pem, key_pem))
            }
            _ => None,
        };
        let system_roots =
            ca_pem.is_none() && !rustls_native_certs::load_native_certs().certs.is_empty();
        if ca_pem.is_none() && !system_roots {
            tracing::info!(
                "export: no ca= and no system root certificates: the receiver is verified against the bundled Mozilla roots"
            );
        }
        let files = Self {
            ca_pem,
            identity,
            server_name: options.server_name.clone(),
            system_roots,
        };
        // Built once here so that a certificate rustls refuses (a key that does not match,
        // say) fails at start, not at the first connection.
        files.rustls_config()?;
        Ok(files)
    }

    /// The client configuration for the syslog client.
    pub fn rustls_config(&self) -> Result<Arc<ClientConfig>, String> {
        let mut roots = RootCertStore::empty();
        match &self.ca_pem {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem).flatten() {
                    roots.add(cert).map_err(|e| format!("ca: {e}"))?;
                }
            }
            None if self.system_roots => {
                // A system root rustls cannot use is skipped, as a browser would.
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots);
        let config = match &self.identity {
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert).flatten().collect();
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("key: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("cert/key: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// The name to verify the receiver's certificate against.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, String> {
        let name = self.server_name.as_deref().unwrap_or(host);
        ServerName::try_from(name.to_owned()).map_err(|e| format!("server name '{name}': {e}"))
    }
}
