//! A real `redis-server` speaking TLS, with certificates made for the test:
//! a private CA, a server certificate for `127.0.0.1` and `localhost`
//! signed by it, and a client certificate signed by it (for servers that
//! require one, `tls-auth-clients yes`). A second CA that signed nothing
//! lets tests check that a wrong CA is refused.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::process::{self, Daemon, Ports, os};

/// A `redis-server` with TLS on one loopback port and plain TCP on another
/// (for the fixture's own readiness checks), and the PEM files of its
/// certificates in its temporary directory. Killed and removed on drop.
#[derive(Debug)]
pub struct TlsRedis {
    root: PathBuf,
    tls_port: u16,
    server: Option<Daemon>,
}

/// Whether the server asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `tls-auth-clients yes`: a client without a certificate of the CA is
    /// refused.
    Required,
    /// `tls-auth-clients no`: any client that trusts the server connects.
    Off,
}

impl TlsRedis {
    /// Makes the certificates and starts the server.
    pub fn start(auth: ClientAuth) -> TlsRedis {
        let root = process::temp_dir("redis-tls");
        write_certificates(&root);
        let mut ports = Ports::default();
        let tls_port = ports.pick(false);
        let files = root.clone();
        let server = Daemon::start(
            "redis-server",
            &root,
            "server",
            &mut ports,
            false,
            |port, dir, log| {
                vec![
                    os("--port"),
                    os(port.to_string()),
                    os("--tls-port"),
                    os(tls_port.to_string()),
                    os("--bind"),
                    os("127.0.0.1"),
                    os("--save"),
                    os(""),
                    os("--appendonly"),
                    os("no"),
                    os("--tls-cert-file"),
                    files.join("server.pem").into_os_string(),
                    os("--tls-key-file"),
                    files.join("server.key").into_os_string(),
                    os("--tls-ca-cert-file"),
                    files.join("ca.pem").into_os_string(),
                    os("--tls-auth-clients"),
                    os(match auth {
                        ClientAuth::Required => "yes",
                        ClientAuth::Off => "no",
                    }),
                    os("--dir"),
                    dir.as_os_str().to_owned(),
                    os("--logfile"),
                    log.as_os_str().to_owned(),
                ]
            },
        );
        TlsRedis {
            root,
            tls_port,
            server: Some(server),
        }
    }

    /// `rediss://127.0.0.1:<tls port>/`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.tls_port)
    }

    /// The same server over plain TCP: `redis://127.0.0.1:<port>/`.
    pub fn plain_url(&self) -> String {
        let port = self.server.as_ref().map_or(0, Daemon::port);
        format!("redis://127.0.0.1:{port}/")
    }

    /// The CA that signed the server's and the client's certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// A CA that signed nothing here.
    pub fn other_ca_file(&self) -> PathBuf {
        self.root.join("other-ca.pem")
    }

    /// The client certificate (signed by [`TlsRedis::ca_file`]).
    pub fn client_cert(&self) -> PathBuf {
        self.root.join("client.pem")
    }

    /// The client certificate's private key.
    pub fn client_key(&self) -> PathBuf {
        self.root.join("client.key")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        drop(self.server.take());
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Writes `ca.pem`, `other-ca.pem`, `server.pem`/`server.key` (a server
/// certificate for `127.0.0.1` and `localhost`, signed by `ca.pem`) and
/// `client.pem`/`client.key` into `dir`: for [`TlsRedis`], and for tests
/// of other TLS servers (the reverse proxy of `deploy/nginx`).
pub fn write_certificates(dir: &Path) {
    let (ca_pem, ca) = certificate_authority("scorehub test CA");
    let (other_pem, _) = certificate_authority("scorehub unrelated CA");
    write(dir, "ca.pem", &ca_pem);
    write(dir, "other-ca.pem", &other_pem);
    for (name, sans, usage) in [
        (
            "server",
            vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        ("client", Vec::new(), ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let key = generated_key();
        let mut params = CertificateParams::new(sans)
            .unwrap_or_else(|e| panic!("cannot build the {name} certificate: {e}"));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("scorehub test {name}"));
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params
            .signed_by(&key, &ca)
            .unwrap_or_else(|e| panic!("cannot sign the {name} certificate: {e}"));
        write(dir, &format!("{name}.pem"), &cert.pem());
        write(dir, &format!("{name}.key"), &key.serialize_pem());
    }
}

/// A self-signed CA: its certificate (PEM) and the issuer that signs with it.
fn certificate_authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = generated_key();
    let mut params = CertificateParams::new(Vec::<String>::new())
        .unwrap_or_else(|e| panic!("cannot build the CA certificate: {e}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params
        .self_signed(&key)
        .unwrap_or_else(|e| panic!("cannot self-sign the CA: {e}"));
    (cert.pem(), Issuer::new(params, key))
}

fn generated_key() -> KeyPair {
    KeyPair::generate().unwrap_or_else(|e| panic!("cannot generate a key pair: {e}"))
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    if let Err(e) = std::fs::write(&path, text) {
        panic!("cannot write {}: {e}", path.display());
    }
}
