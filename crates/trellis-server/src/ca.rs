//! The mesh's certificate authority: one root (an ECDSA P-256 key made at the first start and
//! kept in the data directory, or an operator's certificate and key), and short-lived leaf
//! certificates for services whose URI SAN is their SPIFFE identity,
//! `spiffe://<trust domain>/ns/default/dc/<dc>/svc/<service>`, as Consul Connect issues them.
//! The trust domain is `<cluster id>.consul`, the cluster ID a UUID made with the root.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    Ia5String, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use time::OffsetDateTime;

/// How long a root made by this server is valid: ten years, as Consul's built-in CA.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaf certificates are valid from a minute before they are made, for clocks a little apart.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read or write the CA in {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid CA state in {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("invalid service name {0:?} for a certificate")]
    Name(String),
}

/// What is kept of the root besides its certificate and key (`ca/root.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RootRecord {
    cluster_id: String,
    common_name: String,
    not_before_s: i64,
    not_after_s: i64,
    serial: u64,
}

/// A leaf certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub serial: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub service: String,
    pub uri: String,
    pub valid_after: SystemTime,
    pub valid_before: SystemTime,
}

pub struct Ca {
    record: RootRecord,
    root_pem: String,
    /// The root rebuilt from its record and key, to sign with (the published PEM is the one
    /// stored: the same subject and key, so leaves verify against it).
    issuer: rcgen::Certificate,
    key: KeyPair,
    id: String,
}

impl Ca {
    /// The CA kept under `dir/ca/` (made there at the first start), or a fresh one in memory
    /// when `dir` is `None` (`--dev`).
    pub fn load_or_create(dir: Option<&Path>, now: SystemTime) -> Result<Self, CaError> {
        let Some(dir) = dir else {
            let (record, key) = new_root(now)?;
            return Self::from_parts(record, key, None);
        };
        let dir = dir.join("ca");
        let io = |path: &Path| {
            let path = path.to_owned();
            move |error| CaError::Io { path, error }
        };
        let record_path = dir.join("root.json");
        let key_path = dir.join("root.key");
        let cert_path = dir.join("root.pem");
        if record_path.exists() {
            let text = std::fs::read_to_string(&record_path).map_err(io(&record_path))?;
            let record: RootRecord = serde_json::from_str(&text).map_err(|e| CaError::Corrupt {
                path: record_path.clone(),
                reason: e.to_string(),
            })?;
            let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Corrupt {
                path: key_path.clone(),
                reason: e.to_string(),
            })?;
            let root_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
            return Self::from_parts(record, key, Some(root_pem));
        }
        let (record, key) = new_root(now)?;
        let ca = Self::from_parts(record, key, None)?;
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        write_private(&key_path, &ca.key.serialize_pem()).map_err(io(&key_path))?;
        std::fs::write(&cert_path, &ca.root_pem).map_err(io(&cert_path))?;
        let json = serde_json::to_string_pretty(&ca.record).unwrap_or_default();
        // The record last: its presence says the CA is whole.
        std::fs::write(&record_path, json).map_err(io(&record_path))?;
        Ok(ca)
    }

    fn from_parts(
        record: RootRecord,
        key: KeyPair,
        root_pem: Option<String>,
    ) -> Result<Self, CaError> {
        let issuer = root_params(&record)?.self_signed(&key)?;
        let root_pem = root_pem.unwrap_or_else(|| issuer.pem());
        // Of the published certificate: ECDSA signatures differ each time, so the rebuilt
        // issuer's bytes are not the stored root's.
        let id = fingerprint(&pem_der(&root_pem));
        Ok(Self {
            record,
            root_pem,
            issuer,
            key,
            id,
        })
    }

    pub fn trust_domain(&self) -> String {
        format!("{}.consul", self.record.cluster_id)
    }

    /// The root's ID: its certificate's SHA-256 fingerprint, colon-separated hex.
    pub fn root_id(&self) -> &str {
        &self.id
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn root_name(&self) -> &str {
        &self.record.common_name
    }

    pub fn root_serial(&self) -> u64 {
        self.record.serial
    }

    pub fn root_validity(&self) -> (SystemTime, SystemTime) {
        (
            from_unix(self.record.not_before_s),
            from_unix(self.record.not_after_s),
        )
    }

    /// The SPIFFE identity of `service` in datacenter `dc`.
    pub fn service_uri(&self, dc: &str, service: &str) -> String {
        format!(
            "spiffe://{}/ns/default/dc/{dc}/svc/{service}",
            self.trust_domain()
        )
    }

    /// A new key and a certificate for `service`, valid for `lifetime` from `now` (and a minute
    /// before, for clock skew), usable by a server and a client.
    pub fn sign_leaf(
        &self,
        dc: &str,
        service: &str,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Leaf, CaError> {
        let valid_name = !service.is_empty()
            && service
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            return Err(CaError::Name(service.to_owned()));
        }
        let uri = self.service_uri(dc, service);
        let valid_after = now.checked_sub(CLOCK_SKEW).unwrap_or(now);
        let valid_before = now + lifetime;
        let serial: u64 = rand::random::<u64>() >> 1;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, service);
        params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(uri.clone())?)];
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = to_offset(valid_after);
        params.not_after = to_offset(valid_before);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok(Leaf {
            serial: colon_hex(&serial.to_be_bytes()),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            service: service.to_owned(),
            uri,
            valid_after,
            valid_before,
        })
    }
}

fn new_root(now: SystemTime) -> Result<(RootRecord, KeyPair), CaError> {
    let cluster_id = crate::ids::random_uuid();
    let not_before = unix(now) - 60;
    let record = RootRecord {
        common_name: format!("Trellis CA {}", &cluster_id[..8]),
        cluster_id,
        not_before_s: not_before,
        not_after_s: not_before + ROOT_LIFETIME.as_secs() as i64,
        serial: 1,
    };
    Ok((record, KeyPair::generate()?))
}

fn root_params(record: &RootRecord) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, record.common_name.as_str());
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(SerialNumber::from(record.serial));
    let at = |s: i64| {
        OffsetDateTime::from_unix_timestamp(s).map_err(|e| CaError::Corrupt {
            path: PathBuf::from("ca/root.json"),
            reason: e.to_string(),
        })
    };
    params.not_before = at(record.not_before_s)?;
    params.not_after = at(record.not_after_s)?;
    let uri = format!("spiffe://{}.consul", record.cluster_id);
    params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(uri)?)];
    Ok(params)
}

/// Writes a private key readable by this user only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn unix(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn from_unix(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64)
}

fn to_offset(time: SystemTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix(time)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The DER bytes of a one-certificate PEM (empty if it is not base64).
fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .unwrap_or_default()
}

fn fingerprint(der: &[u8]) -> String {
    colon_hex(&Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_ca_signs_with_the_same_root_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let first = Ca::load_or_create(Some(dir.path()), now).unwrap();
        let again = Ca::load_or_create(Some(dir.path()), now).unwrap();
        assert_eq!(first.root_pem(), again.root_pem());
        assert_eq!(first.trust_domain(), again.trust_domain());
        assert_eq!(first.root_id(), again.root_id());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca/root.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let leaf = again
            .sign_leaf("dc1", "web", Duration::from_secs(3600), now)
            .unwrap();
        assert!(leaf.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(
            leaf.uri,
            format!(
                "spiffe://{}/ns/default/dc/dc1/svc/web",
                first.trust_domain()
            )
        );
        assert!(
            again
                .sign_leaf("dc1", "bad name", Duration::from_secs(60), now)
                .is_err()
        );
    }
}
