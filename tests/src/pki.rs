//! A throwaway PKI for the test apiserver: a CA, the apiserver's serving certificate, an admin
//! client certificate in `system:masters`, and the service-account signing key.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::Result;

/// PEM-encoded certificate and private key.
#[derive(Debug, Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Everything the apiserver and its admin client need.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca_pem: String,
    pub serving: CertAndKey,
    pub admin: CertAndKey,
    /// PKCS#8 private key the apiserver signs service-account tokens with.
    pub service_account_key_pem: String,
    /// Its public key, which the apiserver verifies those tokens with.
    pub service_account_public_pem: String,
}

fn dn(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        name.push(DnType::OrganizationName, org);
    }
    name
}

impl TestPki {
    /// Generates a fresh PKI. Keys are ECDSA P-256, which both Go and rustls accept.
    pub fn generate() -> Result<Self> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name = dn("switchboard-test-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut serving_params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
        ])?;
        serving_params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        serving_params.subject_alt_names.push(SanType::IpAddress(
            std::net::Ipv4Addr::new(10, 0, 0, 1).into(),
        ));
        serving_params.distinguished_name = dn("kube-apiserver", None);
        serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving_params.signed_by(&serving_key, &ca)?;

        let mut admin_params = CertificateParams::new(Vec::<String>::new())?;
        admin_params.distinguished_name = dn("switchboard-test-admin", Some("system:masters"));
        admin_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_key = KeyPair::generate()?;
        let admin_cert = admin_params.signed_by(&admin_key, &ca)?;

        let service_account_key = KeyPair::generate()?;

        Ok(TestPki {
            ca_pem: ca.pem(),
            serving: CertAndKey {
                cert_pem: serving_cert.pem(),
                key_pem: serving_key.serialize_pem(),
            },
            admin: CertAndKey {
                cert_pem: admin_cert.pem(),
                key_pem: admin_key.serialize_pem(),
            },
            service_account_key_pem: service_account_key.serialize_pem(),
            service_account_public_pem: service_account_key.public_key_pem(),
        })
    }
}
