//! Names of the participant's prepared transactions: `trellis:<gid>:<branch>` with both parts
//! escaped so the name is safe inside a SQL literal and can be read back, or, when that does not
//! fit PostgreSQL's limit, `trellis:#<hash>` with the branch recorded in `trellis_xact_names`.

use sha2::{Digest, Sha256};

/// Every name starts with this, so recovery finds ours among all prepared transactions.
pub(crate) const PREFIX: &str = "trellis:";

/// PostgreSQL's `GIDSIZE` is 200 bytes including the terminating NUL.
const MAX_NAME_LEN: usize = 199;

/// The prepared transaction's name for a branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XactName {
    pub(crate) name: String,
    /// The name is a hash: the branch must be recorded in `trellis_xact_names` before the
    /// transaction is prepared, or recovery could not tell which gid to ask about.
    pub(crate) hashed: bool,
}

pub(crate) fn xact_name(gid: &str, branch_id: &str) -> XactName {
    let plain = format!("{PREFIX}{}:{}", escape(gid), escape(branch_id));
    if plain.len() <= MAX_NAME_LEN {
        return XactName {
            name: plain,
            hashed: false,
        };
    }
    let mut hasher = Sha256::new();
    hasher.update(gid.as_bytes());
    hasher.update([0]);
    hasher.update(branch_id.as_bytes());
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    XactName {
        name: format!("{PREFIX}#{hex}"),
        hashed: true,
    }
}

/// What a prepared transaction's name says about its branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    Plain {
        gid: String,
        branch_id: String,
    },
    /// Look the branch up in `trellis_xact_names`.
    Hashed,
}

/// `None` for a name that is not one of ours.
pub(crate) fn parse(name: &str) -> Option<Parsed> {
    let rest = name.strip_prefix(PREFIX)?;
    if let Some(hex) = rest.strip_prefix('#') {
        return (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(Parsed::Hashed);
    }
    let (gid, branch_id) = rest.split_once(':')?;
    Some(Parsed::Plain {
        gid: unescape(gid)?,
        branch_id: unescape(branch_id)?,
    })
}

/// A SQL string literal of a name (which holds no quote or backslash, but quote it anyway).
pub(crate) fn literal(name: &str) -> String {
    format!("'{}'", name.replace('\'', "''"))
}

/// Keeps ASCII letters, digits and `._~-`; everything else becomes `%XX` per UTF-8 byte, so the
/// escaped text has no `:`, quote, backslash or `#`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_read_back() {
        for (gid, branch) in [
            ("g1", "b1"),
            ("order:42", "users/7"),
            ("it's", "back\\slash"),
            ("ünï", "%41#"),
        ] {
            let name = xact_name(gid, branch);
            assert!(!name.hashed, "{gid} {branch}");
            assert!(!name.name[PREFIX.len()..].contains(['\'', '\\', '#']));
            assert_eq!(
                parse(&name.name),
                Some(Parsed::Plain {
                    gid: gid.into(),
                    branch_id: branch.into()
                })
            );
        }
        assert_eq!(xact_name("g1", "b-1.x_~").name, "trellis:g1:b-1.x_~");
    }

    #[test]
    fn long_names_are_hashed_within_the_limit() {
        let gid = "g".repeat(100);
        let name = xact_name(&gid, &"b".repeat(100));
        assert!(name.hashed);
        assert_eq!(name.name.len(), PREFIX.len() + 1 + 64);
        assert_eq!(parse(&name.name), Some(Parsed::Hashed));
        assert_ne!(name, xact_name(&gid, &"b".repeat(99)));
        // 199 bytes fit, 200 do not.
        let fits = "x".repeat(MAX_NAME_LEN - PREFIX.len() - 2);
        assert!(!xact_name(&fits, "y").hashed);
        assert!(xact_name(&format!("{fits}x"), "y").hashed);
        // Escaping counts: a short gid of many escaped bytes hashes too.
        assert!(xact_name(&":".repeat(64), "b").hashed);
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for name in [
            "other",
            "trellis:",
            "trellis:nocolon",
            "trellis:%zz:b",
            "trellis:#abc",
            "trellis:%FF:b",
            "trellis:%+1:b",
        ] {
            assert_eq!(parse(name), None, "{name}");
        }
    }

    #[test]
    fn literals_double_quotes() {
        assert_eq!(literal("a'b"), "'a''b'");
    }
}
