//! A test certificate authority: an rcgen CA whose certificate is written
//! as PEM into a directory, signing leaf certificates for `127.0.0.1` and
//! `localhost` (the names every test server is reached by), also written
//! as PEM files next to it.

use std::path::{Path, PathBuf};

use shardgate_meta::MetaTlsConfig;

/// A CA (`<name>-ca.pem` in `dir`) that signs leaf certificates.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub ca: PathBuf,
    dir: PathBuf,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A leaf certificate and its key, PEM files.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `<name> test CA`, written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, issuer.pem()).unwrap();
        TestCa { ca, dir: dir.to_path_buf(), issuer }
    }

    /// A leaf for `127.0.0.1` and `localhost`, written to
    /// `<name>-cert.pem` and `<name>-key.pem` next to the CA.
    pub fn leaf(&self, name: &str) -> Leaf {
        self.leaf_for(name, &["127.0.0.1", "localhost"])
    }

    /// A leaf for `names` (IP addresses or DNS names).
    pub fn leaf_for(&self, name: &str, names: &[&str]) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let leaf = Leaf { cert: self.dir.join(format!("{name}-cert.pem")), key: self.dir.join(format!("{name}-key.pem")) };
        std::fs::write(&leaf.cert, cert.pem()).unwrap();
        std::fs::write(&leaf.key, key.serialize_pem()).unwrap();
        leaf
    }

    /// `meta.tls` for a member: a fresh leaf, and this CA as `ca`.
    pub fn member_tls(&self, name: &str) -> MetaTlsConfig {
        let leaf = self.leaf(name);
        MetaTlsConfig { cert: leaf.cert, key: leaf.key, ca: Some(self.ca.clone()) }
    }
}
