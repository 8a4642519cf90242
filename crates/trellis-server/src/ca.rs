//! The mesh's certificate authority: a list of trusted roots, one of them active (it signs new
//! leaves), the others kept until every leaf they signed has expired, so a root rotation never
//! breaks a connection made with a leaf of the old root. Roots are ECDSA keys made here or an
//! operator's certificate and key. Leaves are short-lived certificates for services whose URI
//! SAN is their SPIFFE identity, `spiffe://<trust domain>/ns/default/dc/<dc>/svc/<service>`, as
//! Consul Connect issues them. The trust domain is `<cluster id>.consul`, the cluster ID a UUID
//! made with the first root and kept across rotations.
//!
//! The state is an immutable `CaState` behind a `watch` channel: readers clone an `Arc`, a
//! change (a rotation, a retirement) builds the next state from the current one (pure, time
//! passed in), writes it to disk, and only then publishes it, under a mutex that serializes
//! changes and that no reader takes.
//!
//! On disk, under `<data>/ca/`: each root's certificate and key as `<file>.pem` and `<file>.key`
//! (the key readable by the server's user only), and `roots.json`, the record of the roots and
//! the indexes, replaced last by a rename: a crash leaves the old record, whose files are all
//! there. A directory written before there were several roots (`root.json`, `root.pem`,
//! `root.key`) loads as a CA of that one root; the first change writes `roots.json` beside it.
//! Among servers sharing a store the same files are a record table of the store
//! (`<prefix>ca/records/`), written whole by the leader, which every server takes
//! (`follow_shared`): one CA for all of them, across failovers.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    Ia5String, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use time::OffsetDateTime;
use tokio::sync::watch;

/// How long a root made by this server is valid: ten years, as Consul's built-in CA.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaf certificates are valid from a minute before they are made, for clocks a little apart;
/// a rotated-out root is kept as long again after its last leaf expires, for the same reason.
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// The longest the retirement task sleeps: a jump of the wall clock is noticed within it.
const RETIRE_CHECK: Duration = Duration::from_secs(60);
/// The record of the roots (written last, by a rename).
const RECORD: &str = "roots.json";

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
    /// An operator's root or a configuration change refused: the request's fault.
    #[error("{0}")]
    Invalid(String),
    /// The store the servers share could not be read or written.
    #[error("the CA in the shared store: {0}")]
    Shared(String),
    #[error("the active CA root expired at {0}: rotate to a new root")]
    Expired(String),
}

/// How long leaves are valid, and how it was written (`"24h"`), to show it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafTtl {
    pub duration: Duration,
    pub text: String,
}

/// An operator's root certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct OperatorRoot {
    pub cert_pem: String,
    pub key_pem: String,
    /// Where they came from: what errors call them.
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The server's configuration (`ca_cert_file`, `ca_key_file`).
    Config,
    /// `PUT /v1/connect/ca/configuration` (`RootCert`, `PrivateKey`).
    Api,
}

impl Source {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Self::Config => (
                "the CA certificate (ca_cert_file, --ca-cert)",
                "the CA key (ca_key_file, --ca-key)",
            ),
            Self::Api => ("RootCert", "PrivateKey"),
        }
    }
}

impl OperatorRoot {
    /// Reads the two files (errors name the file and the flag that chose it).
    pub fn read(cert: &Path, key: &Path) -> Result<Self, CaError> {
        let read = |path: &Path, what: &str| {
            std::fs::read_to_string(path).map_err(|e| {
                CaError::Invalid(format!("cannot read the CA {what} {}: {e}", path.display()))
            })
        };
        Ok(Self {
            cert_pem: read(cert, "certificate (ca_cert_file, --ca-cert)")?,
            key_pem: read(key, "key (ca_key_file, --ca-key)")?,
            source: Source::Config,
        })
    }
}

/// What the server's configuration says about the CA at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sign with this root instead of one made here. At start it becomes the active root if it
    /// is not one of the CA's roots already (so an API rotation away from it is not undone by
    /// the next restart).
    pub operator: Option<OperatorRoot>,
    /// The configured leaf lifetime; a lifetime set through the API wins over it.
    pub leaf_ttl: LeafTtl,
}

impl Settings {
    /// From the `[connect]` table (validated), reading the operator's files if it names them.
    pub fn from_config(connect: &crate::config::ConnectConfig) -> Result<Self, CaError> {
        let operator = match (&connect.ca_cert_file, &connect.ca_key_file) {
            (Some(cert), Some(key)) => Some(OperatorRoot::read(cert, key)?),
            _ => None,
        };
        let duration = connect
            .leaf_ttl()
            .map_err(|e| CaError::Invalid(e.to_string()))?;
        Ok(Self {
            operator,
            leaf_ttl: LeafTtl {
                duration,
                text: connect.leaf_cert_ttl.clone(),
            },
        })
    }
}

/// The key of a root this server makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcP256,
    EcP384,
}

impl KeyKind {
    /// Consul's `PrivateKeyType`/`PrivateKeyBits` (`ec` 256 by default); ring makes no RSA keys.
    pub fn from_consul(kind: Option<&str>, bits: Option<u64>) -> Result<Self, CaError> {
        match (kind.unwrap_or("ec"), bits.unwrap_or(256)) {
            ("ec", 256) => Ok(Self::EcP256),
            ("ec", 384) => Ok(Self::EcP384),
            (kind, bits) => Err(CaError::Invalid(format!(
                "PrivateKeyType {kind:?} with PrivateKeyBits {bits} is not supported: \
                 generated roots are ec 256 or ec 384 (an RSA root can be given as \
                 PrivateKey and RootCert)"
            ))),
        }
    }
}

/// The new active root of a configuration change.
#[derive(Debug, Clone)]
pub enum NewRoot {
    /// Make a new key and root (Consul: a configuration without `PrivateKey` and `RootCert`).
    Generate(KeyKind),
    /// The operator's; no rotation if it is the active root already.
    Operator(OperatorRoot),
}

/// `PUT /v1/connect/ca/configuration`, decoded.
#[derive(Debug, Clone)]
pub struct Update {
    pub root: NewRoot,
    /// `None` keeps the current lifetime.
    pub leaf_ttl: Option<LeafTtl>,
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

/// A trusted root, as published.
#[derive(Debug, Clone)]
pub struct Root {
    /// The certificate's SHA-256 fingerprint, colon-separated hex.
    pub id: String,
    /// The subject's common name (or the whole subject without one).
    pub name: String,
    /// The certificate's serial number, its low 64 bits (as Consul's `SerialNumber`).
    pub serial: u64,
    /// The subject key identifier, colon-separated hex (empty without one).
    pub signing_key_id: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub pem: String,
    /// `ec`, `rsa` or `ed25519`, and the key's size in bits.
    pub key_type: &'static str,
    pub key_bits: u32,
    pub create_index: u64,
    pub modify_index: u64,
    /// When it stopped signing; `None` for the active root.
    pub rotated_out: Option<SystemTime>,
    /// When it stops being trusted: its last leaf has expired (with the clock skew allowed),
    /// or the root itself has. `None` for the active root.
    pub retire_at: Option<SystemTime>,
    /// The longest leaf lifetime in force while it was active: its last leaf expires at most
    /// this long after it was rotated out.
    max_leaf_ttl: Duration,
    /// Its files under `ca/`: `<file>.pem`, `<file>.key`.
    file: String,
}

/// The active root's certificate rebuilt for rcgen, and its key.
struct Signer {
    issuer: rcgen::Certificate,
    key: KeyPair,
}

/// One version of the CA: what readers get, never changed once published.
pub struct CaState {
    cluster_id: String,
    active: Root,
    /// Rotated-out roots still trusted, oldest first.
    others: Vec<Root>,
    signer: Arc<Signer>,
    leaf_ttl: LeafTtl,
    /// The lifetime was set through the API: the configuration's no longer applies.
    leaf_ttl_pinned: bool,
    /// Counts every change (never goes back, across restarts too).
    index: u64,
    /// The index of the last change to the list of roots.
    roots_index: u64,
    config_create_index: u64,
    config_modify_index: u64,
}

impl CaState {
    pub fn trust_domain(&self) -> String {
        format!("{}.consul", self.cluster_id)
    }

    /// The cluster's ID (Consul's `ExternalTrustDomain`).
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The root that signs new leaves.
    pub fn active(&self) -> &Root {
        &self.active
    }

    /// Every trusted root, by creation (the active one last but for a re-activated root).
    pub fn roots(&self) -> Vec<&Root> {
        let mut roots: Vec<&Root> = self.others.iter().chain([&self.active]).collect();
        roots.sort_by_key(|r| r.create_index);
        roots
    }

    /// Moves when the list of roots or the active root changes: what roots and leaf readers
    /// block on.
    pub fn roots_index(&self) -> u64 {
        self.roots_index
    }

    pub fn config_create_index(&self) -> u64 {
        self.config_create_index
    }

    pub fn config_modify_index(&self) -> u64 {
        self.config_modify_index
    }

    pub fn leaf_ttl(&self) -> &LeafTtl {
        &self.leaf_ttl
    }

    /// The SPIFFE identity of `service` in datacenter `dc`.
    pub fn service_uri(&self, dc: &str, service: &str) -> String {
        format!(
            "spiffe://{}/ns/default/dc/{dc}/svc/{service}",
            self.trust_domain()
        )
    }

    /// A new key and a certificate for `service` signed by the active root, valid for the leaf
    /// lifetime from `now` (and a minute before, for clock skew; never past the root's own
    /// end), usable by a server and a client.
    pub fn sign_leaf(&self, dc: &str, service: &str, now: SystemTime) -> Result<Leaf, CaError> {
        let valid_name = !service.is_empty()
            && service
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            return Err(CaError::Name(service.to_owned()));
        }
        if now >= self.active.not_after {
            return Err(CaError::Expired(date(self.active.not_after)));
        }
        let uri = self.service_uri(dc, service);
        let valid_after = now.checked_sub(CLOCK_SKEW).unwrap_or(now);
        let valid_before = (now + self.leaf_ttl.duration).min(self.active.not_after);
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
        let cert = params.signed_by(&key, &self.signer.issuer, &self.signer.key)?;
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

    /// When the next rotated-out root is to be retired.
    pub fn next_retirement(&self) -> Option<SystemTime> {
        self.others.iter().map(Root::retire_time).min()
    }

    /// This state with `root` active and the active root rotated out at `now`, kept until its
    /// last leaf has expired.
    fn rotated(
        &self,
        mut root: Root,
        signer: Arc<Signer>,
        ttl: Option<LeafTtl>,
        now: SystemTime,
    ) -> Self {
        let index = self.index + 1;
        let pinned = self.leaf_ttl_pinned || ttl.is_some();
        let leaf_ttl = ttl.unwrap_or_else(|| self.leaf_ttl.clone());
        let mut old = self.active.clone();
        old.rotated_out = Some(now);
        old.retire_at = Some(now + old.max_leaf_ttl + CLOCK_SKEW);
        old.modify_index = index;
        // A root made active again is no longer one of the others.
        let mut others: Vec<Root> = self
            .others
            .iter()
            .filter(|r| r.id != root.id)
            .cloned()
            .collect();
        others.push(old);
        root.create_index = index;
        root.modify_index = index;
        root.rotated_out = None;
        root.retire_at = None;
        root.max_leaf_ttl = leaf_ttl.duration;
        Self {
            cluster_id: self.cluster_id.clone(),
            active: root,
            others,
            signer,
            leaf_ttl,
            leaf_ttl_pinned: pinned,
            index,
            roots_index: index,
            config_create_index: self.config_create_index,
            config_modify_index: index,
        }
    }

    /// This state with another leaf lifetime and the same roots. `pinned`: set through the
    /// API (else it is the configuration's, applied at start).
    fn with_leaf_ttl(&self, ttl: LeafTtl, pinned: bool) -> Self {
        // The configuration's lifetime applied at start is not a change anyone reads back.
        let index = if pinned { self.index + 1 } else { self.index };
        let mut active = self.active.clone();
        active.max_leaf_ttl = active.max_leaf_ttl.max(ttl.duration);
        Self {
            cluster_id: self.cluster_id.clone(),
            active,
            others: self.others.clone(),
            signer: Arc::clone(&self.signer),
            leaf_ttl: ttl,
            leaf_ttl_pinned: pinned,
            index,
            roots_index: self.roots_index,
            config_create_index: self.config_create_index,
            config_modify_index: if pinned {
                index
            } else {
                self.config_modify_index
            },
        }
    }

    /// This state without the rotated-out roots due for retirement at `now`, and those roots;
    /// `None` if there are none.
    fn retired(&self, now: SystemTime) -> Option<(Self, Vec<Root>)> {
        let (gone, kept): (Vec<Root>, Vec<Root>) = self
            .others
            .iter()
            .cloned()
            .partition(|r| r.retire_time() <= now);
        if gone.is_empty() {
            return None;
        }
        let index = self.index + 1;
        let next = Self {
            cluster_id: self.cluster_id.clone(),
            active: self.active.clone(),
            others: kept,
            signer: Arc::clone(&self.signer),
            leaf_ttl: self.leaf_ttl.clone(),
            leaf_ttl_pinned: self.leaf_ttl_pinned,
            index,
            roots_index: index,
            config_create_index: self.config_create_index,
            config_modify_index: self.config_modify_index,
        };
        Some((next, gone))
    }

    fn contains(&self, id: &str) -> bool {
        self.active.id == id || self.others.iter().any(|r| r.id == id)
    }

    fn record(&self) -> Record {
        let entry = |r: &Root| RootEntry {
            file: r.file.clone(),
            create_index: r.create_index,
            modify_index: r.modify_index,
            rotated_out_s: r.rotated_out.map(unix),
            retire_at_s: r.retire_at.map(unix),
            max_leaf_ttl_s: r.max_leaf_ttl.as_secs(),
        };
        Record {
            cluster_id: self.cluster_id.clone(),
            index: self.index,
            roots_index: self.roots_index,
            config_create_index: self.config_create_index,
            config_modify_index: self.config_modify_index,
            leaf_cert_ttl: self.leaf_ttl_pinned.then(|| self.leaf_ttl.text.clone()),
            roots: self.roots().into_iter().map(entry).collect(),
        }
    }
}

impl Root {
    fn retire_time(&self) -> SystemTime {
        self.retire_at.unwrap_or(self.not_after).min(self.not_after)
    }
}

/// `ca/roots.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    cluster_id: String,
    index: u64,
    roots_index: u64,
    config_create_index: u64,
    config_modify_index: u64,
    /// Set through the API; `None`: the server's configuration decides.
    leaf_cert_ttl: Option<String>,
    roots: Vec<RootEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RootEntry {
    file: String,
    create_index: u64,
    modify_index: u64,
    /// `None` for the active root (exactly one).
    rotated_out_s: Option<i64>,
    retire_at_s: Option<i64>,
    max_leaf_ttl_s: u64,
}

/// `ca/root.json` of a directory written before there were several roots.
#[derive(Debug, Clone, Deserialize)]
struct LegacyRecord {
    cluster_id: String,
}

/// The certificate authority: the current `CaState`, and the way to change it.
#[derive(Clone)]
pub struct Ca(Arc<Inner>);

struct Inner {
    /// Where the state is written.
    keeping: Keeping,
    /// The configured leaf lifetime, for a state read back without one of its own.
    config_leaf_ttl: LeafTtl,
    current: watch::Sender<Arc<CaState>>,
    /// Held while a change is built, written and published, so changes apply one at a time.
    writes: Mutex<()>,
}

impl Ca {
    /// The CA kept under `dir/ca/` (made there at the first start), or a fresh one in memory
    /// when `dir` is `None` (`--dev`). An operator's root is checked (a CA certificate, the
    /// key its own) and made active if it is new; roots due for retirement are dropped.
    pub fn load_or_create(
        dir: Option<&Path>,
        settings: &Settings,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        let keeping = match dir {
            Some(dir) => Keeping::Dir(dir.join("ca")),
            None => Keeping::Memory,
        };
        Self::load_or_create_in(keeping, settings, now)
    }

    /// [`Ca::load_or_create`] kept in `keeping`. In a shared store a server that cannot write
    /// it (a follower) keeps what it made in memory, and takes the store's once there is one
    /// ([`Ca::adopt_shared`]).
    pub fn load_or_create_in(
        keeping: Keeping,
        settings: &Settings,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        let operator = settings
            .operator
            .as_ref()
            .map(|op| operator_root(op, now))
            .transpose()?;
        let loaded = keeping.load(&settings.leaf_ttl)?;
        let mut new_key: Option<(Root, String)> = None;
        let mut gone = Vec::new();
        let mut changed = false;
        let mut state = match loaded {
            None => {
                changed = true;
                let cluster_id = crate::ids::random_uuid();
                let (root, signer, key_pem) = match operator {
                    Some(made) => made,
                    None => generate_root(&cluster_id, 1, KeyKind::EcP256, now)?,
                };
                let state = fresh(cluster_id, root, signer, settings.leaf_ttl.clone());
                new_key = Some((state.active.clone(), key_pem));
                state
            }
            Some(state) => match operator {
                Some((root, signer, key_pem)) if !state.contains(&root.id) => {
                    let root = Root {
                        file: format!("root-{}", state.index + 1),
                        ..root
                    };
                    let next = state.rotated(root, signer, None, now);
                    new_key = Some((next.active.clone(), key_pem));
                    changed = true;
                    next
                }
                _ => state,
            },
        };
        // The configured lifetime applies until one is set through the API; a longer one than
        // the active root has signed with is recorded, since it decides when that root retires.
        let longer = settings.leaf_ttl.duration > state.active.max_leaf_ttl;
        if !state.leaf_ttl_pinned && (longer || state.leaf_ttl != settings.leaf_ttl) {
            state = state.with_leaf_ttl(settings.leaf_ttl.clone(), false);
            changed |= longer;
        }
        if let Some((next, retired)) = state.retired(now) {
            state = next;
            gone = retired;
            changed = true;
        }
        if changed {
            let new_key = new_key.as_ref().map(|(root, key)| (root, key.as_str()));
            match keeping.save(&state, new_key, &gone) {
                Err(CaError::Shared(reason)) => {
                    tracing::debug!(%reason, "the CA is not in the shared store yet; the leader writes it");
                }
                other => other?,
            }
        }
        Ok(Self(Arc::new(Inner {
            keeping,
            config_leaf_ttl: settings.leaf_ttl.clone(),
            current: watch::channel(Arc::new(state)).0,
            writes: Mutex::new(()),
        })))
    }

    /// The current state (an `Arc` clone; no lock is held after).
    pub fn current(&self) -> Arc<CaState> {
        Arc::clone(&self.0.current.borrow())
    }

    /// The trust domain, `<cluster id>.consul` (the same across rotations).
    pub fn trust_domain(&self) -> String {
        self.current().trust_domain()
    }

    /// Changes of the state, for blocking queries.
    pub fn subscribe(&self) -> watch::Receiver<Arc<CaState>> {
        self.0.current.subscribe()
    }

    /// Applies a configuration change: a rotation to a new or given root (none if the given
    /// root is the active one) and the leaf lifetime. Writes to disk: call it off the async
    /// runtime.
    pub fn update(&self, update: Update, now: SystemTime) -> Result<Arc<CaState>, CaError> {
        let _one_at_a_time = self
            .0
            .writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.current();
        let made = match update.root {
            NewRoot::Generate(kind) => Some(generate_root(
                &current.cluster_id,
                current.index + 1,
                kind,
                now,
            )?),
            NewRoot::Operator(op) => {
                let made = operator_root(&op, now)?;
                (made.0.id != current.active.id).then_some(made)
            }
        };
        let (next, new_key) = match made {
            Some((root, signer, key_pem)) => {
                let root = Root {
                    file: format!("root-{}", current.index + 1),
                    ..root
                };
                let next = current.rotated(root, signer, update.leaf_ttl, now);
                let new_key = (next.active.clone(), key_pem);
                (next, Some(new_key))
            }
            None => match update.leaf_ttl {
                Some(ttl) => (current.with_leaf_ttl(ttl, true), None),
                None => return Ok(current),
            },
        };
        let new_key_pem = new_key.as_ref().map(|(root, key)| (root, key.as_str()));
        self.0.keeping.save(&next, new_key_pem, &[])?;
        let next = Arc::new(next);
        self.0.current.send_replace(Arc::clone(&next));
        Ok(next)
    }

    /// Drops the rotated-out roots due at `now`; whether any was. Writes to disk.
    pub fn retire(&self, now: SystemTime) -> Result<bool, CaError> {
        let _one_at_a_time = self
            .0
            .writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((next, gone)) = self.current().retired(now) else {
            return Ok(false);
        };
        self.0.keeping.save(&next, None, &gone)?;
        self.0.current.send_replace(Arc::new(next));
        Ok(true)
    }
}

impl Ca {
    /// Takes the CA the shared store holds, if it differs from this server's; with none there
    /// yet, writes this server's (which only the leader can). Whether the state changed. Reads
    /// and writes the store: call it off the async runtime.
    pub fn adopt_shared(&self) -> Result<bool, CaError> {
        if !matches!(self.0.keeping, Keeping::Shared { .. }) {
            return Ok(false);
        }
        let _one_at_a_time = self
            .0
            .writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.current();
        match self.0.keeping.load(&self.0.config_leaf_ttl)? {
            Some(stored)
                if stored.record() != current.record()
                    || stored.active.pem != current.active.pem =>
            {
                self.0.current.send_replace(Arc::new(stored));
                Ok(true)
            }
            Some(_) => Ok(false),
            None => {
                self.0.keeping.save(&current, None, &[])?;
                Ok(false)
            }
        }
    }
}

/// Among servers sharing a store: takes the store's CA whenever it changes and whenever this
/// server becomes the leader (which writes its own if the store holds none), so every server
/// signs with the same roots and a new leader goes on with the old one's.
pub async fn follow_shared(ca: Ca, cluster: Arc<crate::cluster::Cluster>) {
    let (mut role, mut changed) = (cluster.subscribe(), cluster.subscribe_ca());
    loop {
        // As things stand (at first, this server may lead already), then after each change.
        let adopting = ca.clone();
        match tokio::task::spawn_blocking(move || adopting.adopt_shared()).await {
            Ok(Ok(true)) => tracing::info!("took the CA from the shared store"),
            Ok(Ok(false)) => {}
            // A follower cannot write the store's first CA: the leader does.
            Ok(Err(error)) if !cluster.writes() => {
                tracing::debug!(%error, "no CA in the shared store yet")
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot take the CA from the shared store"),
            Err(_) => return,
        }
        loop {
            tokio::select! {
                moved = role.changed() => {
                    if moved.is_err() {
                        return;
                    }
                    if cluster.writes() {
                        break;
                    }
                }
                moved = changed.changed() => {
                    if moved.is_err() {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// Retires rotated-out roots when they are due, until the server closes; `writes` says
/// whether this server may change the CA (among servers sharing a store, only the leader).
pub async fn retire_expired(
    ca: Ca,
    mut closing: watch::Receiver<bool>,
    writes: impl Fn() -> bool + Send + 'static,
) {
    let mut changes = ca.subscribe();
    loop {
        let due = ca.current().next_retirement();
        let nap = due
            .map(|at| at.duration_since(SystemTime::now()).unwrap_or_default())
            .unwrap_or(RETIRE_CHECK)
            .min(RETIRE_CHECK);
        tokio::select! {
            _ = closing.changed() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            () = tokio::time::sleep(nap) => {}
        }
        if due.is_none_or(|at| at > SystemTime::now()) || !writes() {
            continue;
        }
        let retiring = ca.clone();
        match tokio::task::spawn_blocking(move || retiring.retire(SystemTime::now())).await {
            Ok(Ok(true)) => tracing::info!("retired a rotated-out CA root"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "cannot retire a CA root; trying again in a minute");
                tokio::select! {
                    _ = closing.changed() => return,
                    () = tokio::time::sleep(RETIRE_CHECK) => {}
                }
            }
            Err(error) => tracing::error!(%error, "the CA retirement task failed"),
        }
    }
}

fn fresh(cluster_id: String, mut root: Root, signer: Arc<Signer>, leaf_ttl: LeafTtl) -> CaState {
    root.create_index = 1;
    root.modify_index = 1;
    root.max_leaf_ttl = leaf_ttl.duration;
    root.file = "root-1".into();
    CaState {
        cluster_id,
        active: root,
        others: Vec::new(),
        signer,
        leaf_ttl,
        leaf_ttl_pinned: false,
        index: 1,
        roots_index: 1,
        config_create_index: 1,
        config_modify_index: 1,
    }
}

/// A new root key and self-signed certificate (serial `serial`), valid ten years from a minute
/// before `now`.
fn generate_root(
    cluster_id: &str,
    serial: u64,
    kind: KeyKind,
    now: SystemTime,
) -> Result<(Root, Arc<Signer>, String), CaError> {
    let key = match kind {
        KeyKind::EcP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        KeyKind::EcP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?,
    };
    let short = cluster_id.get(..8).unwrap_or(cluster_id);
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Trellis CA {short} {serial}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(SerialNumber::from(serial));
    let not_before = now.checked_sub(CLOCK_SKEW).unwrap_or(now);
    params.not_before = to_offset(not_before);
    params.not_after = to_offset(not_before + ROOT_LIFETIME);
    let uri = format!("spiffe://{cluster_id}.consul");
    params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(uri)?)];
    let pem = params.self_signed(&key)?.pem();
    let key_pem = key.serialize_pem();
    let root = parse_root(&pem, String::new()).map_err(CaError::Invalid)?;
    let signer = signer(&pem, key).map_err(CaError::Invalid)?;
    Ok((root, Arc::new(signer), key_pem))
}

/// An operator's root, checked: one CA certificate (basicConstraints CA, allowed to sign
/// certificates, valid at `now`) and its PKCS#8 key.
fn operator_root(
    op: &OperatorRoot,
    now: SystemTime,
) -> Result<(Root, Arc<Signer>, String), CaError> {
    let (cert_name, key_name) = op.source.names();
    let invalid = |reason: String| CaError::Invalid(format!("{cert_name} {reason}"));
    let root = parse_root(&op.cert_pem, String::new()).map_err(invalid)?;
    if now >= root.not_after {
        return Err(invalid(format!("expired at {}", date(root.not_after))));
    }
    if now < root.not_before {
        return Err(invalid(format!(
            "is not valid before {}",
            date(root.not_before)
        )));
    }
    let key = parse_key(&op.key_pem)
        .map_err(|reason| CaError::Invalid(format!("{key_name} {reason}")))?;
    let key_pem = key.serialize_pem();
    let signer = signer(&root.pem, key)
        .map_err(|reason| CaError::Invalid(format!("{cert_name} and {key_name}: {reason}")))?;
    Ok((root, Arc::new(signer), key_pem))
}

/// A private key from PEM, with what to do about the formats ring cannot read.
fn parse_key(pem: &str) -> Result<KeyPair, String> {
    let label = pem
        .lines()
        .find_map(|l| l.trim().strip_prefix("-----BEGIN "))
        .and_then(|l| l.strip_suffix("-----"));
    match label {
        None => Err("is not PEM (no -----BEGIN line)".into()),
        Some("ENCRYPTED PRIVATE KEY") => Err("is encrypted; give it unencrypted".into()),
        Some(other @ ("EC PRIVATE KEY" | "RSA PRIVATE KEY")) => Err(format!(
            "is in the {other:?} format; give it as PKCS#8 (BEGIN PRIVATE KEY): \
             openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8"
        )),
        Some("PRIVATE KEY") => KeyPair::from_pem(pem).map_err(|e| format!("cannot be read: {e}")),
        Some(other) => Err(format!("is a {other:?}, not a PRIVATE KEY")),
    }
}

/// A root's published facts from its PEM (one certificate, a CA).
fn parse_root(pem: &str, file: String) -> Result<Root, String> {
    use x509_parser::extensions::ParsedExtension;
    use x509_parser::public_key::PublicKey;
    let (rest, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("is not a PEM certificate: {e}"))?;
    if block.label != "CERTIFICATE" {
        return Err(format!("is a PEM {:?}, not a CERTIFICATE", block.label));
    }
    if String::from_utf8_lossy(rest).contains("-----BEGIN") {
        return Err("holds more than one PEM block: give the root certificate alone".into());
    }
    let cert = block
        .parse_x509()
        .map_err(|e| format!("cannot be parsed: {e}"))?;
    let is_ca = cert
        .basic_constraints()
        .map_err(|e| format!("has an invalid basicConstraints: {e}"))?
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err("is not a CA certificate (basicConstraints CA is not set)".into());
    }
    let usage = cert
        .key_usage()
        .map_err(|e| format!("has an invalid keyUsage: {e}"))?;
    if usage.is_some_and(|u| !u.value.key_cert_sign()) {
        return Err("may not sign certificates (keyUsage lacks keyCertSign)".into());
    }
    for rdn in cert.subject().iter() {
        // rcgen rebuilds the subject to sign with: one attribute per name component only.
        if rdn.iter().count() != 1 {
            return Err("has a subject with a multi-valued or empty name component".into());
        }
    }
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map_or_else(|| cert.subject().to_string(), str::to_owned);
    let serial_bytes = cert.raw_serial();
    let low = &serial_bytes[serial_bytes.len().saturating_sub(8)..];
    let serial = low.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
    let signing_key_id = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(colon_hex(id.0)),
            _ => None,
        })
        .unwrap_or_default();
    let (key_type, key_bits) = match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => ("rsa", rsa.key_size()),
        Ok(PublicKey::EC(ec)) => ("ec", ec.key_size()),
        _ => ("ed25519", 256),
    };
    let validity = cert.validity();
    Ok(Root {
        id: fingerprint(&block.contents),
        name,
        serial,
        signing_key_id,
        not_before: from_unix(validity.not_before.timestamp()),
        not_after: from_unix(validity.not_after.timestamp()),
        pem: certificate_pem(&block.contents),
        key_type,
        key_bits: u32::try_from(key_bits).unwrap_or(0),
        create_index: 0,
        modify_index: 0,
        rotated_out: None,
        retire_at: None,
        max_leaf_ttl: Duration::ZERO,
        file,
    })
}

/// The signer of a root: its certificate rebuilt for rcgen with `key`, checked by signing a
/// probe leaf that must name the root as its issuer byte for byte and verify with the root's
/// public key (so a key of another certificate, or a subject rcgen cannot reproduce, is refused
/// here and not found out by a peer that rejects every leaf).
fn signer(root_pem: &str, key: KeyPair) -> Result<Signer, String> {
    let params = CertificateParams::from_ca_cert_pem(root_pem)
        .map_err(|e| format!("the certificate cannot be used to sign: {e}"))?;
    let issuer = params
        .self_signed(&key)
        .map_err(|e| format!("the key cannot sign: {e}"))?;
    let mut probe = CertificateParams::default();
    probe.distinguished_name = DistinguishedName::new();
    probe.distinguished_name.push(DnType::CommonName, "probe");
    probe.use_authority_key_identifier_extension = true;
    let probe_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let probe = probe
        .signed_by(&probe_key, &issuer, &key)
        .map_err(|e| format!("the key cannot sign: {e}"))?;
    let (_, root_block) = x509_parser::pem::parse_x509_pem(root_pem.as_bytes())
        .map_err(|e| format!("the certificate is not PEM: {e}"))?;
    let root = root_block
        .parse_x509()
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let (_, leaf) = x509_parser::parse_x509_certificate(probe.der())
        .map_err(|e| format!("cannot read a certificate just made: {e}"))?;
    if leaf.issuer().as_raw() != root.subject().as_raw() {
        return Err(
            "the certificate's subject cannot be reproduced to sign with (use UTF8String \
             or PrintableString attributes, one per name component, no repeated types)"
                .into(),
        );
    }
    if leaf.verify_signature(Some(root.public_key())).is_err() {
        return Err("the key is not the certificate's key".into());
    }
    Ok(Signer { issuer, key })
}

/// Where the CA's state is written.
pub enum Keeping {
    /// Nowhere (`--dev`).
    Memory,
    /// Under `<data>/ca/`.
    Dir(PathBuf),
    /// In a record table of the store the servers share (`<prefix>ca/records/<file>` in
    /// etcd), which only the leader can write; `index`: the table's.
    Shared {
        table: Box<dyn trellis_store::RecordLog>,
        label: String,
        index: Mutex<u64>,
    },
}

impl Keeping {
    /// A record table of the shared store, `label` naming it in errors.
    pub fn shared(table: Box<dyn trellis_store::RecordLog>, label: String) -> Self {
        Self::Shared {
            table,
            label,
            index: Mutex::new(0),
        }
    }

    /// The state kept, if there is one.
    fn load(&self, config_ttl: &LeafTtl) -> Result<Option<CaState>, CaError> {
        match self {
            Self::Memory => Ok(None),
            Self::Dir(dir) => load(&DirFiles(dir), config_ttl),
            Self::Shared {
                table,
                label,
                index,
            } => {
                let (at, records) = table.load().map_err(|e| CaError::Shared(e.to_string()))?;
                *index
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = at;
                load(&TableFiles { records, label }, config_ttl)
            }
        }
    }

    /// Writes `state`: `new_root` with its key, and without the `retired` roots.
    fn save(
        &self,
        state: &CaState,
        new_root: Option<(&Root, &str)>,
        retired: &[Root],
    ) -> Result<(), CaError> {
        match self {
            Self::Memory => Ok(()),
            Self::Dir(dir) => save(dir, state, new_root, retired),
            Self::Shared { table, index, .. } => {
                // Every file each time (a few KB): one transaction leaves the table whole. The
                // active root's key is the signer's (a new root's is the one given).
                let key_pem = state.signer.key.serialize_pem();
                let record = serde_json::to_vec_pretty(&state.record())
                    .map_err(|e| CaError::Shared(e.to_string()))?;
                let mut files: Vec<(String, Vec<u8>)> = state
                    .roots()
                    .into_iter()
                    .map(|root| (format!("{}.pem", root.file), root.pem.clone().into_bytes()))
                    .collect();
                files.push((format!("{}.key", state.active.file), key_pem.into_bytes()));
                files.push((RECORD.to_owned(), record));
                let gone: Vec<String> = retired
                    .iter()
                    .flat_map(|root| ["pem", "key"].map(|ext| format!("{}.{ext}", root.file)))
                    .chain(state.others.iter().map(|root| format!("{}.key", root.file)))
                    .collect();
                let puts: Vec<(&str, &[u8])> = files
                    .iter()
                    .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
                    .collect();
                let deletes: Vec<&str> = gone.iter().map(String::as_str).collect();
                let mut index = index
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                table
                    .commit(*index + 1, &puts, &deletes)
                    .map_err(|e| CaError::Shared(e.to_string()))?;
                *index += 1;
                Ok(())
            }
        }
    }
}

/// The files a CA is read from: a directory, or a shared store's record table.
trait CaFiles {
    /// The file `name` if it is there.
    fn optional(&self, name: &str) -> Result<Option<String>, CaError>;
    /// The file `name`, which must be there.
    fn required(&self, name: &str) -> Result<String, CaError>;
    /// Where `name` is, for errors.
    fn path(&self, name: &str) -> PathBuf;
}

struct DirFiles<'a>(&'a Path);

impl CaFiles for DirFiles<'_> {
    fn optional(&self, name: &str) -> Result<Option<String>, CaError> {
        let path = self.0.join(name);
        if path.exists() {
            read(&path).map(Some)
        } else {
            Ok(None)
        }
    }

    fn required(&self, name: &str) -> Result<String, CaError> {
        read(&self.0.join(name))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

struct TableFiles<'a> {
    records: std::collections::BTreeMap<String, Vec<u8>>,
    label: &'a str,
}

impl CaFiles for TableFiles<'_> {
    fn optional(&self, name: &str) -> Result<Option<String>, CaError> {
        self.records
            .get(name)
            .map(|bytes| {
                String::from_utf8(bytes.clone()).map_err(|_| CaError::Corrupt {
                    path: self.path(name),
                    reason: "not UTF-8".into(),
                })
            })
            .transpose()
    }

    fn required(&self, name: &str) -> Result<String, CaError> {
        self.optional(name)?.ok_or_else(|| CaError::Corrupt {
            path: self.path(name),
            reason: "missing".into(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("{}{name}", self.label))
    }
}

/// The CA in `files`, if one was made there: `roots.json`, else a single root's `root.json`.
fn load(files: &dyn CaFiles, config_ttl: &LeafTtl) -> Result<Option<CaState>, CaError> {
    let record_path = files.path(RECORD);
    let corrupt = |path: &Path, reason: String| CaError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let record = if let Some(text) = files.optional(RECORD)? {
        serde_json::from_str::<Record>(&text).map_err(|e| corrupt(&record_path, e.to_string()))?
    } else {
        let legacy_path = files.path("root.json");
        let Some(text) = files.optional("root.json")? else {
            return Ok(None);
        };
        let legacy: LegacyRecord =
            serde_json::from_str(&text).map_err(|e| corrupt(&legacy_path, e.to_string()))?;
        Record {
            cluster_id: legacy.cluster_id,
            index: 1,
            roots_index: 1,
            config_create_index: 1,
            config_modify_index: 1,
            leaf_cert_ttl: None,
            roots: vec![RootEntry {
                file: "root".into(),
                create_index: 1,
                modify_index: 1,
                rotated_out_s: None,
                retire_at_s: None,
                // How long the leaves it signed before were is not known: take today's.
                max_leaf_ttl_s: config_ttl.duration.as_secs(),
            }],
        }
    };
    let bad = |reason: &str| corrupt(&record_path, reason.to_owned());
    let mut active = None;
    let mut others = Vec::new();
    for entry in &record.roots {
        let file_ok = !entry.file.is_empty()
            && entry
                .file
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !file_ok {
            return Err(bad("a root's file name is not letters, digits and '-'"));
        }
        let pem_name = format!("{}.pem", entry.file);
        let pem_path = files.path(&pem_name);
        let pem = files.required(&pem_name)?;
        let mut root = parse_root(&pem, entry.file.clone()).map_err(|e| corrupt(&pem_path, e))?;
        root.create_index = entry.create_index;
        root.modify_index = entry.modify_index;
        root.rotated_out = entry.rotated_out_s.map(from_unix);
        root.retire_at = entry.retire_at_s.map(from_unix);
        root.max_leaf_ttl = Duration::from_secs(entry.max_leaf_ttl_s);
        if root.rotated_out.is_some() {
            others.push(root);
        } else if active.replace(root).is_some() {
            return Err(bad("more than one active root"));
        }
    }
    let active = active.ok_or_else(|| bad("no active root"))?;
    let key_name = format!("{}.key", active.file);
    let key_path = files.path(&key_name);
    let key = KeyPair::from_pem(&files.required(&key_name)?)
        .map_err(|e| corrupt(&key_path, e.to_string()))?;
    let signer = signer(&active.pem, key).map_err(|e| corrupt(&key_path, e))?;
    let leaf_ttl = match &record.leaf_cert_ttl {
        Some(text) => LeafTtl {
            duration: crate::config::parse_leaf_ttl(text)
                .map_err(|e| corrupt(&record_path, e.to_string()))?,
            text: text.clone(),
        },
        None => config_ttl.clone(),
    };
    Ok(Some(CaState {
        cluster_id: record.cluster_id,
        active,
        others,
        signer: Arc::new(signer),
        leaf_ttl,
        leaf_ttl_pinned: record.leaf_cert_ttl.is_some(),
        index: record.index,
        roots_index: record.roots_index,
        config_create_index: record.config_create_index,
        config_modify_index: record.config_modify_index,
    }))
}

/// Writes `state` under `dir`: a new root's files first, then the record by a rename, then
/// the retired roots' files are removed (a crash before that leaves files nothing names).
fn save(
    dir: &Path,
    state: &CaState,
    new_root: Option<(&Root, &str)>,
    retired: &[Root],
) -> Result<(), CaError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |error| CaError::Io { path, error }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if let Some((root, key_pem)) = new_root {
        let key_path = dir.join(format!("{}.key", root.file));
        replace(&key_path, key_pem.as_bytes(), 0o600).map_err(io(&key_path))?;
        let pem_path = dir.join(format!("{}.pem", root.file));
        replace(&pem_path, root.pem.as_bytes(), 0o644).map_err(io(&pem_path))?;
    }
    let json = serde_json::to_vec_pretty(&state.record()).map_err(|e| CaError::Corrupt {
        path: dir.join(RECORD),
        reason: e.to_string(),
    })?;
    let record_path = dir.join(RECORD);
    replace(&record_path, &json, 0o644).map_err(io(&record_path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    for root in retired {
        for ext in ["pem", "key"] {
            let path = dir.join(format!("{}.{ext}", root.file));
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %error, "cannot remove a retired CA root's file");
            }
        }
    }
    Ok(())
}

/// Writes `path` whole or not at all: a temporary file with `mode`, synced, renamed over it.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|error| CaError::Io {
        path: path.to_owned(),
        error,
    })
}

fn unix(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn from_unix(seconds: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
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

/// `der` as a PEM certificate (64 base64 characters a line), whatever surrounded it in the file
/// it came from.
fn certificate_pem(der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// `YYYY-MM-DDTHH:MM:SSZ`, for messages.
fn date(time: SystemTime) -> String {
    let t = OffsetDateTime::from(time);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn fingerprint(der: &[u8]) -> String {
    colon_hex(&Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn ttl(text: &str) -> LeafTtl {
        LeafTtl {
            duration: crate::config::parse_leaf_ttl(text).unwrap(),
            text: text.into(),
        }
    }

    fn settings(leaf: &str) -> Settings {
        Settings {
            operator: None,
            leaf_ttl: ttl(leaf),
        }
    }

    /// An operator's CA: a self-signed certificate (a CA if `ca`) and its PKCS#8 key.
    fn operator_ca(name: &str, ca: bool, now: SystemTime) -> OperatorRoot {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Example");
        params.distinguished_name.push(DnType::CommonName, name);
        if ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        }
        params.not_before = to_offset(now - HOUR);
        params.not_after = to_offset(now + 1000 * HOUR);
        OperatorRoot {
            cert_pem: params.self_signed(&key).unwrap().pem(),
            key_pem: key.serialize_pem(),
            source: Source::Config,
        }
    }

    /// Whether `leaf` names `root` as its issuer and its signature verifies with root's key.
    fn signed_by(leaf: &Leaf, root: &Root) -> bool {
        let (_, leaf_block) = x509_parser::pem::parse_x509_pem(leaf.cert_pem.as_bytes()).unwrap();
        let leaf = leaf_block.parse_x509().unwrap();
        let (_, root_block) = x509_parser::pem::parse_x509_pem(root.pem.as_bytes()).unwrap();
        let root = root_block.parse_x509().unwrap();
        leaf.issuer().as_raw() == root.subject().as_raw()
            && leaf.verify_signature(Some(root.public_key())).is_ok()
    }

    fn rotate(ca: &Ca, leaf: Option<&str>, now: SystemTime) -> Arc<CaState> {
        let update = Update {
            root: NewRoot::Generate(KeyKind::EcP256),
            leaf_ttl: leaf.map(ttl),
        };
        ca.update(update, now).unwrap()
    }

    #[test]
    fn a_kept_ca_signs_with_the_same_root_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let first = Ca::load_or_create(Some(dir.path()), &settings("24h"), now)
            .unwrap()
            .current();
        let again = Ca::load_or_create(Some(dir.path()), &settings("24h"), now)
            .unwrap()
            .current();
        assert_eq!(first.active().pem, again.active().pem);
        assert_eq!(first.trust_domain(), again.trust_domain());
        assert_eq!(first.active().id, again.active().id);
        assert_eq!(again.roots().len(), 1);
        assert_eq!(again.roots_index(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca/root-1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let leaf = again.sign_leaf("dc1", "web", now).unwrap();
        assert!(signed_by(&leaf, again.active()));
        assert_eq!(
            leaf.uri,
            format!(
                "spiffe://{}/ns/default/dc/dc1/svc/web",
                first.trust_domain()
            )
        );
        assert_eq!(leaf.valid_before, now + 24 * HOUR);
        assert!(again.sign_leaf("dc1", "bad name", now).is_err());
    }

    #[test]
    fn a_directory_of_one_root_from_before_loads_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        // The layout written before there were several roots: root.json, root.key, root.pem.
        let ca_dir = dir.path().join("ca");
        std::fs::create_dir_all(&ca_dir).unwrap();
        let cluster_id = "0a1b2c3d-0000-4000-8000-000000000001";
        let (old, _, key_pem) = generate_root(cluster_id, 1, KeyKind::EcP256, now).unwrap();
        std::fs::write(ca_dir.join("root.key"), key_pem).unwrap();
        std::fs::write(ca_dir.join("root.pem"), &old.pem).unwrap();
        let record = json_record(cluster_id);
        std::fs::write(ca_dir.join("root.json"), record).unwrap();

        let ca = Ca::load_or_create(Some(dir.path()), &settings("1h"), now).unwrap();
        let state = ca.current();
        assert_eq!(state.active().id, old.id);
        assert_eq!(state.trust_domain(), format!("{cluster_id}.consul"));
        assert!(signed_by(
            &state.sign_leaf("dc1", "web", now).unwrap(),
            &old
        ));
        assert!(
            !ca_dir.join(RECORD).exists(),
            "loading alone writes nothing"
        );

        let rotated = rotate(&ca, None, now);
        assert_eq!(rotated.roots().len(), 2);
        let reloaded = Ca::load_or_create(Some(dir.path()), &settings("1h"), now)
            .unwrap()
            .current();
        assert_eq!(reloaded.active().id, rotated.active().id);
        let ids: Vec<&str> = reloaded.roots().iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, [old.id.as_str(), rotated.active().id.as_str()]);
        assert_eq!(reloaded.trust_domain(), state.trust_domain());
    }

    fn json_record(cluster_id: &str) -> String {
        serde_json::json!({
            "cluster_id": cluster_id,
            "common_name": "Trellis CA 0a1b2c3d",
            "not_before_s": 0,
            "not_after_s": 1,
            "serial": 1,
        })
        .to_string()
    }

    #[test]
    fn a_rotated_out_root_is_trusted_until_its_last_leaf_has_expired() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::now();
        let ca = Ca::load_or_create(Some(dir.path()), &settings("1h"), t0).unwrap();
        let first = ca.current();
        let old_leaf = first.sign_leaf("dc1", "web", t0).unwrap();
        let mut watcher = ca.subscribe();
        watcher.borrow_and_update();

        // Rotated an hour later with a shorter lifetime: the old root signed 1 h leaves.
        let t1 = t0 + HOUR;
        let second = rotate(&ca, Some("10m"), t1);
        assert!(watcher.has_changed().unwrap(), "readers see the rotation");
        assert!(second.roots_index() > first.roots_index());
        assert_ne!(second.active().id, first.active().id);
        let old = second
            .roots()
            .into_iter()
            .find(|r| r.id == first.active().id)
            .unwrap()
            .clone();
        assert_eq!(old.rotated_out, Some(t1));
        assert_eq!(old.retire_at, Some(t1 + HOUR + CLOCK_SKEW));
        let new_leaf = second.sign_leaf("dc1", "web", t1).unwrap();
        assert!(signed_by(&new_leaf, second.active()));
        assert!(!signed_by(&new_leaf, &old));
        assert!(signed_by(&old_leaf, &old));
        assert_eq!(new_leaf.valid_before, t1 + 10 * 60 * Duration::from_secs(1));
        assert_eq!(second.next_retirement(), old.retire_at);

        // Not a second early; then gone, from memory and disk, and the index moves.
        assert!(
            !ca.retire(t1 + HOUR + CLOCK_SKEW - Duration::from_secs(1))
                .unwrap()
        );
        assert!(ca.retire(t1 + HOUR + CLOCK_SKEW).unwrap());
        let third = ca.current();
        assert_eq!(third.roots().len(), 1);
        assert!(third.roots_index() > second.roots_index());
        assert_eq!(third.next_retirement(), None);
        let old_file = dir.path().join(format!("ca/{}.key", old.file));
        assert!(!old_file.exists(), "the retired root's key is removed");

        // A restart after the retirement time drops it too, without the task.
        let dir2 = tempfile::tempdir().unwrap();
        let ca2 = Ca::load_or_create(Some(dir2.path()), &settings("1h"), t0).unwrap();
        rotate(&ca2, None, t1);
        let later = t1 + 2 * HOUR;
        let restarted = Ca::load_or_create(Some(dir2.path()), &settings("1h"), later)
            .unwrap()
            .current();
        assert_eq!(restarted.roots().len(), 1);
    }

    #[test]
    fn the_longest_lifetime_a_root_signed_with_decides_when_it_retires() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::now();
        Ca::load_or_create(Some(dir.path()), &settings("1h"), t0).unwrap();
        // A restart with a longer configured lifetime: the root may have signed 5 h leaves.
        Ca::load_or_create(Some(dir.path()), &settings("5h"), t0).unwrap();
        let ca = Ca::load_or_create(Some(dir.path()), &settings("1h"), t0).unwrap();
        let before = ca.current().active().id.clone();
        let rotated = rotate(&ca, None, t0);
        let old = rotated
            .roots()
            .into_iter()
            .find(|r| r.id == before)
            .unwrap()
            .clone();
        assert_eq!(old.retire_at, Some(t0 + 5 * HOUR + CLOCK_SKEW));
    }

    #[test]
    fn a_lifetime_set_through_the_api_outlives_the_configured_one() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let ca = Ca::load_or_create(Some(dir.path()), &settings("24h"), now).unwrap();
        let before = ca.current();
        let op = operator_ca("Example Root", true, now);
        let same = Update {
            root: NewRoot::Operator(op.clone()),
            leaf_ttl: Some(ttl("2h")),
        };
        let rotated = ca.update(same.clone(), now).unwrap();
        assert_ne!(rotated.active().id, before.active().id);
        // The same operator root again: no rotation, only the lifetime.
        let again = Update {
            leaf_ttl: Some(ttl("3h")),
            ..same
        };
        let reconfigured = ca.update(again, now).unwrap();
        assert_eq!(reconfigured.active().id, rotated.active().id);
        assert_eq!(reconfigured.roots_index(), rotated.roots_index());
        assert!(reconfigured.config_modify_index() > rotated.config_modify_index());
        assert_eq!(reconfigured.leaf_ttl().text, "3h");
        let restarted = Ca::load_or_create(Some(dir.path()), &settings("24h"), now)
            .unwrap()
            .current();
        assert_eq!(restarted.leaf_ttl().text, "3h");
        assert_eq!(restarted.active().id, rotated.active().id);
        assert_eq!(
            restarted.config_modify_index(),
            reconfigured.config_modify_index()
        );
    }

    #[test]
    fn an_operator_root_signs_leaves_and_is_made_active_once() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let op = operator_ca("Example Root", true, now);
        let with_op = Settings {
            operator: Some(op.clone()),
            ..settings("1h")
        };
        // First start with it: the only root.
        let ca = Ca::load_or_create(Some(dir.path()), &with_op, now).unwrap();
        let state = ca.current();
        assert_eq!(state.roots().len(), 1);
        assert_eq!(state.active().name, "Example Root");
        assert_eq!(state.active().key_type, "ec");
        assert_eq!(state.active().key_bits, 256);
        let leaf = state.sign_leaf("dc1", "web", now).unwrap();
        assert!(signed_by(&leaf, state.active()));

        // An API rotation away from it is not undone by a restart with the same flags.
        let rotated = rotate(&ca, None, now);
        let restarted = Ca::load_or_create(Some(dir.path()), &with_op, now)
            .unwrap()
            .current();
        assert_eq!(restarted.active().id, rotated.active().id);

        // A new operator root given at start on an existing CA becomes active, the old trusted.
        let other = Settings {
            operator: Some(operator_ca("Example Root 2", true, now)),
            ..settings("1h")
        };
        let switched = Ca::load_or_create(Some(dir.path()), &other, now)
            .unwrap()
            .current();
        assert_eq!(switched.active().name, "Example Root 2");
        assert_eq!(switched.roots().len(), 3);
        assert_eq!(switched.trust_domain(), state.trust_domain());
    }

    #[test]
    fn a_bad_operator_root_is_refused_with_the_reason() {
        let now = SystemTime::now();
        let refused = |op: OperatorRoot| {
            let settings = Settings {
                operator: Some(op),
                ..settings("1h")
            };
            match Ca::load_or_create(None, &settings, now) {
                Ok(_) => panic!("accepted"),
                Err(error) => error.to_string(),
            }
        };
        let not_ca = refused(operator_ca("Leaf", false, now));
        assert!(
            not_ca.contains("--ca-cert") && not_ca.contains("basicConstraints"),
            "{not_ca}"
        );

        let mut mismatched = operator_ca("Root", true, now);
        mismatched.key_pem = operator_ca("Other", true, now).key_pem;
        let error = refused(mismatched);
        assert!(error.contains("not the certificate's key"), "{error}");

        let mut sec1 = operator_ca("Root", true, now);
        sec1.key_pem =
            "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n".into();
        let error = refused(sec1);
        assert!(error.contains("PKCS#8"), "{error}");

        let mut garbage = operator_ca("Root", true, now);
        garbage.cert_pem = "not a certificate".into();
        let error = refused(garbage);
        assert!(error.contains("--ca-cert"), "{error}");

        let expired = operator_ca("Root", true, now - 2000 * HOUR);
        let error = refused(expired);
        assert!(error.contains("expired"), "{error}");

        let mut chain = operator_ca("Root", true, now);
        chain.cert_pem = format!("{}{}", chain.cert_pem, chain.cert_pem);
        let error = refused(chain);
        assert!(error.contains("more than one"), "{error}");
    }

    #[test]
    fn a_crash_between_the_files_and_the_record_leaves_a_loadable_ca() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let ca = Ca::load_or_create(Some(dir.path()), &settings("1h"), now).unwrap();
        let before = ca.current().active().id.clone();
        // What a rotation that died before its record leaves: the next root's files, a
        // half-written record beside the real one.
        let ca_dir = dir.path().join("ca");
        std::fs::write(ca_dir.join("root-2.key"), "half").unwrap();
        std::fs::write(ca_dir.join("root-2.pem"), "half").unwrap();
        std::fs::write(ca_dir.join("roots.json.tmp"), "{\"clus").unwrap();
        let reloaded = Ca::load_or_create(Some(dir.path()), &settings("1h"), now).unwrap();
        assert_eq!(reloaded.current().active().id, before);
        let rotated = rotate(&reloaded, None, now);
        let again = Ca::load_or_create(Some(dir.path()), &settings("1h"), now)
            .unwrap()
            .current();
        assert_eq!(again.active().id, rotated.active().id);
        assert_eq!(again.roots().len(), 2);
    }

    #[test]
    fn consul_key_settings_choose_the_generated_root() {
        assert_eq!(KeyKind::from_consul(None, None).unwrap(), KeyKind::EcP256);
        assert_eq!(
            KeyKind::from_consul(Some("ec"), Some(384)).unwrap(),
            KeyKind::EcP384
        );
        assert!(KeyKind::from_consul(Some("rsa"), Some(2048)).is_err());
        let now = SystemTime::now();
        let ca = Ca::load_or_create(None, &settings("1h"), now).unwrap();
        let update = Update {
            root: NewRoot::Generate(KeyKind::EcP384),
            leaf_ttl: None,
        };
        let state = ca.update(update, now).unwrap();
        assert_eq!(state.active().key_bits, 384);
        assert!(signed_by(
            &state.sign_leaf("dc1", "web", now).unwrap(),
            state.active()
        ));
    }
}
